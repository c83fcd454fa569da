"""The operator's commands of the `loopline` CLI, one module each; `loopline.cli` wires them.

    operator   publish retrain|promote|rollback|pause|resume: signed, with --dry-run
    status     per model: champion, history, training in flight, last events, pause, lag
    lineage    the chain that produced and deployed one model version
    inspect    events tail, dlq list, dlq replay

Each module has `add_parser(s)` (argparse) and `run(args, settings) -> exit code`. They read
the bus through `loopline.commands.snapshot` and MLflow through its client; none joins the worker's
consumer group or changes anything except by publishing an event.
"""

from loopline.startup import BrokerUnreachable
from streams.probe import probe
from streams.security import KafkaSecurity


class CliError(Exception):
    """A usage or environment problem worth one line on stderr and exit code 2."""


def require_broker(bootstrap: str, timeout: float = 2.0, security: KafkaSecurity | None = None) -> None:
    """Raise BrokerUnreachable (exit code 3, as for the worker) unless a broker answers, and
    KafkaRefused (exit code 3) if it refuses our credentials or we refuse its certificate.

    Called before any kafka-python client is made: against an address nobody answers, or with
    a wrong password, that client retries for over half a minute and ends in a
    KafkaTimeoutError traceback, where one bounded probe says in seconds what is wrong.
    """
    reason = probe(bootstrap, timeout, security)
    if reason is not None:
        raise BrokerUnreachable(f"no Kafka broker answered at {bootstrap} ({reason}): set "
                                "LOOPLINE_BROKER=HOST:PORT, or run `loopline demo` for an "
                                "embedded one")
