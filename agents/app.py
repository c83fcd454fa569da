"""The Faust app: the agents of the loop, each a few lines of read → decide → act.

    re-keying       before the gate and the trigger: an input event off its model's partition
                    (any producer, any key) → forwarded onto it, via *.rekeyed (agents.rekey)
    operator gate   operator commands → verified (signature, expiry, replay) → operator.verified
    trigger agent   data / drift / operator / clock / training outcomes → TrainingRequested
    trainer agent   TrainingRequested → launcher.submit (returns at once) → TrainingStarted
    run watcher     launcher.poll → TrainingSucceeded / TrainingFailed
    evaluator agent TrainingSucceeded → gate → ModelEvaluated (+ ModelPromoted)
    deployer agent  ModelPromoted, operator promote/rollback, RollbackRequested, RolloutAnalysed →
                    registry aliases (champion, challenger) → Deployment*, RolloutStarted
    experiments     feedback, rollouts, deployments, shadow pairs, in batches → per-arm state →
                    analysis → RolloutAnalysed + ExperimentUpdated (agents.experiments)
    drift agent     data batches, prediction log → DriftChecker port (process pool) → DriftDetected
    metric windows  feedback, in batches (a librdkafka consumer task, agents.batch) →
                    tumbling windows → MetricReported (agents.monitoring, agents.windows)
    metric guard    (in the trigger) MetricReported, Deployment* → retrain signal or RollbackRequested

Every handler publishes its result and waits for the ack before returning, so the offset is
committed only after the side effect (at-least-once; the decision records on
`decision.recorded` are not side effects and go out without an ack wait, `agents.context`); every side effect is idempotent (run
names from idempotency keys, aliases set to a value), so a redelivered event changes nothing.
Blocking calls (launchers, the MLflow registry) run in threads, never on the event loop.
"""

from __future__ import annotations

from typing import Mapping

import faust

from agents import health
from agents import metrics as metrics_mod
from agents import monitoring
from agents import rebalance
from agents import transport
from agents.context import AppOptions, Context
from agents.deployer import Deployer
from agents.evaluator import Evaluator
from agents.operator import OperatorGate
from agents.ports import Launcher, Registry
from agents.rekey import Rekey
from agents.trainer import Trainer
from agents.trigger import Trigger, state_table
from streams.signing import KeyFile

__all__ = ["AppOptions", "build_app"]


def build_app(opts: AppOptions, models: Mapping, launchers: Mapping[str, Launcher],
              registry: Registry, drift_checker=None) -> faust.App:
    topics = opts.topics
    app = faust.App(
        opts.group, broker=f"{transport.SCHEME}://{opts.broker}",
        store="rocksdb://" if opts.table_store == "rocksdb" else "memory://",   # tables' local store
        broker_credentials=transport.credentials(opts.security),
        datadir=opts.datadir,
        processing_guarantee="at_least_once", topic_partitions=topics.partitions,
        topic_allow_declare=True,   # Faust declares only its own changelog/leader topics
        consumer_auto_offset_reset="earliest", web_port=opts.web_port, web_bind=opts.web_bind,
        web_enabled=True, broker_rebalance_timeout=opts.rebalance_timeout,
        broker_session_timeout=opts.session_timeout,
        broker_heartbeat_interval=opts.heartbeat_interval, producer_linger=0.0)
    app.fetch_max_wait_ms = opts.fetch_max_wait_ms
    rebalance.fix_buffer_clearing(app)          # else a rebalance can hang or lose records
    # Tables hold plain JSON values: no value_type, or Faust calls dict.from_data() at recovery.
    state = app.Table(state_table(opts.group), default=None, partitions=topics.partitions,
                      key_type=str)
    seen_commands = app.Table(f"{opts.group}-operator-seen", default=None,
                              partitions=topics.partitions, key_type=str)
    launched = app.Table(f"{opts.group}-launched", default=None, partitions=topics.partitions,
                         key_type=str)
    ctx = Context(app, opts, models, launchers, registry)
    trigger, trainer = Trigger(ctx, state), Trainer(ctx, launched)
    evaluator, deployer = Evaluator(ctx), Deployer(ctx)
    gate = OperatorGate(ctx, seen_commands, KeyFile(opts.operator_keys))
    consume = ctx.edge.consume

    def raw(*names: str):
        return app.topic(*names, value_type=bytes, key_type=bytes, value_serializer="raw",
                         key_serializer="raw")

    trigger_inputs = trigger.inputs()

    # The gate and the trigger keep per-model tables: they handle a record only on its model's
    # partition, and forward the others onto it first.
    home = Rekey(ctx).wrap
    gate_inputs = (topics.operator, topics.operator_rekeyed)

    @app.agent(raw(*gate_inputs), name="operator")
    async def operator_agent(stream):
        await consume(stream, home(gate.handle), owns=set(gate_inputs))

    @app.agent(raw(*trigger_inputs), name="trigger")
    async def trigger_agent(stream):
        await consume(stream, home(trigger.handle), owns=set(trigger_inputs))

    @app.agent(raw(topics.training_requests), name="trainer")
    async def trainer_agent(stream):
        await consume(stream, trainer.handle, owns={topics.training_requests})

    @app.agent(raw(topics.training), name="evaluator")
    async def evaluator_agent(stream):
        await consume(stream, evaluator.handle, owns=set())      # the trigger owns this topic

    @app.agent(raw(topics.promotion, topics.operator_verified, topics.rollout), name="deployer")
    async def deployer_agent(stream):
        await consume(stream, deployer.handle, owns={topics.promotion, topics.rollout})

    @app.timer(interval=opts.poll_interval, on_leader=True)
    async def run_watcher():
        await trainer.watch()

    @app.timer(interval=opts.tick_interval, on_leader=True)
    async def clock():
        await trigger.tick()

    @app.on_partitions_assigned.connect
    def trigger_partitions(app, assigned, **kwargs):    # the new assignment, whole
        trigger.partitions_assigned(assigned)

    # drift monitor, metric windows, and the metric guard inside the trigger (agents.monitoring)
    monitoring.install(app, ctx, trigger, drift_checker)

    health.install(app, opts.broker, opts.broker_lost_seconds,    # /livez, /readyz, broker watch
                   security=opts.security)
    metrics_mod.install(app, ctx.metrics, group=opts.group, broker=opts.broker,
                        topics=[t for t, spec in topics.all().items() if spec.role != "deadletter"],
                        models=list(models), interval=opts.lag_interval,
                        probe_config=opts.security.kafka_python())
    return app
