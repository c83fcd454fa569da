"""The worker's Prometheus metrics: names, types, labels, and the data-to-deployment clock."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from agents.metrics import Metrics
from streams.lag import PartitionLag

EXPECTED = {
    "loopline_events_consumed": "counter", "loopline_decisions": "counter",
    "loopline_operator_commands": "counter", "loopline_trainings_in_flight": "gauge",
    "loopline_job_duration_seconds": "histogram", "loopline_consumer_lag": "gauge",
    "loopline_dead_letters": "counter", "loopline_data_to_deployment_seconds": "histogram",
}
LABELS = {"agent", "type", "decision", "outcome", "command", "model", "launcher", "topic", "error", "stage", "le"}


def families(metrics: Metrics) -> dict:
    return {f.name: f for f in text_string_to_metric_families(metrics.render().decode())}


def test_every_metric_is_exposed_with_its_type_from_the_start():
    found = families(Metrics())
    assert {name: f.type for name, f in found.items() if name in EXPECTED} == EXPECTED
    assert all(name.startswith("loopline_") for name in found)
    decisions = {(s.labels["decision"], s.labels["outcome"]) for s in found["loopline_decisions"].samples
                 if s.name == "loopline_decisions_total"}
    assert ("retrain", "suppressed") in decisions and ("deploy", "rolled_back") in decisions


def test_samples_follow_the_conventions_and_carry_no_ids():
    m = Metrics()
    m.events_consumed.labels("trigger", "io.loopline.data.arrived").inc()
    m.decision("retrain", "requested")
    m.trainings_in_flight.labels("clf").set(1)
    m.job_duration.labels("local", "succeeded").observe(12.5)
    m.consumer_lag.labels("loopline.data.arrived").set(3)
    m.dead_letters.labels("loopline.operator.command", "CommandRejected").inc()
    found = families(m)
    for family in found.values():
        for sample in family.samples:
            assert set(sample.labels) <= LABELS, sample
            if family.type == "counter" and not sample.name.endswith("_created"):
                assert sample.name.endswith("_total"), sample.name
    job = {s.name: s.value for s in found["loopline_job_duration_seconds"].samples if not s.labels.get("le")}
    assert job["loopline_job_duration_seconds_count"] == 1 and job["loopline_job_duration_seconds_sum"] == 12.5


def test_data_to_deployment_measures_from_the_oldest_new_batch_of_the_chain():
    m = Metrics()
    m.note_data("src#a", 100.0)
    m.note_data("src#b", 160.0)
    m.note_request("chain-1", ["src#a", "src#b", "cli#manual"])
    m.note_request("chain-2", ["cli#manual-only"])                 # no data: nothing to measure
    m.observe_deployment("chain-1", now=400.0)
    m.observe_deployment("chain-1", now=500.0)                      # redelivered: counted once
    m.observe_deployment("chain-2", now=500.0)
    samples = {s.name: s.value for s in families(m)["loopline_data_to_deployment_seconds"].samples
               if not s.labels.get("le")}
    assert samples["loopline_data_to_deployment_seconds_count"] == 1
    assert samples["loopline_data_to_deployment_seconds_sum"] == 300.0


def test_partition_lag_counts_from_the_committed_offset_or_the_beginning():
    assert PartitionLag("t", 0, committed=7, end=10, beginning=0).lag == 3
    assert PartitionLag("t", 0, committed=None, end=10, beginning=4).lag == 6   # never committed
    assert PartitionLag("t", 0, committed=2, end=10, beginning=5).lag == 5      # retention passed it
    assert PartitionLag("t", 0, committed=10, end=10, beginning=0).lag == 0
