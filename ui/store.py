"""The page's memory of the bus: every event of the loop's decision topics, indexed for the panel.

Why in memory: the timeline, the "what caused it / what it caused" panel and the live stream
all ask about the same few thousand events; reading the topics again per click would take a
second each. The store is filled once from history (`ui.bus.read_history`) and then by the
live follower, always on the event loop (the follower thread hands records over with
`call_soon_threadsafe`), so nothing here needs a lock.

Events are read leniently: the envelope is required, the typed data is used where the type is
known (for `streams.describe` and `loopline.commands.lineage`), and a type this version does
not know yet is kept with its data as a plain dict when it has a lane (the decision record,
`io.loopline.decision.recorded`, works by its type string before its class exists).
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

from streams.codec import headers_dict
from streams.describe import describe
from streams.envelope import CloudEvent, EnvelopeError
from streams.events import EVENT_TYPES, DataError, EventData, parse_data

DECISION_TYPE = "io.loopline.decision.recorded"
DECISION_SUFFIX = "decision.recorded"            # the decisions topic, after the prefix
LANES = ("data", "drift", "metric", "operator", "training", "evaluation", "promotion", "deployment",
         "rollout", "decision")
# By the type's first segment after "io.loopline."; anything else has no lane (not shown).
_LANE_OF_GROUP = {"data": "data", "drift": "drift", "metric": "metric", "operator": "operator",
                  "training": "training", "model.evaluated": "evaluation", "model.promoted": "promotion",
                  "rollback": "promotion", "deployment": "deployment", "rollout": "rollout",
                  "decision": "decision"}
SIGNAL_LANES = frozenset({"data", "drift", "metric", "operator"})    # what may start a training
MAX_EVENTS = 200_000                         # the oldest go first beyond this (a long-lived page)


def lane_of(event_type: str) -> str | None:
    short = event_type.removeprefix("io.loopline.")
    return _LANE_OF_GROUP.get(short) or _LANE_OF_GROUP.get(".".join(short.split(".")[:2])) \
        or _LANE_OF_GROUP.get(short.split(".")[0])


@dataclass(frozen=True)
class Item:
    """One event as the page shows it; `.event` and `.data` make it read like a snapshot.Seen."""
    event: CloudEvent
    data: EventData | None                    # None: a type this code has no class for
    lane: str
    ts: float
    summary: str

    @property
    def raw(self) -> Mapping[str, Any]:
        return self.event.data

    def to_json(self) -> dict[str, Any]:
        e = self.event
        return {"id": e.id, "type": e.type, "lane": self.lane, "time": e.time, "ts": self.ts,
                "model": e.subject, "summary": self.summary, "correlationid": e.correlationid,
                "causationid": e.causationid}


def item_of(value: bytes | None, headers: Iterable[tuple[str, bytes]] = ()) -> Item | None:
    """The page's item for a record's value, or None (not an event, no lane, invalid data)."""
    if not value:
        return None
    try:
        hdrs = headers_dict(headers)
        if "ce_id" in hdrs or "ce_specversion" in hdrs:
            event = CloudEvent.from_binary(hdrs, value)
        else:
            event = CloudEvent.from_dict(json.loads(value))
        ts = event.timestamp
    except (EnvelopeError, ValueError, UnicodeDecodeError, RecursionError):
        return None
    return item_of_event(event, ts)


def item_of_event(event: CloudEvent, ts: float | None = None) -> Item | None:
    lane = lane_of(event.type)
    if lane is None:
        return None
    data = None
    if event.type in EVENT_TYPES:
        try:
            data = parse_data(event)
        except (DataError, EnvelopeError):
            return None                       # refused by the worker too: it is a dead letter
    summary = describe(data) if data is not None else _untyped_summary(event)
    return Item(event, data, lane, event.timestamp if ts is None else ts, summary)


def _untyped_summary(event: CloudEvent) -> str:
    d = event.data
    if event.type == DECISION_TYPE:
        words = " ".join(str(d.get(k) or "") for k in ("policy", "outcome")).strip()
        return " ".join(f"{words}: {d.get('reason') or ''}".split())
    return ""


class EventStore:
    """Events in arrival order (history sorted by time first), with the indexes the panel needs."""

    def __init__(self, max_events: int = MAX_EVENTS):
        self.items: list[Item] = []
        self.by_id: dict[str, Item] = {}
        self.by_key: dict[str, Item] = {}
        self.children: dict[str, list[str]] = defaultdict(list)      # causationid -> ids
        self.decisions: dict[str, list[str]] = defaultdict(list)     # signal/request id -> decision ids
        self.listeners: set[Callable[[Item], None]] = set()
        self.max_events = max_events
        self.ready = False

    def extend(self, items: Iterable[Item]) -> None:
        for item in sorted(items, key=lambda i: i.ts):
            self.add(item, notify=False)

    def add(self, item: Item, notify: bool = True) -> bool:
        """Index `item`; False if its id was seen (a copy: operator.verified, a redelivery)."""
        e = self.event_id(item)
        if e in self.by_id:
            return False
        self.items.append(item)
        self.by_id[e] = item
        self.by_key[item.event.key] = item
        if item.event.causationid:
            self.children[item.event.causationid].append(e)
        if item.lane == "decision":
            for field in ("signal_id", "request_id"):
                wanted = item.raw.get(field)
                if isinstance(wanted, str) and wanted:
                    self.decisions[wanted].append(e)
        if len(self.items) > self.max_events:
            self._forget(self.items[: len(self.items) // 10])
        if notify:
            for listener in list(self.listeners):
                listener(item)
        return True

    @staticmethod
    def event_id(item: Item) -> str:
        return item.event.id

    def _forget(self, old: list[Item]) -> None:
        gone = {i.event.id for i in old}
        self.items = self.items[len(old):]
        for i in old:
            self.by_id.pop(i.event.id, None)
            self.by_key.pop(i.event.key, None)
        for index in (self.children, self.decisions):
            for key in [k for k, ids in index.items() if k in gone or all(i in gone for i in ids)]:
                del index[key]

    def models(self) -> set[str]:
        return {i.event.subject for i in self.items if i.event.subject != "*"}

    def typed(self, model: str | None = None) -> list[Item]:
        """Items with typed data (what lineage and rollouts read), of `model` or all."""
        return [i for i in self.items if i.data is not None and (model is None or i.event.subject == model)]
