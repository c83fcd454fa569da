"""Signed operator commands: the canonical form, and every way verification must say no."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from dataclasses import replace

import pytest

from streams import events as ev
from streams import signing
from streams.codec import build, decode
from streams.envelope import CloudEvent

NOW = 1_800_000_000.0
KEY = signing.OperatorKey("alice-1", "alice", b"alice-secret-0123456789")
KEYS = {KEY.key_id: KEY, "bob-1": signing.OperatorKey("bob-1", "bob", b"bob-secret-0123456789ab")}


def command(operator: str = "alice", **kw) -> CloudEvent:
    data = ev.OperatorCommand(command=kw.pop("command", "retrain"), reason="because",
                              operator=operator, **kw)
    event = build(data, "clf", source="loopline/cli/alice", id="cmd-1")
    return replace(event, time=signing.rfc3339(NOW - 5))


def signed(**kw) -> CloudEvent:
    return signing.sign(command(**kw), KEY, now=NOW - 5)


def test_a_signed_command_verifies_and_names_its_key():
    event = signed()
    assert event.extensions["keyid"] == "alice-1"
    assert event.extensions["expirytime"] == signing.rfc3339(NOW - 5 + 600)
    assert len(event.extensions["signature"]) == 64
    assert signing.verify(event, KEYS, NOW) == KEY


def test_the_canonical_form_is_documented_json_without_the_signature():
    """Pinned so that a producer in another language can reproduce it from the docstring."""
    event = signed()
    doc = {"specversion": "1.0", "id": "cmd-1", "source": "loopline/cli/alice",
           "type": "io.loopline.operator.command", "subject": "clf", "time": event.time,
           "datacontenttype": "application/json", "correlationid": "cmd-1", "keyid": "alice-1",
           "expirytime": event.extensions["expirytime"],
           "data": {"schema_version": 1, "command": "retrain", "reason": "because",
                    "operator": "alice", "version": None}}
    expected = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    assert signing.canonical(event) == expected
    assert event.extensions["signature"] == hmac.new(KEY.secret, expected, hashlib.sha256).hexdigest()


def test_the_signature_survives_the_wire_in_both_cloudevents_modes():
    event = signed()
    assert signing.verify(decode(event.to_json()).event, KEYS, NOW) == KEY
    binary = decode(json.dumps(dict(event.data)).encode(), event.to_headers()).event
    assert signing.verify(binary, KEYS, NOW) == KEY


@pytest.mark.parametrize("change", [
    pytest.param(lambda e: replace(e, data={**e.data, "reason": "other"}), id="data"),
    pytest.param(lambda e: replace(e, subject="other-model"), id="subject"),
    pytest.param(lambda e: replace(e, id="cmd-2"), id="id"),
    pytest.param(lambda e: replace(e, source="evil"), id="source"),
    pytest.param(lambda e: replace(e, time=signing.rfc3339(NOW)), id="time"),
    pytest.param(lambda e: e.with_extensions(expirytime=signing.rfc3339(NOW + 3600)), id="expiry"),
    pytest.param(lambda e: e.with_extensions(correlationid="x"), id="extension"),
    pytest.param(lambda e: e.with_extensions(keyid="bob-1"), id="key-swapped"),
])
def test_any_change_to_a_signed_command_breaks_the_signature(change):
    with pytest.raises(signing.SignatureError) as err:
        signing.verify(change(signed()), KEYS, NOW)
    assert err.value.kind == "bad_signature"


@pytest.mark.parametrize("event, keys, now, kind, phrase", [
    pytest.param(command(), KEYS, NOW, "unsigned", "unsigned", id="unsigned"),
    pytest.param(signed(), {}, NOW, "no_keys", "no operator keys configured", id="no-keys"),
    pytest.param(signed(), {"bob-1": KEYS["bob-1"]}, NOW, "unknown_key", "unknown operator key id 'alice-1'",
                 id="unknown-key"),
    pytest.param(signing.sign(command(), replace(KEY, secret=b"guessed-secret-000000"), now=NOW),
                 KEYS, NOW, "bad_signature", "forged", id="wrong-secret"),
    pytest.param(signing.sign(command(operator="bob"), KEY, now=NOW - 5), KEYS, NOW,
                 "operator_mismatch", "operator 'bob' does not match key 'alice-1'", id="impersonation"),
    pytest.param(signed(), KEYS, NOW + 601, "expired", "expired at", id="expired"),
    pytest.param(signing.sign(replace(command(), time=signing.rfc3339(NOW + 3600)), KEY, now=NOW + 3600),
                 KEYS, NOW, "bad_time", "in the future", id="dated-in-the-future"),
])
def test_verification_refuses_with_a_reason(event, keys, now, kind, phrase):
    with pytest.raises(signing.SignatureError) as err:
        signing.verify(event, keys, now)
    assert err.value.kind == kind and phrase in str(err.value)


def test_a_command_without_expiry_or_with_a_lifetime_too_long_is_refused():
    bare = command().with_extensions(keyid="alice-1")
    bare = bare.with_extensions(signature=signing.signature(bare, KEY.secret))
    with pytest.raises(signing.SignatureError, match="no expirytime"):
        signing.verify(bare, KEYS, NOW)
    long = command().with_extensions(keyid="alice-1", expirytime=signing.rfc3339(NOW + 3 * 86400))
    long = long.with_extensions(signature=signing.signature(long, KEY.secret))
    with pytest.raises(signing.SignatureError, match="lifetime"):
        signing.verify(long, KEYS, NOW)
    with pytest.raises(ValueError, match="ttl"):
        signing.sign(command(), KEY, now=NOW, ttl_seconds=2 * 86400)


def test_keys_file_yaml_or_json_and_clear_errors(tmp_path):
    path = tmp_path / "keys.yaml"
    path.write_text("alice-1:\n  operator: alice\n  secret: alice-secret-0123456789\n")
    assert signing.load_keys(path) == {"alice-1": KEY}
    path.write_text(json.dumps({"alice-1": {"operator": "alice", "secret": "alice-secret-0123456789"}}))
    assert signing.load_keys(path) == {"alice-1": KEY}
    for text, phrase in [("[1, 2]", "expected a mapping"), ("a: {operator: x}", "'secret' must be"),
                         ("a: {operator: x, secret: short}", "at least 16"),
                         ("a: {operator: x, secret: 0123456789abcdefgh, role: admin}", "unknown field"),
                         ("a: {secret: 0123456789abcdefgh}", "'operator' must be"), ("a: [", "not valid")]:
        path.write_text(text)
        with pytest.raises(signing.KeyFileError, match=phrase):
            signing.load_keys(path)
    with pytest.raises(signing.KeyFileError, match="cannot read"):
        signing.load_keys(tmp_path / "missing.yaml")
    assert repr(KEY).count("alice-secret") == 0          # secrets stay out of logs


def test_key_file_reloads_on_change_and_keeps_the_last_good_keys(tmp_path):
    path = tmp_path / "keys.yaml"
    path.write_text("alice-1: {operator: alice, secret: alice-secret-0123456789}\n")
    keys = signing.KeyFile(path)
    assert set(keys.keys()) == {"alice-1"}
    path.write_text("alice-1: {operator: alice, secret: alice-secret-0123456789}\n"
                    "carol-1: {operator: carol, secret: carol-secret-0123456789}\n")
    os.utime(path, ns=(1, 1))                    # a different stamp even within one clock tick
    assert set(keys.keys()) == {"alice-1", "carol-1"}
    path.write_text("{broken")
    assert set(keys.keys()) == {"alice-1", "carol-1"} and "not valid" in keys.error
    assert signing.KeyFile(None).keys() == {}
    with pytest.raises(signing.KeyFileError):
        signing.KeyFile(tmp_path / "missing.yaml")
