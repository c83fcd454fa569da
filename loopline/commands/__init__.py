"""The operator's commands of the `loopline` CLI, one module each; `loopline.cli` wires them.

    operator   publish retrain|promote|rollback|pause|resume: signed, with --dry-run
    status     per model: champion, history, training in flight, last events, pause, lag
    lineage    the chain that produced and deployed one model version
    inspect    events tail, dlq list, dlq replay

Each module has `add_parser(s)` (argparse) and `run(args, settings) -> exit code`. They read
the bus through `loopline.commands.snapshot` and MLflow through its client; none joins the worker's
consumer group or changes anything except by publishing an event.
"""


class CliError(Exception):
    """A usage or environment problem worth one line on stderr and exit code 2."""
