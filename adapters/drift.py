"""The drift checker behind the agents' `DriftChecker` port: Evidently, off the event loop.

Why here (the composition root): Evidently, pandas and MLflow are heavy, blocking and CPU bound,
so none of it may touch the agents or the Faust event loop. `PooledDriftChecker` runs every
check in a process pool (`loop.run_in_executor`), and `EvidentlyDrift` does the work inside it:

1. The reference of the model version (the sample its training step recorded, see
   `stepkit.reference`) is downloaded from MLflow once and cached per (model, version), with
   its Evidently `Dataset` built once per column set.
2. The decision: for each compared column the stat test Evidently's DataDriftPreset would use
   (the configured method, else Evidently's choice by type and size) with its threshold, run
   once against the cached reference. Most batches stop here: no drift, nothing written.
3. Only on drift, the report: `Report([DataDriftPreset(...)])` on the same data and settings,
   saved as HTML and logged as an artifact of the model version's run
   (`runs:/<run>/drift/<origin>-<dataset version>.html`: a redelivered batch overwrites its own
   report). The stat results of step 2 are handed to the report through a per-check memo of
   Evidently's stat-test implementations, so the report renders without recomputing them
   (Evidently alone computes each column's test three times).

A drifted 100k x 10 batch therefore costs about what Evidently alone costs, and a clean one a
small fraction of it: see `python -m bench.drift`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import tempfile
import threading
import time
from collections import OrderedDict
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable

from agents.policies import ColumnDrift, DriftPolicy, decide_drift
from agents.ports import DriftRequest, DriftResult, NoReference
from stepkit import reference as ref_mod

log = logging.getLogger("loopline.drift")
CACHE_SIZE = 8

# Evidently 0.7's registered stat-test names (checked against Evidently by a unit test).
METHODS = frozenset({
    "anderson", "chisquare", "cramer_von_mises", "ed", "empirical_mmd", "es", "fisher_exact",
    "g_test", "hellinger", "jensenshannon", "kl_div", "ks", "mannw", "perc_text_content_drift",
    "abs_text_content_drift", "psi", "t_test", "TVD", "wasserstein", "z",
})


# -- memo of Evidently's stat tests: the report reuses what the decision computed ---------------

_memo: dict | None = None
_memo_installed = False
_memo_lock = threading.Lock()


class _MemoImpl:
    """Wraps one stat test's Python implementation; active only inside `_memo_scope`."""

    def __init__(self, name: str, impl):
        self.name, self.impl, self.data_type = name, impl, impl.data_type

    def __call__(self, data, feature_type, threshold):
        memo = _memo
        if memo is None:
            return self.impl(data, feature_type, threshold)
        current, reference = data.current_data, data.reference_data
        key = (self.name, getattr(current, "name", None), len(reference), len(current), threshold)
        if key not in memo:
            memo[key] = self.impl(data, feature_type, threshold)
        return memo[key]


def _install_memo() -> bool:
    """Wrap Evidently's registered implementations once per process (False: internals changed)."""
    global _memo_installed
    with _memo_lock:
        if _memo_installed:
            return True
        try:
            from evidently.legacy.calculation_engine.python_engine import PythonEngine
            from evidently.legacy.calculations.stattests import registry
            for test, impls in registry._impls.items():
                impl = impls.get(PythonEngine)
                if impl is not None and not isinstance(impl, _MemoImpl):
                    impls[PythonEngine] = _MemoImpl(test.name, impl)
            _memo_installed = True
        except Exception as exc:  # noqa: BLE001 - an optimisation only
            log.warning("drift: stat-test memo not installed (%s); reports recompute", exc)
        return _memo_installed


@contextlib.contextmanager
def _memo_scope():
    global _memo
    _memo = {}
    try:
        yield
    finally:
        _memo = None


# -- references ---------------------------------------------------------------------------------

class MlflowReferences:
    """Loads the reference recorded with a model version from its training run's artifacts."""

    def __init__(self, tracking_uri: str):
        import mlflow

        self.client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    def __call__(self, model: str, version: str) -> ref_mod.Reference:
        from mlflow.exceptions import MlflowException

        try:
            run_id = self.client.get_model_version(model, version).run_id
        except MlflowException as exc:
            raise NoReference(f"{model} v{version} is not in the registry: {exc}") from None
        if not run_id:
            raise NoReference(f"{model} v{version} has no training run")
        with tempfile.TemporaryDirectory(prefix="loopline-ref-") as tmp:
            try:
                local = self.client.download_artifacts(run_id, ref_mod.ARTIFACT_DIR, tmp)
            except Exception as exc:  # noqa: BLE001 - missing artifacts raise various errors
                raise NoReference(f"{model} v{version} (run {run_id}) recorded no reference data "
                                  f"(no '{ref_mod.ARTIFACT_DIR}/' artifacts: call "
                                  f"ctx.log_reference in its training step): {exc}") from None
            return ref_mod.read(Path(local), run_id)

    def log_report(self, run_id: str, path: Path) -> str:
        self.client.log_artifact(run_id, str(path), artifact_path="drift")
        return f"runs:/{run_id}/drift/{path.name}"


class _Cached:
    """A reference plus what is derived from it once: Evidently datasets per column set."""

    def __init__(self, reference: ref_mod.Reference):
        self.reference = reference
        self.frame = reference.frame
        self.columns = tuple(str(c) for c in reference.frame.columns)
        self.datasets: dict[tuple, Any] = {}
        self.clean: dict[str, Any] = {}

    def column(self, name: str):
        """The reference column cleaned the way Evidently cleans it (inf -> NaN, dropped)."""
        import numpy as np

        if name not in self.clean:
            self.clean[name] = self.frame[name].replace([-np.inf, np.inf], np.nan).dropna()
        return self.clean[name]


# -- the checker --------------------------------------------------------------------------------

class EvidentlyDrift:
    """Blocking drift checks with a per-(model, version) reference cache; one per process."""

    def __init__(self, references: Callable[[str, str], ref_mod.Reference],
                 log_report: Callable[[str, Path], str] | None = None,
                 report_dir: Path | None = None, cache_size: int = CACHE_SIZE):
        self.references, self.log_report = references, log_report
        self.report_dir = Path(report_dir or tempfile.gettempdir()) / "loopline-drift-reports"
        self.cache: OrderedDict[tuple[str, str], _Cached] = OrderedDict()
        self.cache_size = cache_size
        self.loads = 0

    def reference(self, model: str, version: str) -> tuple[_Cached, bool]:
        key = (model, version)
        cached = self.cache.get(key)
        if cached is not None:
            self.cache.move_to_end(key)
            return cached, True
        cached = _Cached(self.references(model, version))
        self.loads += 1
        self.cache[key] = cached
        while len(self.cache) > self.cache_size:
            self.cache.popitem(last=False)
        return cached, False

    def check(self, request: DriftRequest) -> DriftResult:
        started = time.perf_counter()
        import pandas as pd

        cached, hit = self.reference(request.model, request.model_version)
        if request.uri is not None:
            current = pd.read_parquet(request.uri)
        else:
            current = pd.DataFrame(list(request.rows or ()))
        policy: DriftPolicy = request.policy
        columns = policy.compared(cached.columns, tuple(str(c) for c in current.columns))
        if not columns:
            raise ValueError(f"no column to compare: reference has {list(cached.columns)}, "
                             f"the batch has {list(current.columns)}, configured "
                             f"{list(policy.columns) if policy.columns is not None else 'all'}")
        _install_memo()
        with _memo_scope():
            results = self._decide(cached, current, columns, policy)
            share, drifted = decide_drift(results, policy)
            report_uri = None
            if drifted and request.report:
                report_uri = self._report(request, cached, current, columns, policy)
        return DriftResult(drifted=drifted, drift_share=share,
                           columns={c: r.to_dict() for c, r in results.items()},
                           reference_version=cached.reference.version_label, rows=len(current),
                           report_uri=report_uri, seconds=time.perf_counter() - started,
                           reference_cached=hit)

    def _decide(self, cached: _Cached, current, columns, policy: DriftPolicy) -> dict[str, ColumnDrift]:
        import numpy as np
        from evidently.legacy.calculations.stattests.registry import get_stattest
        from evidently.legacy.core import ColumnType

        out: dict[str, ColumnDrift] = {}
        for name in columns:
            kind = ColumnType.Categorical if name in policy.categorical else ColumnType.Numerical
            ref = cached.column(name)
            cur = current[name].replace([-np.inf, np.inf], np.nan).dropna()
            if ref.empty or cur.empty:
                continue
            if kind is ColumnType.Numerical:
                cur = cur.astype(float) if not np.issubdtype(cur.dtype, np.number) else cur
            test = get_stattest(ref, cur, kind, policy.method_for(name))
            result = test(ref, cur, kind, policy.threshold_for(name))
            out[name] = ColumnDrift(score=float(result.drift_score), method=test.display_name,
                                    threshold=float(result.actual_threshold),
                                    drifted=bool(result.drifted))
        return out

    def _report(self, request: DriftRequest, cached: _Cached, current, columns,
                policy: DriftPolicy) -> str | None:
        from evidently import DataDefinition, Dataset, Report
        from evidently.presets import DataDriftPreset

        categorical = [c for c in columns if c in policy.categorical]
        numerical = [c for c in columns if c not in policy.categorical]
        definition = DataDefinition(numerical_columns=numerical, categorical_columns=categorical)
        key = (tuple(numerical), tuple(categorical))
        reference = cached.datasets.get(key)
        if reference is None:
            reference = cached.datasets[key] = Dataset.from_pandas(
                cached.frame[list(columns)], data_definition=definition)
        preset = DataDriftPreset(
            columns=list(columns), drift_share=policy.drift_share, num_method=policy.num_method,
            cat_method=policy.cat_method, per_column_method=dict(policy.methods) or None,
            num_threshold=policy.num_threshold, cat_threshold=policy.cat_threshold,
            per_column_threshold=dict(policy.thresholds) or None, include_tests=False)
        snapshot = Report([preset]).run(
            Dataset.from_pandas(current[list(columns)], data_definition=definition), reference)
        self.report_dir.mkdir(parents=True, exist_ok=True)
        name = f"{request.origin}-{_safe(request.dataset_version)}.html"
        with tempfile.TemporaryDirectory(dir=self.report_dir) as tmp:
            path = Path(tmp) / name
            snapshot.save_html(str(path))
            run_id = cached.reference.run_id
            if self.log_report is None or run_id is None:
                kept = self.report_dir / name
                os.replace(path, kept)
                return kept.as_uri()
            return self.log_report(run_id, path)


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)[:120]


# -- the process pool ---------------------------------------------------------------------------

_checker: EvidentlyDrift | None = None


def _exit_with_parent(parent: int, interval: float = 1.0) -> None:
    """A pool worker blocks on its call queue forever if the worker process is SIGKILLed (it holds
    both ends of the queue's pipe): leave when the parent is gone."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        os._exit(0)

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()


def _init_worker(tracking_uri: str, report_dir: str | None, parent: int | None = None) -> None:
    global _checker
    if parent is not None:
        _exit_with_parent(parent)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    references = MlflowReferences(tracking_uri)
    _checker = EvidentlyDrift(references, references.log_report,
                              Path(report_dir) if report_dir else None)


def _warm() -> bool:
    """Import the heavy libraries now, not at the first batch."""
    import evidently.presets  # noqa: F401
    from evidently.legacy.calculations.stattests import registry  # noqa: F401

    return _install_memo()


def _run(request: DriftRequest) -> DriftResult:
    assert _checker is not None, "drift worker not initialised"
    return _checker.check(request)


class PooledDriftChecker:
    """`DriftChecker` port: each check runs in a spawned worker process, never on the event loop.

    One worker by default: checks of one model are sequential anyway (one partition, one agent),
    and each worker keeps its own reference cache. Spawned, not forked: the parent is a running
    asyncio loop with threads.
    """

    def __init__(self, tracking_uri: str, workers: int = 1, report_dir: str | None = None):
        self.pool = ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"),
                                        initializer=_init_worker,
                                        initargs=(tracking_uri, report_dir, os.getpid()))
        self.warmed = self.pool.submit(_warm)

    async def check(self, request: DriftRequest) -> DriftResult:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, _run, request)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
