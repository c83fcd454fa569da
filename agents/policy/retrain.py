"""The retrain policy: a pure reducer from (model state, signal, now) to (new state, decision).

Why a reducer: the trigger agent is at-least-once, may crash between any two events and is
replayed from its changelog. Keeping every rule here -- dedupe, debounce by row count,
staleness, cooldown, pause, one-training-in-flight with coalesced follow-ups -- as a pure
function of plain data means the same inputs always give the same decisions (and the same
idempotency keys), and each rule is tested as a row of a table instead of against a broker.

Time is a parameter (`now`), never read from a clock. Nothing here does I/O.

Drift and metric signals coalesce (no retrain storms). A drift or metric signal says "the model
no longer fits the data", not "there are new rows". While a training is in flight or the
cooldown runs, such a signal is suppressed: counted in `suppressed`, its event key kept in
`suppressed_keys` (the newest `SUPPRESSED_KEPT`) and its reason queued. When the block ends the
queued follow-up goes out only if NEW data arrived since the last request (`new_rows > 0`):
retraining on the very batches the last request already trained on would repeat it, so a
signal-only follow-up is dropped with a Skip that says so. Hence a burst of N drift events
inside one cooldown (or one training) yields exactly one training request and N-1 suppressed.
Data and manual follow-ups are unaffected.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Mapping, TypeVar

T = TypeVar("T")

MAX_CAUSES = 64          # causes kept toward the next request; older ones only lose lineage
MANUAL = "manual"        # the one reason that bypasses pause and cooldown
SIGNALS = frozenset({"drift", "metric"})   # reasons that need new data to re-fire as a follow-up
SUPPRESSED_KEPT = 50     # suppressed event keys remembered for status


@dataclass(frozen=True)
class RetrainPolicy:
    min_new_rows: int = 1000                       # retrain when rows since the last request reach this
    max_staleness_seconds: float | None = None     # ...or any new data and the last request is this old
    cooldown_seconds: float = 0.0                  # min time between two automatic requests
    window_batches: int = 8                        # a training uses the newest N batches seen
    dedupe_window: int = 1000                      # recent event keys remembered for dedupe
    min_drift_share: float = 0.0                   # a DriftDetected below this share is ignored
    in_flight_timeout_seconds: float | None = None  # give up on a training whose end never arrived

    def __post_init__(self) -> None:
        if self.min_new_rows < 1 or self.window_batches < 1 or self.dedupe_window < 1:
            raise ValueError("min_new_rows, window_batches and dedupe_window must be >= 1")
        if not (self.cooldown_seconds >= 0 and math.isfinite(self.cooldown_seconds)):
            raise ValueError(f"cooldown_seconds must be finite and >= 0, got {self.cooldown_seconds}")
        if not 0.0 <= self.min_drift_share <= 1.0:
            raise ValueError(f"min_drift_share must be in [0, 1], got {self.min_drift_share}")
        for name in ("max_staleness_seconds", "in_flight_timeout_seconds"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be > 0 or None, got {value}")


@dataclass(frozen=True)
class Batch:
    uri: str
    version: str
    rows: int
    event_key: str

    def __post_init__(self) -> None:
        if self.rows < 0:
            raise ValueError(f"batch {self.uri} has negative rows: {self.rows}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Batch:
        return cls(**_known_fields(cls, d))


# -- signals: plain data the agent builds from events (event_key = f"{source}#{id}") ----------

@dataclass(frozen=True)
class DataArrived:
    event_key: str
    batch: Batch


@dataclass(frozen=True)
class DriftDetected:
    event_key: str
    drift_share: float = 1.0


@dataclass(frozen=True)
class MetricDegraded:
    """An online metric window of the champion is under its floor (see `policy.metric`)."""
    event_key: str
    detail: str = ""


@dataclass(frozen=True)
class ManualRetrain:
    event_key: str
    reason: str


@dataclass(frozen=True)
class TrainingFinished:
    event_key: str
    idempotency_key: str
    succeeded: bool


@dataclass(frozen=True)
class Tick:
    event_key: str


Signal = DataArrived | DriftDetected | MetricDegraded | ManualRetrain | TrainingFinished | Tick
_SIGNALS = (DataArrived, DriftDetected, MetricDegraded, ManualRetrain, TrainingFinished, Tick)


# -- decisions ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class TrainRequest:
    idempotency_key: str
    reason: str                     # "data" | "staleness" | "drift" | "metric" | "manual" | "followup:<reasons>"
    causes: tuple[str, ...]         # event keys that caused it (causationid / lineage)
    batches: tuple[Batch, ...]      # the rolling window to train on, newest last
    rows: int                       # new rows counted toward this request


@dataclass(frozen=True)
class Skip:
    reason: str


Decision = TrainRequest | Skip


@dataclass(frozen=True)
class ModelState:
    """Per-model memory of the trigger agent; JSON-friendly so a Faust table can hold it."""

    window: tuple[Batch, ...] = ()
    new_rows: int = 0
    new_causes: tuple[str, ...] = ()
    last_request_at: float | None = None
    in_flight: str | None = None
    pending: tuple[str, ...] = ()
    seen: tuple[str, ...] = ()
    suppressed: int = 0
    paused: bool = False
    suppressed_keys: tuple[str, ...] = ()      # newest suppressed event keys (visible in status)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelState:
        """Rebuild from `to_dict()` after a JSON round trip (lists back to tuples).

        Unknown keys are ignored and missing ones take their defaults, so a table written by
        an older or newer release still loads.
        """
        kw = _known_fields(cls, d)
        for name in ("new_causes", "pending", "seen", "suppressed_keys"):
            if name in kw:
                kw[name] = tuple(kw[name])
        if "window" in kw:
            kw["window"] = tuple(b if isinstance(b, Batch) else Batch.from_dict(b) for b in kw["window"])
        return cls(**kw)


def idempotency_key(causes: tuple[str, ...] | list[str]) -> str:
    """A pure function of the cause keys: a replayed input gives the same key (and the same Job)."""
    if not causes:
        raise ValueError("a training request needs at least one cause")
    return hashlib.sha256("\n".join(sorted(causes)).encode()).hexdigest()[:32]


# -- the reducer -------------------------------------------------------------------------------

def decide_retrain(state: ModelState, signal: Signal, policy: RetrainPolicy,
                   now: float) -> tuple[ModelState, Decision]:
    """Apply one signal; return the new state and exactly one decision."""
    if not isinstance(signal, _SIGNALS):
        raise TypeError(f"not a retrain signal: {signal!r}")
    if isinstance(signal, Tick):
        # Ticks are not remembered in `seen`: a tick's effect depends only on state and `now`
        # (a redelivered one finds the follow-up already in flight), and a steady clock would
        # otherwise push real event keys out of the bounded dedupe window.
        return _on_tick(state, signal, policy, now)
    if signal.event_key in state.seen:
        return state, Skip(f"duplicate event {signal.event_key}")
    state = replace(state, seen=_bounded(state.seen + (signal.event_key,), policy.dedupe_window))
    if isinstance(signal, DataArrived):
        return _on_data(state, signal, policy, now)
    if isinstance(signal, DriftDetected):
        return _on_drift(state, signal, policy, now)
    if isinstance(signal, MetricDegraded):
        return _want(_add_cause(state, signal.event_key), "metric", policy, now, signal.event_key)
    if isinstance(signal, ManualRetrain):
        return _want(_add_cause(state, signal.event_key), MANUAL, policy, now, signal.event_key)
    return _on_finished(state, signal, policy, now)


def _on_data(state: ModelState, signal: DataArrived, policy: RetrainPolicy,
             now: float) -> tuple[ModelState, Decision]:
    batch = signal.batch
    # The same batch re-announced under a new event id is not new data: counting it twice
    # would trigger a training on rows that do not exist.
    if any(b.uri == batch.uri and b.version == batch.version for b in state.window):
        return state, Skip(f"batch {batch.uri}@{batch.version} already in the window")
    state = _add_cause(state, signal.event_key)
    state = replace(state, window=_bounded(state.window + (batch,), policy.window_batches),
                    new_rows=state.new_rows + batch.rows)
    if state.new_rows >= policy.min_new_rows:
        return _want(state, "data", policy, now, signal.event_key)
    if _stale(state, policy, now):
        return _want(state, "staleness", policy, now, signal.event_key)
    return state, Skip(f"{state.new_rows}/{policy.min_new_rows} new rows")


def _on_drift(state: ModelState, signal: DriftDetected, policy: RetrainPolicy,
              now: float) -> tuple[ModelState, Decision]:
    if signal.drift_share < policy.min_drift_share:
        return state, Skip(f"drift share {signal.drift_share:g} < {policy.min_drift_share:g}")
    return _want(_add_cause(state, signal.event_key), "drift", policy, now, signal.event_key)


def _on_finished(state: ModelState, signal: TrainingFinished, policy: RetrainPolicy,
                 now: float) -> tuple[ModelState, Decision]:
    if signal.idempotency_key != state.in_flight:
        return state, Skip(f"not the training in flight ({signal.idempotency_key})")
    outcome = "succeeded" if signal.succeeded else "failed"
    return _due(replace(state, in_flight=None), policy, now, signal.event_key,
                idle=f"training {outcome}; nothing queued")


def _on_tick(state: ModelState, signal: Tick, policy: RetrainPolicy,
             now: float) -> tuple[ModelState, Decision]:
    idle = "nothing due"
    timeout = policy.in_flight_timeout_seconds
    if (state.in_flight is not None and timeout is not None and state.last_request_at is not None
            and now - state.last_request_at >= timeout):
        # The end of that training never came (lost watcher, dead-lettered event): without
        # this the model would never train again. Its late end is then "not in flight".
        idle = f"gave up on training {state.in_flight} after {timeout:g}s; nothing due"
        state = replace(state, in_flight=None)
    if state.in_flight is not None:
        return state, Skip("nothing due: training in flight")
    return _due(state, policy, now, signal.event_key, idle=idle)


def wants_ticks(state: ModelState, policy: RetrainPolicy) -> bool:
    """Whether a clock tick can ever change `state` or ask for a training (`_on_tick` reads only
    these): a training in flight that can time out, a queued follow-up, or new rows that can go
    stale. Every other model's ticks are no-ops, and the trigger skips them: ticking 10,000
    idle models cost a third of a core (bench.scale)."""
    if state.in_flight is not None:
        return policy.in_flight_timeout_seconds is not None and state.last_request_at is not None
    return bool(state.pending) or (policy.max_staleness_seconds is not None and state.new_rows > 0)


def _due(state: ModelState, policy: RetrainPolicy, now: float, trigger_key: str,
         idle: str) -> tuple[ModelState, Decision]:
    """Nothing in flight: emit the coalesced follow-up, or a staleness request, if allowed."""
    if state.pending and SIGNALS.issuperset(state.pending) and state.new_rows <= 0:
        # Only drift/metric signals queued and no new data: the last request already trained
        # on everything there is, so these signals were coalesced into it (see module doc).
        dropped = ",".join(state.pending)
        return replace(state, pending=()), Skip(
            f"{idle}; {dropped} follow-up dropped: no new data since the last request")
    if state.pending:
        blocked = _blocked(state, policy, now, manual=MANUAL in state.pending)
        if blocked:
            return state, Skip(f"{blocked}; follow-up queued ({','.join(state.pending)})")
        return _emit(state, "followup:" + ",".join(state.pending), now, trigger_key)
    if _stale(state, policy, now):
        blocked = _blocked(state, policy, now, manual=False)
        if blocked:
            return state, Skip(f"stale, but {blocked}")
        return _emit(state, "staleness", now, trigger_key)
    return state, Skip(idle)


def _want(state: ModelState, reason: str, policy: RetrainPolicy, now: float,
          trigger_key: str) -> tuple[ModelState, Decision]:
    """A trigger wants a training: emit it now, or queue its reason for one follow-up."""
    blocked = _blocked(state, policy, now, manual=reason == MANUAL)
    if blocked is None:
        return _emit(state, reason, now, trigger_key)
    pending = state.pending if reason in state.pending else state.pending + (reason,)
    state = replace(state, pending=pending, suppressed=state.suppressed + 1,
                    suppressed_keys=_bounded(state.suppressed_keys + (trigger_key,), SUPPRESSED_KEPT))
    if blocked == "training in flight":
        return state, Skip("training in flight; queued follow-up")
    return state, Skip(blocked if blocked == "paused" else f"{blocked}; queued")


def _blocked(state: ModelState, policy: RetrainPolicy, now: float, manual: bool) -> str | None:
    """Why a request cannot go out now, or None. Manual requests ignore pause and cooldown."""
    # Pause is checked first: while paused, "cooldown: 3s left" would wrongly promise a retrain.
    if state.paused and not manual:
        return "paused"
    if state.in_flight is not None:
        return "training in flight"
    left = _cooldown_left(state, policy, now)
    if left > 0 and not manual:
        return f"cooldown: {left:.1f}s left"
    return None


def _emit(state: ModelState, reason: str, now: float,
          trigger_key: str) -> tuple[ModelState, Decision]:
    causes = state.new_causes or (trigger_key,)
    request = TrainRequest(idempotency_key=idempotency_key(causes), reason=reason, causes=causes,
                           batches=state.window, rows=state.new_rows)
    state = replace(state, in_flight=request.idempotency_key, last_request_at=now,
                    new_rows=0, new_causes=(), pending=())
    return state, request


def _stale(state: ModelState, policy: RetrainPolicy, now: float) -> bool:
    limit = policy.max_staleness_seconds
    if limit is None or state.new_rows <= 0:
        return False
    return state.last_request_at is None or now - state.last_request_at >= limit


def _cooldown_left(state: ModelState, policy: RetrainPolicy, now: float) -> float:
    if state.last_request_at is None:
        return 0.0
    return max(0.0, policy.cooldown_seconds - (now - state.last_request_at))


def _add_cause(state: ModelState, key: str) -> ModelState:
    return replace(state, new_causes=_bounded(state.new_causes + (key,), MAX_CAUSES))


def _bounded(items: tuple[T, ...], limit: int) -> tuple[T, ...]:
    """Keep the newest `limit` items (oldest dropped)."""
    return items[-limit:] if len(items) > limit else items


def _known_fields(cls: type, d: Mapping[str, Any]) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in d.items() if k in names}
