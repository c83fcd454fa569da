"""Run names: deterministic, DNS-1123 label safe, distinct per key."""

from __future__ import annotations

import hashlib
import re

import pytest

from triggers.naming import run_name

DNS_LABEL = re.compile(r"[a-z]([a-z0-9-]*[a-z0-9])?")


def digest(model: str, key: str) -> str:
    return hashlib.sha256(f"{model}\0{key}".encode()).hexdigest()[:16]


@pytest.mark.parametrize(
    ("model", "prefix"),
    [
        ("churn", "churn"),
        ("Churn-Model", "churn-model"),
        ("fraud_detector.v2", "fraud-detector-v2"),
        ("  spaced   out  ", "spaced-out"),
        ("modèle-été", "modele-ete"),
        ("3d-unet", "m-3d-unet"),
        ("42", "m-42"),
        ("--x--", "x"),
        ("", "run"),
        ("!!!", "run"),
        ("模型", "run"),
        ("a" * 100, "a" * 46),
        ("a" * 45 + "-b", "a" * 45),  # truncation never leaves a trailing hyphen
    ],
)
def test_run_name_shape(model: str, prefix: str) -> None:
    name = run_name(model, "evt-1")
    assert name == f"{prefix}-{digest(model, 'evt-1')}"
    assert len(name) <= 63
    assert DNS_LABEL.fullmatch(name), name


@pytest.mark.parametrize("model", ["x", "X" * 200, "ü" * 80, "9" * 63, "a-" * 40, "-", "m" * 46])
def test_run_name_is_always_a_dns_label(model: str) -> None:
    for key in ("", "k", "source/id" * 50):
        name = run_name(model, key)
        assert len(name) <= 63 and DNS_LABEL.fullmatch(name), name


def test_different_keys_give_different_names() -> None:
    # (The same inputs give the same name in any process: test_run_name_shape pins the digest.)
    names = {run_name("churn", f"src/evt-{i}") for i in range(1000)}
    assert len(names) == 1000


def test_models_that_sanitize_alike_still_differ() -> None:
    # The NUL separator and hashing the raw model keep these apart.
    assert run_name("Churn", "k") != run_name("churn", "k")
    assert run_name("ab", "c") != run_name("a", "bc")
