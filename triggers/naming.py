"""Deterministic run names: the heart of "a redelivered event never starts a second job".

The name of a run (local run dir, Kubernetes Job, Argo Workflow) is a pure function
of the model and the request's idempotency key. A second submit of the same request
therefore collides on the name (FileExistsError / 409 AlreadyExists), which the
launchers treat as success. Names must be valid DNS-1123 labels because Kubernetes
uses them as object names and label values.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

__all__ = ["MAX_LENGTH", "run_name"]

MAX_LENGTH = 63  # DNS-1123 label limit
_HASH_LENGTH = 16  # 64 bits: collisions need ~4e9 runs of one model
_PREFIX_LENGTH = MAX_LENGTH - _HASH_LENGTH - 1  # room for "-<hash>"
_FALLBACK_PREFIX = "run"


def run_name(model: str, idempotency_key: str) -> str:
    """`<sanitized model prefix>-<16 hex of sha256(model NUL key)>`, <= 63 chars.

    The hash covers the raw model name, so two models that sanitize to the same
    prefix ("Churn" and "churn") still get different names.
    """
    digest = hashlib.sha256(f"{model}\0{idempotency_key}".encode()).hexdigest()
    return f"{_prefix(model)}-{digest[:_HASH_LENGTH]}"


def _prefix(model: str) -> str:
    """Readable part: lowercase ASCII, runs of anything else -> '-', starts with a letter."""
    # NFKD splits "é" into "e" + combining accent, so accented names stay readable.
    ascii_text = unicodedata.normalize("NFKD", model).encode("ascii", "ignore").decode()
    text = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    if not text:
        return _FALLBACK_PREFIX
    if not text[0].isalpha():
        text = f"m-{text}"  # DNS labels for k8s names must start with a letter
    return text[:_PREFIX_LENGTH].rstrip("-")
