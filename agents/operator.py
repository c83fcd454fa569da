"""The operator gate: the one owner of the operator topic, and the only door for manual commands.

An operator command can retrain, promote or roll back, so it is verified exactly once, here,
before any agent acts on it: the signature (`streams.signing`: known key, HMAC over the whole
event, the operator named in it is the key's), the expiry, and replays (an accepted command's
`source#id` is remembered until it expires, in a changelogged Faust table, so a restart does not
forget). A command that fails any check is dead-lettered with the reason and changes nothing.
A verified command is forwarded unchanged (same id, same signature) to the internal
`operator.verified` topic, which the trigger (retrain, pause, resume) and the deployer
(promote, rollback) read instead of the raw operator topic. The replay memory is per model, so
the gate handles a command only on its model's partition: one that a producer put elsewhere
comes back through `operator.rekeyed` (`agents.rekey`) before it is checked.

Forward first, remember second: a crash in between forwards the command again on redelivery,
which the readers tolerate (the trigger dedupes by event key, the deployer records which event
last moved the alias). The reverse order could lose a command that was never forwarded.
"""

from __future__ import annotations

import logging
import time
from typing import Mapping

from agents.context import Context
from agents.edge import PermanentError
from streams import events as ev
from streams import signing
from streams.codec import Decoded

log = logging.getLogger("loopline.operator")

SEEN_LIMIT = 2_000         # accepted command ids remembered per model until they expire (one
                           # changelog record holds them all: ~80 bytes each, far below 1 MB)


class CommandRejected(PermanentError):
    """An operator command that cannot be trusted: dead-lettered, nothing acts on it."""


def remember(seen: Mapping[str, float], key: str, expiry: float, now: float,
             limit: int = SEEN_LIMIT) -> dict[str, float]:
    """`seen` (command key -> expiry) plus `key`, without what expired, at most `limit` newest.

    Dropping an expired entry is safe: the command itself is refused as expired from then on.
    """
    kept = {k: e for k, e in seen.items() if e >= now and k != key}
    kept[key] = expiry
    if len(kept) > limit:
        log.warning("more than %d unexpired operator commands remembered; oldest forgotten", limit)
        kept = dict(sorted(kept.items(), key=lambda item: item[1])[-limit:])
    return kept


class OperatorGate:
    def __init__(self, ctx: Context, table, keys: signing.KeyFile):
        self.ctx, self.table, self.keys = ctx, table, keys
        if keys.path is None:
            log.warning("no operator keys configured (LOOPLINE_OPERATOR_KEYS): every operator "
                        "command will be dead-lettered")

    async def handle(self, d: Decoded) -> None:
        event, data = d.event, d.data
        if not isinstance(data, ev.OperatorCommand):
            return
        model = self.ctx.model(event)
        now = time.time()
        try:
            keys = self.keys.keys()
            if self.keys.error:
                log.error("operator keys file: %s (keeping the last good keys)", self.keys.error)
            key = signing.verify(event, keys, now)
        except signing.SignatureError as exc:
            self._count(data.command, exc.kind)
            raise CommandRejected(str(exc)) from None
        seen = dict(self.table.get(model.name) or {})
        if event.key in seen:
            self._count(data.command, "replayed")
            raise CommandRejected(f"replayed operator command: {event.key} was already accepted "
                                  f"(valid until {event.extensions.get(signing.EXPIRY)})")
        await self.ctx.edge.publish(event, self.ctx.opts.topics.operator_verified)
        self.table[model.name] = remember(seen, event.key, signing.expiry_of(event), now)
        self._count(data.command, "accepted")
        log.info("%s: operator %s (key %s) %s: %s", model.name, key.operator, key.key_id,
                 data.command, data.reason)

    def _count(self, command: str, outcome: str) -> None:
        self.ctx.metrics.operator_commands.labels(command, outcome).inc()
