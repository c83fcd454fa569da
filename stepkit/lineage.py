"""The lineage tags on a model version: their names, and how to read the ones that hold a list.

The job writes the first of them when it registers a version (`request_id`, `trigger_events`),
the evaluator and the deployer add theirs through the registry adapter, and `loopline lineage`
reads them all once the topics' retention has passed. Their one home is the step SDK because
it is the one package all three may import: it imports nothing else of loopline. The names are
persisted in MLflow; renaming one orphans every version tagged before.
"""

from __future__ import annotations

import json

LINEAGE_TAG_PREFIX = "loopline.lineage."


def lineage_tag(name: str) -> str:
    """`request_id` -> `loopline.lineage.request_id`."""
    return LINEAGE_TAG_PREFIX + name


def json_list(raw: str | None) -> list[str]:
    """The items of a list tag (a JSON list) as strings; [] when it is missing or not a list.

    Lenient on purpose: a tag is free text anyone with MLflow access can edit, and a lineage
    that shows less beats one that cannot be shown at all.
    """
    try:
        value = json.loads(raw) if raw else []
    except ValueError:
        return []
    return [str(v) for v in value] if isinstance(value, list) else []
