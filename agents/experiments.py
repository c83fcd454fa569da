"""The experiment folder: feedback → per-arm rewards → analysis → RolloutAnalysed + ExperimentUpdated.

A rollout (canary, ab, shadow, bandit) is decided by what feedback says about each arm, and
feedback is the loop's high-volume stream, so the folder is a batch handler
(`agents.batch.BatchConsumer`, its own consumer group) like the metric windows, not a Faust
agent. It reads four topics, all keyed by model name with one partition count, so a model's
rollout, feedback, deployment and shadow records share one partition number, and the range
assignor hands one worker the same numbers of every topic:

    RolloutStarted        → a new experiment (a newer one for the model supersedes it)
    ShadowPredicted       → the challenger's answers, remembered by prediction id (newest 100k)
    FeedbackReceived      → reward credited to the arm `model_version` when `experiment` is the
                            live one; a shadow experiment also credits the challenger from the
                            remembered pair of that prediction id
    DeploymentDone /
    DeploymentRolledBack  → the live experiment ended (an operator, or the deployer acting)

After each batch, and on the consumer's idle calls (every `idle_ms` without records: the time
rules of a canary need a clock), every live experiment is analysed (`agents.policy.rollout
.analyse`); an action is published as RolloutAnalysed (the deployer moves the aliases) and the
state as ExperimentUpdated, which every serving replica routes by. Counts are published at most
every `publish_interval`, a step or status change at once, and a live state every
`heartbeat_seconds` even unchanged, so a replica that starts finds it by reading the topic's
last two minutes.

Exactly-once counting: an ExperimentUpdated carries `offsets` (feedback partition → next offset
folded into it). The handler lets the consumer commit a feedback partition only up to the first
record counted into a state not yet published (and acknowledged); records that change no state
(other experiments', none) are committed as read. On assignment it restores each model's newest
published state from the same partition number of the experiment topic (read in a thread) and
skips that model's feedback below the state's offsets: a crash or rebalance replays feedback, it
is never counted twice and never lost. Rollout and deployment records are committed as read:
their effect is published before the commit. Shadow pairs live only in memory: after a worker
restart, the pairs of requests whose feedback had not come yet are forgotten, and those
requests are then simply not counted for the challenger (the champion's arm still is).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Mapping

import msgspec
from prometheus_client import Counter, Gauge

from agents.context import Context
from agents.readback import KafkaStateReader, StateReader
from agents.policy import metric as m
from agents.policy.rollout import Analysis, Arm, RolloutPolicy, analyse
from streams import events as ev
from streams.codec import DecodeError, build, decode

log = logging.getLogger("loopline.experiments")

PUBLISH_INTERVAL = 0.5        # s between two publications of changed counts
HEARTBEAT_SECONDS = 60.0      # a live state is re-published this often (replicas read 120 s back)
SHADOW_PAIRS_KEPT = 100_000   # challenger answers remembered, newest prediction ids
LIVE = ("running", "paused")
OUTCOMES = ("counted", "duplicate", "stale_experiment", "no_experiment", "unscored")
LABELS_REMEMBERED = 200_000   # prediction ids per partition: a label sent twice is counted once
_Value = float | int | str | bool


class _FeedbackData(msgspec.Struct, gc=False):
    """What the folder reads of a FeedbackReceived (the metric windows own the topic: they are
    strict and dead-letter; this path only needs to be fast and to agree on what it reads)."""
    prediction_id: str
    model_version: str
    label: _Value
    prediction: _Value | None = None
    experiment: str | None = None


class _FeedbackEnvelope(msgspec.Struct, gc=False):
    specversion: Literal["1.0"]
    type: Literal["io.loopline.feedback.received"]
    subject: str
    data: _FeedbackData


_fast = msgspec.json.Decoder(_FeedbackEnvelope).decode


@dataclass
class _Arm:
    version: str
    role: str
    weight: float
    n: int = 0
    reward_sum: float = 0.0
    reward_sq: float = 0.0
    step_n: int = 0

    def add(self, reward: float) -> None:
        self.n += 1
        self.step_n += 1
        self.reward_sum += reward
        self.reward_sq += reward * reward


@dataclass
class Experiment:
    """One model's live (or last) experiment, as folded here and published."""
    model: str
    experiment: str
    strategy: str
    arms: dict[str, _Arm]                  # version → arm, the champion first
    started_at: float
    step_started_at: float
    status: str = "running"
    step: int = 0
    reward: str = "bernoulli"
    winner: str | None = None
    offsets: dict[str, int] = field(default_factory=dict)   # as published (or restored)
    skip_below: int | None = None          # restored: this model's feedback below was counted
    dirty_from: int | None = None          # first feedback offset counted but not yet published
    changed: bool = False                  # counts changed since the last publication
    urgent: bool = True                    # a step or status change: publish now
    published_at: float | None = None

    @property
    def champion(self) -> _Arm:
        return next(a for a in self.arms.values() if a.role == "champion")

    def set_challenger_weight(self, weight: float) -> None:
        challengers = [a for a in self.arms.values() if a.role == "challenger"]
        for arm in challengers:
            arm.weight = weight / len(challengers)
        self.champion.weight = 1.0 - weight

    @classmethod
    def restored(cls, model: str, data: ev.ExperimentUpdated, partition: int) -> Experiment:
        arms = {a.version: _Arm(a.version, a.role, a.weight, a.n, a.reward_sum, a.reward_sq, a.step_n)
                for a in data.arms}
        return cls(model, data.experiment, data.strategy, arms, data.started_at, data.step_started_at,
                   status=data.status, step=data.step, reward=data.reward, winner=data.winner,
                   offsets=dict(data.offsets), skip_below=data.offsets.get(str(partition)),
                   urgent=False, published_at=None)   # None: re-published at once, for replicas


class _Partition:
    """The experiments of one partition number (their models' records are all on it)."""

    def __init__(self, experiments: dict[str, Experiment]) -> None:
        self.experiments = experiments
        self.position: int | None = None   # next feedback offset to read
        # Prediction ids already credited (newest first out): a client that retries its feedback
        # after a timeout, or posts it to two replicas, is counted once. In memory: after a
        # restart, the ids counted before it are known only through the state's offsets.
        self.labelled: OrderedDict[str, None] = OrderedDict()


class ExperimentFolder:
    """The batch handler of feedback, rollouts, deployments and shadow pairs (module docstring)."""

    def __init__(self, ctx: Context, reader: StateReader | None = None, *,
                 publish_interval: float = PUBLISH_INTERVAL, heartbeat_seconds: float = HEARTBEAT_SECONDS,
                 shadow_pairs: int = SHADOW_PAIRS_KEPT):
        self.ctx, self.topics = ctx, ctx.opts.topics
        self.reader = reader or KafkaStateReader(
            ctx.opts.broker, self.topics.experiment, f"{ctx.opts.group}-experiments-restore",
            ctx.opts.security.confluent())
        self.publish_interval, self.heartbeat_seconds = publish_interval, heartbeat_seconds
        self.shadow_pairs = shadow_pairs
        self.parts: dict[int, _Partition] = {}
        self.pairs: dict[str, tuple[str, str, Any]] = {}   # prediction id → (experiment, version, answer)
        self.analysis_errors: set[tuple[str, int]] = set()
        registry = ctx.metrics.registry
        self.feedback = Counter("loopline_experiment_feedback", "Feedback read by the experiment "
                                "folder, by outcome", ["outcome"], registry=registry)
        self.weights = Gauge("loopline_experiment_weight", "Share of traffic per experiment arm",
                             ["model", "version"], registry=registry)
        self.analyses = Counter("loopline_rollout_analyses", "Rollout analyses published, by "
                                "verdict and action", ["verdict", "action"], registry=registry)

    # --- the batch consumer's interface -----------------------------------------------------
    def revoked(self, partitions) -> None:
        """A feedback partition gone (rebalance, or a failed batch about to be replayed): its
        experiments are restored from the published state when it comes back. Other topics'
        partitions keep the state: their records replay idempotently onto it."""
        for topic, partition in partitions:
            if topic == self.topics.feedback:
                self.parts.pop(partition, None)

    def wants(self, tp) -> bool:
        """The batch consumer rests a feedback partition where no experiment runs (agents.batch):
        its feedback could count for nothing. A rollout starting there (its own topic is never
        rested) wakes it, and its feedback is read from where it stopped."""
        topic, partition = tp
        part = self.parts.get(partition)
        return (topic != self.topics.feedback or part is None
                or any(exp.status in LIVE for exp in part.experiments.values()))

    async def process(self, batch: Mapping[Any, list], now: float,
                      caught_up: Mapping[Any, bool]) -> dict[Any, int]:
        new = sorted({p for _, p in batch} - self.parts.keys())
        if new:
            restored = await asyncio.gather(*(self._restore(p) for p in new))
            self.parts.update(zip(new, restored))
        by_topic: dict[str, list] = {}
        for (topic, partition), records in batch.items():
            by_topic.setdefault(topic, []).append((partition, records))
        t = self.topics
        bad: list = []
        for partition, records in by_topic.get(t.rollout, ()):     # starts first: feedback of the
            for record in records:                                  # same batch may be for it
                self._rollout(self.parts[partition], partition, record)
        for _, records in by_topic.get(t.shadow, ()):
            for record in records:
                self._shadow(record, bad)
        for partition, records in by_topic.get(t.feedback, ()):
            self._fold(self.parts[partition], records)
        for partition, records in by_topic.get(t.deployment, ()):
            for record in records:
                self._deployment(self.parts[partition], record)
        if bad:
            await asyncio.gather(*(self.ctx.edge.dead_letter(r, reason, "DecodeError") for r, reason in bad))
        await self._analyse_and_publish(now)
        safe = {tp: records[-1].offset + 1 for tp, records in batch.items()
                if tp[0] != t.feedback and records}
        for partition, part in self.parts.items():
            if part.position is not None:
                safe[(t.feedback, partition)] = min(
                    (e.dirty_from for e in part.experiments.values() if e.dirty_from is not None),
                    default=part.position)
        return safe

    # --- restore ----------------------------------------------------------------------------
    async def _restore(self, partition: int) -> _Partition:
        wanted = {name for name in self.ctx.models if self.topics.partition_of(name) == partition}
        values = await asyncio.to_thread(self.reader.newest, partition, wanted) if wanted else {}
        experiments = {}
        for model, value in values.items():
            if model not in self.ctx.models:
                continue
            try:
                data = decode(value, accepts=(ev.ExperimentUpdated.TYPE,),
                              max_bytes=self.ctx.opts.max_event_bytes).data
            except DecodeError as exc:
                log.warning("%s: its newest experiment state is unreadable (%s): not restored", model, exc)
                continue
            experiments[model] = Experiment.restored(model, data, partition)
            log.info("%s: experiment %s restored (%s, step %d, %s rewards; feedback below offset %s "
                     "of partition %d already counted)", model, data.experiment, data.status, data.step,
                     "/".join(str(a.n) for a in data.arms), data.offsets.get(str(partition)), partition)
        return _Partition(experiments)

    # --- control records --------------------------------------------------------------------
    def _decode(self, record, types: tuple[str, ...]):
        try:
            return decode(record.value, record.headers, accepts=types,
                          max_bytes=self.ctx.opts.max_event_bytes)
        except DecodeError:
            return None                      # the topic's owner dead-letters it

    def _rollout(self, part: _Partition, partition: int, record) -> None:
        decoded = self._decode(record, (ev.RolloutStarted.TYPE, ev.RolloutAnalysed.TYPE))
        if decoded is None or not isinstance(decoded.data, ev.RolloutStarted):
            return                           # our own analyses: the deployer acts on them
        event, data = decoded.event, decoded.data
        model = event.subject
        current = part.experiments.get(model)
        if model not in self.ctx.models:
            log.warning("%s: rollout %s of a model not in loopline.yaml: ignored", model, data.experiment)
            return
        if current is not None and (current.experiment == data.experiment
                                    or current.started_at > event.timestamp):
            return                           # redelivered, or older than the one restored
        if data.champion_version is None:
            log.warning("%s: rollout %s without a champion: ignored (the deployer deploys a first "
                        "model directly)", model, data.experiment)
            return
        policy = self._policy(model, data.strategy)
        versions = [data.champion_version] + [v for v in data.challenger_versions
                                              if v != data.champion_version]
        arms = {v: _Arm(v, "champion" if i == 0 else "challenger", 0.0) for i, v in enumerate(versions)}
        exp = Experiment(model, data.experiment, data.strategy, arms, event.timestamp,
                         event.timestamp, reward=policy.reward)
        if data.strategy == "bandit":
            for arm in arms.values():
                arm.weight = 1.0 / len(arms)
        else:
            exp.set_challenger_weight({"canary": policy.steps[0], "ab": policy.split}.get(data.strategy, 0.0))
        part.experiments[model] = exp
        log.info("%s: experiment %s started (%s, champion v%s, challengers %s)", model, data.experiment,
                 data.strategy, data.champion_version, ", ".join(versions[1:]))

    def _deployment(self, part: _Partition, record) -> None:
        decoded = self._decode(record, (ev.DeploymentDone.TYPE, ev.DeploymentRolledBack.TYPE,
                                        ev.DeploymentRefused.TYPE))
        if decoded is None or isinstance(decoded.data, ev.DeploymentRefused):
            return
        event, data = decoded.event, decoded.data
        exp = part.experiments.get(event.subject)
        if exp is None or exp.status not in LIVE or event.timestamp < exp.started_at:
            return                           # nothing live, or a deployment from before it started
        exp.status, exp.winner, exp.urgent = "ended", data.version, True
        for arm in exp.arms.values():
            arm.weight = 1.0 if arm.version == data.version else 0.0
        log.info("%s: experiment %s ended by %s of v%s", exp.model, exp.experiment, event.type, data.version)

    def _shadow(self, record, bad: list) -> None:
        try:                                 # this folder is the shadow topic's only reader
            decoded = decode(record.value, record.headers, accepts=(ev.ShadowPredicted.TYPE,),
                             max_bytes=self.ctx.opts.max_event_bytes)
        except DecodeError as exc:
            bad.append((record, str(exc)))
            return
        data, pairs = decoded.data, self.pairs
        for pid, answer in zip(data.prediction_ids, data.challenger):
            pairs.pop(pid, None)             # re-inserted as the newest
            pairs[pid] = (data.experiment, data.challenger_version, answer)
        while len(pairs) > self.shadow_pairs:
            del pairs[next(iter(pairs))]     # dicts keep insertion order: the oldest first

    # --- feedback -----------------------------------------------------------------------------
    def _fold(self, part: _Partition, records: list) -> None:
        """Credit each record's reward to its arm. The hot path: one msgspec decode per record."""
        outcomes = dict.fromkeys(OUTCOMES, 0)
        experiments, models, max_bytes = part.experiments, self.ctx.models, self.ctx.opts.max_event_bytes
        scorers: dict[str, Any] = {}
        for record in records:
            fields = self._feedback_fields(record, max_bytes)
            if fields is None:
                continue                     # undecodable: the metric windows dead-letter it
            model, version, experiment, pid, prediction, label = fields
            if experiment is None:
                outcomes["no_experiment"] += 1
                continue
            exp = experiments.get(model)
            if exp is None or exp.experiment != experiment or exp.status not in LIVE:
                outcomes["stale_experiment"] += 1
                continue
            if exp.skip_below is not None and record.offset < exp.skip_below:
                continue                     # counted before a restart: in the restored state
            if pid in part.labelled:
                outcomes["duplicate"] += 1
                continue
            scorer = scorers.get(model)
            if scorer is None:
                scorer = scorers[model] = _scorer(getattr(models[model], "metrics", None), exp.reward)
            arm = exp.arms.get(version)
            try:
                if arm is None:
                    raise ValueError(f"v{version} is no arm of {experiment}")
                reward = scorer(prediction, label)
            except (TypeError, ValueError):
                outcomes["unscored"] += 1
                continue
            arm.add(reward)
            if exp.strategy == "shadow":
                pair = self.pairs.get(pid)
                if pair is not None and pair[0] == experiment and pair[1] in exp.arms:
                    try:
                        exp.arms[pair[1]].add(scorer(pair[2], label))
                    except (TypeError, ValueError):
                        pass                 # an answer the metric cannot score: not counted
            outcomes["counted"] += 1
            part.labelled[pid] = None
            if len(part.labelled) > LABELS_REMEMBERED:
                part.labelled.popitem(last=False)
            exp.changed = True
            if exp.dirty_from is None:
                exp.dirty_from = record.offset
        part.position = records[-1].offset + 1
        for outcome, n in outcomes.items():
            if n:
                self.feedback.labels(outcome).inc(n)

    @staticmethod
    def _feedback_fields(record, max_bytes: int):
        value, headers = record.value, record.headers
        if value is not None and len(value) <= max_bytes and not any(
                name.lower().startswith("ce_") for name, _ in headers or ()):
            try:
                e = _fast(value)
                d = e.data
                return e.subject, d.model_version, d.experiment, d.prediction_id, d.prediction, d.label
            except (msgspec.ValidationError, msgspec.DecodeError):
                pass                         # the full decoder accepts it, or it is bad
        try:
            decoded = decode(value, headers, accepts=(ev.FeedbackReceived.TYPE,), max_bytes=max_bytes)
        except DecodeError:
            return None
        d = decoded.data
        return (decoded.event.subject, d.model_version, d.experiment, d.prediction_id,
                d.prediction, d.label)

    # --- analysis and publication ---------------------------------------------------------------
    async def _analyse_and_publish(self, now: float) -> None:
        analysed, updates = [], []
        for partition, part in self.parts.items():
            for exp in part.experiments.values():
                if exp.status == "running":
                    event = self._analyse(exp, partition, now)
                    if event is not None:
                        analysed.append(event)
                if self._due(exp, now):
                    updates.append((exp, partition, part))
        if analysed:                         # before the state that follows from them
            await asyncio.gather(*(self.ctx.edge.publish(e, partition=p) for e, p in analysed))
            for event, _ in analysed:
                self.analyses.labels(event.data["verdict"], event.data["action"]).inc()
        if updates:
            events = [self._state_event(exp, partition, part) for exp, partition, part in updates]
            await asyncio.gather(*(self.ctx.edge.publish(e, partition=p)
                                   for e, (_, p, _) in zip(events, updates)))
            for event, (exp, _, _) in zip(events, updates):
                exp.offsets = dict(event.data["offsets"])
                exp.dirty_from, exp.changed, exp.urgent, exp.published_at = None, False, False, now
                for arm in exp.arms.values():
                    self.weights.labels(exp.model, arm.version).set(arm.weight)

    def _due(self, exp: Experiment, now: float) -> bool:
        if exp.urgent or exp.published_at is None:
            return True
        since = now - exp.published_at
        return ((exp.changed and since >= self.publish_interval)
                or (exp.status in LIVE and since >= self.heartbeat_seconds))

    def _analyse(self, exp: Experiment, partition: int, now: float):
        """The analysis of one running experiment, applied to it; its event, or None (hold)."""
        policy = self._policy(exp.model, exp.strategy, exp.reward)
        arms = [Arm(a.version, a.role, a.weight, a.n, a.reward_sum, a.reward_sq, a.step_n)
                for a in exp.arms.values()]
        try:
            found = analyse(policy, arms, step=exp.step, started_at=exp.started_at,
                            step_started_at=exp.step_started_at, now=now, paused=False)
        except Exception:  # noqa: BLE001 - counting must go on; analysed again next time
            if (exp.experiment, exp.step) not in self.analysis_errors:
                self.analysis_errors.add((exp.experiment, exp.step))
                log.exception("%s: analysis of %s failed", exp.model, exp.experiment)
            return None
        if found is None:
            return None
        champion = exp.champion.version
        event = build(ev.RolloutAnalysed(
            experiment=exp.experiment, step=exp.step, verdict=found.verdict, action=found.action,
            version=found.version, champion_version=champion, weight=min(max(found.weight, 0.0), 1.0),
            test=found.test, numbers=_numbers(found.numbers), reason=found.reason),
            exp.model, source=self.ctx.opts.source,
            id=f"analysis-{exp.experiment}-{exp.step}-{found.action}")
        self._apply(exp, found, champion, now)
        log.info("%s: %s step %d: %s → %s: %s", exp.model, exp.experiment, event.data["step"],
                 found.verdict, found.action, found.reason)
        return event, partition

    @staticmethod
    def _apply(exp: Experiment, found: Analysis, champion: str, now: float) -> None:
        exp.urgent = True
        if found.action == "step":
            exp.set_challenger_weight(found.weight)
            exp.step += 1
            exp.step_started_at = now
            for arm in exp.arms.values():
                arm.step_n = 0
        elif found.action in ("promote", "rollback"):
            exp.status = "ended"
            exp.winner = found.version if found.action == "promote" else champion
            for arm in exp.arms.values():
                arm.weight = 1.0 if arm.version == exp.winner else 0.0
        elif found.action == "pause":
            exp.status = "paused"

    def _state_event(self, exp: Experiment, partition: int, part: _Partition):
        offsets = dict(exp.offsets)
        if part.position is not None:
            key = str(partition)             # never behind what a restored state had counted
            offsets[key] = max(part.position, offsets.get(key, 0), exp.skip_below or 0)
        policy = self._policy(exp.model, exp.strategy, exp.reward)
        return build(ev.ExperimentUpdated(
            experiment=exp.experiment, strategy=exp.strategy, status=exp.status,
            arms=[ev.ArmState(version=a.version, role=a.role, weight=min(max(a.weight, 0.0), 1.0),
                              n=a.n, reward_sum=a.reward_sum, reward_sq=a.reward_sq, step_n=a.step_n)
                  for a in exp.arms.values()],
            step=exp.step, started_at=exp.started_at, step_started_at=exp.step_started_at,
            algorithm=policy.algorithm if exp.strategy == "bandit" else None, reward=exp.reward,
            epsilon=policy.epsilon, unit_key=policy.unit_key, winner=exp.winner, offsets=offsets),
            exp.model, source=self.ctx.opts.source)

    def _policy(self, model: str, strategy: str, reward: str | None = None) -> RolloutPolicy:
        """The model's rollout policy, analysing the experiment's strategy (an operator may have
        started one on a model configured `direct`) with the reward kind it was started with."""
        policy = getattr(self.ctx.models.get(model), "rollout", None) or RolloutPolicy()
        changes = {"strategy": strategy} if policy.strategy != strategy else {}
        if reward is not None and reward != policy.reward:
            changes["reward"] = reward
        return replace(policy, **changes) if changes else policy

    def snapshot(self) -> dict[str, dict]:
        """model → the folded state, for a status page."""
        return {exp.model: {"experiment": exp.experiment, "strategy": exp.strategy, "status": exp.status,
                            "step": exp.step, "winner": exp.winner,
                            "arms": {a.version: {"weight": a.weight, "n": a.n, "step_n": a.step_n,
                                                 "mean": a.reward_sum / a.n if a.n else None}
                                     for a in exp.arms.values()}}
                for part in self.parts.values() for exp in part.experiments.values()}


def _scorer(policy: m.MetricPolicy | None, reward: str):
    """(prediction, label) → a higher-is-better reward from the model's online metric."""
    if policy is None:
        def unscorable(prediction, label):
            raise ValueError("the model has no online metric")
        return unscorable
    metric, score = policy.metric, m.score
    if m.METRICS[metric]:
        return lambda prediction, label: score(metric, prediction, label)
    if reward == "bernoulli":
        return lambda prediction, label: 1.0 - score(metric, prediction, label)
    return lambda prediction, label: -score(metric, prediction, label)


def _numbers(numbers: Mapping[str, Any]) -> dict[str, float | int | None]:
    """The analysis' numbers as the event's schema takes them (numbers or null, no booleans)."""
    out: dict[str, float | int | None] = {}
    for key, value in numbers.items():
        if isinstance(value, bool):
            out[str(key)] = int(value)
        elif value is None or isinstance(value, (int, float)):
            out[str(key)] = value
    return out
