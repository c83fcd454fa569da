"""loopline: event-driven continuous training.

The composition root: settings, `loopline.yaml`, the CLI, the worker's wiring, the local
serving endpoint, the demo and the job-side helper (`loopline.job`). It may import every
layer; `streams`, `triggers` and `agents` never import it.
"""

__version__ = "0.1.0"
