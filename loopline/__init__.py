"""loopline: event-driven continuous training. This package is the composition root.

Runs in: the `loopline` command (the worker, the operator's commands). It holds the settings
(`LOOPLINE_*`), `loopline.yaml` and its validation, the worker's wiring, the start-up probe and
the operator's commands (`commands/`: status, lineage, events, dlq, signed publishes). It may
import every production package (`streams`, `triggers`, `agents`, `adapters`, `serving`,
`stepkit`); none of them imports it. The development harness (`devstack`) is reached only by
`loopline demo`.
"""

__version__ = "0.1.0"
