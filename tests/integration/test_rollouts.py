"""Rollouts decided by the loop, end to end: real broker, worker, MLflow, two serving replicas.

Each model here trains a constant model (`bench.steps.trivial_train`: seconds, not minutes), so
v1 becomes champion directly and v2 passes the gate and enters the model's rollout. The
online truth is the test's: it labels each answer right or wrong with a probability per version
(the "true success rate" of that arm), predicting on one replica and sending the feedback to
the other, as a load balancer would. What is asserted is what the loop did with that feedback:
the analyses (with their numbers), the aliases, the deployments and the traffic.
"""

from __future__ import annotations

import http.client
import json
import random
import sys
import urllib.error
import urllib.request

import pytest
import yaml

from devstack.stack import REPO, LocalStack
from streams import events as ev
from streams.codec import build
from streams.publisher import Publisher
from tests.integration.operator_harness import ALICE, Cli, cli_env, write_keys
from tests.waiting import wait_until

pytestmark = pytest.mark.slow

STEP = [sys.executable, "-m", "bench.steps.trivial_train"]
ROW = {"f0": 1.0, "f1": 0.0}
CANARY = {"strategy": "canary", "steps": [0.5, 1.0], "min_step_seconds": 1, "min_samples": 40,
          "max_step_seconds": 120}
ROLLOUTS = {
    "better": CANARY,
    "worse": CANARY,
    "undecided": {**CANARY, "min_samples": 10_000, "max_step_seconds": 4},
    "bandit": {"strategy": "bandit", "algorithm": "thompson", "auto_promote": False, "min_samples": 50},
}


def model(name: str, rollout: dict) -> dict:
    return {"name": name, "pipeline": {"launcher": "local", "workdir": str(REPO),
                                       "steps": [{"name": "train", "command": STEP}]},
            "retrain": {"min_new_rows": 1, "window_batches": 1},
            "gate": {"metric": "accuracy", "min_improvement": 0.0, "from_step": "train"},
            "metrics": {"metric": "accuracy", "floor": 0.0, "window_seconds": 60},
            "rollout": rollout}


@pytest.fixture(scope="module")
def stack(tmp_path_factory, bootstrap):
    root = tmp_path_factory.mktemp("rollouts")
    config = root / "loopline.yaml"
    config.write_text(yaml.safe_dump({"models": [model(n, r) for n, r in ROLLOUTS.items()]}))
    keys = write_keys(root / "operators.yaml", ALICE)
    with LocalStack(root / "state", config, bootstrap=bootstrap, prefix=LocalStack.unique_prefix(),
                    partitions=2, serving=2, extra_env={"LOOPLINE_OPERATOR_KEYS": str(keys)}) as s:
        s.keys = keys
        with Publisher(s.bootstrap, s.settings.topics) as bus:
            s.bus = bus
            # Every model's v1, then every v2, all at once: the trainings overlap.
            for name in ROLLOUTS:
                train(s, name, 1)
            for name in ROLLOUTS:
                wait_until(lambda: of_model(s, name, ev.DeploymentDone), 120, f"{name} v1 deployed")
            for name in ROLLOUTS:
                train(s, name, 2)
            yield s


class Client:
    """Keep-alive JSON over HTTP to one replica (a new connection per request would dominate)."""

    def __init__(self, port: int):
        self.port, self.connection = port, None

    def post(self, path: str, body: dict) -> tuple[int, dict]:
        for attempt in (1, 2):               # once more on a connection the server closed
            if self.connection is None:
                self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            try:
                self.connection.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
                response = self.connection.getresponse()
                return response.status, json.loads(response.read() or b"{}")
            except (http.client.HTTPException, ConnectionError):
                self.connection.close()
                self.connection = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")


def of_model(stack, name: str, data_type: type[ev.EventData]) -> list:
    return [d for d in stack.observer.of_type(data_type.TYPE) if d.event.subject == name]


def train(stack, name: str, batch: int) -> None:
    stack.bus.publish(build(ev.DataArrived(uri=f"file:///t/{name}/b{batch}", rows=1, version=f"b{batch}"),
                            name, source="tests/rollouts"))


def champion_then_rollout(stack, name: str) -> ev.RolloutStarted:
    """v1 went straight to champion (nothing to compare it with); v2 enters the rollout."""
    assert [d.data.version for d in of_model(stack, name, ev.DeploymentDone)][:1] == ["1"]
    started = wait_until(lambda: of_model(stack, name, ev.RolloutStarted), 90, f"{name}'s rollout")
    data = started[0].data
    assert (data.champion_version, data.challenger_versions) == ("1", ["2"])
    # Both replicas serve the experiment before traffic starts.
    for port in stack.serve_ports:
        wait_until(lambda: _experiment_on(port, name) == data.experiment, 60,
                   f"replica {port} routing {name} by {data.experiment}")
    return data


def _experiment_on(port: int, name: str) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/models", timeout=5) as response:
            entry = json.loads(response.read()).get(name) or {}
    except (urllib.error.URLError, ConnectionError):
        return None
    experiment = entry.get("experiment") or {}
    return experiment.get("experiment") if experiment.get("status") in ("running", "paused") else None


def play(stack, name: str, rates: dict[str, float], rng: random.Random, requests: int,
         until=None, every: int = 20) -> list[str]:
    """Predict on one replica, send the feedback to the other (`every` labels a call, as a
    client that reports labels in batches); the versions that answered, in order."""
    answered, labels = [], []
    clients = [Client(port) for port in stack.serve_ports]
    for i in range(requests):
        status, answer = clients[i % 2].post(f"/models/{name}/predict", {"rows": [ROW]})
        assert status == 200, answer
        version, predicted = answer["version"], answer["predictions"][0]
        right = rng.random() < rates[version]
        labels.append({"prediction_id": answer["prediction_ids"][0],
                       "label": predicted if right else 1 - predicted})
        answered.append(version)
        if len(labels) == every or i == requests - 1:
            status, body = clients[(i + 1) % 2].post(f"/models/{name}/feedback", {"feedback": labels})
            assert status == 202 and body["accepted"] == len(labels), body
            labels = []
            if until is not None and until():
                break
    return answered


def test_a_better_canary_steps_up_and_becomes_champion_with_its_numbers(stack):
    rollout = champion_then_rollout(stack, "better")
    promoted = lambda: [d for d in of_model(stack, "better", ev.RolloutAnalysed)  # noqa: E731
                        if d.data.action == "promote"]
    play(stack, "better", {"1": 0.5, "2": 0.95}, random.Random(1), 3000, until=promoted)
    analyses = [d.data for d in of_model(stack, "better", ev.RolloutAnalysed)]
    assert [a.action for a in analyses][:2] == ["step", "promote"], analyses
    step, promote = analyses[0], analyses[1]
    assert step.weight == 1.0 and promote.verdict == "successful" and promote.version == "2"
    assert promote.numbers["p_better"] >= 0.95 and promote.numbers["n_challenger"] >= 40
    done = wait_until(lambda: [d for d in of_model(stack, "better", ev.DeploymentDone)
                               if d.data.version == "2"], 60, "v2 deployed as champion")[0]
    assert rollout.experiment in done.data.reason and "p" in done.data.reason.lower()
    # Traffic follows: every answer from both replicas is now v2's.
    assert wait_until(lambda: set(play(stack, "better", {"2": 1.0}, random.Random(2), 10)) == {"2"}, 60,
                      "all traffic on the new champion")


def test_a_worse_canary_is_rolled_back_automatically(stack):
    rollout = champion_then_rollout(stack, "worse")
    failed = lambda: [d for d in of_model(stack, "worse", ev.RolloutAnalysed)  # noqa: E731
                      if d.data.action == "rollback"]
    play(stack, "worse", {"1": 0.95, "2": 0.4}, random.Random(3), 3000, until=failed)
    analysis = failed()[0].data
    assert analysis.verdict == "failed" and analysis.version == "2"
    assert analysis.numbers["mean_challenger"] < analysis.numbers["mean_champion"]
    rolled = wait_until(lambda: of_model(stack, "worse", ev.DeploymentRolledBack), 60, "the rollback")[0]
    assert (rolled.data.version, rolled.data.from_version) == ("1", "2")
    assert rollout.experiment in rolled.data.reason
    assert not of_model(stack, "worse", ev.DeploymentDone)[1:], "v2 must never become champion"
    assert wait_until(lambda: set(play(stack, "worse", {"1": 1.0}, random.Random(4), 10)) == {"1"}, 60,
                      "all traffic back on the champion")


def test_too_little_feedback_pauses_and_an_operator_promote_finishes_it(stack, monkeypatch, capsys):
    rollout = champion_then_rollout(stack, "undecided")
    play(stack, "undecided", {"1": 0.8, "2": 0.8}, random.Random(5), 20)
    paused = wait_until(lambda: [d for d in of_model(stack, "undecided", ev.RolloutAnalysed)
                                 if d.data.action == "pause"], 60, "the rollout paused")[0].data
    assert paused.verdict == "inconclusive" and paused.numbers["n_challenger"] < 10_000
    for port in stack.serve_ports:       # paused: the split holds while a person decides
        assert _experiment_on(port, "undecided") == rollout.experiment
    assert not of_model(stack, "undecided", ev.DeploymentDone)[1:]
    cli = Cli(monkeypatch, capsys)
    code, out = cli(cli_env(stack, stack.keys), "publish", "promote", "--model", "undecided",
                    "--version", "2", "--reason", "looked at the numbers")
    assert code == 0, out
    done = wait_until(lambda: [d for d in of_model(stack, "undecided", ev.DeploymentDone)
                               if d.data.version == "2"], 60, "the operator's promote")[0]
    assert "manual promote" in done.data.reason
    ended = wait_until(lambda: [d for d in of_model(stack, "undecided", ev.ExperimentUpdated)
                                if d.data.experiment == rollout.experiment and d.data.status == "ended"],
                       60, "the experiment ended")
    assert ended[-1].data.winner == "2"


def test_thompson_sampling_finds_the_better_arm_through_the_loop(stack):
    champion_then_rollout(stack, "bandit")
    answered = play(stack, "bandit", {"1": 0.60, "2": 0.70}, random.Random(7), 5000)
    last = answered[-1000:]
    assert last.count("2") / len(last) >= 0.80, (
        f"v2 (0.70) got {last.count('2')} of the last 1,000; first 1,000: {answered[:1000].count('2')}")
