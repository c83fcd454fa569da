"""`loopline status` at scale (issue 18): a few searches of MLflow for every model, not one call per
model; SQLite read directly (no `import mlflow`) and in agreement with MlflowClient; past 200
models a summary whose counts match the states put on the bus.

No worker here: the test writes what the worker would have written (the trigger's changelog,
training outcomes, dead letters) straight onto a real broker, and real runs and versions into a
real MLflow SQLite store, so every count the summary prints is known in advance."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from adapters import registry as reg
from agents.policies import ModelState
from agents.trigger import state_changelog
from loopline.settings import Settings
from streams import events as ev
from streams.admin import ensure_topics
from streams.codec import build
from streams.deadletter import DeadLetter
from streams.publisher import Publisher

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def client_of(uri: str):
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def register(client, name: str, versions: int = 2, alias: str = "champion", key: str | None = None) -> list[str]:
    """A registered model whose newest version is the champion, each version from its own run
    (eval metrics, gate and data tags), the alias history tag as MlflowRegistry writes it."""
    exp = client.get_experiment_by_name(name)
    exp_id = exp.experiment_id if exp else client.create_experiment(name)
    client.create_registered_model(name)
    made = []
    for i in range(versions):
        run = client.create_run(exp_id, tags={"loopline.idempotency_key": key or f"{name}-{i}",
                                              "loopline.step": "train"})
        client.log_metric(run.info.run_id, "eval_candidate_accuracy", 0.5 + i / 10)
        client.log_metric(run.info.run_id, "loss", 1.0 - i / 10)
        client.set_terminated(run.info.run_id)
        mv = client.create_model_version(name, f"runs:/{run.info.run_id}/model", run_id=run.info.run_id,
                                         tags={"loopline.gate": "passed", "loopline.data_versions": f"b{i},c{i}"})
        made.append(str(mv.version))
    reg.MlflowRegistry("", client=client).set_champion(name, alias, made[-1], made, f"event-{name}")
    return made


class Counting:
    """MlflowClient with every public call counted by name."""

    def __init__(self, client):
        self.client, self.calls = client, {}

    def __getattr__(self, name):
        target = getattr(self.client, name)
        if not callable(target):
            return target

        def counted(*args, **kwargs):
            self.calls[name] = self.calls.get(name, 0) + 1
            return target(*args, **kwargs)
        return counted


def test_the_bulk_readers_search_once_and_agree_with_each_other_and_with_champion(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = client_of(uri)
    names = [f"m{i:02d}" for i in range(12)]
    for i, name in enumerate(names):
        register(client, name, versions=1 + i % 3)
    register(client, "live", versions=2, alias="live")
    flight = client.create_run(client.get_experiment_by_name("m03").experiment_id,
                               tags={"loopline.idempotency_key": "k-flight", "loopline.step": "evaluate"})
    client.create_experiment("idle")                          # an experiment, no run with the key
    monkeypatch.setattr(reg, "SEARCH_PAGE", 5)                # 13 models: 3 pages

    counting = Counting(client)
    via_client = reg.reader(uri, client=counting)
    via_sqlite = reg.reader(uri)
    assert isinstance(via_client, reg.ClientReader) and isinstance(via_sqlite, reg.SqliteReader)

    registered = via_client.registered()
    assert registered == via_sqlite.registered()
    assert sorted(registered) == sorted([*names, "live"])
    assert counting.calls == {"search_registered_models": 3}             # one search, paged: not one per model

    aliases = {**{n: "champion" for n in names}, "live": "live", "never-registered": "champion"}
    champions = reg.champions_from(registered, aliases)
    per_model = reg.MlflowRegistry("", client=client)
    assert champions == {n: per_model.champion(n, a) for n, a in aliases.items()}   # the bulk = the per-model
    assert reg.MlflowRegistry("", client=client).champions(aliases) == champions
    assert champions["m02"].version == "3" and champions["m02"].history == ("1", "2", "3")

    wanted = {n: [c.version, *c.history] for n, c in champions.items() if c.version}
    wanted["m00"] = ["1", "7"]                                # 7 does not exist: left out
    counting.calls.clear()
    versions = via_client.versions(wanted)
    assert versions == via_sqlite.versions(wanted)
    assert ("m00", "7") not in versions and versions[("m02", "2")].tags["loopline.data_versions"] == "b1,c1"
    run_ids = [v.run_id for v in versions.values()]
    runs = via_client.runs(run_ids)
    assert runs == via_sqlite.runs(run_ids)
    assert len(runs) == len(run_ids) == sum(1 + i % 3 for i in range(12)) + 2
    assert runs[versions[("m02", "3")].run_id].metrics == {"eval_candidate_accuracy": 0.7, "loss": 0.8}
    # 15 experiments (13 models, "idle", MLflow's Default) in pages of 5
    assert counting.calls == {"search_model_versions": 1, "search_experiments": 3, "search_runs": 1}

    keys = {"m03": "k-flight", "idle": "k-none", "no-experiment": "k"}
    by_key = via_client.runs_by_key(keys)
    assert by_key == via_sqlite.runs_by_key(keys)
    assert [r.run_id for r in by_key["m03"]] == [flight.info.run_id] and by_key["idle"] == []
    assert "no-experiment" not in by_key


def test_a_store_that_does_not_exist_is_read_as_empty_and_not_created(tmp_path):
    path = tmp_path / "none" / "mlflow.db"
    found = reg.reader(f"sqlite:///{path}")
    assert found.registered() == {} and found.runs_by_key({"m": "k"}) == {}
    assert not path.exists()


# --- the summary against a bus with known states ---------------------------------------------------

FAMILY_MEMBERS = 200
PLAIN = 30
PAUSED = ["churn.m000", "churn.m001", "plain00"]
FAILED = ["churn.m002", "plain01"]
DEAD = {"churn.m003": 2, "plain02": 1}
IN_FLIGHT = {"churn.m004": "key-4", "plain03": "key-3"}
CHAMPIONS = ["churn.m010", "churn.m011", "plain04"]


def write_config(path: Path) -> Path:
    step = {"pipeline": {"launcher": "local", "steps": [{"name": "train", "command": ["true"]}]},
            "gate": {"from_step": "train"}}
    path.write_text(json.dumps({                            # JSON is YAML
        "models": [{"name": f"plain{i:02d}", **step} for i in range(PLAIN)],
        "families": [{"name": "churn", "members": ["m000"], **step, "deploy": {"alias": "prod"}}]}))
    return path


@pytest.fixture
def bus_with_states(tmp_path, bootstrap, prefix):
    settings = Settings(broker=bootstrap, state_dir=tmp_path / "state", config=write_config(tmp_path / "l.yaml"),
                        topic_prefix=prefix, partitions=2, group=f"{prefix}-worker")
    settings.state_dir.mkdir()
    ensure_topics(bootstrap, settings.topics)
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(state_changelog(settings.group), 2, 1)])
    admin.close()
    members = [f"churn.m{i:03d}" for i in range(FAMILY_MEMBERS)]
    plain = [f"plain{i:02d}" for i in range(PLAIN)]
    with Publisher(bootstrap, settings.topics) as bus:
        for name in members + plain:
            state = ModelState(new_rows=1, paused=name in PAUSED, in_flight=IN_FLIGHT.get(name))
            bus.send_raw(state_changelog(settings.group), json.dumps(state.to_dict()).encode(),
                         key=json.dumps(name).encode())
        for name in FAILED:
            bus.send(build(ev.TrainingFailed(idempotency_key="k", run_name="r", reason="boom"), name, source="t"))
        for name, count in DEAD.items():
            for offset in range(count):
                key, value, headers = DeadLetter(value=b"{", key=name.encode(), topic=settings.topics.data,
                                                 partition=0, offset=offset, reason="not JSON").to_record()
                bus.send_raw(settings.topics.deadletter, value, key=key, headers=headers)
        bus.flush()
    client = client_of(settings.tracking_uri)
    for name in CHAMPIONS:
        register(client, name, alias="prod" if name.startswith("churn.") else "champion")
    for name, key in IN_FLIGHT.items():
        exp = client.create_experiment(name)
        client.create_run(exp, tags={"loopline.idempotency_key": key, "loopline.step": "train"})
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "LOOPLINE_BROKER": bootstrap,
           "LOOPLINE_STATE_DIR": str(settings.state_dir), "LOOPLINE_CONFIG": str(settings.config),
           "LOOPLINE_TOPIC_PREFIX": prefix, "LOOPLINE_PARTITIONS": "2", "LOOPLINE_GROUP": settings.group,
           "MLFLOW_TRACKING_URI": settings.tracking_uri, "COLUMNS": "250"}
    return settings, env


def status(env, *argv: str) -> str:
    done = subprocess.run([sys.executable, "-m", "loopline.cli", "status", *argv], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def table_rows(text: str, title: str) -> dict[str, list[str]]:
    """The rows of the table titled `title...` as {first cell: the other cells}."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title))
    rows = {}
    for line in lines[start + 1:]:
        if not line.strip() or line[0] not in "┏┃┡│└":
            break
        if line.startswith("│"):
            cells = [c.strip() for c in line.strip("│").split("│")]
            rows[cells[0]] = cells[1:]
    return rows


def test_past_200_models_status_prints_a_summary_whose_counts_are_the_states_on_the_bus(bus_with_states):
    settings, env = bus_with_states
    text = status(env)
    total = FAMILY_MEMBERS + PLAIN
    assert f"{total} models" in text and "status --all" in text
    states = table_rows(text, "models by state")
    assert states["in flight"] == ["2"] and states["paused"] == ["3"] and states["failed last run"] == ["2"]
    assert states["with dead letters"] == ["2 (3 letters)"] and states["no champion"] == [str(total - 3)]
    families = table_rows(text, "by family")
    assert families["churn"][:5] == [str(FAMILY_MEMBERS), "1", "2", "1", "1"]   # models, flight, paused, failed, dead
    assert families["-"][:5] == [str(PLAIN), "1", "1", "1", "1"]
    attention = table_rows(text, "needs attention")
    assert set(attention) == {*PAUSED, *FAILED, *DEAD}
    assert attention["churn.m003"][:2] == ["churn", "2 dead letters"]
    assert "plain05" not in text                                  # a quiet model has no row

    report = json.loads(status(env, "--json"))                   # JSON: every model, in full
    assert len(report["models"]) == total
    member = report["models"]["churn.m010"]
    assert (member["family"], member["alias"], member["champion"]["version"]) == ("churn", "prod", "2")
    assert member["champion"]["metrics"] == {"accuracy": 0.6} and member["previous"][0]["version"] == "1"
    flight = report["models"]["plain03"]["in_flight"]
    assert [(r["step"], r["status"]) for r in flight["runs"]] == [("train", "RUNNING")]
    assert report["models"]["plain01"]["last_training"] == "failed"

    assert text.count("model plain") == 0
    everything = status(env, "--all")
    assert everything.count("model churn.m") == FAMILY_MEMBERS and everything.count("model plain") == PLAIN
    family = status(env, "--family", "churn")
    # 200 members: not past the threshold, so a table each, and none of another family
    assert family.count("model churn.m") == FAMILY_MEMBERS and "plain00" not in family
    one = status(env, "--model", "churn.m010")
    assert "model churn.m010" in one and "v2 accuracy=0.6 gate passed data b1,c1" in one


def test_status_on_a_sqlite_store_does_not_import_mlflow(bus_with_states):
    settings, env = bus_with_states
    code = ("import sys; from loopline.settings import Settings; from loopline.commands import status; "
            "r = status.collect(Settings()); "
            "print(len(r['models']), r['models']['plain04']['champion']['version'], "
            "sorted(m for m in sys.modules if m.split('.')[0] == 'mlflow'))")
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(FAMILY_MEMBERS + PLAIN), "2", "[]"]
