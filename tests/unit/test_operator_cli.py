"""The operator CLI without a broker: arguments, key choice, the signed event, clear failures."""

from __future__ import annotations

import json
import time

import pytest

from loopline.cli import main
from loopline.commands import CliError
from loopline.commands.inspect import parse_ref
from loopline.commands.operator import command_event, signing_key
from loopline.settings import Settings
from streams import signing

ALICE = {"alice-1": {"operator": "alice", "secret": "alice-secret-0123456789"}}
BOB = {"bob-1": {"operator": "bob", "secret": "bob-secret-0123456789ab"}}


@pytest.fixture
def keyfile(tmp_path):
    def write(*entries):
        path = tmp_path / "keys.json"
        path.write_text(json.dumps({k: v for e in entries for k, v in e.items()}))
        return path
    return write


def test_the_key_is_the_named_one_or_the_only_one(keyfile):
    one, two = keyfile(ALICE), None
    assert signing_key(Settings(operator_keys=one), None).operator == "alice"
    two = keyfile(ALICE, BOB)
    assert signing_key(Settings(operator_keys=two, operator_key_id="bob-1"), None).operator == "bob"
    assert signing_key(Settings(operator_keys=two), "alice-1").operator == "alice"
    with pytest.raises(CliError, match="holds 2 keys: choose one"):
        signing_key(Settings(operator_keys=two), None)
    with pytest.raises(CliError, match="'carol-1' is not in"):
        signing_key(Settings(operator_keys=two), "carol-1")
    with pytest.raises(CliError, match="set LOOPLINE_OPERATOR_KEYS"):
        signing_key(Settings(operator_keys=None), None)


def test_the_command_carries_the_keys_operator_and_verifies(keyfile):
    keys = signing.load_keys(keyfile(ALICE))
    now = time.time()
    event = command_event("rollback", "clf", "bad model", "3", keys["alice-1"], now, 120)
    assert event.data["operator"] == "alice" and event.data["version"] == "3"
    assert event.source == "loopline/cli/alice" and event.subject == "clf"
    assert signing.verify(event, keys, now) == keys["alice-1"]
    with pytest.raises(signing.SignatureError, match="expired"):
        signing.verify(event, keys, now + 121)


def test_publish_fails_clearly_without_a_key_and_needs_a_reason(monkeypatch, capsys):
    monkeypatch.delenv("LOOPLINE_OPERATOR_KEYS", raising=False)
    assert main(["publish", "retrain", "--model", "clf", "--reason", "x"]) == 2
    assert "no operator key" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["publish", "retrain", "--model", "clf"])                  # --reason is required
    with pytest.raises(SystemExit):
        main(["publish", "promote", "--model", "clf", "--reason", "x"])  # promote needs --version
    with pytest.raises(SystemExit):
        main(["publish", "rollback", "--model", "clf", "--reason", "x", "--version", "2"])  # it is --to


def test_dead_letter_ids():
    assert parse_ref("1:42") == (1, 42) and parse_ref("deadletter:0:7") == (0, 7)
    for bad in ("42", "a:b", "1:", ":3", "1:2:3"):
        with pytest.raises(CliError, match="not a dead-letter id"):
            parse_ref(bad)
