"""Which version answers a request: the champion, or an arm of the model's live experiment.

Why pure, with `rng` passed in: every serving replica routes by the same folded state
(`streams.events.ExperimentUpdated`, read from experiment.state) without talking to the others,
so the decision must be a function of that state, the request's unit key and a random source.
Sticky splits hash the unit key (`bucket`), so a user sees the same arm on every replica;
tests pass a seeded `random.Random` to make the random strategies reproducible.

Rewards in the arms' counts are always higher-is-better (the worker's experiment folder converts
the online metric), so no strategy here needs a direction. Standard library only at run time:
the state's type is imported for annotations.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from streams.events import ArmState, ExperimentUpdated


@dataclass(frozen=True)
class Route:
    version: str                 # whose answer the caller gets
    experiment: str | None       # carried in the prediction id (None: champion, no experiment)
    shadow: str | None = None    # a version to score in the background (shadow strategy)


def bucket(experiment: str, unit: str) -> float:
    """A unit's place in [0, 1) for this experiment: the same on every replica and every call;
    a new experiment reshuffles units (its id is hashed too)."""
    digest = hashlib.sha256(f"{experiment}|{unit}".encode()).hexdigest()
    return int(digest[:8], 16) / 2**32


def route(state: ExperimentUpdated | None, champion: str | None, unit: str | None,
          rng: random.Random) -> Route | None:
    """The version to answer with; None when there is nothing to serve (no champion, no state)."""
    if state is None or state.status == "ended":
        winner = state.winner if state is not None else None
        # Ended with a winner: it serves even before this replica's champion alias reloads.
        version = winner or champion
        return Route(version, None) if version else None
    # running or paused: a pause holds the traffic split while a person decides
    arms = state.arms
    if state.strategy == "shadow":
        lead = _champion_arm(arms)
        other = next((a.version for a in arms if a.role != "champion"), None)
        version = lead.version if lead is not None else champion
        return Route(version, state.experiment, shadow=other) if version else None
    if state.strategy == "bandit":
        return Route(_bandit(state, rng).version, state.experiment)
    point = bucket(state.experiment, unit) if unit is not None else rng.random()
    return Route(_split(arms, point).version, state.experiment)


def _split(arms: Sequence[ArmState], point: float) -> ArmState:
    """The arm whose cumulative weight interval holds `point` (weights normalised to sum 1)."""
    total = sum(a.weight for a in arms)
    if total <= 0:
        return _champion_arm(arms) or arms[0]
    edge = 0.0
    for arm in arms:
        edge += arm.weight / total
        if point < edge:
            return arm
    return next(a for a in reversed(arms) if a.weight > 0)    # rounding left point at the top


def _bandit(state: ExperimentUpdated, rng: random.Random) -> ArmState:
    arms = state.arms
    if state.algorithm == "epsilon_greedy":
        return _epsilon_greedy(arms, state.epsilon, rng)
    if state.algorithm == "ucb1":
        return _ucb1(arms, rng)
    return _thompson(arms, state.reward, rng)


def _thompson(arms: Sequence[ArmState], reward: str, rng: random.Random) -> ArmState:
    """Each arm draws a plausible mean from its posterior; the highest draw serves."""
    if reward == "bernoulli":
        draws = [rng.betavariate(1.0 + a.reward_sum, 1.0 + max(0.0, a.n - a.reward_sum)) for a in arms]
    else:
        unknown = [a for a in arms if a.n < 2]
        if unknown:                 # no variance yet: learn it first
            return rng.choice(unknown)
        draws = [rng.gauss(a.reward_sum / a.n, math.sqrt(_sample_var(a) / a.n)) for a in arms]
    return arms[max(range(len(arms)), key=draws.__getitem__)]


def _epsilon_greedy(arms: Sequence[ArmState], epsilon: float, rng: random.Random) -> ArmState:
    unseen = [a for a in arms if a.n == 0]
    if unseen:
        return rng.choice(unseen)
    if rng.random() < epsilon:
        return rng.choice(arms)
    return _best(arms, [a.reward_sum / a.n for a in arms], rng)


def _ucb1(arms: Sequence[ArmState], rng: random.Random) -> ArmState:
    """Mean plus an optimism bonus that shrinks as an arm is tried (Auer et al. 2002)."""
    unseen = [a for a in arms if a.n == 0]
    if unseen:
        return rng.choice(unseen)
    log_total = math.log(sum(a.n for a in arms))
    return _best(arms, [a.reward_sum / a.n + math.sqrt(2.0 * log_total / a.n) for a in arms], rng)


def _best(arms: Sequence[ArmState], scores: list[float], rng: random.Random) -> ArmState:
    top = max(scores)
    return rng.choice([a for a, s in zip(arms, scores) if s == top])   # ties: no arm favoured


def _sample_var(arm: ArmState) -> float:
    mean = arm.reward_sum / arm.n
    return max(0.0, (arm.reward_sq - arm.n * mean * mean) / (arm.n - 1))


def _champion_arm(arms: Sequence[ArmState]) -> ArmState | None:
    return next((a for a in arms if a.role == "champion"), None)
