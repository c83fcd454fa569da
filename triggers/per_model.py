"""Launcher settings by model name, where a family's member finds its family's entry.

A family (agents.catalog) is configured once: the worker hands a launcher one entry (pod
settings, distributed ranks) under the family's name, and a member `churn.acme` that comes into
being later reads the entry of `churn`. A plain model's own entry always wins, so a model named
`a.b` that is not a member keeps its own settings. Only names the worker's catalog accepted reach
a launcher, so a made-up `fraud.x` never borrows the entry of the plain model `fraud`.
"""

from __future__ import annotations

from typing import Iterator, Mapping, TypeVar

T = TypeVar("T")

MEMBER_SEPARATOR = "."        # agents.catalog.SEPARATOR (triggers may not import agents)


class PerModel(Mapping[str, T]):
    def __init__(self, entries: Mapping[str, T] | None = None):
        self._entries: dict[str, T] = dict(entries or {})

    def __getitem__(self, model: str) -> T:
        found = self._entries.get(model)
        if found is None:
            family, sep, _ = model.partition(MEMBER_SEPARATOR)
            found = self._entries.get(family) if sep else None
            if found is None:
                raise KeyError(model)
        return found

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)
