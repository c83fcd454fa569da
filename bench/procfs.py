"""What the benches read of a process from /proc: CPU seconds, age, children (Linux only)."""

from __future__ import annotations

import os
from pathlib import Path

HZ = os.sysconf("SC_CLK_TCK")


def stat(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2:].split()      # fields from 3 (state) on; comm may hold spaces


def cpu_time(pid: int) -> float:
    """utime + stime of the process (all its threads), in seconds."""
    fields = stat(pid)
    return (int(fields[11]) + int(fields[12])) / HZ


def age_seconds(pid: int) -> float:
    """How long ago the process started (uptime now minus its start time, both since boot)."""
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    return uptime - int(stat(pid)[19]) / HZ


def descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        parent = todo.pop()
        try:
            tasks = list(Path(f"/proc/{parent}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                kids = [int(k) for k in (task / "children").read_text().split()]
            except OSError:
                continue
            out.extend(kids)
            todo.extend(kids)
    return out
