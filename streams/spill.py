"""The spill store: where a dead letter keeps an original value too large to travel in it.

A record over the size limit cannot be dead-lettered as it is: the dead letter would be as
large, too large for the producer or the broker, and a refused record would be lost. Its bytes
are written here first, named by their sha256 (a redelivered record finds its object already
there), and the dead letter carries the object's URI, digest and size (`streams.deadletter`).

The store is any fsspec URL: a folder under the worker's state dir by default (file://), or a
shared volume, s3://, gs://... (with fsspec's package for it), where `loopline dlq replay` on
another machine can read the bytes back. Reading checks size and digest, so what is replayed
is what was refused.
"""

from __future__ import annotations

import hashlib

import fsspec
from fsspec.core import url_to_fs

from streams.deadletter import Spilled


class SpillError(Exception):
    """The spill store cannot be used, or an object in it is missing or not what was written."""


class SpillStore:
    def __init__(self, uri: str):
        try:
            self.fs, root = url_to_fs(uri)
        except (ImportError, ValueError) as exc:        # unknown protocol, its package missing
            raise SpillError(f"dead-letter spill store {uri!r}: {exc}") from None
        self.uri, self.root = uri, root.rstrip("/")
        self._made = False

    def put(self, data: bytes) -> Spilled:
        """Store `data` (once: content-addressed) and say where it lies."""
        digest = hashlib.sha256(data).hexdigest()
        path = f"{self.root}/{digest}"
        # A size that differs is an object torn by a crash mid-write: written again.
        if not (self.fs.exists(path) and self.fs.size(path) == len(data)):
            if not self._made:
                self.fs.makedirs(self.root, exist_ok=True)
                self._made = True
            self.fs.pipe_file(path, data)
        return Spilled(uri=self.fs.unstrip_protocol(path), sha256=digest, size=len(data))


def read(spilled: Spilled) -> bytes:
    """The bytes of a spilled value, checked against its size and digest."""
    try:
        with fsspec.open(spilled.uri, "rb") as f:
            data = f.read()
    except (OSError, ImportError, ValueError) as exc:
        raise SpillError(f"cannot read the spilled value {spilled.uri}: {exc}") from None
    digest = hashlib.sha256(data).hexdigest()
    if len(data) != spilled.size or digest != spilled.sha256:
        raise SpillError(f"{spilled.uri} holds {len(data)} bytes with sha256 {digest}, not the "
                         f"{spilled.size} bytes with sha256 {spilled.sha256} that were refused")
    return data
