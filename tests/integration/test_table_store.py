"""The worker's tables on RocksDB, and the cleanup policy of the topics behind them.

With `LOOPLINE_TABLE_STORE=rocksdb` a worker killed with SIGKILL gets its model states back from
its own files under the state dir: its recovery starts reading the trigger's changelog where its
files end (Faust keeps the last changelog offset it wrote in each partition's RocksDB), so it
replays nothing that was already there. The same restart on the memory store replays the whole
changelog: the control that shows the count read from the worker's log measures what it says.
Either way the states are right: the next batch's decision counts the rows from before the kill.

Faust asks for `cleanup.policy=compact` when it creates a table's changelog; loopline's own topics
are created with the retention each declares and no cleanup policy (the broker's default,
delete): what each broker reports back is checked on Tansu and on Apache Kafka.
"""

from __future__ import annotations

import re
import sys

import pytest
import yaml
from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType

from agents.trigger import state_changelog
from devstack.stack import REPO, LocalStack
from loopline.commands.snapshot import model_states
from streams import events as ev
from streams.codec import build
from streams.publisher import Publisher
from streams.topics import SPECS
from tests.waiting import wait_until

MODELS = [f"m{i:02d}" for i in range(12)]
THRESHOLD = 1000


def write_config(path, models=MODELS):
    steps = [{"name": "train", "command": [sys.executable, "-c", "pass"]}]
    path.write_text(yaml.safe_dump({"models": [{
        "name": name, "pipeline": {"launcher": "local", "workdir": str(REPO), "steps": steps},
        "retrain": {"min_new_rows": THRESHOLD}, "gate": {"metric": "accuracy", "from_step": "train"}}
        for name in models]}))
    return path


def send_batches(stack, batch: str, rows: int) -> dict[str, str]:
    """One data batch per model; model -> the event's id."""
    ids = {}
    with Publisher(stack.bootstrap, stack.settings.topics) as bus:
        for name in MODELS:
            event = build(ev.DataArrived(uri=f"file:///d/{name}/{batch}", rows=rows, version=batch),
                          name, source="tests/table-store")
            bus.publish(event)
            ids[name] = event.id
    return ids


def reasons(stack, ids: dict[str, str]) -> dict[str, str]:
    """model -> the retrain decision's reason on each event of `ids`, once all are on the record."""
    def found():
        got = {d.event.subject: d.data.reason for d in stack.observer.of_type(ev.DecisionRecorded.TYPE)
               if d.data.signal_id in ids.values()}
        return got if len(got) == len(ids) else None
    return wait_until(found, 60, f"decisions on {len(ids)} data events")


def recovery_reads(log: str, changelog: str) -> tuple[int, int]:
    """(records in the changelog, records the worker's last recovery read from it), from the
    'Highwater - Active' and 'Reading Starts At - Active' tables Faust logs at each recovery
    (offsets of the last record: -1 for an empty partition; a ditto mark repeats the topic)."""
    tables = {}
    for title in ("Highwater - Active", "Reading Starts At - Active"):
        at = log.rfind(title)
        assert at >= 0, f"no '{title}' table in the worker's log"
        rows, topic = {}, None
        for line in log[at:].splitlines()[1:]:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if line.startswith("+") and rows:
                break
            if len(cells) == 3 and re.fullmatch(r"-?\d+", cells[2]):
                topic = topic if cells[0] == "〃" else cells[0]
                if topic == changelog:
                    rows[int(cells[1])] = int(cells[2])
        tables[title] = rows
    highwater, start = tables["Highwater - Active"], tables["Reading Starts At - Active"]
    assert highwater and set(highwater) == set(start), tables
    return (sum(hw + 1 for hw in highwater.values()),
            sum(max(0, hw - start[p]) for p, hw in highwater.items()))


def restart_after_sigkill(stack, **env) -> str:
    """SIGKILL the worker, start a new one (ready on return); the new process's log."""
    stack.worker.kill()
    before = stack.worker.log.stat().st_size
    stack.restart_worker(**env)
    return stack.worker.log.read_bytes()[before:].decode(errors="replace")


@pytest.mark.slow
def test_a_rocksdb_worker_killed_reads_its_states_back_from_its_own_files(tmp_path, bootstrap, prefix):
    config = write_config(tmp_path / "loopline.yaml")
    with LocalStack(tmp_path / "state", config, bootstrap=bootstrap, prefix=prefix, partitions=2,
                    observe=("decisions",), extra_env={"LOOPLINE_TABLE_STORE": "rocksdb"}) as stack:
        changelog = state_changelog(stack.settings.group)
        first = reasons(stack, send_batches(stack, "b0", 100))
        assert first == {name: f"100/{THRESHOLD} new rows" for name in MODELS}
        # Every state is in the changelog (so acknowledged: Faust then records its offset in the
        # partition's RocksDB) and in the worker's files, one RocksDB per table partition.
        wait_until(lambda: all(s.new_rows == 100 for s in model_states(bootstrap, stack.settings.group).values())
                   and len(model_states(bootstrap, stack.settings.group)) == len(MODELS), 30,
                   "every model's state in the trigger's changelog")
        tables = stack.settings.table_dir
        assert tables.is_relative_to(stack.settings.state_dir.resolve())
        files = sorted(p.name for p in tables.rglob("*model-state*.db"))
        assert files == [f"{stack.settings.group}-model-state-{p}.db" for p in (0, 1)], files

        log = restart_after_sigkill(stack)
        held, replayed = recovery_reads(log, changelog)
        assert held >= len(MODELS)                      # the changelog has every state...
        assert replayed == 0, f"read {replayed} of {held} changelog records at recovery"   # ...none re-read
        second = reasons(stack, send_batches(stack, "b1", 100))
        assert second == {name: f"200/{THRESHOLD} new rows" for name in MODELS}   # the rows before the kill count

        # The control: the same restart on the memory store reads the whole changelog.
        log = restart_after_sigkill(stack, LOOPLINE_TABLE_STORE="memory")
        held, replayed = recovery_reads(log, changelog)
        assert held >= 2 * len(MODELS) and replayed == held
        third = reasons(stack, send_batches(stack, "b2", 100))
        assert third == {name: f"300/{THRESHOLD} new rows" for name in MODELS}


def topic_configs(bootstrap: str, topics: list[str]) -> dict[str, dict[str, str | None]]:
    """What the broker reports for each topic: every config it describes (Tansu: those set at
    creation; Apache Kafka: all, defaults included)."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        described = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, t) for t in topics],
                                           config_filter="all")
    finally:
        admin.close()
    out = {}
    for by_name in described.values():
        for name, entries in by_name.items():
            out[name] = {key: (data.get("value") if isinstance(data, dict) else data)
                         for key, data in entries.items()}
    return out


@pytest.mark.every_broker
def test_changelogs_are_compacted_and_loopline_topics_keep_their_retention(tmp_path, bootstrap, prefix):
    config = write_config(tmp_path / "loopline.yaml", MODELS[:1])
    with LocalStack(tmp_path / "state", config, bootstrap=bootstrap, prefix=prefix, partitions=2,
                    observe=()) as stack:
        group = stack.settings.group
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        try:
            changelogs = sorted(t for t in admin.list_topics()
                                if t.startswith(f"{group}-") and t.endswith("-changelog"))
        finally:
            admin.close()
        assert state_changelog(group) in changelogs and len(changelogs) >= 3, changelogs
        ours = stack.settings.topics.all()
        reported = topic_configs(bootstrap, changelogs + list(ours))
    for topic in changelogs:                        # Faust's tables: compact, as Faust asked
        assert reported[topic].get("cleanup.policy") == "compact", (topic, reported[topic])
    for topic, spec in ours.items():                # loopline's: delete (asked: nothing, the default)
        assert reported[topic].get("cleanup.policy") in (None, "delete"), (topic, reported[topic])
        if spec.retention_ms:
            assert reported[topic].get("retention.ms") == str(spec.retention_ms), (topic, reported[topic])
    assert {spec.role for spec in SPECS if spec.retention_ms} >= {"experiment", "decisions", "clock"}
