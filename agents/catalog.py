"""The models a worker serves: the ones `loopline.yaml` names, and the members of its families.

A family is one entry of `loopline.yaml` that stands for many models sharing a pipeline, policies
and gate, told apart by a key: the member `acme` of family `churn` is the model `churn.acme`,
with its own state, runs, registered model, champion and lineage. Why `.` and not `/`: the
member's name is its name everywhere (the events' subject, the state table's key, the MLflow
registered model, `models:/churn.acme@champion`), and MLflow refuses `/` and `:` in registered
model names.

A member comes into being the first time anything asks for it by name: its first event (any
topic), a listed member at start-up, or a key of the trigger's state table after a restart
(`Trigger.learn_from_state`). A name that is not a model gets a reason (`problem`), which the
edge puts on the dead letter: an unknown family, a key the family's `member_pattern` refuses, a
family at its `max_members`. Members are only ever added, never dropped, while the process runs.
"""

from __future__ import annotations

from typing import Iterator, Mapping, Protocol, TypeVar

SEPARATOR = "."

M = TypeVar("M")


class Family(Protocol[M]):
    name: str
    max_members: int

    def problem(self, key: str) -> str | None:
        """Why `key` cannot be a member of this family, or None."""

    def member(self, key: str) -> M:
        """The model of member `key` (its problem is None)."""


def split(name: str) -> tuple[str, str] | None:
    """(family, member key) of a member's name, or None for a name without the separator."""
    family, sep, key = name.partition(SEPARATOR)
    return (family, key) if sep else None


def unknown(models: Mapping, name: str) -> str:
    """Why `name` is no model of `models`: the dead letter's reason (a plain mapping has no
    families, so it can only be an unknown name)."""
    problem = getattr(models, "problem", None)
    return problem(name) if problem is not None else f"unknown model {name!r} (not in loopline.yaml)"


class Catalog(Mapping[str, M]):
    """A mapping of model name → model that grows by family members on first use (see above).

    Iteration is in insertion order and safe while members are added (it walks a list that only
    grows), so a caller can index new members incrementally: `islice(catalog, seen, None)`."""

    def __init__(self, models: Mapping[str, M], families: Mapping[str, Family[M]] | None = None):
        self._models: dict[str, M] = dict(models)
        self._order: list[str] = list(self._models)
        self.families: dict[str, Family[M]] = dict(families or {})
        self._sizes: dict[str, int] = {name: 0 for name in self.families}

    def get(self, name: str, default=None):
        model = self._models.get(name)
        if model is not None:
            return model
        if not isinstance(name, str) or self.problem(name) is not None:
            return default
        family, key = split(name)
        model = self._models[name] = self.families[family].member(key)
        self._order.append(name)
        self._sizes[family] += 1
        return model

    def problem(self, name: str) -> str | None:
        """Why `name` is not a model (the dead letter's reason), or None when it is one."""
        if name in self._models:
            return None
        parts = split(name) if isinstance(name, str) else None
        family = self.families.get(parts[0]) if parts else None
        if family is None:
            return f"unknown model {name!r} (not in loopline.yaml, nor a member of one of its families)"
        why = family.problem(parts[1])
        if why is not None:
            return f"{name!r} is not a member of family {family.name!r}: {why}"
        if self._sizes[family.name] >= family.max_members:
            return (f"{name!r}: family {family.name!r} has reached its max_members "
                    f"({family.max_members}); raise it in loopline.yaml to admit more")
        return None

    def members(self, family: str) -> list[str]:
        """The names of `family`'s members that exist so far."""
        prefix = family + SEPARATOR
        return [name for name in self._order if name.startswith(prefix)]

    def __getitem__(self, name: str) -> M:
        model = self.get(name)
        if model is None:
            raise KeyError(name)
        return model

    def __contains__(self, name) -> bool:
        return self.get(name) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(self._order)

    def __len__(self) -> int:
        return len(self._order)
