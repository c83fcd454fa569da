"""What every benchmark shares: the machine, percentiles, a bench `loopline.yaml`, a real stack,
the bare-broker probes every number is compared with, and how one is run, shown and written.

The probes are plain aiokafka clients on the same broker as the stack, run in the same process
and measured the same way as the loop (wall clock at send, wall clock at receipt), so each
benchmark can report its number as a ratio to what the broker itself costs on this machine.
A figure that was not measured in the run (a number quoted from elsewhere) is printed with
`quoted()`, so nobody reads it as one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

import yaml

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parent.parent
# The worker's fetch wait (LOOPLINE_FETCH_MAX_WAIT_MS, inherited by the bench's worker): the bare
# probes use the same value, so a ratio compares like with like.
FETCH_MAX_WAIT_MS = int(os.environ.get("LOOPLINE_FETCH_MAX_WAIT_MS") or 10)


# --- the machine --------------------------------------------------------------------------------

def machine() -> dict[str, Any]:
    """Cores, CPU model, load and Python: what a number is worth depends on them."""
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cores": os.cpu_count(), "cpu": cpu or platform.processor(),
            "load": [round(x, 2) for x in os.getloadavg()], "python": platform.python_version(),
            "platform": platform.platform(terse=True)}


def rss_mb(pid: int) -> float | None:
    """Resident set size of a process (VmRSS of /proc/<pid>/status), in MB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


# --- numbers ------------------------------------------------------------------------------------

def quantile(values: list[float], q: float) -> float:
    """Nearest-rank quantile (p99 of 1,000 values is the 990th smallest)."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


def summary_ms(seconds: Iterable[float]) -> dict[str, float]:
    """n, p50, p99, max and mean of latencies given in seconds, reported in milliseconds."""
    values = [s * 1000 for s in seconds]
    if not values:
        return {"n": 0, "p50_ms": math.nan, "p99_ms": math.nan, "max_ms": math.nan, "mean_ms": math.nan}
    return {"n": len(values), "p50_ms": round(quantile(values, 0.5), 3),
            "p99_ms": round(quantile(values, 0.99), 3), "max_ms": round(max(values), 3),
            "mean_ms": round(statistics.fmean(values), 3)}


def ratio(measured: float, baseline: float) -> float | None:
    if not baseline or math.isnan(baseline) or math.isnan(measured):
        return None
    return round(measured / baseline, 3)


def quoted(value: str, source: str) -> str:
    """A figure this run did not measure, as it must be printed: marked, with where it comes from."""
    return f"quoted: {value} (source: {source})"


# --- running one ----------------------------------------------------------------------------------

QUICK_HELP = "small sizes: everything runs, the numbers are not worth quoting"


def write_result(name: str, result: dict[str, Any]) -> Path:
    """`<name>-<time>.json` (returned) and `<name>-latest.json` under bench/results/."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = RESULTS / f"{name}-{stamp}.json"
    text = json.dumps(result, indent=2, default=str)
    path.write_text(text)
    (RESULTS / f"{name}-latest.json").write_text(text)
    return path


@dataclass(frozen=True)
class Bench:
    """One benchmark, as `python -m bench` and `python -m bench.<name>` run it.

    `full` holds the sizes of a real run: each key is a keyword of `run` and a command-line flag
    (its type that of the value; None makes a text flag). `quick` is what `--quick` changes.
    """

    name: str
    run: Callable[..., dict[str, Any]]
    show: Callable[[dict[str, Any]], None]
    full: Mapping[str, Any]
    quick: Mapping[str, Any]
    doc: str = ""

    def sizes(self, quick: bool = False) -> dict[str, Any]:
        return {**self.full, **self.quick} if quick else dict(self.full)

    def report(self, result: dict[str, Any], name: str | None = None) -> Path:
        """Print the result's table and write its JSON to bench/results/ (as `name`, by default
        the bench's own); the timestamped file."""
        self.show(result)
        path = write_result(name or self.name, result)
        print(f"wrote {path}")
        return path

    def main(self, argv: list[str] | None = None) -> int:
        """`python -m bench.<name> [--quick] [--<size> N ...]`: run, show, write."""
        parser = argparse.ArgumentParser(prog=f"python -m bench.{self.name}", description=self.doc,
                                         formatter_class=argparse.RawDescriptionHelpFormatter)
        parser.add_argument("--quick", action="store_true", help=QUICK_HELP)
        for key, default in self.full.items():
            quick = f"; --quick: {self.quick[key]}" if key in self.quick else ""
            parser.add_argument(f"--{key.replace('_', '-')}", type=str if default is None else type(default),
                                help=f"full run: {'not set' if default is None else default}{quick}")
        args = vars(parser.parse_args(argv))
        sizes = self.sizes(args.pop("quick"))
        sizes.update({key: value for key, value in args.items() if value is not None})
        self.report(self.run(**sizes))
        return 0


# --- a bench stack --------------------------------------------------------------------------------

@contextmanager
def broker(choice: str = "embedded") -> Iterator[str]:
    """A bootstrap address: `embedded` (Tansu), `kafka` (Apache Kafka itself, devstack.kafka), or
    HOST:PORT of a running broker. The bare baseline of a bench runs on the same one."""
    if choice == "embedded":
        from streams.broker import EmbeddedBroker

        with EmbeddedBroker() as embedded:
            yield embedded.bootstrap
    elif choice == "kafka":
        from devstack.kafka import ApacheKafka

        with ApacheKafka() as kafka:
            yield kafka.bootstrap
    else:
        yield choice


def broker_name(choice: str) -> str:
    return {"embedded": "embedded (Tansu)", "kafka": "Apache Kafka (KRaft, devstack.kafka)"}.get(choice, choice)


def model(name: str, steps: list[dict], *, min_new_rows: int = 1, gate_step: str | None = None,
          metrics: dict | None = None, workdir: Path = REPO) -> dict:
    """One model of a bench `loopline.yaml`: every data event is enough to ask for a training."""
    entry: dict[str, Any] = {
        "name": name,
        "pipeline": {"launcher": "local", "workdir": str(workdir), "steps": steps},
        "retrain": {"min_new_rows": min_new_rows, "window_batches": 1, "cooldown_seconds": 0},
        "gate": {"metric": "accuracy", "min_value": 0.0, "min_improvement": -1.0,
                 "from_step": gate_step or steps[-1]["name"]},
    }
    if metrics is not None:
        entry["metrics"] = metrics
    return entry


def write_config(path: Path, models: list[dict] | dict) -> Path:
    """A bench `loopline.yaml`: a list of models, or a whole file's content (e.g. families)."""
    path.write_text(yaml.safe_dump(models if isinstance(models, dict) else {"models": models}, sort_keys=False))
    return path


@contextmanager
def stack(models: list[dict] | dict, *, observe: tuple[str, ...] = (), serving: bool = False,
          bootstrap: str | None = None, partitions: int = 4, prefix: str | None = None,
          extra_env: dict | None = None) -> Iterator[Any]:
    """A LocalStack (embedded broker unless `bootstrap`, worker, optionally serving) on a
    bench config in a temporary state dir; the observer reads only `observe` (+ clock)."""
    from devstack.stack import LocalStack

    with tempfile.TemporaryDirectory(prefix="loopline-bench-") as tmp:
        root = Path(tmp)
        config = write_config(root / "loopline.yaml", models)
        env = {"LOOPLINE_LAG_INTERVAL": "30", **(extra_env or {})}
        with LocalStack(root / "state", config, bootstrap=bootstrap, partitions=partitions,
                        prefix=prefix or LocalStack.unique_prefix("b"), serving=serving, extra_env=env,
                        observe=observe) as running:
            running.root = root
            yield running


def python_step(code: str) -> list[str]:
    """A step command running `code` with the interpreter that runs loopline."""
    return [sys.executable, "-c", code]


# --- bare-broker probes -----------------------------------------------------------------------------

async def consumer(bootstrap: str, topics: list[str], **config):
    from aiokafka import AIOKafkaConsumer

    c = AIOKafkaConsumer(*topics, bootstrap_servers=bootstrap, group_id=None,
                         auto_offset_reset=config.pop("auto_offset_reset", "latest"),
                         fetch_max_wait_ms=config.pop("fetch_max_wait_ms", FETCH_MAX_WAIT_MS),
                         enable_auto_commit=False, **config)
    await c.start()
    return c


async def producer(bootstrap: str, **config):
    from aiokafka import AIOKafkaProducer

    p = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=config.pop("linger_ms", 0), **config)
    await p.start()
    return p


async def wait_assigned(c, timeout: float = 10.0) -> None:
    """Until the consumer has positions for its partitions (so nothing sent later is missed)."""
    deadline = time.monotonic() + timeout
    while not c.assignment() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    for tp in c.assignment():
        await c.position(tp)


async def probe_latency(bootstrap: str, count: int, rate: float,
                        topic: str | None = None) -> list[float]:
    """Bare send → receive latency on the broker: one aiokafka producer (linger 0) sends
    `count` small JSON records at `rate`/s, one aiokafka consumer (fetch wait as the worker's)
    receives them; seconds per record, wall clock at send to wall clock at receipt."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    topic = topic or f"bench-probe-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(topic, 1, 1)])
    finally:
        admin.close()
    c = await consumer(bootstrap, [topic])
    p = await producer(bootstrap)
    sent: dict[int, float] = {}
    latencies: list[float] = []
    try:
        await wait_assigned(c)

        async def receive():
            while len(latencies) < count:
                batch = await c.getmany(timeout_ms=200)
                now = time.time()
                for records in batch.values():
                    for record in records:
                        i = json.loads(record.value)["i"]
                        latencies.append(now - sent[i])

        receiver = asyncio.ensure_future(receive())
        await steady(count, rate, lambda i: _send_probe(p, topic, i, sent))
        await asyncio.wait_for(receiver, timeout=30)
    finally:
        await p.stop()
        await c.stop()
    return latencies


async def _send_probe(p, topic: str, i: int, sent: dict[int, float]) -> None:
    sent[i] = time.time()
    await p.send(topic, json.dumps({"i": i, "pad": "x" * 200}).encode(), key=b"probe")


async def steady(count: int, rate: float, send) -> None:
    """Call `send(i)` `count` times at a steady `rate` per second (absolute schedule, no drift)."""
    start = time.monotonic()
    for i in range(count):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await send(i)


def probe_parse_rate(bootstrap: str, topic: str, count: int, max_records: int = 20_000) -> dict:
    """Bare consume + parse: one aiokafka consumer reads `count` records of `topic` from the
    beginning (getmany, `max_records` a call) and json.loads each; records per second."""

    async def go():
        c = await consumer(bootstrap, [topic], auto_offset_reset="earliest",
                           max_partition_fetch_bytes=8 << 20, fetch_max_bytes=64 << 20)
        seen, timed, checksum = 0, 0, 0
        started = None
        try:
            while seen < count:
                batch = await c.getmany(timeout_ms=1000, max_records=max_records)
                n = 0
                for records in batch.values():
                    for record in records:
                        checksum += len(json.loads(record.value))
                    n += len(records)
                seen += n
                if started is None:
                    if n:       # the clock starts after the first batch (connection, metadata)
                        started = time.perf_counter()
                else:
                    timed += n
            elapsed = time.perf_counter() - started if started else 0.0
        finally:
            await c.stop()
        return {"records": seen, "timed_records": timed, "seconds": round(elapsed, 3),
                "per_second": round(timed / elapsed) if elapsed else None}

    return asyncio.run(go())


def probe_parse_rate_librdkafka(bootstrap: str, topic: str, count: int, max_records: int = 20_000) -> dict:
    """The same bare consume + parse through librdkafka (confluent-kafka, the client of the
    worker's feedback consumer): one consumer, `consume(max_records)`, json.loads each."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-bare-{uuid.uuid4().hex[:8]}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False,
                  "fetch.wait.max.ms": FETCH_MAX_WAIT_MS, "fetch.max.bytes": 64 << 20,
                  "max.partition.fetch.bytes": 8 << 20,
                  "fetch.queue.backoff.ms": 10})   # as the worker's: no 1 s pause on a full queue
    # Assigned, not subscribed: a bare reader needs no group, and a group join cost ~23 s on
    # Tansu (it holds a JoinGroup for the rebalance timeout); the clock starts after the first
    # batch either way.
    partitions = c.list_topics(topic, timeout=30).topics[topic].partitions
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    seen, timed, checksum, started = 0, 0, 0, None
    deadline = time.monotonic() + 120
    try:
        while seen < count and time.monotonic() < deadline:
            messages = c.consume(max_records, 1.0)
            for m in messages:
                if m.error() is None:
                    checksum += len(json.loads(m.value()))
            seen += len(messages)
            if started is None:
                if messages:       # the clock starts after the first batch (join, metadata)
                    started = time.perf_counter()
            else:
                timed += len(messages)
        elapsed = time.perf_counter() - started if started else 0.0
    finally:
        c.close()
    return {"records": seen, "timed_records": timed, "seconds": round(elapsed, 3),
            "per_second": round(timed / elapsed) if elapsed else None}
