"""Feedback throughput with one worker and with two, on one machine (a part of bench.scale).

One stack (embedded broker unless given), bench.throughput's models and feedback events. For
one worker, then for two (a second `loopline worker` process joins the same group and takes
half the partitions):

1. warm-up: small loads of feedback until every worker has counted some of it (the group has
   settled and each worker owns feedback partitions);
2. every worker is stopped (SIGSTOP), `events` feedback events are loaded into the topic, and
   the workers continue (SIGCONT): what is measured is the drain of a backlog, not the producer.
   The load takes a few seconds, under the session timeout, so nobody leaves the group;
3. the rate is the workers' summed counter (`loopline_feedback_total{outcome="counted"}` on
   each one's /metrics, sampled every 50 ms) from its first movement to the last record.

Beside it: the machine's CPU busy (all cores, /proc/stat) and each worker's CPU over the drain,
which say what the cores allow: a second worker helps only while a core is left over.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from pathlib import Path
from typing import Any

from bench import common

# Every outcome (counted, late, unscored): the drain is over when each record was handled.
_HANDLED = re.compile(r'^loopline_feedback_total\{[^}]*outcome="([a-z]+)"[^}]*\} ([0-9.e+]+)$', re.M)
SPAN_S = 0.2            # event times of a load: its last 0.2 s (after the previous load's)


def _machine_busy() -> tuple[float, float]:
    """(busy jiffies, total jiffies) over all cores since boot."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]            # idle + iowait
    return sum(fields) - idle, sum(fields)


def _outcomes(worker) -> dict[str, float]:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{worker.web_port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return {}
    out: dict[str, float] = {}
    for outcome, value in _HANDLED.findall(text):
        out[outcome] = out.get(outcome, 0.0) + float(value)
    return out


def _counted(worker) -> float:
    """Feedback records this worker handled (any outcome)."""
    return sum(_outcomes(worker).values())


def _load(s, events: int, models: int, partitions: int) -> float:
    from bench.throughput import load, records

    items = records(events, models, span=SPAN_S)
    started = time.perf_counter()
    asyncio.run(load(s.bootstrap, s.settings.topics.feedback, partitions, items))
    return time.perf_counter() - started


def _warm(s, workers: list, models: int, partitions: int, timeout: float = 60.0) -> None:
    """Small loads until each worker counted some of the last one."""
    deadline = time.monotonic() + timeout
    while True:
        before = [_counted(w) for w in workers]
        _load(s, 400 * partitions, models, partitions)
        wait = time.monotonic() + 10
        while sum(_counted(w) for w in workers) < sum(before) + 400 * partitions and time.monotonic() < wait:
            time.sleep(0.1)
        if all(_counted(w) > b for w, b in zip(workers, before)):
            return
        for w in workers:
            w.check()
        if time.monotonic() > deadline:
            raise TimeoutError(f"not every one of {len(workers)} workers counted feedback after {timeout:.0f} s")
        time.sleep(1.0)


def _drain(s, workers: list, events: int, models: int, partitions: int, timeout: float) -> dict[str, Any]:
    from bench.procfs import cpu_time

    time.sleep(SPAN_S + 0.3)     # the load's event times after the warm-up's (none is late)
    before = [_outcomes(w) for w in workers]
    base = [sum(o.values()) for o in before]
    pids = [w.proc.pid for w in workers]
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        loaded = _load(s, events, models, partitions)
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    busy0, total0 = _machine_busy()
    cpu0 = [cpu_time(pid) for pid in pids]
    wall0 = time.perf_counter()
    samples: list[tuple[float, float]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        n = sum(_counted(w) for w in workers) - sum(base)
        samples.append((time.perf_counter(), n))
        if n >= events:
            break
        time.sleep(0.05)
    wall1 = time.perf_counter()
    busy1, total1 = _machine_busy()
    cpu1 = [cpu_time(pid) for pid in pids]
    after = [_outcomes(w) for w in workers]
    per_worker = [round(sum(a.values()) - b) for a, b in zip(after, base)]
    outcomes: dict[str, int] = {}
    for a, b in zip(after, before):
        for key, value in a.items():
            outcomes[key] = outcomes.get(key, 0) + round(value - b.get(key, 0.0))
    moving = [(t, n) for t, n in samples if n > 0]
    rate = None
    if moving:
        (t0, n0), (t1, n1) = moving[0], moving[-1]
        if t1 <= t0 and len(samples) > len(moving):
            t0, n0 = samples[-len(moving) - 1]
        rate = (n1 - n0) / (t1 - t0) if t1 > t0 else None
    cores = os.cpu_count() or 1
    return {"workers": len(workers), "events": events, "counted": round(samples[-1][1]) if samples else 0,
            "per_worker": per_worker, "outcomes": outcomes, "per_second": round(rate) if rate else None,
            "load_seconds": round(loaded, 2), "drain_seconds": round(wall1 - wall0, 2),
            "machine_busy_pct": round(100 * cores * (busy1 - busy0) / max(total1 - total0, 1), 1),
            "worker_cpu_pct": [round(100 * (c1 - c0) / (wall1 - wall0), 1) for c0, c1 in zip(cpu0, cpu1)]}


def run(events: int = 300_000, models: int = 8, partitions: int = 4, bootstrap: str | None = None,
        timeout: float = 120.0) -> dict[str, Any]:
    from bench import throughput

    runs = []
    with common.stack(throughput.bench_models(models), partitions=partitions, bootstrap=bootstrap,
                      observe=()) as s:
        workers = [s.worker]
        for count in (1, 2):
            if count == 2:
                second = s.start_worker("worker-2")
                s.wait_ready(worker=second)
                workers.append(second)
            _warm(s, workers, models, partitions)
            runs.append(_drain(s, workers, events, models, partitions, timeout))
    one, two = runs
    return {"events": events, "models": models, "partitions": partitions, "cores": os.cpu_count(),
            "one": one, "two": two, "speed_up": common.ratio(two["per_second"] or 0, one["per_second"] or 0)}
