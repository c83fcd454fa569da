"""loopline's fixes to Faust's commit bookkeeping and buffer clearing, on Faust's own classes
(the end-to-end evidence is in tests/faults: test_faust_rebalance and the worker-kill test)."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from types import SimpleNamespace
from weakref import WeakSet

import pytest
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from intervaltree import IntervalTree
from mode.utils.queues import FlowControlEvent, FlowControlQueue

from agents import rebalance, transport

TOPIC = TP("t", 0)


def consumer(committed, acked, gaps=()):
    """Our Consumer with just the bookkeeping `_new_offset` reads."""
    c = transport.Consumer.__new__(transport.Consumer)
    c._acked = defaultdict(list, {TOPIC: list(acked)})
    c._acked_index = defaultdict(set, {TOPIC: set(acked)})
    c._committed_offset = defaultdict(lambda: None, {TOPIC: committed})
    c._gap = defaultdict(IntervalTree, {TOPIC: IntervalTree.from_tuples(gaps)})
    return c


@pytest.mark.parametrize("committed, acked, gaps, expected", [
    pytest.param(5, [6, 7], (), None, id="the record at the committed offset is not done"),
    pytest.param(5, [5, 6, 7], (), 8, id="done from the committed offset on"),
    pytest.param(5, [6], ((5, 6),), 7, id="the committed offset is a gap (nothing to read there)"),
    pytest.param(-1, [0, 1], (), 2, id="nothing committed yet: Faust's own check"),
    pytest.param(None, [0, 1], (), 2, id="nothing known: Faust's own check"),
])
def test_nothing_is_committed_past_a_record_that_is_not_done(committed, acked, gaps, expected):
    assert consumer(committed, acked, gaps)._new_offset(TOPIC) == expected


def test_fausts_own_check_lets_one_unfinished_record_through():
    """Why the override exists: with 5 committed and 5 not done, Faust commits 8."""
    assert faust_aiokafka.Consumer._new_offset(consumer(5, [6, 7]), TOPIC) == 8


class Message:
    def __init__(self, offset: int):
        self.topic, self.partition, self.offset = "t", 0, offset


def test_a_clear_while_suspended_drops_and_forgets_while_running_keeps():
    async def run():
        flow = FlowControlEvent(initially_suspended=False)
        queue = FlowControlQueue(maxsize=10, flow_control=flow, clear_on_resume=True)  # as Faust's
        messages = [Message(i) for i in range(3)]
        unacked = WeakSet(messages)
        app = SimpleNamespace(flow_control=flow, consumer=SimpleNamespace(_unacked_messages=unacked))
        rebalance.fix_buffer_clearing(app)
        for m in messages:
            queue.put_nowait(SimpleNamespace(message=m))

        flow.resume()                        # recovery's resume: what was read after the seek stays
        assert queue.qsize() == 3 and len(unacked) == 3

        flow.suspend()                       # a revocation: dropped, and not waited for
        flow.clear()
        assert queue.qsize() == 0 and len(unacked) == 0
        assert not any(getattr(m, "acked", False) for m in messages)   # so read again, not committed
    asyncio.run(run())
