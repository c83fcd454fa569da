"""The CLI against an address no broker answers: one clear line and exit code 3, in seconds.

Without the probe, kafka-python retries for over half a minute and ends in a traceback. The
address is a bound socket that never listens: it refuses connections, and no one else can take
the port while the test runs.
"""

from __future__ import annotations

import json
import socket
import time

import pytest
import yaml

from loopline.cli import main
from loopline.commands import CliError

KEYS = {"alice-1": {"operator": "alice", "secret": "alice-secret-0123456789"}}
PUBLISH = ["publish", "retrain", "--model", "clf", "--reason", "r"]
BUS_COMMANDS = [
    ["status"],
    ["lineage", "clf", "1"],
    ["why", "some-event-id"],
    ["events", "tail"],
    ["dlq", "list"],
    ["dlq", "replay", "0:0"],
    ["topics"],
    ["publish", "data", "--model", "clf", "--uri", "file:///d/b1", "--rows", "1", "--version", "b1"],
    PUBLISH,
    ["publish", "pause", "--model", "clf", "--reason", "r", "--dry-run"],   # reads the trigger's state
]


@pytest.fixture
def broker(tmp_path, monkeypatch) -> str:
    """LOOPLINE_BROKER at a refusing port, with a keys file and a config naming model `clf`."""
    keys, config = tmp_path / "keys.json", tmp_path / "loopline.yaml"
    keys.write_text(json.dumps(KEYS))
    config.write_text(yaml.safe_dump({"models": [{"name": "clf", "pipeline": {"steps": [
        {"name": "evaluate", "command": ["python", "-c", "pass"]}]}}]}))
    with socket.socket() as refusing:
        refusing.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{refusing.getsockname()[1]}"
        for name, value in {"BROKER": address, "OPERATOR_KEYS": keys, "CONFIG": config,
                            "STATE_DIR": tmp_path / "state"}.items():
            monkeypatch.setenv(f"LOOPLINE_{name}", str(value))
        yield address


@pytest.mark.parametrize("argv", BUS_COMMANDS, ids=" ".join)
def test_a_bus_command_names_the_address_and_the_fix_and_exits_3(argv, broker, capsys):
    started = time.monotonic()
    code = main(argv)
    elapsed = time.monotonic() - started
    err = capsys.readouterr().err
    assert code == 3, err
    [line] = [line for line in err.splitlines() if line.startswith("error:")]
    assert line.startswith(f"error: no Kafka broker answered at {broker} ({broker}: ")
    assert "Connection refused" in line
    assert line.endswith("set LOOPLINE_BROKER=HOST:PORT, or run `loopline demo` for an embedded one")
    assert "Traceback" not in err
    assert elapsed < 10, f"{' '.join(argv)} took {elapsed:.1f}s to say the broker is unreachable"


def test_a_missing_key_is_reported_before_the_broker(broker, monkeypatch, capsys):
    monkeypatch.delenv("LOOPLINE_OPERATOR_KEYS")
    assert main(PUBLISH) == 2
    assert "no operator key" in capsys.readouterr().err


def test_lineage_from_mlflow_tags_alone_needs_no_broker(broker, monkeypatch, capsys):
    def from_mlflow(settings, model, version, topics=True):
        raise CliError(f"asked MLflow for {model} v{version}, topics={topics}")

    monkeypatch.setattr("loopline.commands.lineage.collect", from_mlflow)   # MLflow's import: seconds
    assert main(["lineage", "clf", "1", "--no-topics"]) == 2
    assert "error: asked MLflow for clf v1, topics=False" in capsys.readouterr().err
