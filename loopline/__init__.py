"""loopline: event-driven continuous training. This package is the composition root.

Runs in: the `loopline` command (the worker, the operator's commands). It holds the settings
(`LOOPLINE_*`), `loopline.yaml` and its validation, the worker's wiring, the start-up probe and
the operator's commands (`commands/`: status, lineage, why, events, dlq, signed publishes). It may
import every production package below it (`streams`, `triggers`, `agents`, `adapters`, `serving`,
`stepkit`); none of them imports it. The two packages above it are reached only from the command
line, the exceptions the layers contract in pyproject.toml names: the development harness
(`devstack`) by `loopline demo` and `loopline dev`, and the page (`ui`, which imports this
package's read tools) by `loopline ui`.
"""

__version__ = "0.1.0"
