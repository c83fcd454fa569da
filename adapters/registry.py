"""The MLflow model registry behind the agents' `Registry` port.

The champion is an alias (`models:/NAME@champion`), so serving never needs a version number;
the alias history is a registered-model tag (a JSON list, oldest first), so a rollback knows
where to go even after the process that promoted has gone. Every call is blocking: the agents
run them in a thread.
"""

from __future__ import annotations

import json
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
