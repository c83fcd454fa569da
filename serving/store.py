"""The versions a replica serves, per model: the champion and every arm of a live experiment.

Lives on the event loop (no locks): the bus thread hands deployments and experiment states over
with `call_soon_threadsafe`; loading runs in threads (MLflow downloads and unpickles, seconds),
never on the loop. A champion swap is atomic from a request's point of view: the old version
answers until the new one is loaded, then the new one does and the old one is let go.

Readiness (`readiness()`): a replica is ready once it has read the experiment states back, asked
the registry for every model's champion, and loaded each model's serving set: the champion under
its alias (if the registry has one) plus every arm of a live experiment. After that, a replica
that is swapping a version in stays ready as long as every model can still answer (the previous
champion; a loading arm's share goes to the champion meanwhile): every replica gets the same
deployment at the same moment, and taking them all out of the Service together would be an
outage. The body names what is still loading either way.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

from serving.batcher import Batcher
from serving.metrics import ServingMetrics
from streams.events import ExperimentUpdated

log = logging.getLogger("loopline.serving")
LIVE = ("running", "paused")


@dataclass
class Loaded:
    version: str
    batcher: Batcher
    loaded_at: float


@dataclass
class ModelState:
    name: str
    alias: str
    asked: bool = False                 # the registry (or a deployment) said who the champion is
    target: str | None = None           # the version the alias names now
    champion: str | None = None         # the version answering for the alias (loaded)
    experiment: ExperimentUpdated | None = None
    versions: dict[str, Loaded] = field(default_factory=dict)
    loading: dict[str, str] = field(default_factory=dict)     # version -> "loading" or last error

    def needed(self) -> set[str]:
        wanted = {self.target, self.champion if self.target not in self.versions else None}
        state = self.experiment
        if state is not None and state.status in LIVE:
            wanted.update(arm.version for arm in state.arms)
        elif state is not None and state.winner:
            wanted.add(state.winner)
        wanted.discard(None)
        return wanted


@dataclass(frozen=True)
class Batching:
    max_rows: int = 64
    max_wait_ms: float = 2.0


class ModelStore:
    def __init__(self, aliases: dict[str, str], *, loader: Callable[[str, str], Any],
                 resolver: Callable[[str, str], str | None], batching: Batching = Batching(),
                 metrics: ServingMetrics | None = None, retry: tuple[float, float] = (0.5, 8.0),
                 admit: Callable[[str], str | None] | None = None):
        """`loader(name, version)` → a model with `predict(DataFrame)`; `resolver(name, alias)` →
        the version the alias names, None if there is none; both blocking (run in threads).
        `admit(name)` → the alias of a model served on demand (a family's member), None if
        `name` is none: such a model is taken in by its first request (`admitted`)."""
        self.models = {name: ModelState(name, alias) for name, alias in aliases.items()}
        self.admit = admit
        self.on_demand: set[str] = set()
        self.loader, self.resolver, self.batching = loader, resolver, batching
        self.metrics = metrics or ServingMetrics()
        self.retry = retry
        self.caught_up = False          # experiment states read back (bus.Follower)
        self.was_ready = False
        self.tasks: set[asyncio.Task] = set()
        # its own threads: a flood of feedback waiting on the broker cannot hold up a model load
        self.pool = ThreadPoolExecutor(2, thread_name_prefix="load")

    # -- inputs (on the loop) -----------------------------------------------------------------

    def start(self) -> None:
        """Ask the registry for each champion (after the bus follows deployments: none is missed)."""
        for state in self.models.values():
            self._spawn(self._resolve(state))

    def on_deployment(self, name: str, version: str, alias: str) -> None:
        state = self.models.get(name)
        if state is None or alias != state.alias:
            return
        state.asked, state.target = True, version
        if state.experiment is not None and state.experiment.status == "ended":
            state.experiment = None     # the alias has caught up with the winner
        self._reconcile(state)

    def on_experiment(self, name: str, update: ExperimentUpdated, live: bool) -> None:
        """`live`: read while following; read back at start, an ended experiment is history
        (the champion the registry names at start already says how it ended)."""
        state = self.models.get(name)
        if state is None:
            return
        state.experiment = update if (live or update.status in LIVE) else None
        self._reconcile(state)

    def admitted(self, name: str) -> ModelState | None:
        """The served model `name`, taking in a family's member on its first request: from then on
        it is served like the others (its champion asked of the registry, loaded, reloaded on
        deployment events), except that it never holds the replica's readiness."""
        state = self.models.get(name)
        if state is None and self.admit is not None:
            alias = self.admit(name)
            if alias is not None:
                state = self.models[name] = ModelState(name, alias)
                self.on_demand.add(name)
                log.info("serving: %s@%s taken in on its first request", name, alias)
                self._spawn(self._resolve(state))
        return state

    def on_caught_up(self) -> None:
        self.caught_up = True

    # -- what requests read ---------------------------------------------------------------------

    def loaded(self, name: str, version: str | None) -> Loaded | None:
        state = self.models.get(name)
        return state.versions.get(version) if state is not None and version is not None else None

    def readiness(self) -> tuple[bool, list[str]]:
        missing, blocking = [], []
        if not self.caught_up:
            blocking.append("experiment states not read back from the bus yet")
        for state in self.models.values():
            if state.name in self.on_demand:       # one member's first load must not fail /readyz
                continue
            if not state.asked:
                blocking.append(f"{state.name}: registry not asked for @{state.alias} yet")
            for version in sorted(state.needed() - set(state.versions)):
                why = state.loading.get(version, "queued")
                missing.append(f"{state.name} v{version}: {why}")
            if state.target is not None and state.champion is None:
                blocking.append(f"{state.name}: no version of @{state.alias} loaded yet")
        ready = not blocking and (self.was_ready or not missing)
        self.was_ready = self.was_ready or ready
        self.metrics.ready.set(1 if ready else 0)
        return ready, blocking + missing

    def describe(self) -> dict:
        return {name: {
            "version": state.champion, "alias": state.alias, "target": state.target,
            "loaded": {v: {"loaded_at": e.loaded_at, "predict_calls": e.batcher.calls}
                       for v, e in sorted(state.versions.items())},
            "loading": dict(state.loading),
            "experiment": state.experiment.model_dump(mode="json") if state.experiment else None,
        } for name, state in self.models.items()}

    # -- loading --------------------------------------------------------------------------------

    def _spawn(self, coroutine) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _reconcile(self, state: ModelState) -> None:
        if state.target in state.versions:      # e.g. a promoted arm: loaded already
            state.champion = state.target
        needed = state.needed()
        for version in needed - set(state.versions) - set(state.loading):
            state.loading[version] = "loading"
            self._spawn(self._load(state, version))
        for version in set(state.versions) - needed:
            state.versions.pop(version).batcher.retire()
            log.info("serving: %s v%s unloaded", state.name, version)
        self.metrics.loaded.labels(state.name).set(len(state.versions))

    async def _resolve(self, state: ModelState) -> None:
        delay = self.retry[0]
        while True:
            try:
                version = await asyncio.get_running_loop().run_in_executor(
                    self.pool, self.resolver, state.name, state.alias)
                break
            except Exception as exc:  # noqa: BLE001 - the registry unreachable: not ready, retry
                log.warning("serving: %s@%s not resolved (retry in %.1fs): %s", state.name, state.alias,
                            delay, _first_line(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry[1])
        if not state.asked:             # a deployment event may have named a newer one meanwhile
            state.asked, state.target = True, version
            log.info("serving: %s@%s is %s", state.name, state.alias, f"v{version}" if version else "unset")
            self._reconcile(state)

    async def _load(self, state: ModelState, version: str) -> None:
        delay = self.retry[0]
        while version in state.needed():
            try:
                model = await asyncio.get_running_loop().run_in_executor(
                    self.pool, self.loader, state.name, version)
                break
            except Exception as exc:  # noqa: BLE001 - not there yet, or a storage hiccup: retry
                state.loading[version] = f"load failed (retrying): {_first_line(exc)}"
                self.metrics.error(state.name, "load")
                log.warning("serving: %s v%s not loaded (retry in %.1fs): %s", state.name, version, delay,
                            _first_line(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry[1])
        else:
            state.loading.pop(version, None)
            return
        state.loading.pop(version, None)
        batcher = Batcher(model, max_rows=self.batching.max_rows, max_wait_ms=self.batching.max_wait_ms,
                          name=f"{state.name}-v{version}",
                          on_batch=self.metrics.batch_observer(state.name, version))
        state.versions[version] = Loaded(version, batcher, time.time())
        log.info("serving: %s v%s loaded", state.name, version)
        self._reconcile(state)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]
