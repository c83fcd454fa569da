"""Replace a step's output file atomically: a reader sees the old file or the new one, never half.

Why: a step's files are read by the next step, by a relaunch of the same request, or (data
batches) by whoever a data-arrival event points at them. A step killed mid-write must not leave
a truncated file under the final name, so every writer goes through a temp file beside it (same
directory, so the rename stays on one filesystem), flushes it to disk and renames it into place.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["replacing"]


@contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside `path` to write to; on success rename it onto `path`, else delete it.

        with replacing(out / "train.parquet") as tmp:
            frame.to_parquet(tmp, index=False)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        _to_disk(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _to_disk(path: str) -> None:
    """fsync the written temp file: without it the rename can reach the disk before the data, and
    after a power cut the final name would hold an empty or partial file."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
