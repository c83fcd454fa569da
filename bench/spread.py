"""Trigger latency under a steady event rate spread over every model (a part of bench.scale).

`bench.trigger` sends every event to a model that then trains; here most events only add rows:
at a fixed `rate`, data-arrival events go round-robin over all N models (at 10,000 models and
50/s, each event lands on a model that has not been touched for minutes, its state read from
the table), and a `share` of them carry enough rows to cross the model's threshold and ask for
a training. Which events cross: the next event whose model is not training (nor ended less than
0.5 s ago, as in bench.trigger), whenever fewer than `share` of the events sent so far crossed.

Measured, for the crossing events: wall clock at send → the `time` of the TrainingRequested whose
`causationid` is the event (set by the worker as it hands the request to its producer), as in
bench.trigger; and beside it a bare aiokafka probe record, one per crossing, on the same broker
(one hop, nothing decided): how noisy the machine was at that moment. The worker's RSS and CPU
are sampled while it runs.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from bench import common
from bench.trigger import _create_topic, _timestamp

FREE_AFTER_S = 0.5          # a model whose training ended this recently is not asked again


async def measure(s, names: list[str], *, rate: float, seconds: float, share: float, threshold: int,
                  warmup_events: int = 20, pid: int | None = None) -> dict[str, Any]:
    from streams import events as ev
    from streams.codec import build, encode

    topics = s.settings.topics
    probe_topic = f"{topics.prefix}.bench-spread-probe"
    _create_topic(s.bootstrap, probe_topic)
    c = await common.consumer(s.bootstrap, [topics.training_requests, topics.training, probe_topic])
    p = await common.producer(s.bootstrap)
    headers = [("content-type", b"application/cloudevents+json")]
    sent: dict[str, float] = {}              # crossing event id -> send time
    built: dict[str, float] = {}
    probe_sent: dict[int, float] = {}
    probe: list[float] = []
    busy: set[str] = set()
    free_at: dict[str, float] = {}
    counts = {"events": 0, "crossing": 0, "launched": 0}
    done = asyncio.Event()
    pid = pid or s.worker.proc.pid
    rss: list[float] = []

    async def receive():
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
                    kind = doc["type"]
                    if kind == ev.TrainingRequested.TYPE:
                        cause = doc.get("causationid")
                        if cause in sent:
                            built[cause] = _timestamp(doc["time"]) - sent[cause]
                    elif kind == ev.TrainingStarted.TYPE:
                        counts["launched"] += 1
                    elif kind in (ev.TrainingSucceeded.TYPE, ev.TrainingFailed.TYPE):
                        busy.discard(doc["subject"])
                        free_at[doc["subject"]] = now

    async def sample_rss():
        while not done.is_set():
            rss.append(common.rss_mb(pid) or 0.0)
            await asyncio.sleep(0.5)

    async def send(i: int):
        name = names[i % len(names)]
        now = time.time()
        crossing = (counts["crossing"] < share * (counts["events"] + 1) and name not in busy
                    and now - free_at.get(name, 0.0) > FREE_AFTER_S)
        rows = threshold if crossing else 1
        event = build(ev.DataArrived(uri=f"file:///bench/spread/{name}/b{i}.parquet", rows=rows,
                                     version=f"b{i}"), name, source="bench/scale")
        value = encode(event)
        counts["events"] += 1
        if crossing:
            counts["crossing"] += 1
            busy.add(name)
            sent[event.id] = time.time()
        await p.send(topics.data, value, key=name.encode(), headers=headers)
        if crossing:
            probe_sent[i] = time.time()
            await p.send(probe_topic, json.dumps({"i": i, "pad": "x" * 200}).encode(), key=b"probe")

    tasks = []
    try:
        await common.wait_assigned(c)
        tasks = [asyncio.ensure_future(receive()), asyncio.ensure_future(sample_rss())]
        await common.steady(warmup_events, rate, send)        # metadata, first launches
        deadline = time.monotonic() + 10
        while len(built) < len(sent) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for seen in (sent, built, probe_sent):
            seen.clear()
        probe.clear()
        counts.update(events=0, crossing=0, launched=0)
        rss.clear()
        events = max(1, round(rate * seconds))
        cpu0, wall0 = _cpu(pid), time.perf_counter()
        await common.steady(events, rate, lambda i: send(warmup_events + i))
        cpu1, wall1 = _cpu(pid), time.perf_counter()
        deadline = time.monotonic() + 15                      # every request and probe seen
        while (len(built) < len(sent) or len(probe) < len(probe_sent)) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    finally:
        done.set()
        for task in tasks:
            await task
        await p.stop()
        await c.stop()
    return {"rate": rate, "seconds": seconds, "share": share, "events": counts["events"],
            "crossing": counts["crossing"], "requests": len(built), "missing": len(sent) - len(built),
            "launched": counts["launched"], "trigger": common.summary_ms(built.values()),
            "probe": common.summary_ms(probe),
            "models_touched": min(counts["events"] + warmup_events, len(names)),
            "worker_cpu_pct": round(100 * (cpu1 - cpu0) / (wall1 - wall0), 1),
            "rss_max_mb": round(max(rss), 1) if rss else None}


def run(s, names: list[str], **kwargs) -> dict[str, Any]:
    return asyncio.run(measure(s, names, **kwargs))


def _cpu(pid: int) -> float:
    from bench.procfs import cpu_time

    try:
        return cpu_time(pid)
    except OSError:
        return 0.0
