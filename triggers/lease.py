"""Which worker reports cluster runs: the holder of a coordination.k8s.io/v1 Lease.

Faust elects a leader per rebalance, and during one two workers can both believe they lead;
a run reported by both would be published twice. The run watcher therefore reports only
while it holds a Lease, elected the way client-go's leaderelection does it:

- an attempt reads the Lease and writes it back (create if missing, else a replace
  conditional on the resourceVersion read): of two candidates that read the same record,
  exactly one write succeeds, the other gets 409 Conflict and does not lead;
- the holder renews every duration/3; it acts as leader only until 2/3 of the duration
  after its last successful renewal, so it stops before anyone else may take over and a
  report under way has a third of the duration to land;
- another candidate takes over a free Lease (empty holderIdentity) at once, a held one
  when its record has not changed for leaseDurationSeconds *on the candidate's clock*
  since the candidate saw it change (client-go's observedTime): no machine compares its
  clock with a time another machine wrote, so clock skew does not matter;
- release() (shutdown) writes holderIdentity "" and leaseDurationSeconds 1 instead of
  deleting the Lease, as client-go does: it needs no `delete` verb, keeps
  leaseTransitions, and, conditional on the resourceVersion of our last write, can never
  release a Lease that someone else holds by now.

Attempts happen inside held(), called by the run watcher's poll: a worker that nobody
polls (not the Faust leader) neither renews nor takes over. `clock` is injectable
(monotonic seconds) so tests move time instead of waiting for it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from triggers.kube import KubeClient

__all__ = ["Lease", "default_identity", "lease_name"]

log = logging.getLogger("loopline.lease")


def lease_name(owner: str) -> str:
    """The run watcher's Lease for one worker group (a DNS-1123 subdomain, distinct per group)."""
    base = re.sub(r"[^a-z0-9-]+", "-", owner.lower()).strip("-")[:40] or "loopline"
    if base != owner:  # two groups that differ only in case or punctuation get two Leases
        base += "-" + hashlib.sha256(owner.encode()).hexdigest()[:8]
    return f"{base}-run-watcher"


def default_identity() -> str:
    """The pod name (HOSTNAME in a pod) plus a random suffix: a restarted process is a new candidate."""
    return f"{os.environ.get('HOSTNAME') or socket.gethostname()}-{secrets.token_hex(4)}"


def _micro_time() -> str:
    """A MicroTime for the record (kubectl shows it); decisions use the local clock only."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Lease:
    def __init__(self, client: KubeClient, namespace: str, name: str, identity: str | None = None,
                 duration: int = 15, clock: Callable[[], float] = time.monotonic) -> None:
        if duration < 3:
            raise ValueError(f"lease duration must be at least 3 seconds, not {duration}")
        self.client, self.namespace, self.name = client, namespace, name
        self.identity = identity or default_identity()
        self.duration, self.clock = int(duration), clock
        self.renew_every = duration / 3
        self.renew_deadline = duration * 2 / 3
        self.retry_every = duration / 6          # a candidate's attempts, a failed renewal's retries
        self.term = 0                            # +1 each time this process starts leading
        self._renewed_at: float | None = None    # our last successful write, on our clock
        self._ours: dict[str, Any] | None = None  # the Lease as that write left it
        self._seen_version, self._seen_at = "", 0.0
        self._next_attempt = float("-inf")
        self._expires = float("inf")             # when the other holder's Lease runs out, on our clock
        self._attempting = threading.Lock()

    def held(self) -> bool:
        """Whether this process leads now; renews, or tries to take the Lease, when due (API calls)."""
        with self._attempting:
            now = self.clock()
            if now >= self._next_attempt:
                leading, self._expires = self.leads(), float("inf")
                try:
                    won = self._acquire_or_renew(now)
                except Exception as exc:  # noqa: BLE001 - API down: leads() runs out by itself
                    log.warning("lease %s/%s: cannot renew or acquire (%s: %s)", self.namespace, self.name,
                                type(exc).__name__, exc)
                    won = False
                if won and not leading:
                    self.term += 1
                    log.info("lease %s/%s: %s leads the run watcher", self.namespace, self.name, self.identity)
                # A candidate also tries the moment the holder's Lease runs out, not up to a retry later.
                self._next_attempt = now + self.renew_every if won else min(now + self.retry_every, self._expires)
        return self.leads()

    def leads(self) -> bool:
        """Held and renewed recently enough to act on (no API call: safe on an event loop)."""
        renewed = self._renewed_at
        return renewed is not None and self.clock() - renewed < self.renew_deadline

    def release(self) -> None:
        """Give the Lease up (shutdown), so the next candidate leads at once, not after the duration."""
        with self._attempting:
            ours, self._ours, self._renewed_at = self._ours, None, None
            if ours is None:
                return
            stamp = _micro_time()
            spec = {**ours["spec"], "holderIdentity": "", "leaseDurationSeconds": 1,
                    "acquireTime": stamp, "renewTime": stamp}
            try:
                if self.client.replace_lease(self.namespace, {**ours, "spec": spec}) is not None:
                    log.info("lease %s/%s: %s released it", self.namespace, self.name, self.identity)
            except Exception as exc:  # noqa: BLE001 - the others take over after the duration instead
                log.warning("lease %s/%s: cannot release (%s)", self.namespace, self.name, exc)

    # --- one attempt --------------------------------------------------------------------

    def _acquire_or_renew(self, now: float) -> bool:
        current = self.client.get_lease(self.namespace, self.name)
        if current is None:
            return self._took(self.client.create_lease(self.namespace, self._record(None)), now)
        self._observe(current, now)
        spec = current.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        expires = self._seen_at + int(spec.get("leaseDurationSeconds") or self.duration)
        if holder and holder != self.identity and now < expires:
            self._renewed_at = self._ours = None
            self._expires = expires
            return False
        return self._took(self.client.replace_lease(self.namespace, self._record(current)), now)

    def _took(self, written: dict[str, Any] | None, now: float) -> bool:
        if written is None:  # 409: another candidate wrote first
            self._renewed_at = self._ours = None
            return False
        self._observe(written, now)
        self._renewed_at, self._ours = now, written
        return True

    def _observe(self, lease: dict[str, Any], now: float) -> None:
        version = str((lease.get("metadata") or {}).get("resourceVersion") or "")
        if version != self._seen_version:
            self._seen_version, self._seen_at = version, now

    def _record(self, current: dict[str, Any] | None) -> dict[str, Any]:
        """The Lease as we write it: held by us, renewed now; the resourceVersion read makes it conditional."""
        stamp = _micro_time()
        old = (current or {}).get("spec") or {}
        ours = old.get("holderIdentity") == self.identity
        transitions = int(old.get("leaseTransitions") or 0) + (0 if ours or current is None else 1)
        spec = {"holderIdentity": self.identity, "leaseDurationSeconds": self.duration,
                "acquireTime": old.get("acquireTime") if ours else stamp, "renewTime": stamp,
                "leaseTransitions": transitions}
        metadata = dict(current["metadata"]) if current else {"name": self.name, "namespace": self.namespace}
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata, "spec": spec}
