"""Prometheus metrics of one serving replica, in its own registry (`GET /metrics`).

Own `CollectorRegistry`, not the global one: the process's metrics are exactly these, and tests
can build several apps in one interpreter. Labels are bounded: `model` is always a configured
model (unknown names are refused before anything is counted), `version` one the registry has,
`arm` champion|challenger (the role the answering version plays; champion when no experiment).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


class ServingMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        reg = self.registry
        self.latency = Histogram("loopline_serving_request_seconds",
                                 "Predict request latency, from the body read to the answer",
                                 ["model", "version", "arm"], buckets=LATENCY_BUCKETS, registry=reg)
        self.requests = Counter("loopline_serving_requests", "Predict requests answered",
                                ["model", "version", "arm"], registry=reg)
        self.batch_rows = Histogram("loopline_serving_batch_rows", "Rows per predict call (micro-batch)",
                                    ["model", "version"], buckets=ROW_BUCKETS, registry=reg)
        self.batch_requests = Histogram("loopline_serving_batch_requests",
                                        "Requests per predict call (micro-batch)", ["model", "version"],
                                        buckets=ROW_BUCKETS, registry=reg)
        self.errors = Counter("loopline_serving_errors",
                              "Errors by kind: bad_request, not_loaded, predict, load, shadow, publish",
                              ["model", "kind"], registry=reg)
        self.feedback = Counter("loopline_serving_feedback",
                                "Feedback labels: accepted, or refused as malformed/forged/mismatch",
                                ["model", "outcome"], registry=reg)
        self.loaded = Gauge("loopline_serving_loaded_versions", "Model versions loaded in memory",
                            ["model"], registry=reg)
        self.ready = Gauge("loopline_serving_ready", "1 when /readyz answers 200", registry=reg)
        self._children: dict[tuple, tuple] = {}

    def answered(self, model: str, version: str, arm: str, seconds: float) -> None:
        key = (model, version, arm)
        children = self._children.get(key)
        if children is None:            # .labels() costs a lock and a dict walk: once per key
            children = (self.latency.labels(*key), self.requests.labels(*key))
            self._children[key] = children
        children[0].observe(seconds)
        children[1].inc()

    def batch_observer(self, model: str, version: str):
        rows, requests = self.batch_rows.labels(model, version), self.batch_requests.labels(model, version)

        def observe(row_count: int, request_count: int, _seconds: float) -> None:
            rows.observe(row_count)
            requests.observe(request_count)
        return observe

    def error(self, model: str, kind: str, count: int = 1) -> None:
        self.errors.labels(model, kind).inc(count)

    def render(self) -> bytes:
        return generate_latest(self.registry)
