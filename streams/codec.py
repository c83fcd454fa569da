"""Bytes ⇄ events, with every way a record can be wrong turned into one clear reason.

`decode` is the single door through which a consumed record becomes an event: size limit,
tombstones, JSON, the CloudEvents envelope (structured or binary mode), the known type, the
topic's allowed types and the typed data. Whatever fails raises `DecodeError(reason)`, which
the agents turn into a dead-letter record.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Iterable, Mapping

from streams.envelope import STRUCTURED_CONTENT_TYPE, CloudEvent, EnvelopeError, new_event
from streams.events import EVENT_TYPES, DataError, EventData, parse_data, to_data

DEFAULT_MAX_BYTES = 1_000_000


class DecodeError(ValueError):
    """A record that cannot become an event; `str(error)` is the dead-letter reason."""


@dataclass(frozen=True)
class Decoded:
    event: CloudEvent
    data: EventData


def headers_dict(headers: Iterable[tuple[str, bytes]] | Mapping[str, bytes] | None) -> dict[str, bytes]:
    if not headers:
        return {}
    items = headers.items() if isinstance(headers, Mapping) else headers
    return {name.lower(): value for name, value in items}


def decode(value: bytes | None, headers=None, *, accepts: Iterable[str] | None = None,
           max_bytes: int = DEFAULT_MAX_BYTES) -> Decoded:
    if value is None:
        raise DecodeError("tombstone: the record has no value")
    if len(value) > max_bytes:
        raise DecodeError(f"record of {len(value)} bytes exceeds the limit of {max_bytes} bytes")
    hdrs = headers_dict(headers)
    try:
        if "ce_id" in hdrs or "ce_specversion" in hdrs:
            event = CloudEvent.from_binary(hdrs, value)
        else:
            event = CloudEvent.from_dict(_json(value))
        if event.type not in EVENT_TYPES:
            raise DecodeError(f"unknown event type {event.type!r}")
        if accepts is not None and event.type not in accepts:
            raise DecodeError(f"event type {event.type!r} does not belong on this topic")
        return Decoded(event, parse_data(event))
    except (EnvelopeError, DataError) as exc:
        raise DecodeError(str(exc)) from None


def _json(value: bytes):
    try:
        return json.loads(value.decode("utf-8"))    # explicit: json would guess UTF-16 from a BOM
    except UnicodeDecodeError:
        raise DecodeError("value is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise DecodeError(f"value is not JSON: {exc.msg} at char {exc.pos}") from None
    except RecursionError:
        raise DecodeError("value is JSON nested too deeply") from None


def encode(event: CloudEvent) -> bytes:
    """Structured mode: one JSON document, content type application/cloudevents+json."""
    return event.to_json()


def encode_headers() -> list[tuple[str, bytes]]:
    return [("content-type", STRUCTURED_CONTENT_TYPE.encode())]


def build(data: EventData, subject: str, *, source: str, cause: CloudEvent | None = None,
          id: str | None = None, **extensions: str) -> CloudEvent:
    """A new event carrying typed `data` (the type comes from the data class)."""
    return new_event(data.TYPE, subject, to_data(data), source=source, cause=cause, id=id,
                     **extensions)
