"""The batch handler of the feedback topic: windows, late feedback, commits, dead letters."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timezone
from types import SimpleNamespace

import pytest

from agents.metrics import Metrics
from agents.policy.metric import MetricPolicy
from agents.windows import MetricWindows
from streams import events as ev
from streams.codec import build, encode, encode_headers

TP = ("t.feedback.received", 0)
POLICY = MetricPolicy(floor=0.5, window_seconds=10, min_count=1, grace_seconds=2.0)


class FakeEdge:
    def __init__(self):
        self.published, self.dead = [], []

    async def publish(self, event, topic=None):
        self.published.append(event)

    async def dead_letter(self, message, reason, error):
        self.dead.append((message.offset, reason, error))


def handler(models=None):
    models = models if models is not None else {"clf": SimpleNamespace(metrics=POLICY), "plain": SimpleNamespace()}
    ctx = SimpleNamespace(models=models, metrics=Metrics(), edge=FakeEdge(),
                          opts=SimpleNamespace(max_event_bytes=1_000_000, source="loopline/worker"))
    return MetricWindows(ctx), ctx.edge


def at(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def feedback(t: float, prediction=1, label=1, model="clf", version="3"):
    event = build(ev.FeedbackReceived(prediction_id="p", model_version=version, label=label,
                                      prediction=prediction), model, source="serving")
    doc = event.to_dict()
    doc["time"] = at(t)
    return json.dumps(doc).encode()


class Offsets:
    def __init__(self):
        self.next = 0

    def records(self, *values, headers=None):
        out = []
        for value in values:
            out.append(SimpleNamespace(topic=TP[0], partition=TP[1], offset=self.next, value=value,
                                       key=b"clf", headers=headers if headers is not None else encode_headers()))
            self.next += 1
        return out


def run(h, records, now=0.0, caught_up=False):
    return asyncio.run(h.process({TP: records}, now, {TP: caught_up}))


def test_a_window_closes_by_event_time_and_the_commit_waits_for_open_windows():
    h, edge = handler()
    log = Offsets()
    commit = run(h, log.records(*(feedback(1000 + i, label=i % 2) for i in range(4))))
    assert commit == {TP: 0} and not edge.published           # window [1000, 1010) still open
    commit = run(h, log.records(feedback(1011), feedback(1012.5)))
    assert len(edge.published) == 1                            # watermark 1012.5 >= 1010 + 2
    report = edge.published[0]
    assert report.id == "window-clf-3-10s-1000" and report.subject == "clf"
    assert (report.data["count"], report.data["value"]) == (4, 0.5)
    assert (report.data["window_start"], report.data["window_end"]) == (1000.0, 1010.0)
    assert commit == {TP: 4}                                   # first record of [1010, 1020)


def test_late_feedback_is_counted_as_late_not_as_a_new_window():
    h, edge = handler()
    log = Offsets()
    run(h, log.records(feedback(1000), feedback(1013)))
    assert len(edge.published) == 1
    run(h, log.records(feedback(1005)))
    assert h.late == 1 and h.counted == 2
    run(h, log.records(feedback(1030)))                        # closes [1010, 1020) only
    assert [e.id for e in edge.published] == ["window-clf-3-10s-1000", "window-clf-3-10s-1010"]


def test_a_caught_up_partition_closes_by_the_wall_clock_and_commits_everything():
    h, edge = handler()
    log = Offsets()
    assert run(h, log.records(feedback(1000)), now=1005, caught_up=True) == {TP: 0}
    assert run(h, [], now=1011, caught_up=False) == {TP: 0}     # behind: event time rules
    assert run(h, [], now=1012.1, caught_up=True) == {TP: 1}
    assert [e.data["count"] for e in edge.published] == [1]


def test_versions_and_models_have_their_own_windows_and_unmonitored_models_are_ignored():
    h, edge = handler()
    log = Offsets()
    run(h, log.records(feedback(1000, version="3"), feedback(1001, version="4"),
                       feedback(1002, model="plain"), feedback(1020)))
    assert sorted(e.id for e in edge.published) == ["window-clf-3-10s-1000", "window-clf-4-10s-1000"]
    assert not edge.dead


def test_bad_records_are_dead_lettered_with_the_full_decoders_reason():
    h, edge = handler()
    log = Offsets()
    extra = json.loads(feedback(1000))
    extra["data"]["surprise"] = 1
    listed = json.loads(feedback(1000))
    listed["data"]["label"] = [1]
    other = json.loads(feedback(1000))
    other["traceparent"] = "00-abc"                            # a valid extension: slow path, accepted
    records = log.records(b"not json", json.dumps(extra).encode(), feedback(1000, model="nope"),
                          json.dumps(listed).encode(), json.dumps(other).encode(), None)
    run(h, records)
    reasons = {offset: (reason, error) for offset, reason, error in edge.dead}
    assert set(reasons) == {0, 1, 2, 3, 5}
    assert reasons[0][0].startswith("value is not JSON")
    assert "surprise" in reasons[1][0] and reasons[1][1] == "DecodeError"
    assert reasons[2] == ("unknown model 'nope' (not in loopline.yaml)", "PermanentError")
    assert reasons[3][1] == "DecodeError"                      # a list is no label
    assert reasons[5][0].startswith("tombstone")
    assert h.counted == 1                                      # the one with an extension


def test_the_fast_path_reads_what_the_full_decoder_reads():
    from streams.codec import decode

    event = build(ev.FeedbackReceived(prediction_id="p", model_version="7", label="cat",
                                      prediction="dog", predicted_at=5.0), "clf", source="s")
    fast = MetricWindows._decode(SimpleNamespace(value=encode(event), headers=encode_headers()), 1 << 20)
    full = decode(encode(event), encode_headers())
    assert fast == (full.event.subject, full.data.model_version, pytest.approx(full.event.timestamp),
                    full.data.prediction, full.data.label)
    binary = SimpleNamespace(value=json.dumps(full.event.data).encode(), headers=event.to_headers())
    assert MetricWindows._decode(binary, 1 << 20)[:2] == ("clf", "7")      # binary mode: full path


def test_revoked_partitions_forget_their_windows():
    h, edge = handler()
    log = Offsets()
    run(h, log.records(feedback(1000)))
    h.revoked([TP])
    assert run(h, [], now=2000, caught_up=True) == {} and not edge.published


def test_feedback_of_an_experiment_takes_the_fast_path_and_is_counted():
    """Serving tags feedback with the rollout that routed it (`experiment`): the windows count
    it like any other, on the fast path (its strict struct knows the field), never dead-letter it."""
    from agents.windows import _decoder

    event = build(ev.FeedbackReceived(prediction_id="p", model_version="3", label=1, prediction=1,
                                      experiment="clf-rollout-4"), "clf", source="serving")
    doc = event.to_dict()
    doc["time"] = at(1000)
    value = json.dumps(doc).encode()
    assert _decoder.decode(value).data.experiment == "clf-rollout-4"
    h, edge = handler()
    run(h, Offsets().records(value, feedback(1020)))
    assert not edge.dead and h.counted == 2
    assert [e.data["count"] for e in edge.published] == [1]
