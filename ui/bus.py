"""The page's reads of the bus and of MLflow: history once, then a follower thread; read-only.

History comes from `loopline.commands.snapshot` (no consumer group: looking changes nothing).
The follower is a kafka-python consumer with assigned partitions, as the serving replica's
(`serving/bus.py`): it starts each partition where the history read stopped, so nothing is
missed or shown twice, and hands each record to the event loop with `call_soon_threadsafe`. A
topic that does not exist yet (the decisions topic, before a worker that records decisions
first ran) is looked for again every few seconds and read from its beginning once it appears.

Dead letters, experiment states and a version's lineage are read on request (they are asked
for rarely, and are small). Nothing here produces a record or writes to MLflow.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable

from loopline.commands.snapshot import NOT_DECISIONS, Record, read_dead_letters, read_records
from loopline.settings import Settings
from streams.codec import DecodeError, decode
from streams.events import DriftDetected, ExperimentUpdated
from streams.topics import SPECS
from ui.store import DECISION_SUFFIX, Item, item_of

log = logging.getLogger("loopline.ui")
RESCAN_SECONDS = 3.0


def timeline_topics(settings: Settings) -> list[str]:
    """The loop's decision topics (what `loopline status` reads) and the decisions topic."""
    prefix = settings.topics.prefix
    names = [spec.name(prefix) for spec in SPECS if spec.role not in NOT_DECISIONS]
    decisions = f"{prefix}.{DECISION_SUFFIX}"
    return names + ([decisions] if decisions not in names else [])


def read_history(settings: Settings, topics: list[str]) -> tuple[list[Item], dict[tuple[str, int], int]]:
    """The events on `topics` now, and per partition the next offset to follow from."""
    records = read_records(settings.broker, topics, **settings.kafka_security.kafka_python())
    positions: dict[tuple[str, int], int] = {}
    items = []
    for record in records:
        positions[(record.topic, record.partition)] = max(
            positions.get((record.topic, record.partition), 0), record.offset + 1)
        item = item_of(record.value, record.headers)
        if item is not None:
            items.append(item)
    return items, positions


class Follower(threading.Thread):
    """Follows `topics` from `positions` (else from their beginning); `deliver(item)` per event."""

    def __init__(self, settings: Settings, topics: list[str], positions: dict[tuple[str, int], int],
                 deliver: Callable[[Item], None], stop: threading.Event):
        super().__init__(name="ui-follower", daemon=True)
        self.settings, self.topics, self.deliver, self.stop = settings, topics, deliver, stop
        self.positions = dict(positions)
        self.following = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self._follow()
            except Exception:  # noqa: BLE001 - reconnect rather than show a frozen page
                log.exception("ui: bus follower failed; starting over in 1s")
                self.stop.wait(1.0)

    def _follow(self) -> None:
        from kafka import KafkaConsumer, TopicPartition

        consumer = KafkaConsumer(bootstrap_servers=self.settings.broker, group_id=None,
                                 enable_auto_commit=False, fetch_max_wait_ms=50,
                                 **self.settings.kafka_security.kafka_python())
        try:
            assigned: set = set()
            missing = list(self.topics)
            next_scan = 0.0
            while not self.stop.is_set():
                if missing and self._now() >= next_scan:
                    next_scan = self._now() + RESCAN_SECONDS
                    existing = consumer.topics()             # a metadata request: sees new topics
                    found = [TopicPartition(t, p) for t in missing if t in existing
                             for p in sorted(consumer.partitions_for_topic(t) or ())]
                    if found:
                        assigned |= set(found)
                        consumer.assign(sorted(assigned))
                        for tp in assigned:
                            self._position(consumer, tp)
                        missing = [t for t in missing if t not in {tp.topic for tp in assigned}]
                    self.following.set()
                if not assigned:
                    self.stop.wait(0.2)
                    continue
                for tp, records in consumer.poll(timeout_ms=200).items():
                    for r in records:
                        self.positions[(tp.topic, tp.partition)] = r.offset + 1
                        item = item_of(r.value, [(k, bytes(v or b"")) for k, v in (r.headers or ())])
                        if item is not None:
                            self.deliver(item)
        finally:
            consumer.close()

    def _position(self, consumer, tp) -> None:
        offset = self.positions.get((tp.topic, tp.partition))
        if offset is None:
            consumer.seek_to_beginning(tp)
        else:
            consumer.seek(tp, offset)

    @staticmethod
    def _now() -> float:
        import time

        return time.monotonic()


# --- read on request ---------------------------------------------------------------------------

def dead_letters(settings: Settings) -> list[dict[str, Any]]:
    """Each dead letter's provenance and reason, and the command that replays it; never its bytes
    (a refused record may hold anything a producer sent: the CLI shows it to whoever may replay)."""
    out = []
    for record, letter in read_dead_letters(settings.broker, settings.topics,
                                            **settings.kafka_security.kafka_python()):
        out.append({"id": record.ref, "topic": letter.topic, "partition": letter.partition,
                    "offset": letter.offset, "model": (record.key or b"").decode(errors="replace") or None,
                    "reason": letter.reason, "error": letter.error, "time": letter.time,
                    "size": letter.spilled.size if letter.spilled else len(letter.value or b""),
                    "replay": f"loopline dlq replay {record.ref}"})
    return out


def experiment_states(settings: Settings, model: str) -> list[tuple[float, ExperimentUpdated]]:
    records: list[Record] = read_records(settings.broker, [settings.topics.experiment],
                                         **settings.kafka_security.kafka_python())
    out = []
    for record in records:
        if record.key is not None and record.key.decode(errors="replace") != model:
            continue
        try:
            decoded = decode(record.value, record.headers, max_bytes=1 << 30)
        except DecodeError:
            continue
        if decoded.event.subject == model and isinstance(decoded.data, ExperimentUpdated):
            out.append((decoded.event.timestamp, decoded.data))
    return out


def lineage(settings: Settings, model: str, version: str, items: list[Item],
            mlflow_ui: str | None) -> dict[str, Any] | None:
    """`loopline lineage`'s chain of one version (from MLflow and the page's events), plus links
    into the MLflow UI and to the Evidently drift reports behind it; None: no such version."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from loopline.commands.lineage import build

    client = mlflow.MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
    try:
        mv = client.get_model_version(model, version)
    except MlflowException:
        return None
    run_info: dict[str, Any] = {"run_id": mv.run_id}
    experiment_id = None
    if mv.run_id:
        try:
            run = client.get_run(mv.run_id)
            experiment_id = run.info.experiment_id
            run_info.update(experiment_id=experiment_id, tags=dict(run.data.tags),
                            metrics=dict(run.data.metrics), status=run.info.status,
                            link=_run_link(mlflow_ui, experiment_id, mv.run_id) or f"runs:/{mv.run_id}")
        except MlflowException:
            pass
    chain = build(model, str(mv.version), dict(mv.tags), run_info, items)
    trigger_ids = {t.get("id") for t in chain["triggers"]}
    drifts = [i for i in items if i.event.subject == model and isinstance(i.data, DriftDetected)
              and i.data.report_uri and (i.event.id in trigger_ids or i.data.model_version == str(mv.version))]
    chain["links"] = {
        "mlflow": _run_link(mlflow_ui, experiment_id, mv.run_id) if mv.run_id else None,
        "model_version": f"{mlflow_ui.rstrip('/')}/#/models/{model}/versions/{mv.version}" if mlflow_ui else None,
        "drift_reports": [{"event_id": i.event.id, "uri": i.data.report_uri,
                           "link": _artifact_link(mlflow_ui, i.data.report_uri)} for i in drifts],
    }
    return chain


def _run_link(mlflow_ui: str | None, experiment_id: str | None, run_id: str | None) -> str | None:
    if not (mlflow_ui and experiment_id and run_id):
        return None
    return f"{mlflow_ui.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def _artifact_link(mlflow_ui: str | None, uri: str) -> str | None:
    """`runs:/RUN/path/report.html` -> the tracking server's artifact download (the HTML itself)."""
    if not mlflow_ui or not uri.startswith("runs:/"):
        return uri if uri.startswith(("http://", "https://")) else None
    run_id, _, path = uri[len("runs:/"):].partition("/")
    from urllib.parse import urlencode

    return f"{mlflow_ui.rstrip('/')}/get-artifact?{urlencode({'path': path, 'run_uuid': run_id})}"
