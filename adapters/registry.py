"""The MLflow model registry behind the agents' `Registry` port.

The champion is an alias (`models:/NAME@champion`), so serving never needs a version number;
the alias history is a registered-model tag (a JSON list, oldest first), so a rollback knows
where to go even after the process that promoted has gone. Every call is blocking: the agents
run them in a thread.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from agents.ports import Challengers, Champion
from stepkit.lineage import json_list, lineage_tag

HISTORY_TAG = "loopline.{alias}.history"
EVENT_TAG = "loopline.{alias}.event"
CHALLENGER_ALIAS = "challenger"
CHALLENGERS_TAG = "loopline.challengers"          # JSON list: every version in the live rollout
CHALLENGERS_EVENT_TAG = "loopline.challengers.event"
LINEAGE_LIST_LIMIT = 50                      # newest ids kept in an appended list tag


class MlflowRegistry:
    def __init__(self, tracking_uri: str, client=None):
        if client is None:
            import mlflow

            client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        self.client = client

    def champion(self, model: str, alias: str) -> Champion:
        from mlflow.exceptions import MlflowException

        try:
            registered = self.client.get_registered_model(model)
        except MlflowException:
            return Champion(None)
        history = json.loads(registered.tags.get(HISTORY_TAG.format(alias=alias), "[]"))
        version = registered.aliases.get(alias) if isinstance(registered.aliases, dict) else None
        if version is None:
            try:
                version = self.client.get_model_version_by_alias(model, alias).version
            except MlflowException:
                version = None
        return Champion(str(version) if version is not None else None,
                        tuple(str(v) for v in history),
                        registered.tags.get(EVENT_TAG.format(alias=alias)))

    def set_champion(self, model: str, alias: str, version: str, history: Sequence[str],
                     event_key: str) -> None:
        # Alias first, history second: a crash in between leaves a history one short, which a
        # redelivered promotion repairs (push_history is idempotent); never an alias pointing
        # at a version the history does not know.
        self.client.set_registered_model_alias(model, alias, version)
        self.client.set_registered_model_tag(model, HISTORY_TAG.format(alias=alias),
                                             json.dumps(list(history)))
        self.client.set_registered_model_tag(model, EVENT_TAG.format(alias=alias), event_key)
        self.client.set_model_version_tag(model, version, f"loopline.{alias}", "true")

    def challengers(self, model: str) -> Challengers:
        from mlflow.exceptions import MlflowException

        try:
            tags = self.client.get_registered_model(model).tags
        except MlflowException:
            return Challengers()
        return Challengers(tuple(json_list(tags.get(CHALLENGERS_TAG))), tags.get(CHALLENGERS_EVENT_TAG))

    def set_challengers(self, model: str, versions: Sequence[str], event_key: str) -> None:
        # The alias is for people and `models:/NAME@challenger`; the tag holds every arm (a bandit
        # may have several). Tag last: it is what `challengers` reads and what dedupes a replay.
        if versions:
            self.client.set_registered_model_alias(model, CHALLENGER_ALIAS, versions[-1])
        else:
            from mlflow.exceptions import MlflowException

            try:
                self.client.delete_registered_model_alias(model, CHALLENGER_ALIAS)
            except MlflowException:
                pass                                 # already gone: a replayed end
        self.client.set_registered_model_tag(model, CHALLENGERS_TAG, json.dumps(list(versions)))
        self.client.set_registered_model_tag(model, CHALLENGERS_EVENT_TAG, event_key)

    def record_evaluation(self, model: str, version: str, passed: bool,
                          reasons: Sequence[str]) -> None:
        self.client.set_model_version_tag(model, version, "loopline.gate",
                                          "passed" if passed else "rejected")
        self.client.set_model_version_tag(model, version, "loopline.gate.reasons",
                                          " | ".join(reasons)[:5000])

    def record_lineage(self, model: str, version: str, ids: Mapping[str, str],
                       append: Mapping[str, str] | None = None) -> None:
        for name, value in ids.items():
            self.client.set_model_version_tag(model, version, lineage_tag(name), value)
        if append:
            tags = self.client.get_model_version(model, version).tags
            for name, value in append.items():
                tag = lineage_tag(name)
                items = json_list(tags.get(tag))
                if value not in items:
                    items.append(value)
                self.client.set_model_version_tag(model, version, tag,
                                                  json.dumps(items[-LINEAGE_LIST_LIMIT:]))

    # --- bulk reads (`loopline status`): one search for all models, never one call per model ---

    def champions(self, alias_of: Mapping[str, str]) -> dict[str, Champion]:
        """`champion()` of many models at once, from one paged search of the registered models:
        {model: Champion} for each model of `alias_of` (model -> alias); unregistered ones get
        `Champion(None)`."""
        return champions_from(ClientReader(self.client).registered(), alias_of)


# --- a read-only bulk view of the registry ------------------------------------------------------
#
# `loopline status` at 10,000 models cannot ask MLflow once per model (2-3 ms a call on SQLite,
# a round trip each on a server), nor afford `import mlflow` (~3 s of pandas, scipy, fastapi...)
# when the registry is the local SQLite file. So: readers that answer for every model in a few
# searches. `ClientReader` goes through MlflowClient (any store: server, PostgreSQL, SQLite);
# `SqliteReader` reads MLflow's SQLite store with the standard library (read-only, no import of
# mlflow), and `reader()` picks it for a `sqlite:///` URI. Its SQL names MLflow's own tables; a
# test (tests/integration/test_status_scale.py) checks that both readers agree on a real store,
# and any SQLite error (a schema MLflow changed) falls back to the client.

SEARCH_PAGE = 1000                   # registered models per page: MLflow's server-side maximum
IN_CHUNK = 500                       # names or run ids per `IN (...)` filter


@dataclass(frozen=True)
class RegisteredRecord:
    name: str
    aliases: Mapping[str, str]                   # alias -> version
    tags: Mapping[str, str]


@dataclass(frozen=True)
class VersionRecord:
    model: str
    version: str
    run_id: str | None
    created_ms: int | None
    tags: Mapping[str, str]


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    experiment_id: str
    status: str
    tags: Mapping[str, str] = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)


def champion_from(record: RegisteredRecord | None, alias: str) -> Champion:
    """What `MlflowRegistry.champion` answers, from a registered model already read."""
    if record is None:
        return Champion(None)
    history = json.loads(record.tags.get(HISTORY_TAG.format(alias=alias), "[]"))
    version = record.aliases.get(alias)
    return Champion(str(version) if version is not None else None, tuple(str(v) for v in history),
                    record.tags.get(EVENT_TAG.format(alias=alias)))


def champions_from(registered: Mapping[str, RegisteredRecord], alias_of: Mapping[str, str]) -> dict[str, Champion]:
    return {name: champion_from(registered.get(name), alias) for name, alias in alias_of.items()}


def _chunks(items: Sequence, size: int = IN_CHUNK):
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _quoted(values) -> str:
    return ", ".join("'" + str(v).replace("'", "''") + "'" for v in values)


class ClientReader:
    """The bulk reads through MlflowClient: a handful of paged searches, whatever the model count."""

    def __init__(self, client):
        self.client = client

    def registered(self) -> dict[str, RegisteredRecord]:
        out: dict[str, RegisteredRecord] = {}
        token = None
        while True:
            page = self.client.search_registered_models(max_results=SEARCH_PAGE, page_token=token)
            for rm in page:
                aliases = rm.aliases if isinstance(rm.aliases, dict) else {}
                out[rm.name] = RegisteredRecord(rm.name, {a: str(v) for a, v in aliases.items()},
                                                dict(rm.tags or {}))
            token = page.token
            if not token:
                return out

    def versions(self, wanted: Mapping[str, Sequence[str]]) -> dict[tuple[str, str], VersionRecord]:
        """{(model, version): record} for the versions asked for (missing ones are left out)."""
        out: dict[tuple[str, str], VersionRecord] = {}
        names = sorted(name for name, versions in wanted.items() if versions)
        for chunk in _chunks(names):
            token = None
            while True:
                page = self.client.search_model_versions(f"name IN ({_quoted(chunk)})", max_results=10_000,
                                                         page_token=token)
                for mv in page:
                    if str(mv.version) in wanted[mv.name]:
                        out[(mv.name, str(mv.version))] = VersionRecord(
                            mv.name, str(mv.version), mv.run_id or None, mv.creation_timestamp, dict(mv.tags or {}))
                token = page.token
                if not token:
                    break
        return out

    def _experiments(self) -> dict[str, str]:
        out: dict[str, str] = {}
        token = None
        while True:
            page = self.client.search_experiments(max_results=SEARCH_PAGE, page_token=token)
            out.update({e.name: e.experiment_id for e in page})
            token = page.token
            if not token:
                return out

    def _search_runs(self, experiment_ids: list[str], filter_string: str) -> list[RunRecord]:
        out: list[RunRecord] = []
        token = None
        while True:
            page = self.client.search_runs(experiment_ids, filter_string=filter_string, max_results=1000,
                                           order_by=["attributes.start_time ASC"], page_token=token)
            out.extend(RunRecord(r.info.run_id, str(r.info.experiment_id), r.info.status, dict(r.data.tags),
                                 dict(r.data.metrics)) for r in page)
            token = page.token
            if not token:
                return out

    def runs(self, run_ids: Sequence[str]) -> dict[str, RunRecord]:
        ids = sorted(set(run_ids))
        if not ids:
            return {}
        experiments = sorted(set(self._experiments().values()))
        out: dict[str, RunRecord] = {}
        for chunk in _chunks(ids):
            for run in self._search_runs(experiments, f"attributes.run_id IN ({_quoted(chunk)})"):
                out[run.run_id] = run
        return out

    def runs_by_key(self, keys: Mapping[str, str]) -> dict[str, list[RunRecord]]:
        """{model: the runs of its experiment tagged with its idempotency key, oldest first}: one
        search per model in `keys` (the models with a training in flight, a few at a time)."""
        if not keys:
            return {}
        experiments = self._experiments()
        out: dict[str, list[RunRecord]] = {}
        for model, key in keys.items():
            if model in experiments:
                out[model] = self._search_runs([experiments[model]], f"tags.`loopline.idempotency_key` = "
                                                                     f"{_quoted([key])}")
        return out


class SqliteReader:
    """The same reads from MLflow's SQLite store with `sqlite3` (read-only): no `import mlflow`.
    Only the default workspace (MLflow's single-tenant mode, which a SQLite store runs in)."""

    def __init__(self, path: str):
        import sqlite3

        self.path = path
        self.db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)  # one thread at a time
        self._workspace_columns = {table for table in ("registered_models", "model_versions", "experiments")
                                   if "workspace" in self._columns(table)}
        missing = {"registered_models", "registered_model_tags", "registered_model_aliases", "model_versions",
                   "model_version_tags", "experiments", "runs", "tags", "latest_metrics"} - self._tables()
        if missing:
            raise sqlite3.OperationalError(f"not an MLflow store (no {', '.join(sorted(missing))})")

    def _tables(self) -> set[str]:
        return {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}

    def _columns(self, table: str) -> set[str]:
        return {r[1] for r in self.db.execute(f"PRAGMA table_info({table})")}

    def _in_workspace(self, table: str, alias: str = "") -> str:
        prefix = f"{alias}." if alias else ""
        return f" AND {prefix}workspace = 'default'" if table in self._workspace_columns else ""

    def registered(self) -> dict[str, RegisteredRecord]:
        ws = self._in_workspace("registered_models")
        names = [r[0] for r in self.db.execute(f"SELECT name FROM registered_models WHERE 1 = 1{ws}")]
        aliases: dict[str, dict[str, str]] = {n: {} for n in names}
        tags: dict[str, dict[str, str]] = {n: {} for n in names}
        for name, alias, version in self.db.execute("SELECT name, alias, version FROM registered_model_aliases"):
            if name in aliases:
                aliases[name][alias] = str(version)
        for name, key, value in self.db.execute("SELECT name, key, value FROM registered_model_tags"):
            if name in tags:
                tags[name][key] = value
        return {n: RegisteredRecord(n, aliases[n], tags[n]) for n in names}

    def versions(self, wanted: Mapping[str, Sequence[str]]) -> dict[tuple[str, str], VersionRecord]:
        pairs = {(name, str(v)) for name, versions in wanted.items() for v in versions}
        if not pairs:
            return {}
        ws = self._in_workspace("model_versions")
        rows: dict[tuple[str, str], list] = {}
        for chunk in _chunks(sorted({name for name, _ in pairs})):
            for name, version, run_id, created in self.db.execute(
                    f"SELECT name, version, run_id, creation_time FROM model_versions WHERE name IN "
                    f"({_quoted(chunk)}) AND current_stage != 'Deleted_Internal'{ws}"):
                if (name, str(version)) in pairs:
                    rows[(name, str(version))] = [run_id, created, {}]
            for name, version, key, value in self.db.execute(
                    f"SELECT name, version, key, value FROM model_version_tags WHERE name IN ({_quoted(chunk)})"):
                if (name, str(version)) in rows:
                    rows[(name, str(version))][2][key] = value
        return {(n, v): VersionRecord(n, v, run_id or None, created, tags)
                for (n, v), (run_id, created, tags) in rows.items()}

    def _runs_where(self, where: str) -> list[RunRecord]:
        found = self.db.execute(
            "SELECT r.run_uuid, r.experiment_id, r.status FROM runs r JOIN experiments e "
            f"ON e.experiment_id = r.experiment_id WHERE r.lifecycle_stage = 'active' "
            f"AND e.lifecycle_stage = 'active' AND {where}"
            f"{self._in_workspace('experiments', 'e')} ORDER BY r.start_time ASC, r.run_uuid ASC").fetchall()
        runs = {run_id: RunRecord(run_id, str(exp), status, {}, {}) for run_id, exp, status in found}
        for chunk in _chunks(list(runs)):
            for run_id, key, value in self.db.execute(
                    f"SELECT run_uuid, key, value FROM tags WHERE run_uuid IN ({_quoted(chunk)})"):
                runs[run_id].tags[key] = value
            for run_id, key, value, is_nan in self.db.execute(
                    f"SELECT run_uuid, key, value, is_nan FROM latest_metrics WHERE run_uuid IN ({_quoted(chunk)})"):
                runs[run_id].metrics[key] = float("nan") if is_nan else value
        return list(runs.values())

    def runs(self, run_ids: Sequence[str]) -> dict[str, RunRecord]:
        out: dict[str, RunRecord] = {}
        for chunk in _chunks(sorted(set(run_ids))):
            out.update((r.run_id, r) for r in self._runs_where(f"r.run_uuid IN ({_quoted(chunk)})"))
        return out

    def runs_by_key(self, keys: Mapping[str, str]) -> dict[str, list[RunRecord]]:
        out: dict[str, list[RunRecord]] = {}
        for model, key in keys.items():
            runs = self._runs_where(f"e.name = {_quoted([model])} AND e.lifecycle_stage = 'active' AND r.run_uuid IN "
                                    f"(SELECT run_uuid FROM tags WHERE key = 'loopline.idempotency_key' "
                                    f"AND value = {_quoted([key])})")
            if runs or self.db.execute(f"SELECT 1 FROM experiments e WHERE e.name = {_quoted([model])}"
                                       f"{self._in_workspace('experiments', 'e')}").fetchone():
                out[model] = runs
        return out


class EmptyReader:
    """A store that does not exist yet (no SQLite file): nothing registered, nothing run. Looking
    must not create it (MlflowClient would, with its schema)."""

    def registered(self) -> dict[str, RegisteredRecord]:
        return {}

    def versions(self, wanted) -> dict:
        return {}

    def runs(self, run_ids) -> dict:
        return {}

    def runs_by_key(self, keys) -> dict:
        return {}


def reader(tracking_uri: str, *, client=None):
    """The bulk reader for `tracking_uri`: SQLite read directly when it is a local SQLite file,
    else (or when that file does not look like MLflow's) MlflowClient's searches."""
    import sqlite3

    if client is None and tracking_uri.startswith("sqlite:///"):
        path = tracking_uri[len("sqlite:///"):].split("?", 1)[0]
        if not os.path.exists(path):
            return EmptyReader()
        try:
            return SqliteReader(path)
        except sqlite3.Error:
            pass                                   # not the schema we know: ask MLflow itself
    if client is None:
        import mlflow

        client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    return ClientReader(client)
