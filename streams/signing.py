"""Signed operator commands: HMAC-SHA256 over the canonical event, one key per operator.

Why: an operator command can retrain, promote or roll back a production model, so the bus must
not take one on anyone's word. Each operator holds a key (key id -> operator, secret); the CLI
signs the command and the worker verifies it once, at the owner of the operator topic, before
anything acts on it. What is signed is the whole event, not just its data: id, source, time,
subject, data and every extension except `signature` itself, so none of them can be altered.

    canonical(event) = JSON of the structured-mode event without `signature`,
                       keys sorted, separators (",", ":"), UTF-8 (ensure_ascii=False)
    signature        = hex(HMAC-SHA256(secret, canonical(event)))

Extension attributes: `keyid` (which key), `signature` (the hex digest), `expirytime`
(RFC 3339; after it the command is refused). A replayed command (same `source` + `id`) is
caught by the verifier's memory of accepted ids; `expirytime` bounds how long that memory has
to last. A producer in another language reproduces the canonical form from this docstring.

Keys file (YAML or JSON), `LOOPLINE_OPERATOR_KEYS` points at it (a mounted Secret works):

    alice-2024:
      operator: alice
      secret: "at least 16 characters of random"

This module does no I/O beyond reading that file; time is always a parameter.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

from streams.envelope import CloudEvent, EnvelopeError, parse_time

KEYID = "keyid"
SIGNATURE = "signature"
EXPIRY = "expirytime"
DEFAULT_TTL_SECONDS = 600.0         # the CLI's default: a command is valid for 10 minutes
MAX_TTL_SECONDS = 86_400.0          # longer-lived commands are refused (replay memory is bounded)
MAX_CLOCK_SKEW_SECONDS = 300.0      # a command dated further in the future is refused
MIN_SECRET_BYTES = 16


class SignatureError(ValueError):
    """The command cannot be trusted. `kind` is a short stable category (metrics, dead letters)."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


class KeyFileError(ValueError):
    """The keys file is missing, unreadable or malformed; the message names the file and the key."""


@dataclass(frozen=True)
class OperatorKey:
    key_id: str
    operator: str
    secret: bytes = field(repr=False)


def rfc3339(timestamp: float) -> str:
    return (datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="seconds")
            .replace("+00:00", "Z"))


def canonical(event: CloudEvent) -> bytes:
    """The bytes that are signed: the structured event without `signature`, keys sorted."""
    doc = event.to_dict()
    doc.pop(SIGNATURE, None)
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def signature(event: CloudEvent, secret: bytes) -> str:
    return hmac.new(secret, canonical(event), hashlib.sha256).hexdigest()


def sign(event: CloudEvent, key: OperatorKey, *, now: float,
         ttl_seconds: float = DEFAULT_TTL_SECONDS) -> CloudEvent:
    """`event` with `keyid`, `expirytime` (now + ttl) and the `signature` over all of it."""
    if not 0 < ttl_seconds <= MAX_TTL_SECONDS:
        raise ValueError(f"ttl must be in (0, {MAX_TTL_SECONDS:g}] seconds, got {ttl_seconds:g}")
    extensions = {k: v for k, v in event.extensions.items() if k != SIGNATURE}
    extensions.update({KEYID: key.key_id, EXPIRY: rfc3339(now + ttl_seconds)})
    unsigned = CloudEvent(id=event.id, source=event.source, type=event.type,
                          subject=event.subject, data=event.data, time=event.time,
                          specversion=event.specversion, datacontenttype=event.datacontenttype,
                          extensions=extensions)
    return unsigned.with_extensions(**{SIGNATURE: signature(unsigned, key.secret)})


def verify(event: CloudEvent, keys: Mapping[str, OperatorKey], now: float) -> OperatorKey:
    """The key that signed `event`, or SignatureError saying why it cannot be trusted.

    Checks, in order: keys configured, signed at all, known key, signature, operator named in
    the data matches the key's operator, expiry present, not expired, sane lifetime and time.
    Replays are the caller's business (it must remember accepted `event.key`s until expiry).
    """
    if not keys:
        raise SignatureError("no_keys", "no operator keys configured: operator commands are refused "
                                        "(set LOOPLINE_OPERATOR_KEYS)")
    key_id, sig = event.extensions.get(KEYID), event.extensions.get(SIGNATURE)
    if not key_id or not sig:
        raise SignatureError("unsigned", "unsigned operator command (no keyid/signature "
                                         "extension); publish it with `loopline publish`")
    key = keys.get(key_id)
    if key is None:
        raise SignatureError("unknown_key", f"unknown operator key id {key_id!r}")
    if not hmac.compare_digest(sig, signature(event, key.secret)):
        raise SignatureError("bad_signature", f"bad signature for key {key_id!r}: the command was "
                                              "forged, altered, or signed with another secret")
    claimed = event.data.get("operator")
    if claimed is not None and claimed != key.operator:
        raise SignatureError("operator_mismatch", f"operator {claimed!r} does not match key "
                                                  f"{key_id!r} (operator {key.operator!r})")
    expiry = expiry_of(event)
    if now > expiry:
        raise SignatureError("expired", f"command expired at {event.extensions[EXPIRY]} "
                                        f"({now - expiry:.0f}s ago)")
    issued = event.timestamp
    if issued > now + MAX_CLOCK_SKEW_SECONDS:
        raise SignatureError("bad_time", f"command time {event.time} is in the future")
    if expiry - issued > MAX_TTL_SECONDS:
        raise SignatureError("bad_time", f"command lifetime {expiry - issued:.0f}s exceeds "
                                         f"{MAX_TTL_SECONDS:.0f}s")
    return key


def expiry_of(event: CloudEvent) -> float:
    raw = event.extensions.get(EXPIRY)
    if not raw:
        raise SignatureError("no_expiry", "signed command has no expirytime")
    try:
        return parse_time(raw)
    except EnvelopeError:
        raise SignatureError("no_expiry", f"expirytime {raw!r} is not an RFC 3339 timestamp") from None


# --- keys ----------------------------------------------------------------------------------------

def parse_keys(doc: Any, origin: str = "operator keys") -> dict[str, OperatorKey]:
    """key id -> OperatorKey from a mapping `{key_id: {operator, secret}}`."""
    if doc is None:
        return {}
    if not isinstance(doc, Mapping):
        raise KeyFileError(f"{origin}: expected a mapping of key id -> {{operator, secret}}, "
                           f"got {type(doc).__name__}")
    keys = {}
    for key_id, entry in doc.items():
        where = f"{origin}: key {key_id!r}"
        if not isinstance(key_id, str) or not key_id:
            raise KeyFileError(f"{where}: key ids are non-empty strings")
        if not isinstance(entry, Mapping):
            raise KeyFileError(f"{where}: expected {{operator, secret}}")
        unknown = set(entry) - {"operator", "secret"}
        if unknown:
            raise KeyFileError(f"{where}: unknown field(s) {sorted(unknown)}")
        operator, secret = entry.get("operator"), entry.get("secret")
        if not isinstance(operator, str) or not operator:
            raise KeyFileError(f"{where}: 'operator' must be a non-empty string")
        if not isinstance(secret, str) or len(secret.encode()) < MIN_SECRET_BYTES:
            raise KeyFileError(f"{where}: 'secret' must be a string of at least "
                               f"{MIN_SECRET_BYTES} bytes")
        keys[key_id] = OperatorKey(key_id, operator, secret.encode())
    return keys


def load_keys(path: str | Path) -> dict[str, OperatorKey]:
    import yaml     # YAML is a superset of JSON: one parser reads both

    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read operator keys: {exc.strerror or exc}") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise KeyFileError(f"{path}: not valid YAML/JSON: {exc}") from None
    return parse_keys(doc, str(path))


class KeyFile:
    """The keys of a file, re-read when the file changes (keys rotate without a restart).

    No path: no keys (every command is refused). A file that becomes unreadable or malformed
    after a good load keeps the last good keys and reports the error in `error`.
    """

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path else None
        self.error: str | None = None
        self._stamp: tuple | None = None
        self._keys: dict[str, OperatorKey] = {}
        if self.path is not None:
            self._keys = load_keys(self.path)        # a bad file at start is fatal: say so now
            self._stamp = self._stat()

    def _stat(self) -> tuple | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def keys(self) -> dict[str, OperatorKey]:
        if self.path is None:
            return {}
        stamp = self._stat()
        if stamp != self._stamp:
            try:
                self._keys, self.error = load_keys(self.path), None
            except KeyFileError as exc:
                self.error = str(exc)
            self._stamp = stamp
        return self._keys
