"""The CloudEvents 1.0 envelope every loopline event travels in.

Why ours, not the CloudEvents SDK (`cloudevents` 2.2, whose Kafka binding reads both modes):
its reader is lenient where a dead-letter reason is owed (a record without `id` is given a
random one, specversion 0.3 passes, `data` may be any JSON, invalid `data_base64` becomes b"",
non-string extensions pass), lets raw UnicodeDecodeError/AttributeError/ValueError escape, turns
`time` into a datetime written back reformatted (".123Z" -> ".123000Z": a signed command's
canonical bytes would change) and adds the record key as a `partitionkey` attribute. Keeping
loopline's checks on top of it would cost about twice our decode time per event.

We write structured JSON mode (one self-describing JSON document per record, readable with any
Kafka tool) and read both structured and binary mode (`ce_*` headers, value = data), so events
from other CloudEvents producers are accepted too. Causality rides in two extension attributes:
`correlationid` names the chain, `causationid` the event that caused this one; with them the
lineage of any model version can be rebuilt from the topics alone.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any, Mapping

SPECVERSION = "1.0"
STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"
REQUIRED = ("id", "source", "specversion", "type")
_EXTENSION_NAME = re.compile(r"^[a-z0-9]{1,20}$")
_CORE = {"id", "source", "specversion", "type", "time", "subject", "datacontenttype", "data",
         "dataschema", "data_base64"}


class EnvelopeError(ValueError):
    """The bytes are not a valid CloudEvent; the message says which attribute and why."""


def utc_now() -> str:
    """RFC 3339 timestamp with microseconds, the format every loopline event carries."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def parse_time(value: str) -> float:
    """RFC 3339 → POSIX seconds; raises EnvelopeError on anything else."""
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except (TypeError, ValueError) as exc:
        raise EnvelopeError(f"attribute 'time' is not an RFC 3339 timestamp: {value!r}") from exc


@dataclass(frozen=True)
class CloudEvent:
    id: str
    source: str
    type: str
    subject: str
    data: Mapping[str, Any]
    time: str = field(default_factory=utc_now)
    specversion: str = SPECVERSION
    datacontenttype: str = "application/json"
    extensions: Mapping[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """Globally unique identity of the event: CloudEvents says `source` + `id` is unique."""
        return f"{self.source}#{self.id}"

    @property
    def correlationid(self) -> str:
        return self.extensions.get("correlationid", self.id)

    @property
    def causationid(self) -> str | None:
        return self.extensions.get("causationid")

    @property
    def timestamp(self) -> float:
        return parse_time(self.time)

    def with_extensions(self, **extra: str) -> CloudEvent:
        return replace(self, extensions={**self.extensions, **extra})

    # --- structured mode -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "specversion": self.specversion, "id": self.id, "source": self.source,
            "type": self.type, "subject": self.subject, "time": self.time,
            "datacontenttype": self.datacontenttype,
        }
        doc.update(self.extensions)
        doc["data"] = dict(self.data)
        return doc

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False).encode()

    @classmethod
    def from_dict(cls, doc: Any) -> CloudEvent:
        if not isinstance(doc, dict):
            raise EnvelopeError(f"a CloudEvent is a JSON object, got {type(doc).__name__}")
        for name in REQUIRED:
            value = doc.get(name)
            if not isinstance(value, str) or not value:
                raise EnvelopeError(f"required attribute {name!r} is missing or not a non-empty string")
        if doc["specversion"] != SPECVERSION:
            raise EnvelopeError(f"specversion {doc['specversion']!r} is not supported (expected '1.0')")
        subject = doc.get("subject")
        if not isinstance(subject, str) or not subject:
            raise EnvelopeError("attribute 'subject' (the model name) is missing or empty")
        time = doc.get("time") or utc_now()
        if not isinstance(time, str):
            raise EnvelopeError("attribute 'time' must be a string")
        parse_time(time)
        data = doc.get("data", {})
        if not isinstance(data, dict):
            raise EnvelopeError(f"attribute 'data' must be a JSON object, got {type(data).__name__}")
        extensions = {}
        for name, value in doc.items():
            if name in _CORE:
                continue
            if not _EXTENSION_NAME.match(name):
                raise EnvelopeError(f"extension attribute name {name!r} is not lowercase alphanumeric (<= 20)")
            if not isinstance(value, str):
                raise EnvelopeError(f"extension attribute {name!r} must be a string")
            extensions[name] = value
        return cls(id=doc["id"], source=doc["source"], type=doc["type"], subject=subject,
                   data=data, time=time, specversion=SPECVERSION,
                   datacontenttype=doc.get("datacontenttype") or "application/json",
                   extensions=extensions)

    # --- binary mode -----------------------------------------------------------------------
    def to_headers(self) -> list[tuple[str, bytes]]:
        """Binary-mode headers (value = JSON data); offered for producers that want them."""
        attrs = self.to_dict()
        attrs.pop("data")
        content_type = attrs.pop("datacontenttype")
        return [("content-type", content_type.encode())] + [
            (f"ce_{name}", str(value).encode()) for name, value in attrs.items()]

    @classmethod
    def from_binary(cls, headers: Mapping[str, bytes], value: bytes) -> CloudEvent:
        doc: dict[str, Any] = {}
        for name, raw in headers.items():
            if name.startswith("ce_"):
                doc[name[3:]] = _text(raw, name)
        if "content-type" in headers:
            doc["datacontenttype"] = _text(headers["content-type"], "content-type")
        try:
            doc["data"] = json.loads(value) if value else {}
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise EnvelopeError(f"binary-mode data is not JSON: {exc}") from exc
        return cls.from_dict(doc)


def _text(raw: bytes | str, name: str) -> str:
    if isinstance(raw, str):
        return raw
    try:
        return raw.decode()
    except UnicodeDecodeError as exc:
        raise EnvelopeError(f"header {name!r} is not UTF-8") from exc


def new_event(type: str, subject: str, data: Mapping[str, Any], *, source: str,
              cause: CloudEvent | None = None, id: str | None = None,
              **extensions: str) -> CloudEvent:
    """A new event; with `cause` it joins the cause's chain (same correlationid, causationid = cause.id)."""
    event_id = id or str(uuid.uuid4())
    ext = dict(extensions)
    if cause is not None:
        ext.setdefault("correlationid", cause.correlationid)
        ext.setdefault("causationid", cause.id)
    else:
        ext.setdefault("correlationid", event_id)
    return CloudEvent(id=event_id, source=source, type=type, subject=subject, data=dict(data),
                      extensions=ext)
