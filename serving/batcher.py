"""Adaptive micro-batching for one model version: concurrent requests, one `predict` call.

Why: a pyfunc's `predict` costs much the same for 1 row as for 64 (DataFrame construction,
schema checks, the estimator's Python overhead), so under concurrency answering requests one by
one wastes most of the CPU. Requests are queued; a batch closes at `max_rows` rows or
`max_wait_ms` after its first request, and runs as one `predict` on the concatenated rows in
this version's single worker thread (models are not assumed thread-safe; the event loop never
waits on a model). The rows are split back per request.

Adaptive: when the worker thread is free and nothing else is queued, a lone request goes at once
instead of waiting for company that may not come, so concurrency 1 pays no window. Requests that
arrive while a batch runs wait together for the next one. `max_rows` or `max_wait_ms` of 0 is
the off switch: each request is predicted alone (still in order, in the same thread). A request
with more rows than `max_rows` is predicted alone and whole.

A batch that fails is retried request by request, so one request with a bad row fails alone,
with the model's error, instead of taking its neighbours down with it.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable

BatchObserver = Callable[[int, int, float], None]     # (rows, requests, seconds) of each predict


@dataclass
class _Pending:
    rows: list[dict]
    future: asyncio.Future
    arrived: float


class PredictError(Exception):
    """The model raised on a request's rows; `str()` is the model's own message."""


class Batcher:
    def __init__(self, model: Any, *, max_rows: int = 64, max_wait_ms: float = 2.0, name: str = "model",
                 on_batch: BatchObserver | None = None):
        self.model, self.name, self.on_batch = model, name, on_batch
        self.max_rows, self.max_wait = max_rows, max_wait_ms / 1000.0
        self.off = max_rows <= 0 or max_wait_ms <= 0
        self.executor = ThreadPoolExecutor(1, thread_name_prefix=f"predict-{name}")
        self.queue: deque[_Pending] = deque()
        self.queued_rows = 0
        self.busy = False
        self.retired = False
        self.timer: asyncio.TimerHandle | None = None
        self.calls = 0                          # predict calls made (tests and /models read it)

    async def predict(self, rows: list[dict]) -> list:
        """The predictions for `rows`, in order; `PredictError` if the model raised on them."""
        if not rows:
            return []
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.queue.append(_Pending(rows, future, loop.time()))
        self.queued_rows += len(rows)
        self._consider(loop, arrival=True)
        return await future

    def retire(self) -> None:
        """No longer routed to: finish what is queued, then let the worker thread go."""
        self.retired = True
        if not self.busy and not self.queue:
            self.executor.shutdown(wait=False)

    # -- scheduling, all on the event loop ---------------------------------------------------------

    def _consider(self, loop: asyncio.AbstractEventLoop, arrival: bool = False) -> None:
        if self.busy or not self.queue:
            return
        due = loop.time() >= self.queue[0].arrived + self.max_wait
        if self.off or len(self.queue) == 1 or self.queued_rows >= self.max_rows or due:
            self._dispatch(loop)
        elif self.timer is None:
            self.timer = loop.call_at(self.queue[0].arrived + self.max_wait, self._on_timer, loop)

    def _on_timer(self, loop: asyncio.AbstractEventLoop) -> None:
        self.timer = None
        self._consider(loop)

    def _take(self) -> list[_Pending]:
        batch = [self.queue.popleft()]
        rows = len(batch[0].rows)
        while not self.off and self.queue and rows + len(self.queue[0].rows) <= self.max_rows:
            rows += len(self.queue[0].rows)
            batch.append(self.queue.popleft())
        self.queued_rows -= rows
        return batch

    def _dispatch(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        batch = [p for p in self._take() if not p.future.done()]      # callers that gave up: skip
        if not batch:
            return self._consider(loop)
        self.busy = True
        work = loop.run_in_executor(self.executor, self._run, [p.rows for p in batch])
        work.add_done_callback(lambda done: self._finished(loop, batch, done))

    def _finished(self, loop: asyncio.AbstractEventLoop, batch: list[_Pending], done: asyncio.Future) -> None:
        self.busy = False
        try:
            outcomes = done.result()
        except BaseException as exc:            # noqa: BLE001 - the worker itself failed: say so to all
            outcomes = [PredictError(f"{type(exc).__name__}: {exc}")] * len(batch)
        for pending, outcome in zip(batch, outcomes):
            if pending.future.done():
                continue
            if isinstance(outcome, BaseException):
                pending.future.set_exception(outcome)
            else:
                pending.future.set_result(outcome)
        if self.queue:
            self._consider(loop)
        elif self.retired:
            self.executor.shutdown(wait=False)

    # -- the worker thread ------------------------------------------------------------------------

    def _run(self, requests: list[list[dict]]) -> list:
        """Per request: its predictions, or the PredictError the model raised for it."""
        started = time.perf_counter()
        try:
            predictions = self._predict([row for rows in requests for row in rows])
            if self.on_batch is not None:
                self.on_batch(len(predictions), len(requests), time.perf_counter() - started)
        except Exception as exc:  # noqa: BLE001 - a model fails in its own ways
            if len(requests) == 1:
                return [PredictError(str(exc) or type(exc).__name__)]
            return [self._alone(rows) for rows in requests]
        out, start = [], 0
        for rows in requests:
            out.append(predictions[start:start + len(rows)])
            start += len(rows)
        return out

    def _alone(self, rows: list[dict]):
        try:
            return self._predict(rows)
        except Exception as exc:  # noqa: BLE001
            return PredictError(str(exc) or type(exc).__name__)

    def _predict(self, rows: list[dict]) -> list:
        import pandas as pd

        self.calls += 1
        return as_list(self.model.predict(pd.DataFrame(rows)), len(rows))


def as_list(output: Any, rows: int) -> list:
    """A pyfunc's output (ndarray, Series, DataFrame, list) as one plain JSON value per row."""
    import pandas as pd

    if isinstance(output, pd.DataFrame):
        output = output.iloc[:, 0] if output.shape[1] == 1 else output.to_dict(orient="records")
    if hasattr(output, "tolist"):
        output = output.tolist()
    values = [v.item() if hasattr(v, "item") else v for v in output]
    if len(values) != rows:
        raise ValueError(f"the model returned {len(values)} predictions for {rows} rows")
    return values
