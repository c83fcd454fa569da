"""Helpers for the operator-control tests: keys, the CLI in-process and as a process, waiting on state."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import yaml

from agents.policies import ModelState
from loopline.commands.snapshot import model_states
from devstack.stack import REPO, LocalStack
from streams.signing import OperatorKey
from tests.integration.loop_harness import MODEL

ALICE = OperatorKey("alice-1", "alice", b"alice-secret-0123456789abcdef")
CAROL = OperatorKey("carol-1", "carol", b"carol-secret-0123456789abcdef")


def write_keys(path: Path, *keys: OperatorKey) -> Path:
    path.write_text(yaml.safe_dump({k.key_id: {"operator": k.operator, "secret": k.secret.decode()}
                                    for k in keys}))
    return path


def cli_env(stack: LocalStack, keys: Path, key_id: str = ALICE.key_id) -> dict[str, str]:
    return {**stack.env(), "LOOPLINE_OPERATOR_KEYS": str(keys), "LOOPLINE_OPERATOR_KEY_ID": key_id}


class Cli:
    """`loopline ...` in this process (fast) with the stack's environment; returns (code, stdout)."""

    def __init__(self, monkeypatch, capsys):
        self.monkeypatch, self.capsys = monkeypatch, capsys

    def __call__(self, env: dict[str, str], *argv: str) -> tuple[int, str]:
        from loopline.cli import main

        for name, value in env.items():
            if name.startswith("LOOPLINE_"):
                self.monkeypatch.setenv(name, value)
        self.capsys.readouterr()
        code = main(list(argv))
        out = self.capsys.readouterr()
        return code, out.out + out.err

    def json(self, env: dict[str, str], *argv: str):
        code, out = self(env, *argv, "--json")
        assert code == 0, out
        return json.loads(out)


def cli_process(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess:
    """The real entry point, as an operator runs it."""
    return subprocess.run([sys.executable, "-m", "loopline.cli", *argv], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def wait_state(stack: LocalStack, predicate, timeout: float = 30.0, what: str = "state"):
    """Poll the trigger's ModelState (from its changelog) until `predicate(state)` holds."""
    deadline = time.monotonic() + timeout
    while True:
        state = model_states(stack.bootstrap, stack.settings.group).get(MODEL, ModelState())
        if predicate(state):
            return state
        stack.worker.check()
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}; last state {state}")
        time.sleep(0.3)

