"""Fixes for two Faust rebalance bugs in how the agents' record buffers are cleared.

Faust clears every agent's buffer twice per rebalance, through `app.flow_control.clear()`:

1. On revocation, with the flow suspended, so that no agent starts on a record of a partition
   that may be leaving; the records are read again from the committed offset. Then Faust waits
   until every record handed out is acknowledged or garbage. A topic read by two agents (the
   trigger and the evaluator both read training outcomes; the trigger and the deployer,
   verified operator commands; the trigger and the drift agent, data) hands each record to
   both buffers. A record one agent had handled and the other still had buffered stays
   referenced by the first agent's stream, which keeps its current event while the flow is
   suspended: neither acknowledged nor collected, it is waited for forever, and the group
   stalls with the worker ("wait_empty: Waiting for tasks" with every agent idle).
   Fix: the cleared records are struck from the set waited for. They stay unacknowledged, so
   their offsets are not committed and the partition's next owner reads them again.

2. On resume, at the end of recovery. But recovery resumes the flow early, and the agents are
   already handling records read after the seek to the committed offsets; the clear at the end
   drops the ones still buffered, and they are never read again: Faust's consumer has moved
   past them. A training request made during a rebalance was lost that way (the worker-kill
   fault test).
   Fix: a clear while the flow is running keeps the buffers.

`tests/faults/test_faust_rebalance.py` reproduces the first; the worker-kill test in
`tests/faults/test_rebalance_and_outage.py` caught both.
"""

from __future__ import annotations

import logging

log = logging.getLogger("loopline.rebalance")


def fix_buffer_clearing(app) -> None:
    flow = app.flow_control
    clear = flow.clear

    def clear_safely() -> None:
        if flow.is_active():
            return                      # 2: a resume; what is buffered was read after the seek
        dropped = [event.message for queue in list(flow._queues) for event in list(queue._queue)
                   if getattr(event, "message", None) is not None]
        clear()
        if dropped:                     # 1: not waited for, not acknowledged: read again
            app.consumer._unacked_messages.difference_update(dropped)
            log.info("dropped %d buffered records, read again from the committed offsets: %s",
                     len(dropped), ", ".join(sorted({f"{m.topic}[{m.partition}]@{m.offset}"
                                                      for m in dropped})))

    flow.clear = clear_safely
