"""Signed prediction ids: what feedback needs travels in the id, so any replica can take it.

Why: with N replicas behind a Service, the replica that answers a prediction is rarely the one
that gets its label back. Instead of a shared join store, the id itself carries the model, the
version, the experiment that routed it and (when small) the prediction, signed with a key every
replica shares, so feedback is verified without asking anyone and cannot be forged.

    id = base64url(compact JSON {"m", "v", "e", "p"?, "t", "n"}) "." base64url(HMAC-SHA256(key, JSON)[:16])

no padding; "p" is left out when its JSON is over 200 bytes; "n" is 8 random bytes in hex, so
two predictions of the same row still get different ids. `MalformedId`: not an id at all (bad
base64, JSON, fields); `ForgedId`: a well-formed id whose signature does not match the key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

TAG_BYTES = 16
MAX_PREDICTION_JSON = 200
MAX_ID_CHARS = 4096                 # refuse before decoding anything bigger
MIN_KEY_BYTES = 16


class InvalidId(ValueError):
    """A prediction id feedback cannot be accepted for; `str(error)` says why."""


class MalformedId(InvalidId):
    pass


class ForgedId(InvalidId):
    pass


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise MalformedId(f"the {what} is not base64url") from None


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def sign(key: bytes, fields: dict) -> str:
    """An id for one prediction: `fields` holds m, v, e and p (t and n are filled in if absent)."""
    return sign_many(key, fields["m"], fields["v"], fields.get("e"), [fields.get("p")],
                     at=fields.get("t"), nonces=[fields["n"]] if "n" in fields else None)[0]


def sign_many(key: bytes, model: str, version: str, experiment: str | None, predictions: list,
              at: float | None = None, nonces: list[str] | None = None) -> list[str]:
    """One id per prediction of a call; the shared part of the JSON is encoded once (hot path)."""
    at = time.time() if at is None else at
    head = f'{{"m":{_dumps(model)},"v":{_dumps(version)},"e":{_dumps(experiment)},"t":{_dumps(at)},"n":"'
    if nonces is None:
        noise = secrets.token_hex(8 * len(predictions))
        nonces = [noise[i * 16:(i + 1) * 16] for i in range(len(predictions))]
    ids = []
    for nonce, prediction in zip(nonces, predictions):
        value = _dumps(prediction)
        body = f'{head}{nonce}"}}' if len(value.encode()) > MAX_PREDICTION_JSON else \
            f'{head}{nonce}","p":{value}}}'
        payload = body.encode()
        tag = hmac.digest(key, payload, "sha256")[:TAG_BYTES]
        ids.append(f"{_b64(payload)}.{_b64(tag)}")
    return ids


def verify(key: bytes, pid: str) -> dict:
    """The fields of a genuine id: m, v, e, t, n, and p when it was carried."""
    if not isinstance(pid, str) or not pid:
        raise MalformedId("the prediction id must be a non-empty string")
    if len(pid) > MAX_ID_CHARS:
        raise MalformedId(f"the prediction id is over {MAX_ID_CHARS} characters")
    encoded, dot, signature = pid.partition(".")
    if not dot or "." in signature:
        raise MalformedId("the prediction id is not <payload>.<signature>")
    payload, tag = _unb64(encoded, "payload"), _unb64(signature, "signature")
    if len(tag) != TAG_BYTES:
        raise MalformedId(f"the signature is {len(tag)} bytes, not {TAG_BYTES}")
    try:
        fields = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise MalformedId("the payload is not JSON") from None
    if not isinstance(fields, dict):
        raise MalformedId("the payload is not a JSON object")
    _check_fields(fields)
    if not hmac.compare_digest(hmac.digest(key, payload, "sha256")[:TAG_BYTES], tag):
        raise ForgedId("the signature does not match: not an id this deployment issued")
    return fields


def _check_fields(fields: dict) -> None:
    for name in ("m", "v", "n"):
        if not isinstance(fields.get(name), str) or not fields[name]:
            raise MalformedId(f"field {name!r} is missing or not a non-empty string")
    if not isinstance(fields.get("e"), (str, type(None))):
        raise MalformedId("field 'e' must be a string or null")
    if isinstance(fields.get("t"), bool) or not isinstance(fields.get("t"), (int, float)):
        raise MalformedId("field 't' is missing or not a number")


def load_key(path: Path, create: bool) -> bytes:
    """The signing key in `path`; with `create`, made once (32 random bytes, hex, mode 0600).

    Replicas on one machine may start together: the file is written aside and linked into
    place, which fails for every racer but one, and they all read the winner's key."""
    path = Path(path)
    if create and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        aside = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_hex(32) + "\n")
            try:
                os.link(aside, path)
            except FileExistsError:
                pass                        # another replica's key won: use it
        finally:
            aside.unlink(missing_ok=True)
    try:
        key = path.read_bytes().strip()
    except OSError as exc:
        raise ValueError(f"serving key file {path}: {exc.strerror or exc}") from None
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"serving key file {path}: key under {MIN_KEY_BYTES} bytes")
    return key
