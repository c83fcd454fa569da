"""Micro-batching: fewer predict calls than requests, each request its own rows back.

The model is a tiny real pyfunc-like object (`predict(DataFrame)`), not a mock: it doubles
column `x` and records the size of every call. `Held` makes concurrency deterministic: its first
call blocks until the test has queued every other request, so which requests share a batch does
not depend on the machine's speed.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pandas as pd
import pytest

from serving.batcher import Batcher, PredictError


class Doubler:
    def __init__(self):
        self.calls: list[int] = []

    def predict(self, frame: pd.DataFrame):
        self.calls.append(len(frame))
        if (frame["x"] < 0).any():
            raise ValueError(f"negative x in rows {list(frame.index[frame['x'] < 0])}")
        return frame["x"].to_numpy() * 2


class Held(Doubler):
    """The first call waits for `release`: everything sent meanwhile queues behind it."""

    def __init__(self):
        super().__init__()
        self.release = threading.Event()

    def predict(self, frame):
        if not self.calls:
            self.release.wait(10)
        return super().predict(frame)


async def until(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.001)


def requests(count: int, rows: int, start: int = 0) -> list[list[dict]]:
    return [[{"x": float(start + i * rows + j)} for j in range(rows)] for i in range(count)]


async def send_held(batcher: Batcher, model: Held, bodies: list[list[dict]]) -> list:
    """Send every body concurrently; release the model once all but the first are queued."""
    tasks = [asyncio.ensure_future(batcher.predict(rows)) for rows in bodies]
    await until(lambda: len(batcher.queue) == len(bodies) - 1)
    model.release.set()
    return await asyncio.gather(*tasks, return_exceptions=True)


def test_concurrent_requests_share_predict_calls_and_get_their_own_rows():
    async def scenario():
        model = Held()
        batcher = Batcher(model, max_rows=64, max_wait_ms=2)
        bodies = requests(10, 2)
        answers = await send_held(batcher, model, bodies)
        return model, batcher, bodies, answers

    model, batcher, bodies, answers = asyncio.run(scenario())
    assert answers == [[row["x"] * 2 for row in rows] for rows in bodies]
    assert model.calls == [2, 18]               # the first alone, the nine queued behind it in one
    assert batcher.calls == 2


def test_a_batch_never_exceeds_max_rows():
    async def scenario():
        model = Held()
        batcher = Batcher(model, max_rows=7, max_wait_ms=2)
        bodies = requests(10, 3)
        return model, bodies, await send_held(batcher, model, bodies)

    model, bodies, answers = asyncio.run(scenario())
    assert answers == [[row["x"] * 2 for row in rows] for rows in bodies]
    assert max(model.calls) <= 7 and sum(model.calls) == 30
    assert model.calls == [3, 6, 6, 6, 6, 3]


@pytest.mark.parametrize("max_rows, max_wait_ms", [(0, 2), (64, 0)], ids=["rows-0", "wait-0"])
def test_the_off_switch_predicts_each_request_alone(max_rows, max_wait_ms):
    async def scenario():
        model = Held()
        batcher = Batcher(model, max_rows=max_rows, max_wait_ms=max_wait_ms)
        bodies = requests(6, 3)
        return model, bodies, await send_held(batcher, model, bodies)

    model, bodies, answers = asyncio.run(scenario())
    assert answers == [[row["x"] * 2 for row in rows] for rows in bodies]
    assert model.calls == [3] * 6


def test_a_lone_request_does_not_wait_for_the_window():
    async def scenario():
        batcher = Batcher(Doubler(), max_rows=64, max_wait_ms=5000)
        started = time.monotonic()
        answer = await batcher.predict([{"x": 1.0}])
        return answer, time.monotonic() - started

    answer, seconds = asyncio.run(scenario())
    assert answer == [2.0] and seconds < 2.5      # far below the 5 s window: it went at once


def test_a_failing_request_fails_alone_with_the_models_error():
    async def scenario():
        model = Held()
        batcher = Batcher(model, max_rows=64, max_wait_ms=2)
        bodies = requests(5, 2)
        bodies[3] = [{"x": 1.0}, {"x": -1.0}]
        answers = await send_held(batcher, model, bodies)
        later = await batcher.predict([{"x": 4.0}])       # the batcher goes on
        return model, answers, later

    model, answers, later = asyncio.run(scenario())
    assert answers[:3] == [[0.0, 2.0], [4.0, 6.0], [8.0, 10.0]] and answers[4] == [16.0, 18.0]
    assert isinstance(answers[3], PredictError) and "negative x" in str(answers[3])
    assert later == [8.0]
    # first alone; the four queued: one batch that raised, then each of them alone
    assert model.calls == [2, 8, 2, 2, 2, 2, 1]


def test_a_model_that_always_raises_fails_every_request_with_its_error():
    class Broken:
        def predict(self, frame):
            raise RuntimeError("weights missing")

    async def scenario():
        batcher = Batcher(Broken(), max_rows=64, max_wait_ms=2)
        return await asyncio.gather(*(batcher.predict(rows) for rows in requests(4, 1)),
                                    return_exceptions=True)

    answers = asyncio.run(scenario())
    assert all(isinstance(a, PredictError) and str(a) == "weights missing" for a in answers)


def test_a_model_answering_the_wrong_number_of_rows_is_an_error():
    class Short:
        def predict(self, frame):
            return [1]

    async def scenario():
        return await asyncio.gather(Batcher(Short()).predict([{"x": 1}, {"x": 2}]), return_exceptions=True)

    [answer] = asyncio.run(scenario())
    assert isinstance(answer, PredictError) and "returned 1 predictions for 2 rows" in str(answer)


def test_dataframe_outputs_become_one_value_per_row():
    class Frame:
        def predict(self, frame):
            return pd.DataFrame({"label": frame["x"] > 0, "score": frame["x"] / 10})

    async def scenario():
        return await Batcher(Frame()).predict([{"x": 1.0}, {"x": -2.0}])

    assert asyncio.run(scenario()) == [{"label": True, "score": 0.1}, {"label": False, "score": -0.2}]
