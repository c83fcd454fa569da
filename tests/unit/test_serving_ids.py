"""Signed prediction ids: what feedback trusts must be exactly what a replica issued."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import stat

import pytest

from serving import ids

KEY = b"k" * 32


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def signed(payload: bytes, key: bytes = KEY) -> str:
    """An id made by hand, signed properly: for payloads `sign` would never produce."""
    return f"{b64(payload)}.{b64(hmac.new(key, payload, hashlib.sha256).digest()[:16])}"


def test_a_signed_id_verifies_to_its_fields():
    pid = ids.sign(KEY, {"m": "clf", "v": "3", "e": "exp-1", "p": 1, "t": 1700000000.5})
    fields = ids.verify(KEY, pid)
    assert (fields["m"], fields["v"], fields["e"], fields["p"], fields["t"]) == ("clf", "3", "exp-1", 1, 1700000000.5)
    assert len(fields["n"]) == 16 and "=" not in pid


def test_ids_of_one_call_are_distinct_and_each_carries_its_prediction():
    pids = ids.sign_many(KEY, "clf", "3", None, [0, 1, 1, "a"])
    assert len(set(pids)) == 4
    assert [ids.verify(KEY, p)["p"] for p in pids] == [0, 1, 1, "a"]
    assert all(ids.verify(KEY, p)["e"] is None for p in pids)


def test_a_large_prediction_is_left_out():
    big = list(range(100))                      # its JSON is well over 200 bytes
    fields = ids.verify(KEY, ids.sign(KEY, {"m": "clf", "v": "3", "e": None, "p": big}))
    assert "p" not in fields and fields["v"] == "3"
    small = ids.verify(KEY, ids.sign(KEY, {"m": "clf", "v": "3", "e": None, "p": [0.25, 0.75]}))
    assert small["p"] == [0.25, 0.75]


def test_a_tampered_payload_is_forged():
    pid = ids.sign(KEY, {"m": "clf", "v": "3", "e": "exp-1", "p": 0})
    payload, tag = pid.split(".")
    fields = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    fields["v"] = "4"                           # credit the other arm
    forged = f"{b64(json.dumps(fields, separators=(',', ':')).encode())}.{tag}"
    with pytest.raises(ids.ForgedId, match="signature does not match"):
        ids.verify(KEY, forged)


def test_another_key_is_forged():
    pid = ids.sign(KEY, {"m": "clf", "v": "3", "e": None, "p": 0})
    with pytest.raises(ids.ForgedId):
        ids.verify(b"x" * 32, pid)


@pytest.mark.parametrize("pid, reason", [
    pytest.param("", "non-empty", id="empty"),
    pytest.param("no-dot-at-all", "<payload>.<signature>", id="no-signature"),
    pytest.param("a.b.c", "<payload>.<signature>", id="two-dots"),
    pytest.param("!!!.AAAAAAAAAAAAAAAAAAAAAA", "payload is not base64url", id="payload-not-base64"),
    pytest.param(f"{b64(b'{}')}.%%%", "signature is not base64url", id="signature-not-base64"),
    pytest.param(f"{b64(b'{}')}.{b64(b'short')}", "5 bytes, not 16", id="short-signature"),
    pytest.param(signed(b"not json"), "not JSON", id="payload-not-json"),
    pytest.param(signed(b"[1, 2]"), "not a JSON object", id="payload-not-an-object"),
    pytest.param(signed(b'{"v": "3", "e": null, "t": 1, "n": "ab"}'), "'m' is missing", id="no-model"),
    pytest.param(signed(b'{"m": "clf", "e": null, "t": 1, "n": "ab"}'), "'v' is missing", id="no-version"),
    pytest.param(signed(b'{"m": "clf", "v": "3", "e": null, "n": "ab"}'), "'t' is missing", id="no-time"),
    pytest.param(signed(b'{"m": "clf", "v": "3", "e": 5, "t": 1, "n": "ab"}'), "'e' must be", id="bad-experiment"),
    pytest.param("A" * 5000, "over 4096", id="too-long"),
])
def test_malformed_ids_say_why(pid, reason):
    with pytest.raises(ids.MalformedId, match=reason.replace("(", r"\(")):
        ids.verify(KEY, pid)


def test_a_hand_signed_well_formed_id_verifies():
    fields = ids.verify(KEY, signed(b'{"m":"clf","v":"3","e":null,"t":1,"n":"ab"}'))
    assert fields["m"] == "clf" and "p" not in fields


def test_the_default_key_is_created_once_private_and_shared(tmp_path):
    path = tmp_path / "state" / "serving.key"
    first = ids.load_key(path, create=True)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600 and len(first) == 64
    assert ids.load_key(path, create=True) == first          # a second replica reads the same key
    assert list(path.parent.iterdir()) == [path]              # no leftovers of the atomic write


def test_an_explicit_key_file_must_exist_and_be_long_enough(tmp_path):
    with pytest.raises(ValueError, match="serving key file"):
        ids.load_key(tmp_path / "missing.key", create=False)
    short = tmp_path / "short.key"
    short.write_text("abc\n")
    with pytest.raises(ValueError, match="under 16 bytes"):
        ids.load_key(short, create=False)
