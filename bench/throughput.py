"""Benchmark: metric-event throughput — labelled predictions aggregated per second by the worker.

    python -m bench.throughput [--quick] [--events 500000] [--models 8] [--broker embedded|kafka|HOST:PORT]

`events` FeedbackReceived events (the serving endpoint's format, ~450 bytes each, spread over
`models` models and a few seconds of event time) are loaded into the feedback topic of a broker
(the embedded Tansu by default; `--broker kafka` starts Apache Kafka itself) first. Then, same broker, same records:

- bare: one aiokafka consumer reads them all from the beginning (`getmany`, 20,000 a call) and
  `json.loads` each: what parsing alone costs on this machine (the goal's baseline);
- bare librdkafka: the same through confluent-kafka, the client of the worker's feedback
  consumer (`agents.batch`): what that client plus json.loads costs, for context;
- loopline: the worker starts and its metric-window consumer aggregates them into 1-second
  tumbling windows per model and version (decoded and validated, scored, folded, windows
  reported, offsets committed). The rate is read from the worker's own counter
  (`loopline_feedback_total{outcome="counted"}` on /metrics, sampled every 50 ms) between its
  first movement and the last record; every reported window's count is added up to check that
  nothing was lost.

The worker's RSS is sampled while it works.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.request
import uuid
from typing import Any

from bench import common

GOAL_PER_SECOND = 100_000
GOAL_RATIO = 0.3
_COUNTED = re.compile(r'^loopline_feedback_total\{[^}]*outcome="counted"[^}]*\} ([0-9.e+]+)$', re.M)


def bench_models(count: int) -> list[dict]:
    metrics = {"metric": "accuracy", "floor": 0.0, "window_seconds": 1, "min_count": 1,
               "grace_seconds": 1}
    return [common.model(f"f{i}", [{"name": "train", "command": ["true"]}], metrics=metrics)
            for i in range(count)]


def records(events: int, models: int, span: float = 5.0) -> list[tuple[int, bytes, bytes]]:
    """(model index, key, value) of `events` feedback events, event times over `span` seconds."""
    from streams import events as ev
    from streams.codec import build
    from streams.envelope import utc_now

    template = build(ev.FeedbackReceived(prediction_id="P", model_version="1", label=1, prediction=1,
                                         predicted_at=0.0), "M", source="loopline/serving").to_dict()
    now = time.time()
    out = []
    times = [utc_now()]
    for i in range(events):
        if i % 1000 == 0:                     # event time moves through `span` seconds
            from datetime import datetime, timezone

            at = now - span + span * i / events
            times[0] = datetime.fromtimestamp(at, timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")
        m = i % models
        doc = dict(template, id=uuid.uuid4().hex, subject=f"f{m}", time=times[0])
        doc["correlationid"] = doc["id"]
        doc["data"] = {"schema_version": 1, "prediction_id": f"p{i}", "model_version": "1",
                       "label": i % 2, "prediction": 1, "predicted_at": now}
        out.append((m, f"f{m}".encode(), json.dumps(doc, separators=(",", ":")).encode()))
    return out


async def load(bootstrap: str, topic: str, partitions: int, items) -> None:
    """Produce fast: aiokafka record batches, one partition per model."""
    p = await common.producer(bootstrap, linger_ms=50, max_batch_size=1 << 20,
                              max_request_size=8 << 20)
    headers = [("content-type", b"application/cloudevents+json")]
    try:
        pending, batches = [], {}
        for m, key, value in items:
            partition = m % partitions
            batch = batches.get(partition) or p.create_batch()
            batches[partition] = batch
            if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                pending.append(await p.send_batch(batch, topic, partition=partition))
                batch = batches[partition] = p.create_batch()
                batch.append(key=key, value=value, timestamp=None, headers=headers)
        for partition, batch in batches.items():
            pending.append(await p.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*pending)
    finally:
        await p.stop()


def counted(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(float(v) for v in _COUNTED.findall(text))


def run(events: int = 300_000, models: int = 8, partitions: int = 4, timeout: float = 120.0,
        broker: str = "embedded") -> dict[str, Any]:
    from devstack.stack import LocalStack
    from streams import events as ev
    from streams.admin import ensure_topics
    from streams.topics import Topics

    prefix = LocalStack.unique_prefix("b")
    topics = Topics(prefix, partitions)
    with common.broker(broker) as bootstrap:
        ensure_topics(bootstrap, topics)
        started = time.perf_counter()
        asyncio.run(load(bootstrap, topics.feedback, partitions, records(events, models)))
        loaded = time.perf_counter() - started
        bare = common.probe_parse_rate(bootstrap, topics.feedback, events)
        bare_librdkafka = common.probe_parse_rate_librdkafka(bootstrap, topics.feedback, events)
        with common.stack(bench_models(models), bootstrap=bootstrap, prefix=prefix,
                          partitions=partitions, observe=("metrics",)) as s:
            samples, rss = [], []
            deadline = time.monotonic() + timeout
            pid, port = s.worker.proc.pid, s.worker.web_port
            while time.monotonic() < deadline:
                n = counted(port)
                samples.append((time.perf_counter(), n))
                rss.append(common.rss_mb(pid) or 0.0)
                if n >= events:
                    break
                time.sleep(0.05)
            total = samples[-1][1]
            moving = [(t, n) for t, n in samples if n > 0]
            (t0, n0), (t1, n1) = moving[0], moving[-1]
            if t1 <= t0 and len(samples) > len(moving):    # all of it between two samples:
                t0, n0 = samples[-len(moving) - 1]         # from the last sample before (a floor)
            rate = (n1 - n0) / (t1 - t0) if t1 > t0 else None

            def reported() -> int:
                return sum(d.data.count for d in s.observer.of_type(ev.MetricReported.TYPE))

            try:
                s.observer.wait_for(lambda o: reported() >= events, 15, "every window reported")
            except TimeoutError:
                pass
            windows = len(s.observer.of_type(ev.MetricReported.TYPE))
            in_windows = reported()
    per_second = round(rate) if rate else 0
    return {
        "benchmark": "throughput", "events": events, "models": models, "partitions": partitions,
        "machine": common.machine(), "load_seconds": round(loaded, 2), "bare": bare,
        "bare_librdkafka": bare_librdkafka,
        "ratio_librdkafka": common.ratio(per_second, bare_librdkafka["per_second"] or 0),
        "loopline": {"per_second": per_second, "counted": int(total), "seconds": round(t1 - t0, 3),
                     "windows_reported": windows, "counted_in_windows": in_windows,
                     "worker_rss_max_mb": round(max(rss), 1) if rss else None},
        "ratio": common.ratio(per_second, bare["per_second"] or 0),
        "goals": {"per_second": GOAL_PER_SECOND, "ratio": GOAL_RATIO},
        "holds": bool(per_second >= GOAL_PER_SECOND
                      and (common.ratio(per_second, bare["per_second"] or 0) or 0) >= GOAL_RATIO
                      and in_windows == events),
    }


def show(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"metric-event throughput: {result['events']:,} feedback events, "
                        f"{result['models']} models, {result['partitions']} partitions")
    for column in ("path", "events/s", "seconds", "notes"):
        table.add_column(column, justify="left" if column in ("path", "notes") else "right")
    bare, ours = result["bare"], result["loopline"]
    table.add_row("bare aiokafka consume + json.loads", f"{bare['per_second']:,}", f"{bare['seconds']:.2f}",
                  "the goal's baseline")
    other = result.get("bare_librdkafka")
    if other:
        table.add_row("bare librdkafka consume + json.loads", f"{other['per_second']:,}",
                      f"{other['seconds']:.2f}", "the worker's feedback client, bare")
    table.add_row("loopline metric windows (decode, score, aggregate, report, commit)",
                  f"{ours['per_second']:,}", f"{ours['seconds']:.2f}",
                  f"{ours['windows_reported']} windows, {ours['counted_in_windows']:,} counted in them; "
                  f"worker RSS max {ours['worker_rss_max_mb']} MB")
    console = Console()
    console.print(table)
    console.print(f"ratio to bare aiokafka: {result['ratio']}x (goal >= {GOAL_RATIO}x and >= "
                  f"{GOAL_PER_SECOND:,}/s); to bare librdkafka: {result.get('ratio_librdkafka')}x")


BENCH = common.Bench("throughput", run, show, full={"events": 500_000, "models": 8, "broker": "embedded"},
                     quick={"events": 20_000, "models": 4}, doc=__doc__)

if __name__ == "__main__":
    raise SystemExit(BENCH.main())
