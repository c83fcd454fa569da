"""What `loopline status` needs of `loopline.yaml`, read in a fraction of what `config.load` takes.

Why: status needs three things of the file (each model's name and alias, the families with
their alias and listed members), and `config.load` builds and validates everything: at 10,000
models that is seconds (bench.scale: 3.6 s with libyaml, 10.9 s without), more than the whole
budget of `loopline status`. This walks libyaml's event stream and keeps only those keys; the
rest of each model is skipped unbuilt. Validation stays where it belongs: the worker refuses a bad
file at start-up, and `config.load` is what it runs.

A file the walk cannot follow (an alias or merge key inside a kept value: `deploy: *common`)
falls back to a full `yaml` load of the same file, so the answer is the same either way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_ALIAS = "champion"                  # loopline.config.DeployConfig's default


@dataclass(frozen=True)
class CatalogView:
    models: dict[str, str] = field(default_factory=dict)       # model (and listed member) -> alias
    families: dict[str, str] = field(default_factory=dict)     # family -> its members' alias


class _Unfollowable(Exception):
    """An alias or merge key where a kept value lies: let the full loader resolve it."""


def read_catalog(path: str | Path) -> CatalogView:
    from loopline.config import ConfigError

    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    try:
        return parse_catalog(text)
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def parse_catalog(text: str) -> CatalogView:
    import yaml

    try:
        try:
            raw = _walk(iter(yaml.parse(text, Loader=getattr(yaml, "CBaseLoader", yaml.BaseLoader))))
        except _Unfollowable:
            raw = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as exc:
        raise ValueError(f"not valid YAML: {exc}") from None
    return view_of(raw)


def view_of(raw) -> CatalogView:
    """The view of an already-loaded document (dicts and lists)."""
    if not isinstance(raw, dict):
        return CatalogView()
    view = CatalogView()
    for model in _entries(raw.get("models")):
        view.models[str(model["name"])] = _alias(model)
    for family in _entries(raw.get("families")):
        name, alias = str(family["name"]), _alias(family)
        view.families[name] = alias
        members = family.get("members")
        for key in members if isinstance(members, list) else ():
            view.models[f"{name}{_separator()}{key}"] = alias
    return view


def _separator() -> str:
    from agents.catalog import SEPARATOR

    return SEPARATOR


def _entries(value) -> list[dict]:
    return [v for v in value if isinstance(v, dict) and v.get("name") is not None] if isinstance(value, list) else []


def _alias(entry: dict) -> str:
    deploy = entry.get("deploy")
    alias = deploy.get("alias") if isinstance(deploy, dict) else None
    return str(alias) if alias is not None else DEFAULT_ALIAS


# --- the event walk --------------------------------------------------------------------------------
# KEEP says which keys of which mapping are built; everything else is skipped event by event.
# Paths: () the document, ("models",) an entry of models, ("models", "deploy") its deploy...

KEEP: dict[tuple[str, ...], frozenset[str]] = {
    (): frozenset({"models", "families"}),
    ("models",): frozenset({"name", "deploy"}),
    ("families",): frozenset({"name", "deploy", "members"}),
    ("models", "deploy"): frozenset({"alias"}),
    ("families", "deploy"): frozenset({"alias"}),
}


def _walk(events):
    import yaml

    for event in events:
        if isinstance(event, yaml.DocumentStartEvent):
            return _node(events, next(events), ())
    return None


def _node(events, event, path: tuple[str, ...]):
    import yaml

    if isinstance(event, yaml.AliasEvent):
        raise _Unfollowable()
    if isinstance(event, yaml.ScalarEvent):
        return event.value
    if isinstance(event, yaml.SequenceStartEvent):
        out = []
        for item in _items(events, yaml.SequenceEndEvent):
            out.append(_node(events, item, path))
        return out
    if isinstance(event, yaml.MappingStartEvent):
        keep = KEEP.get(path, frozenset())
        out = {}
        for key_event in _items(events, yaml.MappingEndEvent):
            if not isinstance(key_event, yaml.ScalarEvent):
                _skip(events, key_event)             # a complex key: never one of ours
                _skip(events, next(events))
                continue
            key = key_event.value
            if key == "<<":
                raise _Unfollowable()
            if key in keep:
                out[key] = _node(events, next(events), path + (key,))
            else:
                _skip(events, next(events))
        return out
    raise _Unfollowable()


def _items(events, end_type):
    for event in events:
        if isinstance(event, end_type):
            return
        yield event


def _skip(events, event) -> None:
    import yaml

    depth = 1 if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)) else 0
    while depth:
        event = next(events)
        if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            depth += 1
        elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            depth -= 1


def read_catalog_beside(path: str | Path):
    """`read_catalog` in a forked child, so the parse (most of a second at 10,000 models) runs on
    another core while this process reads the bus; returns a function that waits for the view.
    Call it before any thread is started (a fork copies only the calling thread). Where there is
    no fork, the parse happens here and now."""
    import json
    import os

    if not hasattr(os, "fork"):
        view = read_catalog(path)
        return lambda: view
    readable, writable = os.pipe()
    pid = os.fork()
    if pid == 0:                                      # the child: parse, answer, leave at once
        code = 0
        try:
            os.close(readable)
            try:
                view = read_catalog(path)
                answer = {"models": view.models, "families": view.families}
            except Exception as exc:                  # a ConfigError, said again by the parent
                answer, code = {"error": str(exc)}, 1
            data = json.dumps(answer).encode()
            with os.fdopen(writable, "wb") as out:
                out.write(data)
        finally:
            os._exit(code)
    os.close(writable)

    def result() -> CatalogView:
        from loopline.config import ConfigError

        with os.fdopen(readable, "rb") as source:
            data = source.read()
        os.waitpid(pid, 0)
        try:
            answer = json.loads(data)
        except ValueError:
            raise ConfigError(f"{path}: could not be read (the reading process ended without an answer)") from None
        if "error" in answer:
            raise ConfigError(answer["error"])
        return CatalogView(answer["models"], answer["families"])
    return result
