"""`loopline events tail` and `loopline dlq list | replay`: the raw record, and a way back from the DLQ.

`events tail` prints the newest events of the loop (filtered by type and model), and with
`--follow` keeps printing new ones. `dlq list` shows every dead-lettered record with its id
(`<partition>:<offset>` on the dead-letter topic), where it came from and why it was refused.
`dlq replay ID` re-publishes the original record (or a fixed one, `--file`) to the topic it
came from, once the cause is removed (a key added, a model configured, a bug fixed). The replay
carries the header `loopline.replay.of: deadletter:<partition>:<offset>`, so the link survives
in the record itself (and in its dead letter, should it fail again); replaying the same record
twice needs `--force`.

A value too large for its dead letter was spilled (`streams.spill`): `dlq list` shows where
its bytes lie, and `dlq replay` reads them back (checking their sha256) and publishes those.
"""

from __future__ import annotations

import json
from pathlib import Path

from loopline.commands import CliError, render
from loopline.settings import Settings
from loopline.commands.snapshot import NOT_DECISIONS, REPLAY_HEADER
from streams import events as ev
from streams.describe import describe

REF_PREFIX = "deadletter:"


def add_parsers(sub) -> None:
    events = sub.add_parser("events", help="inspect the loop's events")
    kinds = events.add_subparsers(dest="events_command", required=True)
    tail = kinds.add_parser("tail", help="the newest events of the loop, oldest first")
    tail.add_argument("--type", help="event type, e.g. data.arrived or io.loopline.model.promoted")
    tail.add_argument("--model", help="only this model's events")
    tail.add_argument("-n", "--lines", type=int, default=20, help="how many (default 20)")
    tail.add_argument("-f", "--follow", action="store_true", help="keep printing new events")
    tail.add_argument("--json", action="store_true", help="one JSON object per line")
    tail.set_defaults(func=run_tail)

    dlq = sub.add_parser("dlq", help="the dead-letter topic: list, replay")
    kinds = dlq.add_subparsers(dest="dlq_command", required=True)
    listing = kinds.add_parser("list", help="dead-lettered records with their ids and reasons")
    listing.add_argument("--model", help="only records keyed by this model")
    listing.add_argument("-n", "--lines", type=int, default=50, help="newest N (default 50)")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.set_defaults(func=run_dlq_list)
    replay = kinds.add_parser("replay", help="re-publish a dead-lettered record to its original topic")
    replay.add_argument("id", help="the dead letter's id, <partition>:<offset> (see `dlq list`)")
    replay.add_argument("--file", type=Path, help="publish this fixed event instead of the original")
    replay.add_argument("--force", action="store_true", help="replay even if it was replayed before")
    replay.set_defaults(func=run_dlq_replay)


# --- events tail -------------------------------------------------------------------------------

def event_row(s) -> dict:
    e = s.event
    return {"topic": s.record.topic, "partition": s.record.partition, "offset": s.record.offset,
            "id": e.id, "type": e.type, "subject": e.subject, "time": e.time, "source": e.source,
            "correlationid": e.correlationid, "causationid": e.causationid,
            "summary": describe(s.data), "data": dict(e.data)}


def _wanted(s, args) -> bool:
    return render.matches_type(s.event.type, args.type) and (not args.model or s.event.subject == args.model)


def _print_event(row: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(row, default=str), flush=True)
    else:
        print(f"{row['time']}  {row['subject']:<12} {render.short_type(row['type']):<22} "
              f"{row['summary']}  [{row['id']}]", flush=True)


def run_tail(args, settings: Settings) -> int:
    from loopline.commands.snapshot import decode_all, read_records

    # Ticks and serving telemetry only when asked for by type: they would drown the rest.
    def shown(spec) -> bool:
        if spec.role not in NOT_DECISIONS:
            return True
        return bool(args.type) and any(render.matches_type(t, args.type) for t in spec.accepts)

    names = [n for n, spec in settings.topics.all().items() if shown(spec)]
    records = read_records(settings.broker, names, **settings.kafka_security.kafka_python())
    internal = settings.topics.operator_verified       # the gate's copy of accepted commands
    verified = {s.event.id for s in decode_all(r for r in records if r.topic == internal)}
    rows = []
    for s in decode_all(r for r in records if r.topic != internal):
        if _wanted(s, args):
            row = event_row(s)
            if s.event.type == ev.OperatorCommand.TYPE:
                row["verified"] = s.event.id in verified
                row["summary"] += " (verified)" if row["verified"] else " (NOT verified: see dlq list)"
            rows.append(row)
    for row in rows[-args.lines:] if args.lines > 0 else []:
        _print_event(row, args.json)
    if args.follow:
        _follow(settings, [n for n in names if n != internal], args)
    return 0


def _follow(settings: Settings, names: list[str], args) -> None:
    from kafka import KafkaConsumer

    from loopline.commands.snapshot import Seen, _partitions, _record
    from streams.codec import DecodeError, decode

    consumer = KafkaConsumer(bootstrap_servers=settings.broker, group_id=None,
                             enable_auto_commit=False, fetch_max_wait_ms=100,
                             **settings.kafka_security.kafka_python())
    try:
        existing = consumer.topics()
        tps = [tp for name in names for tp in _partitions(consumer, name, existing=existing)]
        consumer.assign(tps)
        consumer.seek_to_end(*tps)
        while True:
            for records in consumer.poll(timeout_ms=500).values():
                for r in records:
                    record = _record(r)
                    try:
                        s = Seen(record, decode(record.value, record.headers, max_bytes=1 << 30))
                    except DecodeError:
                        continue
                    if _wanted(s, args):
                        _print_event(event_row(s), args.json)
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()


# --- dlq -------------------------------------------------------------------------------------

def letter_row(record, letter, replays: list[str]) -> dict:
    from streams.codec import DecodeError, decode

    row = {"id": record.ref, "model": (record.key or b"").decode(errors="replace") or None,
           "topic": letter.topic, "partition": letter.partition, "offset": letter.offset,
           "error": letter.error, "reason": letter.reason, "time": letter.time,
           "replay_of": record.header(REPLAY_HEADER), "replayed_by": replays,
           "spilled": vars(letter.spilled) if letter.spilled else None,
           "omitted": letter.omitted or None, "event_id": None, "type": None}
    try:
        event = decode(letter.value, letter.headers, max_bytes=1 << 30).event
        row.update(event_id=event.id, type=event.type)
    except DecodeError:
        pass
    return row


def replays_of(settings: Settings, topics: set[str]) -> dict[str, list[str]]:
    """dead-letter ref -> where it was replayed to ("topic[partition]@offset")."""
    from loopline.commands.snapshot import read_records

    out: dict[str, list[str]] = {}
    for record in read_records(settings.broker, sorted(topics), **settings.kafka_security.kafka_python()):
        link = record.header(REPLAY_HEADER)
        if link and link.startswith(REF_PREFIX):
            out.setdefault(link[len(REF_PREFIX):], []).append(
                f"{record.topic}[{record.partition}]@{record.offset}")
    return out


def run_dlq_list(args, settings: Settings) -> int:
    from loopline.commands.snapshot import read_dead_letters

    letters = read_dead_letters(settings.broker, settings.topics, **settings.kafka_security.kafka_python())
    if args.model:
        letters = [(r, d) for r, d in letters if (r.key or b"").decode(errors="replace") == args.model]
    letters = letters[-args.lines:] if args.lines > 0 else []
    known = set(settings.topics.all())
    replays = replays_of(settings, {d.topic for _, d in letters if d.topic in known})
    rows = [letter_row(r, d, replays.get(r.ref, [])) for r, d in letters]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no dead letters")
    for row in rows:
        replayed = f"  replayed -> {', '.join(row['replayed_by'])}" if row["replayed_by"] else ""
        what = f"{render.short_type(row['type'])} {row['event_id']}" if row["type"] else (
            "spilled" if row["spilled"] else "undecodable")
        print(f"{row['id']:>8}  {row['time']}  {row['model'] or '-':<12} from {row['topic']}"
              f"[{row['partition']}]@{row['offset']}  {what}\n          {row['error']}: "
              f"{row['reason']}{replayed}")
        if row["spilled"]:
            spilled = row["spilled"]
            print(f"          bytes: {spilled['uri']} ({spilled['size']} bytes, sha256 {spilled['sha256']})")
        if row["omitted"]:
            print(f"          not kept: {row['omitted']}")
    return 0


def parse_ref(ref: str) -> tuple[int, int]:
    text = ref[len(REF_PREFIX):] if ref.startswith(REF_PREFIX) else ref
    partition, sep, offset = text.partition(":")
    if not sep or not partition.isdigit() or not offset.isdigit():
        raise CliError(f"not a dead-letter id: {ref!r} (expected <partition>:<offset>, see `dlq list`)")
    return int(partition), int(offset)


def run_dlq_replay(args, settings: Settings) -> int:
    from kafka.errors import KafkaError

    from loopline.commands.snapshot import fetch
    from streams.codec import encode_headers
    from streams.deadletter import DeadLetter
    from streams.publisher import Publisher
    from streams.spill import SpillError, read

    partition, offset = parse_ref(args.id)
    ref = f"{partition}:{offset}"
    record = fetch(settings.broker, settings.topics.deadletter, partition, offset,
                   **settings.kafka_security.kafka_python())
    if record is None:
        raise CliError(f"no record {ref} on {settings.topics.deadletter} (wrong id, or retention passed)")
    try:
        letter = DeadLetter.from_record(record.key, record.value, record.headers)
    except ValueError as exc:
        raise CliError(f"{ref}: {exc}") from None
    spec = settings.topics.spec_of(letter.topic)
    if spec is None or spec.role == "deadletter":
        raise CliError(f"{ref} came from {letter.topic!r}, not an input topic of prefix "
                       f"{settings.topic_prefix!r}: not replaying it")
    if not args.force:
        earlier = replays_of(settings, {letter.topic}).get(ref)
        if earlier:
            raise CliError(f"{ref} was already replayed ({', '.join(earlier)}); --force to replay again")
    link = (REPLAY_HEADER, f"{REF_PREFIX}{ref}".encode())
    if args.file:
        value = args.file.read_bytes()
        headers = encode_headers() + [link]
    else:
        if letter.value is None:
            raise CliError(f"{ref} is a tombstone (no value): give a fixed event with --file")
        try:
            value = read(letter.spilled) if letter.spilled else letter.value
        except SpillError as exc:
            raise CliError(f"{ref}: {exc}") from None
        headers = [h for h in letter.headers if h[0] != REPLAY_HEADER] + [link]
        if letter.omitted:
            print(f"note: {ref} did not keep all of the original ({letter.omitted}): replayed without it")
    if len(value) > settings.max_event_bytes:
        print(f"note: {len(value)} bytes is over LOOPLINE_MAX_EVENT_BYTES ({settings.max_event_bytes}): "
              "the worker dead-letters it again unless its limit was raised")
    # The client's own request limit (1 MB) is not ours to impose: the broker decides.
    with Publisher(settings.broker, settings.topics, **settings.kafka_security.kafka_python(),
                   max_request_size=max(1 << 20, len(value) + (64 << 10))) as publisher:
        try:
            meta = publisher.send_raw(letter.topic, value, key=letter.key, headers=headers).get(timeout=10)
        except KafkaError as exc:
            raise CliError(f"{ref} not replayed to {letter.topic}: {exc}") from None
    print(f"replayed dead letter {ref} ({letter.error}: {letter.reason}) to "
          f"{letter.topic}[{meta.partition}]@{meta.offset}")
    return 0

