"""Benchmark: serving — one-row predictions from `loopline serve` and from `mlflow models serve`.

    python -m bench.serving [--quick] [--requests 3000] [--requests-c1 1000] [--warmup 200]

The example classifier (examples/classifier: scaler + SGD logistic regression, skops) is trained
once into a temporary MLflow SQLite store, registered and given the `champion` alias. The same
registered version is then served, on this machine and in this run, by

  - `loopline serve` (one process; it follows an embedded Tansu broker, as in production), and
  - `mlflow models serve -m models:/NAME@champion --env-manager local --workers 1` (FastAPI +
    uvicorn, one worker process): the baseline every ratio is taken against.

One client for both (asyncio + aiohttp, one keep-alive connection per concurrent caller, in
this process), one row per request, at concurrency 32 (`requests` requests) and 1
(`requests_c1`), each after `warmup` requests that are not counted. Latency is the caller's
wall clock from send to the whole answer read; requests/s is counted requests / wall time of
the run. The client's own CPU use is reported beside each run: near 100% of a core means the
client, not the server, set the pace. Both servers answer the same rows identically (checked).

Routing overhead: an `ExperimentUpdated` (bandit, Thompson sampling, running) with two arms of
the *same* version is published for the model; once loopline's answers carry the experiment
(its id is in the signed prediction ids), concurrency 1 is measured again. Same model, so the
difference to the direct run just before it is what routing costs.

Goals (issue 15): loopline >= 2x mlflow's requests/s at concurrency 32; loopline p99 <= 10 ms
at concurrency 1; bandit - direct <= 1 ms at p50.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench import common

GOAL_RPS_RATIO = 2.0            # loopline / mlflow requests/s at concurrency 32
GOAL_P99_C1_MS = 10.0           # loopline p99 at concurrency 1
GOAL_ROUTING_P50_MS = 1.0       # bandit - direct p50 at concurrency 1
HIGH = 32                       # the concurrency of the throughput goal
MODEL = "bench-serving"
EXPERIMENT = "bench-serving-bandit"
ROWS = 64                       # distinct request rows, cycled (one per request)


# --- the model ------------------------------------------------------------------------------------

def train_and_register(tracking_uri: str, artifacts: Path) -> tuple[str, list[dict[str, float]]]:
    """The example classifier trained on one batch, logged as the example's train step logs it,
    registered as MODEL with the `champion` alias; its version and a few request rows."""
    import mlflow
    import mlflow.sklearn
    from mlflow.models import infer_signature

    from examples.classifier import data
    from examples.classifier.train import LABEL, fit

    frame = data.batch(0, rows=2000)
    x, y = frame.drop(columns=[LABEL]), frame[LABEL]
    model = fit(x, y, epochs=5, alpha=1e-4, seed=0, on_epoch=lambda epoch, metrics: None)
    # mlflow.set_tracking_uri also exports MLFLOW_TRACKING_URI to every process started later
    # (the smoke test runs inside the test session): put the environment back afterwards.
    exported = {name: os.environ.get(name) for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    try:
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
        experiment = mlflow.create_experiment("bench-serving", artifact_location=artifacts.as_uri())
        example = x.head(5)
        with mlflow.start_run(experiment_id=experiment):
            mlflow.sklearn.log_model(
                sk_model=model, name="model", signature=infer_signature(example, model.predict(example)),
                input_example=example, serialization_format="skops", registered_model_name=MODEL,
                pip_requirements=mlflow.sklearn.get_default_pip_requirements(include_skops=True))
    finally:
        mlflow.set_tracking_uri(exported["MLFLOW_TRACKING_URI"])
        mlflow.set_registry_uri(exported["MLFLOW_REGISTRY_URI"])
        for name, value in exported.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    version = max(int(v.version) for v in client.search_model_versions(f"name='{MODEL}'"))
    client.set_registered_model_alias(MODEL, "champion", str(version))
    rows = [{k: float(v) for k, v in row.items()} for row in data.batch(1, rows=ROWS)
            .drop(columns=[LABEL]).to_dict("records")]
    return str(version), rows


# --- the two servers ------------------------------------------------------------------------------

class Server:
    """How the client talks to one server: its predict URL and body, and how to read an answer."""

    def __init__(self, name: str, port: int, process):
        self.name, self.port, self.process = name, port, process

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def request(self, row: dict) -> tuple[str, bytes]:
        if self.name == "loopline":
            return f"{self.base}/models/{MODEL}/predict", json.dumps({"rows": [row]}).encode()
        return f"{self.base}/invocations", json.dumps({"dataframe_records": [row]}).encode()

    @staticmethod
    def prediction(answer: dict) -> Any:
        return answer["predictions"][0]


def start_loopline(root: Path, bootstrap: str, prefix: str, tracking_uri: str) -> Server:
    from devstack.stack import REPO, Process
    from streams.broker import free_port

    config = common.write_config(root / "loopline.yaml",
                                 [common.model(MODEL, [{"name": "train", "command": ["true"]}])])
    port = free_port()
    env = {**os.environ, "LOOPLINE_BROKER": bootstrap, "LOOPLINE_STATE_DIR": str(root / "state"),
           "LOOPLINE_CONFIG": str(config), "LOOPLINE_TOPIC_PREFIX": prefix, "LOOPLINE_PARTITIONS": "4",
           "LOOPLINE_MLFLOW_URI": tracking_uri, "MLFLOW_DISABLE_TELEMETRY": "true",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    (root / "state").mkdir(exist_ok=True)
    process = Process("loopline-serve", [sys.executable, "-m", "loopline.cli", "serve", "--host", "127.0.0.1",
                                         "--port", str(port)], env, root / "loopline-serve.log")
    return Server("loopline", port, process)


def start_mlflow(root: Path, tracking_uri: str) -> Server:
    from devstack.stack import Process
    from streams.broker import free_port

    binary = Path(sys.executable).with_name("mlflow")
    command = [str(binary)] if binary.exists() else [shutil.which("mlflow") or "mlflow"]
    port = free_port()
    # mlflow execs `uvicorn` by name: this interpreter's scripts first on the PATH.
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = {**os.environ, "PATH": path, "MLFLOW_TRACKING_URI": tracking_uri, "MLFLOW_REGISTRY_URI": tracking_uri,
           "MLFLOW_DISABLE_TELEMETRY": "true"}
    process = Process("mlflow-serve", [*command, "models", "serve", "-m", f"models:/{MODEL}@champion",
                                       "--env-manager", "local", "--workers", "1", "--host", "127.0.0.1",
                                       "--port", str(port)], env, root / "mlflow-serve.log")
    return Server("mlflow", port, process)


def group(pgid: int) -> list[int]:
    """The processes of a process group (each server was started as its own session)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            pids.append(int(stat.parent.name))
    return pids


def group_rss_mb(pgid: int) -> float:
    """RSS of a server's whole process group: `mlflow models serve` is a CLI and its uvicorn."""
    return round(sum(common.rss_mb(pid) or 0.0 for pid in group(pgid)), 1)


def stop_group(process) -> None:
    """SIGTERM to the process group we started, then the usual stop (waits, kills if it must)."""
    import signal

    if process.proc.poll() is None:
        try:
            os.killpg(process.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    process.stop()
    for pid in group(process.proc.pid):       # a child that outlived its parent's SIGTERM
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def wait_serving(server: Server, row: dict, timeout: float = 180.0) -> Any:
    """Until the server is ready and answers a prediction; that prediction. loopline: /readyz
    (/healthz where /readyz is not there yet); mlflow: /ping."""
    import urllib.error
    import urllib.request

    probes = ["/readyz", "/healthz"] if server.name == "loopline" else ["/ping"]
    deadline = time.monotonic() + timeout
    while True:
        server.process.check()
        if time.monotonic() > deadline:
            raise RuntimeError(f"{server.name} not serving after {timeout:.0f}s:\n{server.process.tail()}")
        try:
            for path in probes:
                try:
                    with urllib.request.urlopen(server.base + path, timeout=2):
                        break                       # 200: ready
                except urllib.error.HTTPError as exc:
                    if exc.code != 404:             # 503: not ready yet; 404: try the next probe
                        raise
            else:
                raise OSError("no readiness probe answered")
            url, body = server.request(row)
            request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=10) as response:
                return Server.prediction(json.loads(response.read()))
        except (OSError, KeyError, ValueError):
            time.sleep(0.2)


# --- the client -----------------------------------------------------------------------------------

async def load(server: Server, rows: list[dict], concurrency: int, count: int, warmup: int) -> dict[str, Any]:
    """`warmup` then `count` one-row requests by `concurrency` callers on keep-alive connections:
    latencies, requests/s, errors, the client's CPU, and the experiments the answers carried."""
    import aiohttp

    bodies = [server.request(row) for row in rows]
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=30)) as session:

        async def run(total: int) -> tuple[list[float], int, list]:
            latencies: list[float] = []
            experiments: list = []
            errors = 0
            issued = 0

            async def caller():
                nonlocal issued, errors
                while issued < total:
                    i = issued
                    issued += 1
                    url, body = bodies[i % len(bodies)]
                    started = time.perf_counter()
                    try:
                        async with session.post(url, data=body,
                                                headers={"Content-Type": "application/json"}) as response:
                            payload = await response.read()
                            ok = response.status == 200
                    except (aiohttp.ClientError, asyncio.TimeoutError):
                        ok, payload = False, b""
                    if ok:
                        latencies.append(time.perf_counter() - started)
                        if server.name == "loopline":
                            experiments.append(experiment_of(json.loads(payload)))
                    else:
                        errors += 1

            await asyncio.gather(*(caller() for _ in range(concurrency)))
            return latencies, errors, experiments

        await run(warmup)
        cpu, wall = time.process_time(), time.perf_counter()
        latencies, errors, experiments = await run(count)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {**common.summary_ms(latencies), "errors": errors, "seconds": round(wall, 3),
            "per_second": round(len(latencies) / wall, 1) if wall else None,
            "client_cpu": round(cpu / wall, 2) if wall else None,
            "routed": (round(sum(e == EXPERIMENT for e in experiments) / len(experiments), 3)
                       if experiments else None)}


def experiment_of(answer: dict) -> str | None:
    """The experiment a loopline answer was routed by: the `e` of its signed prediction id
    (base64url JSON before the '.'); None for the champion or an id of another shape."""
    ids = answer.get("prediction_ids") or []
    if not ids or not isinstance(ids[0], str) or "." not in ids[0]:
        return None
    payload = ids[0].split(".", 1)[0]
    try:
        return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))).get("e")
    except ValueError:
        return None


def publish_bandit(bootstrap: str, prefix: str, version: str) -> None:
    """A running Thompson-sampling bandit whose two arms are the same version: routing happens,
    the model answering does not change."""
    from streams import events as ev
    from streams.codec import build
    from streams.publisher import Publisher
    from streams.topics import Topics

    now = time.time()
    arms = [ev.ArmState(version=version, role="champion", weight=0.5),
            ev.ArmState(version=version, role="challenger", weight=0.5)]
    state = ev.ExperimentUpdated(experiment=EXPERIMENT, strategy="bandit", status="running", arms=arms,
                                 started_at=now, step_started_at=now, algorithm="thompson")
    with Publisher(bootstrap, Topics(prefix)) as bus:
        bus.publish(build(state, MODEL, source="bench/serving"))


async def wait_routed(server: Server, row: dict, timeout: float) -> bool:
    """Until an answer carries the bandit experiment (the replica has read the state)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = await load(server, [row], 1, 1, 0)
        if result["routed"] == 1.0:
            return True
        await asyncio.sleep(0.1)
    return False


# --- the run ------------------------------------------------------------------------------------

def run(requests: int = 3000, requests_c1: int = 1000, warmup: int = 200, routed_timeout: float = 60.0,
        broker: str = "embedded") -> dict[str, Any]:
    from streams.admin import ensure_topics
    from streams.topics import Topics

    from devstack.stack import LocalStack

    with tempfile.TemporaryDirectory(prefix="loopline-bench-serving-") as tmp, ExitStack() as stack:
        root = Path(tmp)
        tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
        print("training and registering the example classifier …", flush=True)
        version, rows = train_and_register(tracking_uri, root / "artifacts")
        bootstrap = stack.enter_context(common.broker(broker))
        prefix = LocalStack.unique_prefix("bs")
        ensure_topics(bootstrap, Topics(prefix))
        ours = start_loopline(root, bootstrap, prefix, tracking_uri)
        stack.callback(ours.process.stop)
        theirs = start_mlflow(root, tracking_uri)
        stack.callback(stop_group, theirs.process)      # the CLI and the uvicorn it started
        same = [(wait_serving(ours, row), wait_serving(theirs, row)) for row in rows[:8]]
        if any(a != b for a, b in same):
            raise RuntimeError(f"the two servers disagree on the same rows: {same}")
        print(f"both serving {MODEL} v{version}; load {common.machine()['load'][0]:.2f}", flush=True)

        runs: list[dict[str, Any]] = []

        def measure(server: Server, concurrency: int, count: int, route: str = "direct") -> dict[str, Any]:
            result = asyncio.run(load(server, rows, concurrency, count, warmup))
            row = {"server": server.name, "concurrency": concurrency, "route": route, **result}
            runs.append(row)
            print(f"  {server.name:8} c={concurrency:<3} {route:6} p50 {row['p50_ms']:.2f} ms  "
                  f"p99 {row['p99_ms']:.2f} ms  {row['per_second']:,.0f}/s  errors {row['errors']}  "
                  f"client CPU {row['client_cpu']:.0%}", flush=True)
            return row

        # Each pair back to back (mlflow first), so the machine's load drifts little between them;
        # the direct concurrency-1 run is the one right before the bandit's.
        mlflow_high, loopline_high = measure(theirs, HIGH, requests), measure(ours, HIGH, requests)
        mlflow_one, loopline_one = measure(theirs, 1, requests_c1), measure(ours, 1, requests_c1)
        publish_bandit(bootstrap, prefix, version)
        routed = asyncio.run(wait_routed(ours, rows[0], routed_timeout))
        bandit = measure(ours, 1, requests_c1, "bandit") if routed else None
        loopline_rss = group_rss_mb(ours.process.proc.pid)
        mlflow_rss = group_rss_mb(theirs.process.proc.pid)

    ratios = {
        "rps_c32": common.ratio(loopline_high["per_second"], mlflow_high["per_second"]),
        "p50_c32": common.ratio(loopline_high["p50_ms"], mlflow_high["p50_ms"]),
        "p99_c32": common.ratio(loopline_high["p99_ms"], mlflow_high["p99_ms"]),
        "rps_c1": common.ratio(loopline_one["per_second"], mlflow_one["per_second"]),
        "p50_c1": common.ratio(loopline_one["p50_ms"], mlflow_one["p50_ms"]),
        "p99_c1": common.ratio(loopline_one["p99_ms"], mlflow_one["p99_ms"]),
    }
    overhead = round(bandit["p50_ms"] - loopline_one["p50_ms"], 3) if bandit else None
    met = {
        "rps_ratio_c32": bool(ratios["rps_c32"] is not None and ratios["rps_c32"] >= GOAL_RPS_RATIO),
        "p99_c1": bool(loopline_one["p99_ms"] <= GOAL_P99_C1_MS),
        "routing_p50": bool(overhead is not None and overhead <= GOAL_ROUTING_P50_MS),
    }
    errors = sum(r["errors"] for r in runs)
    return {
        "benchmark": "serving", "model": MODEL, "version": version, "machine": common.machine(),
        "broker": common.broker_name(broker), "requests": requests, "requests_c1": requests_c1,
        "warmup": warmup, "concurrency": [1, HIGH], "runs": runs, "ratios": ratios,
        "routing": {"experiment": EXPERIMENT, "algorithm": "thompson", "routed": routed,
                    "direct_p50_ms": loopline_one["p50_ms"],
                    "bandit_p50_ms": bandit["p50_ms"] if bandit else None, "overhead_p50_ms": overhead},
        "rss_mb": {"loopline": loopline_rss, "mlflow": mlflow_rss}, "errors": errors,
        "goals": {"rps_ratio_c32": GOAL_RPS_RATIO, "p99_c1_ms": GOAL_P99_C1_MS,
                  "routing_p50_ms": GOAL_ROUTING_P50_MS},
        "goals_met": met, "holds": all(met.values()) and errors == 0,
    }


def show(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(Console().width, 120))
    table = Table(title=f"serving {result['model']} v{result['version']}: one-row requests "
                        f"({result['requests']:,} at c={HIGH}, {result['requests_c1']:,} at c=1, after "
                        f"{result['warmup']} warm-up each)")
    for column in ("server", "concurrency", "route", "n", "p50", "p99", "requests/s", "errors", "client CPU"):
        table.add_column(column, justify="left" if column in ("server", "route") else "right")
    for row in result["runs"]:
        table.add_row(row["server"], str(row["concurrency"]), row["route"], f"{row['n']:,}",
                      f"{row['p50_ms']:.2f} ms", f"{row['p99_ms']:.2f} ms", f"{row['per_second']:,.0f}",
                      str(row["errors"]), f"{row['client_cpu']:.0%}")
    console.print(table)
    ratios = Table(title="loopline / mlflow models serve (same model, same machine, same run)")
    for column in ("measure", f"c={HIGH}", "c=1"):
        ratios.add_column(column, justify="left" if column == "measure" else "right")
    r = result["ratios"]
    for label, key in (("requests/s (higher is better)", "rps"), ("p50 latency (lower is better)", "p50"),
                       ("p99 latency (lower is better)", "p99")):
        ratios.add_row(label, f"{r[f'{key}_c32']}x", f"{r[f'{key}_c1']}x")
    console.print(ratios)
    routing, met, goals = result["routing"], result["goals_met"], result["goals"]
    one = next(x for x in result["runs"] if x["server"] == "loopline" and x["concurrency"] == 1)
    verdict = {True: "[green]met[/]", False: "[red]not met[/]"}
    console.print(f"goal: loopline >= {goals['rps_ratio_c32']:g}x mlflow's requests/s at c={HIGH}: "
                  f"{r['rps_c32']}x — {verdict[met['rps_ratio_c32']]}")
    console.print(f"goal: loopline p99 <= {goals['p99_c1_ms']:g} ms at c=1: {one['p99_ms']:.2f} ms — "
                  f"{verdict[met['p99_c1']]}")
    if routing["routed"]:
        console.print(f"goal: routing (bandit, Thompson, 2 arms) - direct <= {goals['routing_p50_ms']:g} ms "
                      f"p50 at c=1: {routing['bandit_p50_ms']:.2f} - {routing['direct_p50_ms']:.2f} = "
                      f"{routing['overhead_p50_ms']:+.2f} ms — {verdict[met['routing_p50']]}")
    else:
        console.print("goal: routing overhead — [red]not measured[/]: loopline's answers never carried the "
                      "bandit experiment (the server does not route by experiment.state)")
    console.print(f"RSS after: loopline {result['rss_mb']['loopline'] or 0:.0f} MB, mlflow "
                  f"{result['rss_mb']['mlflow'] or 0:.0f} MB; errors: {result['errors']}; "
                  f"client CPU near 100% means the client set the pace")


BENCH = common.Bench("serving", run, show,
                     full={"requests": 3000, "requests_c1": 1000, "warmup": 200, "broker": "embedded"},
                     quick={"requests": 300, "requests_c1": 100, "warmup": 20}, doc=__doc__)

if __name__ == "__main__":
    raise SystemExit(BENCH.main())
