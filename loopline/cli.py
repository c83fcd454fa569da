"""`loopline` command line: demo, dev, worker, serve, publish, topics, status, lineage, why, events, dlq.

Connection settings come from `LOOPLINE_*` environment variables (see `loopline.settings`);
flags here are only what changes per call.
"""

from __future__ import annotations

import argparse
import getpass
import logging
import sys

from pydantic import ValidationError

from loopline.commands import CliError, require_broker
from loopline.commands import inspect as inspect_cmd
from loopline.commands import lineage as lineage_cmd
from loopline.commands import operator as operator_cmd
from loopline.commands import status as status_cmd
from loopline.commands import why as why_cmd
from loopline.config import ConfigError
from loopline.settings import Settings
from loopline.startup import EXIT_BROKER_UNREACHABLE, BrokerUnreachable
from streams.probe import probe
from streams.security import KafkaRefused, SecurityConfigError
from streams.signing import KeyFileError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="loopline", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="the whole loop on an embedded broker, live, with a summary")
    demo.add_argument("--batches", type=int, default=10, help="data batches to stream")
    demo.add_argument("--rows", type=int, default=1000, help="rows per batch")
    demo.add_argument("--state-dir", default=".loopline/demo", help="where MLflow and runs live")
    demo.add_argument("--keep", action="store_true", help="keep the previous demo's state")
    demo.add_argument("--family-members", type=int, default=3, choices=range(0, 5), metavar="0-4",
                      help="members of the family 'region' made by one batch each, after the main loop")

    dev = sub.add_parser("dev", help="broker, worker, serving and the page kept up until Ctrl-C, to play with")
    dev.add_argument("--state-dir", default=".loopline/dev", help="where MLflow, data and logs live (kept)")
    dev.add_argument("--ui-port", type=int, default=8090, help="the page's port")
    dev.add_argument("--serve-port", type=int, default=8080, help="the serving replica's port")
    dev.add_argument("--demo-batches", type=int, default=0,
                     help="also stream this many of the demo's data batches into it, one per --feed-interval")
    dev.add_argument("--feed-interval", type=float, default=20.0, help="seconds between demo batches")

    sub.add_parser("worker", help="run the Faust worker against LOOPLINE_BROKER")

    serve = sub.add_parser("serve", help="a serving replica: each model's alias, experiments, feedback "
                                         "(batching and key: LOOPLINE_SERVING_*)")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--max-batch-rows", type=int, default=None,
                       help="rows per micro-batch, 0: off (default: LOOPLINE_SERVING_MAX_BATCH_ROWS, 64)")
    serve.add_argument("--max-batch-wait-ms", type=float, default=None,
                       help="a batch's window after its first request, 0: off "
                            "(default: LOOPLINE_SERVING_MAX_BATCH_WAIT_MS, 2)")

    page = sub.add_parser("ui", help="the read-only page: timeline, why (not), lineage, rollouts, dead letters")
    page.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: see ui.server's "
                                                          "threat model before exposing it)")
    page.add_argument("--port", type=int, default=8090)
    page.add_argument("--mlflow-ui", default=None, help="the MLflow UI's URL, for links (default: the tracking "
                                                        "URI when it is a server)")

    sub.add_parser("topics", help="create every topic (idempotent) and print them")

    publish = sub.add_parser("publish", help="publish an event by hand")
    kinds = publish.add_subparsers(dest="kind", required=True)
    data = kinds.add_parser("data", help="a data-arrival event")
    data.add_argument("--model", required=True)
    data.add_argument("--uri", required=True)
    data.add_argument("--rows", type=int, required=True)
    data.add_argument("--version", required=True, help="dataset version of the batch")
    data.add_argument("--digest")
    operator_cmd.add_parsers(kinds)           # retrain, promote, rollback, pause, resume: signed
    status_cmd.add_parser(sub)
    lineage_cmd.add_parser(sub)
    why_cmd.add_parser(sub)
    inspect_cmd.add_parsers(sub)              # events tail, dlq list / replay

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("kafka", "aiokafka", "alembic", "mlflow"):     # their INFO is per connection
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        settings = Settings()
    except ValidationError as exc:      # e.g. a Kafka security setting that cannot work
        for error in exc.errors():      # one line each, naming the variable
            setting = f"LOOPLINE_{error['loc'][0]}: ".upper() if error["loc"] else ""
            print(f"error: {setting}{error['msg'].removeprefix('Value error, ')}", file=sys.stderr)
        return 2
    if args.command == "demo":
        from devstack.demo import run_demo
        return run_demo(batches=args.batches, rows=args.rows, state_dir=args.state_dir, keep=args.keep,
                        family_members=args.family_members)
    if args.command == "dev":
        from devstack.dev import run_dev
        return run_dev(state_dir=args.state_dir, ui_port=args.ui_port, serve_port=args.serve_port,
                       demo_batches=args.demo_batches, feed_interval=args.feed_interval)
    if args.command == "worker":
        from loopline.worker import run
        sys.argv = [sys.argv[0]]        # Faust's Worker parses argv itself
        run(settings)
        return 0
    try:
        if args.command == "serve":
            return _serve(args, settings)
        if _reads_the_bus(args):
            # before MLflow's import (seconds) and any Kafka client
            require_broker(settings.broker, security=settings.kafka_security)
        if args.command == "topics":
            return _topics(settings)
        if args.command == "ui":
            from ui.server import serve as serve_page     # lazily: the page is its own process
            serve_page(settings, args.host, args.port, mlflow_ui=args.mlflow_ui)
            return 0
        if getattr(args, "func", None) is not None:
            return args.func(args, settings)
        if args.kind in operator_cmd.COMMANDS:
            return operator_cmd.run(args, settings)
        return _publish(args, settings)
    except (BrokerUnreachable, KafkaRefused) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BROKER_UNREACHABLE
    except (CliError, KeyFileError, ConfigError, SecurityConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _reads_the_bus(args) -> bool:
    """Whether the command needs Kafka from its start; operator commands check their key first."""
    if args.command == "lineage":
        return not args.no_topics
    if args.command == "publish":
        return args.kind not in operator_cmd.COMMANDS
    return args.command in ("topics", "status", "why", "events", "dlq")


def _serve(args, settings: Settings) -> int:
    from loopline import config
    from serving.ids import load_key
    from serving.server import key_path, serve
    from serving.store import Batching

    catalog = config.load(settings.config)
    models = {name: model.alias for name, model in catalog.items()}
    try:
        key = load_key(*key_path(settings.serving_key_file, settings.state_dir))
    except ValueError as exc:
        raise CliError(f"{exc} (LOOPLINE_SERVING_KEY_FILE)") from None
    # Kafka may come later (the clients wait for it), but a refused password will not change.
    probe(settings.broker, security=settings.kafka_security)
    serve(settings.tracking_uri, settings.broker, settings.topics, models, args.host, args.port, key=key,
          batching=Batching(_given(args.max_batch_rows, settings.serving_max_batch_rows),
                            _given(args.max_batch_wait_ms, settings.serving_max_batch_wait_ms)),
          security=settings.kafka_security, admit=config.member_alias(catalog))
    return 0


def _given(flag, setting):
    if flag is not None and flag < 0:
        raise CliError(f"a batch limit cannot be negative (got {flag})")
    return setting if flag is None else flag


def _topics(settings: Settings) -> int:
    from streams.admin import ensure_topics

    for name, partitions in ensure_topics(settings.broker, settings.topics,
                                          **settings.kafka_security.kafka_python()).items():
        print(f"{name}\t{partitions}")
    return 0


def _publish(args, settings: Settings) -> int:
    from streams import events as ev
    from streams.codec import build
    from streams.publisher import Publisher

    data = ev.DataArrived(uri=args.uri, rows=args.rows, version=args.version, digest=args.digest)
    event = build(data, args.model, source=f"loopline/cli/{getpass.getuser()}")
    with Publisher(settings.broker, settings.topics, **settings.kafka_security.kafka_python()) as publisher:
        publisher.publish(event)
    print(f"published {event.type} {event.id} for {args.model}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
