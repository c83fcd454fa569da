"""Benchmark: trigger latency — a data-arrival event sent → its training request published.

    python -m bench.trigger [--quick] [--events 1000] [--rate 20] [--models 100] [--broker embedded|kafka|HOST:PORT]

A real stack (embedded broker, worker process) with `models` models whose retrain policy asks
for a training on every data event and whose pipeline is one trivial step (`true`). The bench
sends `events` data-arrival events at a steady `rate`, round-robin over the models (a model
still training is skipped, so every event should cause a request: one training in flight per
model would otherwise coalesce it), and receives the `training.requested` records with its own
aiokafka consumer.

Measured ("request published"): wall clock at send → the `time` attribute of the request whose
`causationid` is the event's id, which the worker sets (microseconds) as it hands the request to
its producer: one broker hop (event to the worker) plus the decision. Beside it, in the same run
and on the same broker, a bare probe sends one small record per tick at the same rate through
the same kind of aiokafka producer and consumer (fetch wait as the worker's): one hop, nothing
decided. Also reported: send → the request received by the bench's own consumer (two hops).
The first 20 events warm up (first launches, producer metadata) and are not counted.
`--broker` picks the broker it all runs on: the embedded Tansu (default), `kafka` (Apache Kafka
itself, started by devstack.kafka), or a running one. `make bench` runs both: the p99 bar needs a
broker that answers a fetch when data arrives, which Tansu does not (README, Performance).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from typing import Any

from bench import common

GOAL_P99_MS = 10.0
GOAL_RATIO = 3.0
DEFAULT_RATE = 20.0             # events/s: each launches a run (1,000 of them in 50 s)


def bench_models(count: int) -> list[dict]:
    return [common.model(f"m{i:03d}", [{"name": "train", "command": ["true"]}])
            for i in range(count)]


def run(events: int = 1000, rate: float = DEFAULT_RATE, models: int = 100,
        settle: float = 2.0, broker: str = "embedded") -> dict[str, Any]:
    with common.broker(broker) as bootstrap, \
            common.stack(bench_models(models), partitions=4, bootstrap=bootstrap) as s:
        time.sleep(settle)                      # let the start-up (recovery, first ticks) pass
        measured = asyncio.run(_measure(s, events, rate, [f"m{i:03d}" for i in range(models)]))
        rss = common.rss_mb(s.worker.proc.pid)
    trigger, probe = measured["built"], measured["probe"]
    p99, bare = trigger["p99_ms"], probe["p99_ms"]
    return {
        "benchmark": "trigger", "events": events, "rate": rate, "models": models,
        "broker": common.broker_name(broker), "machine": common.machine(),
        "trigger": trigger, "received": measured["received"], "probe": probe,
        "fetch_max_wait_ms": common.FETCH_MAX_WAIT_MS, "sent": measured["sent"],
        "requests": measured["requests"], "missing": measured["missing"],
        "launched": measured["launched"], "worker_rss_mb": rss,
        "ratio_p99": common.ratio(p99, bare),
        "goals": {"p99_ms": GOAL_P99_MS, "ratio": GOAL_RATIO},
        "holds": bool(p99 <= GOAL_P99_MS and (common.ratio(p99, bare) or 1e9) <= GOAL_RATIO
                      and not measured["missing"]),
    }


async def _measure(s, events: int, rate: float, names: list[str], warmup: int = 20) -> dict[str, Any]:
    from streams import events as ev
    from streams.codec import build, encode

    topics = s.settings.topics
    probe_topic = f"{topics.prefix}.bench-probe"
    _create_topic(s.bootstrap, probe_topic)
    c = await common.consumer(s.bootstrap, [topics.training_requests, topics.training, probe_topic])
    p = await common.producer(s.bootstrap)
    sent: dict[str, float] = {}                 # data event id -> send time
    probe_sent: dict[int, float] = {}
    latency: dict[str, float] = {}
    built: dict[str, float] = {}
    probe: list[float] = []
    busy: dict[str, float] = {}                 # model -> since (in flight)
    free_at: dict[str, float] = {}              # model -> when its training ended
    launched = 0
    done = asyncio.Event()

    async def receive():
        nonlocal launched
        while not done.is_set():
            batch = await c.getmany(timeout_ms=100)
            now = time.time()
            for tp, records in batch.items():
                for record in records:
                    if tp.topic == probe_topic:
                        at = probe_sent.get(json.loads(record.value)["i"])
                        if at is not None:
                            probe.append(now - at)
                        continue
                    doc = json.loads(record.value)
                    if doc["type"] == ev.TrainingRequested.TYPE:
                        cause = doc.get("causationid")
                        if cause in sent:
                            latency[cause] = now - sent[cause]
                            built[cause] = _timestamp(doc["time"]) - sent[cause]
                    elif doc["type"] == ev.TrainingStarted.TYPE:
                        launched += 1
                    elif doc["type"] in (ev.TrainingSucceeded.TYPE, ev.TrainingFailed.TYPE):
                        busy.pop(doc["subject"], None)
                        free_at[doc["subject"]] = now

    order = deque(names)

    async def send(i: int):
        now = time.time()
        for _ in range(len(order)):
            name = order[0]
            order.rotate(-1)
            # Not in flight, and its end seen a while ago (the trigger reads it from another topic).
            if name not in busy and now - free_at.get(name, 0.0) > 0.5:
                break
        else:
            return                              # every model busy: skip this tick (reported)
        event = build(ev.DataArrived(uri=f"file:///bench/{name}/b{i}.parquet", rows=1,
                                     version=f"b{i}"), name, source="bench/trigger")
        value = encode(event)
        busy[name] = now
        sent[event.id] = time.time()
        await p.send(topics.data, value, key=name.encode(),
                     headers=[("content-type", b"application/cloudevents+json")])
        probe_sent[i] = time.time()
        await p.send(probe_topic, json.dumps({"i": i, "pad": "x" * 200}).encode(), key=b"probe")

    try:
        await common.wait_assigned(c)
        receiver = asyncio.ensure_future(receive())
        await common.steady(warmup, rate, send)             # first launches, metadata, caches
        deadline = time.monotonic() + 10
        while len(latency) < len(sent) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        sent.clear(), latency.clear(), built.clear(), probe.clear(), probe_sent.clear()
        launched = 0
        await common.steady(events, rate, lambda i: send(warmup + i))
        deadline = time.monotonic() + 15      # every request, probe record and launch seen
        while (len(latency) < len(sent) or len(probe) < len(probe_sent)
               or launched < len(sent)) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        done.set()
        await receiver
    finally:
        await p.stop()
        await c.stop()
    return {"received": common.summary_ms(latency.values()), "built": common.summary_ms(built.values()),
            "probe": common.summary_ms(probe), "requests": len(latency), "sent": len(sent),
            "missing": len(sent) - len(latency), "launched": launched}


def _timestamp(text: str) -> float:
    from streams.envelope import parse_time

    return parse_time(text)


def _create_topic(bootstrap: str, name: str) -> None:
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(name, 1, 1)])
    finally:
        admin.close()


def show(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"trigger latency: {result['requests']:,} requests from {result['events']:,} "
                        f"data events at {result['rate']:g}/s over {result['models']} models")
    for column in ("path", "n", "p50", "p99", "max"):
        table.add_column(column, justify="left" if column == "path" else "right")
    rows = (("event sent → request published (its `time`, set as the worker hands it to "
             "its producer)", result["trigger"]),
            ("bare aiokafka probe: sent → received (one hop, same rate, same broker)", result["probe"]),
            ("event sent → request received by the bench (two hops)", result["received"]))
    for name, row in rows:
        table.add_row(name, str(row["n"]), f"{row['p50_ms']:.1f} ms", f"{row['p99_ms']:.1f} ms",
                      f"{row['max_ms']:.1f} ms")
    console = Console()
    console.print(table)
    console.print(f"fetch wait {result['fetch_max_wait_ms']} ms (worker and probe); "
                  f"p99 ratio to the bare probe: {result['ratio_p99']}x; runs launched: "
                  f"{result['launched']}; events without a request: {result['missing']}; "
                  f"worker RSS after: {result['worker_rss_mb']:.0f} MB")


BENCH = common.Bench("trigger", run, show,
                     full={"events": 1000, "rate": DEFAULT_RATE, "models": 100, "broker": "embedded"},
                     quick={"events": 40, "rate": 20.0, "models": 30, "settle": 1.0}, doc=__doc__)

if __name__ == "__main__":
    raise SystemExit(BENCH.main())
