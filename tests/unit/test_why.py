"""`loopline why` and the decisions in `loopline lineage`: built from events (pure: no broker)."""

from __future__ import annotations

import io

from rich.console import Console

from loopline.commands import lineage, why
from streams import events as ev
from streams.codec import build
from tests.unit.test_lineage import MODEL, RUN, seen, tags_of, w


def history():
    """Two batches (the first too small on its own) → one request → a version; a drift signal
    during that training is suppressed; each decision on the record."""
    small = build(ev.DataArrived(uri="file:///b0", rows=400, version="batch-00000"), MODEL, source="tests/data")
    skipped = build(ev.DecisionRecorded(policy="retrain", outcome="skipped", reason="400/1000 new rows",
                                        signal_id=small.id, signal_type=small.type), MODEL, source=w, cause=small)
    data = build(ev.DataArrived(uri="file:///b1", rows=600, version="batch-00001"), MODEL, source="tests/data")
    request = build(ev.TrainingRequested(idempotency_key="key1", reason="data", causes=[small.key, data.key],
                                         data_versions=["batch-00000", "batch-00001"], rows=1000),
                    MODEL, source=w, cause=data)
    requested = build(ev.DecisionRecorded(policy="retrain", outcome="requested", reason="training requested (data)",
                                          signal_id=data.id, signal_type=data.type, request_id=request.id),
                      MODEL, source=w, cause=data)
    drift = build(ev.DriftDetected(dataset_version="batch-00001", reference_version="batch-00000", drift_share=0.6),
                  MODEL, source="tests/drift")
    suppressed = build(ev.DecisionRecorded(policy="retrain", outcome="suppressed",
                                           reason="training in flight; queued follow-up",
                                           signal_id=drift.id, signal_type=drift.type), MODEL, source=w, cause=drift)
    started = build(ev.TrainingStarted(idempotency_key="key1", run_name="clf-1", launcher="local"),
                    MODEL, source=w, cause=request)
    succeeded = build(ev.TrainingSucceeded(idempotency_key="key1", run_name="clf-1",
                                           outputs={"train": {"model_version": "1"}}), MODEL, source=w, cause=request)
    finished = build(ev.DecisionRecorded(policy="retrain", outcome="skipped", reason="training succeeded; nothing "
                                         "queued; drift follow-up dropped: no new data since the last request",
                                         signal_id=succeeded.id, signal_type=succeeded.type),
                     MODEL, source=w, cause=succeeded)
    evaluated = build(ev.ModelEvaluated(version="1", run_name="clf-1", metric="accuracy", passed=True),
                      MODEL, source=w, cause=succeeded)
    return locals()


def text_of(answer) -> str:
    out = io.StringIO()
    why.show(answer, Console(file=out, width=240, color_system=None))
    return out.getvalue()


def test_a_signal_that_started_nothing_shows_the_decision_and_its_reason():
    h = history()
    answer = why.build(seen(h.values()), h["drift"].id)
    assert answer["causes"] == [] and answer["effects"] == []
    assert [(d["policy"], d["outcome"], d["reason"]) for d in answer["decisions"]] == [
        ("retrain", "suppressed", "training in flight; queued follow-up")]
    text = text_of(answer)
    assert "retrain → suppressed: training in flight; queued follow-up" in text and "nothing" in text


def test_a_batch_that_only_counted_toward_a_request_shows_its_skip_and_the_request_it_joined():
    h = history()
    answer = why.build(seen(h.values()), h["small"].id)
    assert [d["outcome"] for d in answer["decisions"]] == ["skipped"]
    effects = [e["id"] for e in answer["effects"]]
    assert effects[0] == h["request"].id                    # through the request's causes
    assert {h["started"].id, h["succeeded"].id, h["evaluated"].id, h["finished"].id} <= set(effects)
    assert h["skipped"].id not in effects and h["requested"].id not in effects


def test_a_request_names_every_triggering_event_as_a_cause_and_its_effects_as_a_tree():
    h = history()
    answer = why.build(seen(h.values()), h["request"].id)
    assert {c["id"] for c in answer["causes"]} == {h["small"].id, h["data"].id}
    assert answer["decisions"] == []
    depth = {e["id"]: e["depth"] for e in answer["effects"]}
    assert depth[h["started"].id] == 1 and depth[h["evaluated"].id] == 2
    text = text_of(answer)
    assert h["evaluated"].id in text and "no decision recorded on it" in text


def test_a_decision_is_an_event_too_and_an_unknown_id_is_none():
    h = history()
    answer = why.build(seen(h.values()), h["requested"].id)
    assert [c["id"] for c in answer["causes"]] == [h["data"].id]
    assert why.build(seen(h.values()), "no-such-id") is None


def test_lineage_shows_each_triggering_events_decision():
    h = history()
    tags = tags_of({**h, "deployed": h["evaluated"], "rolled": h["evaluated"], "promoted": h["evaluated"]})
    chain = lineage.build(MODEL, "1", tags, RUN, seen(h.values()))
    decided = {t["id"]: [(d["outcome"], d["reason"], d["request_id"]) for d in t["decisions"]]
               for t in chain["triggers"]}
    assert decided == {h["small"].id: [("skipped", "400/1000 new rows", None)],
                       h["data"].id: [("requested", "training requested (data)", h["request"].id)]}
    out = io.StringIO()
    lineage.show(chain, Console(file=out, width=240, color_system=None))
    assert "retrain → skipped: 400/1000 new rows" in out.getvalue()

