"""Where a partition ends: the next offset to be written, as a reader outside a group needs it.

Why not just `KafkaConsumer.end_offsets` (a ListOffsets request): Tansu, the embedded broker,
answers it with the *last batch's base offset* + 1. After a producer batch of n records the
answer is n - 1 short until a one-record batch follows, so a reader that trusts it never sees
the newest records (the operator pause test lost the trigger's last ModelState write that way:
three table writes in 9 ms, two of them in one batch). A fetch's high watermark is right, on
Tansu and on Kafka, so the listed end is checked against one fetch from there. Measured by
`tests/integration/test_offsets.py`, which fails without the fetch check or without
the fresh partition states (a reused consumer keeps its old high watermark).
"""

from __future__ import annotations

import time
from typing import Sequence


def end_offsets(consumer, tps: Sequence, timeout: float = 5.0) -> dict:
    """{tp: end offset}, taking the larger of ListOffsets and a fetch's high watermark.

    `consumer` is a group-less kafka-python KafkaConsumer; this assigns it `tps` and leaves its
    positions at the listed ends (a caller reading records seeks afterwards). Blocking.
    """
    listed = consumer.end_offsets(list(tps))
    consumer.unsubscribe()                  # fresh partition states: no high watermark yet
    consumer.assign(list(tps))
    for tp in tps:
        consumer.seek(tp, listed[tp])
    deadline = time.monotonic() + timeout
    while any(consumer.highwater(tp) is None for tp in tps) and time.monotonic() < deadline:
        consumer.poll(timeout_ms=100)       # records past the listed end are read again later
    return {tp: max(listed[tp], consumer.highwater(tp) or 0) for tp in tps}
