"""Rollout analysis: per-arm online rewards → hold, step, promote, roll back or pause.

Why a pure module: the experiment folder (agents/experiments.py) re-runs the analysis after every
feedback batch and on a timer, may crash and restart from a folded state, and several strategies
share one statistical test. Keeping every rule here as a function of plain data (`Arm` counts,
`step`, times passed in) means a replayed state gives the same verdict, and each rule is a row of
a table in tests/unit/test_policy_rollout.py.

The test: Bayesian probability that the challenger beats the champion, P(challenger's mean reward
> champion's - tolerance). It answers the operator's question ("how likely is the new model
better?") with one number that reads the same at every look, and needs only counts:
- Bernoulli rewards (0/1): Beta(1+s, 1+f) posteriors. With no tolerance and a short sum it is
  exact (Evan Miller's closed form, a sum of lgamma terms over the smaller posterior alpha);
  otherwise a normal approximation of the two Betas (the posteriors are then near-normal).
- Gaussian rewards: a normal approximation of the two sample means (sample variance, n >= 2;
  fewer rewards carry no information: 0.5).
Rewards are always higher-is-better: the folder converts the online metric's score.

Time is a parameter (`now`, `started_at`, `step_started_at`); nothing here does I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

STRATEGIES = ("direct", "canary", "ab", "shadow", "bandit")
ALGORITHMS = ("thompson", "epsilon_greedy", "ucb1")
REWARDS = ("bernoulli", "gaussian")
EXACT_MAX_ALPHA = 2000      # Evan Miller's sum has this many terms at most (about 1 ms)


@dataclass(frozen=True)
class RolloutPolicy:
    strategy: str = "direct"
    steps: tuple[float, ...] = (0.05, 0.25, 0.5, 1.0)   # canary: the challenger's traffic per step
    min_step_seconds: float = 60.0        # canary: a step is held at least this long ...
    min_samples: int = 100                # ... and until the challenger has this many rewards in it
    max_step_seconds: float = 3600.0      # no verdict by then: inconclusive → paused for a person
    split: float = 0.5                    # ab: the challenger's share
    duration_seconds: float | None = None  # ab: analysed once this long has passed ...
    sample_size: int | None = None        # ... or once every arm has this many rewards
    unit_key: str | None = None           # ab (and canary): header or row field hashed for the arm
    algorithm: str = "thompson"           # bandit
    epsilon: float = 0.1                  # bandit epsilon_greedy
    reward: str = "bernoulli"             # bernoulli (0/1 rewards) or gaussian (continuous);
                                          # rewards are stored higher-is-better (see experiments)
    confidence: float = 0.95              # P(better) (or P(worse)) needed for a verdict
    tolerance: float = 0.0                # a challenger this much worse still counts as not worse
    auto_promote: bool = True             # bandit: promote the best arm once it is clear

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", tuple(self.steps))   # a list from YAML is fine too
        for name, value, allowed in (("strategy", self.strategy, STRATEGIES),
                                     ("algorithm", self.algorithm, ALGORITHMS),
                                     ("reward", self.reward, REWARDS)):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
        steps = self.steps
        if (not steps or any(not 0 < w <= 1 for w in steps)
                or any(a >= b for a, b in zip(steps, steps[1:])) or steps[-1] != 1.0):
            raise ValueError("canary steps are shares of traffic in (0, 1], rising, ending at 1.0 "
                             f"(got {list(steps)})")
        if not 0.5 < self.confidence < 1:
            raise ValueError(f"confidence must be in (0.5, 1), got {self.confidence}")
        if not 0 <= self.epsilon <= 1:
            raise ValueError(f"epsilon must be in [0, 1], got {self.epsilon}")
        if not 0 < self.split < 1:
            raise ValueError(f"split must be in (0, 1), got {self.split}")
        if not (self.tolerance >= 0 and math.isfinite(self.tolerance)):
            raise ValueError(f"tolerance must be finite and >= 0, got {self.tolerance}")
        if not (self.min_step_seconds >= 0 and math.isfinite(self.min_step_seconds)):
            raise ValueError(f"min_step_seconds must be finite and >= 0, got {self.min_step_seconds}")
        if not self.max_step_seconds > 0:
            raise ValueError(f"max_step_seconds must be > 0, got {self.max_step_seconds}")
        if self.min_samples < 1:
            raise ValueError(f"min_samples must be >= 1, got {self.min_samples}")
        if self.duration_seconds is not None and not self.duration_seconds > 0:
            raise ValueError(f"duration_seconds must be > 0 or None, got {self.duration_seconds}")
        if self.sample_size is not None and self.sample_size < 1:
            raise ValueError(f"sample_size must be >= 1 or None, got {self.sample_size}")


@dataclass(frozen=True)
class Arm:
    """One arm as the analysis sees it (the folder builds it from `streams.events.ArmState`)."""
    version: str
    role: str            # champion | challenger
    weight: float        # share of traffic (canary, ab); bandits: unused
    n: int               # rewards counted
    reward_sum: float
    reward_sq: float     # sum of squared rewards (Gaussian variance)
    step_n: int          # rewards counted in the current canary step

    @property
    def mean(self) -> float | None:
        return self.reward_sum / self.n if self.n else None


@dataclass(frozen=True)
class Analysis:
    verdict: str     # successful | failed | inconclusive | progressing
    action: str      # step | promote | rollback | pause
    version: str | None      # promote: the winner; rollback: the loser
    weight: float            # the challenger's traffic after the action (canary: next step's weight)
    test: str                # the test in words
    numbers: dict            # n, mean reward per arm, p_better, threshold, ...
    reason: str              # one sentence a person reads


# -- the statistics ------------------------------------------------------------------------------

def prob_better(challenger: Arm, champion: Arm, *, reward: str, tolerance: float) -> float:
    """P(challenger's mean reward > champion's - tolerance). Rewards are always higher-is-better:
    the folder converts the online metric's score (bernoulli: 1 - score for a lower-is-better metric
    such as error_rate; gaussian: -score for mae/mse)."""
    if reward == "bernoulli":
        return _bernoulli_better(challenger, champion, tolerance)
    if reward == "gaussian":
        return _gaussian_better(challenger, champion, tolerance)
    raise ValueError(f"reward must be one of {', '.join(REWARDS)}, got {reward!r}")


def prob_best(arms: Sequence[Arm], *, reward: str, tolerance: float = 0.0) -> dict[str, float]:
    """version -> P(this arm is the best), as the product of its pairwise P(arm > other).

    The events "A beats B" and "A beats C" are positively associated (both grow with A), so the
    product is a lower bound of the joint probability: at most one arm can reach a confidence
    above 0.5, and a verdict from it is conservative. The tolerance sits with the champion, as
    in `prob_better`: a challenger within it of the champion counts as not worse.
    """
    pair: dict[tuple[int, int], float] = {}
    for i, a in enumerate(arms):
        for j, b in enumerate(arms):
            if j <= i:
                continue
            if b.role == "champion" and a.role != "champion":
                p = prob_better(a, b, reward=reward, tolerance=tolerance)
            elif a.role == "champion" and b.role != "champion":
                p = 1.0 - prob_better(b, a, reward=reward, tolerance=tolerance)
            else:
                p = prob_better(a, b, reward=reward, tolerance=0.0)
            pair[i, j], pair[j, i] = p, 1.0 - p
    return {a.version: math.prod(pair[i, j] for j in range(len(arms)) if j != i)
            for i, a in enumerate(arms)}


def _bernoulli_better(b: Arm, a: Arm, tolerance: float) -> float:
    alpha_b, beta_b = 1.0 + b.reward_sum, 1.0 + b.n - b.reward_sum
    alpha_a, beta_a = 1.0 + a.reward_sum, 1.0 + a.n - a.reward_sum
    whole = all(float(x).is_integer() for x in (alpha_a, beta_a, alpha_b, beta_b))
    if tolerance == 0 and whole and min(alpha_a, alpha_b) <= EXACT_MAX_ALPHA:
        # Sum over the smaller alpha: P(B > A) = 1 - P(A > B) for continuous posteriors.
        if alpha_b <= alpha_a:
            return _miller(int(alpha_a), int(beta_a), int(alpha_b), int(beta_b))
        return 1.0 - _miller(int(alpha_b), int(beta_b), int(alpha_a), int(beta_a))
    mean_b, var_b = _beta_moments(alpha_b, beta_b)
    mean_a, var_a = _beta_moments(alpha_a, beta_a)
    return _normal_cdf((mean_b - mean_a + tolerance) / math.sqrt(var_a + var_b))


def _miller(alpha_a: int, beta_a: int, alpha_b: int, beta_b: int) -> float:
    """P(p_B > p_A), p_A ~ Beta(alpha_a, beta_a), p_B ~ Beta(alpha_b, beta_b); exact
    (Evan Miller, "Formulas for Bayesian A/B testing"): alpha_b terms."""
    base = _log_beta(alpha_a, beta_a)
    total = 0.0
    for i in range(alpha_b):
        total += math.exp(_log_beta(alpha_a + i, beta_a + beta_b) - math.log(beta_b + i)
                          - _log_beta(1 + i, beta_b) - base)
    return min(1.0, max(0.0, total))


def _gaussian_better(b: Arm, a: Arm, tolerance: float) -> float:
    if a.n < 2 or b.n < 2:
        return 0.5                      # no variance estimate: no information either way
    spread = math.sqrt(_sample_var(a) / a.n + _sample_var(b) / b.n)
    diff = b.reward_sum / b.n - a.reward_sum / a.n + tolerance
    if spread == 0:
        return 1.0 if diff > 0 else 0.0 if diff < 0 else 0.5
    return _normal_cdf(diff / spread)


def _sample_var(arm: Arm) -> float:
    mean = arm.reward_sum / arm.n
    return max(0.0, (arm.reward_sq - arm.n * mean * mean) / (arm.n - 1))


def _beta_moments(alpha: float, beta: float) -> tuple[float, float]:
    total = alpha + beta
    return alpha / total, alpha * beta / (total * total * (total + 1))


def _log_beta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def _normal_cdf(z: float) -> float:
    return 0.5 * math.erfc(-z / math.sqrt(2.0))


# -- the analysis --------------------------------------------------------------------------------

def analyse(policy: RolloutPolicy, arms: Sequence[Arm], *, step: int, started_at: float,
            step_started_at: float, now: float, paused: bool) -> Analysis | None:
    """None: hold (nothing to do yet). A paused experiment is never analysed again (returns None):
    only an operator ends it."""
    if paused:
        return None
    champion = _champion(arms)
    if policy.strategy == "bandit":
        return _bandit(policy, arms, champion, step=step, step_started_at=step_started_at, now=now)
    challengers = [a for a in arms if a.role != "champion"]
    if len(challengers) != 1:
        raise ValueError(f"strategy {policy.strategy!r} tests one challenger against the champion, "
                         f"got {len(challengers)}")
    if policy.strategy == "canary":
        return _canary(policy, champion, challengers[0], step=step,
                       step_started_at=step_started_at, now=now)
    if policy.strategy in ("ab", "shadow"):
        return _fixed(policy, champion, challengers[0], started_at=started_at, now=now)
    raise ValueError(f"strategy {policy.strategy!r} has no experiment to analyse")


def _canary(policy: RolloutPolicy, champion: Arm, challenger: Arm, *, step: int,
            step_started_at: float, now: float) -> Analysis | None:
    step = min(max(step, 0), len(policy.steps) - 1)
    weight = policy.steps[step]
    held = now - step_started_at
    pair = _Pair(policy, champion, challenger, step, weight, held)
    if challenger.n >= policy.min_samples and pair.p_worse >= policy.confidence:
        return pair.rollback()          # failing fast: any time, once there is enough evidence
    step_done = held >= policy.min_step_seconds and challenger.step_n >= policy.min_samples
    if step_done and pair.p_better >= policy.confidence:
        if step + 1 < len(policy.steps):
            following = policy.steps[step + 1]
            return pair.analysis(
                "progressing", "step", challenger.version, following,
                f"challenger {_v(challenger.version)} beats champion {_v(champion.version)} with "
                f"P(better) = {pair.p_better:.3f} >= {policy.confidence:g} ({pair.means}): "
                f"traffic {_pct(weight)} -> {_pct(following)}")
        return pair.promote(f"at the last step ({_pct(weight)})")
    if held >= policy.max_step_seconds:
        if challenger.step_n < policy.min_samples:
            return pair.too_little(f"at step {step} ({_pct(weight)}) the challenger has "
                                   f"{challenger.step_n} of the {policy.min_samples} rewards needed")
        return pair.no_verdict(f"at step {step} ({_pct(weight)})")
    return None


def _fixed(policy: RolloutPolicy, champion: Arm, challenger: Arm, *, started_at: float,
           now: float) -> Analysis | None:
    """ab and shadow: a fixed horizon, analysed once; the split holds until then."""
    weight = policy.split if policy.strategy == "ab" else 0.0
    elapsed = now - started_at
    by_time = policy.duration_seconds is not None and elapsed >= policy.duration_seconds
    by_size = policy.sample_size is not None and min(champion.n, challenger.n) >= policy.sample_size
    # No horizon configured (the config refuses that; a hand-built policy may not): give up
    # at max_step_seconds like every other strategy rather than run forever.
    by_limit = (policy.duration_seconds is None and policy.sample_size is None
                and elapsed >= policy.max_step_seconds)
    if not (by_time or by_size or by_limit):
        return None
    pair = _Pair(policy, champion, challenger, 0, weight, elapsed)
    needed = min(policy.min_samples, policy.sample_size or policy.min_samples)
    if min(champion.n, challenger.n) < needed:
        return pair.too_little(f"the champion has {champion.n} and the challenger {challenger.n} "
                               f"rewards, {needed} each needed")
    if pair.p_better >= policy.confidence:
        return pair.promote(f"at the end of the {policy.strategy} test")
    if pair.p_worse >= policy.confidence:
        return pair.rollback()
    return pair.no_verdict(f"at the end of the {policy.strategy} test")


class _Pair:
    """One challenger against the champion: the numbers, and the analyses built from them."""

    def __init__(self, policy: RolloutPolicy, champion: Arm, challenger: Arm, step: int,
                 weight: float, elapsed: float) -> None:
        self.policy, self.champion, self.challenger = policy, champion, challenger
        self.weight, self.elapsed = weight, elapsed
        self.p_better = prob_better(challenger, champion, reward=policy.reward,
                                    tolerance=policy.tolerance)
        self.p_worse = 1.0 - self.p_better
        self.test = (f"Bayesian P(challenger > champion - {_tol(policy.tolerance)}), "
                     + _prior_words(policy))
        self.numbers = {
            "n_champion": champion.n, "mean_champion": _round(champion.mean),
            "n_challenger": challenger.n, "mean_challenger": _round(challenger.mean),
            "step_n_challenger": challenger.step_n,
            "p_better": round(self.p_better, 6), "p_worse": round(self.p_worse, 6),
            "confidence": policy.confidence, "tolerance": policy.tolerance,
            "step": step, "step_weight": weight, "weight": weight, "elapsed_seconds": round(elapsed, 3)}
        self.means = (f"mean reward {_fmt(challenger.mean)} over {challenger.n} vs "
                      f"{_fmt(champion.mean)} over {champion.n}")

    def analysis(self, verdict: str, action: str, version: str | None, weight: float,
                 reason: str) -> Analysis:
        """`weight` is the challenger's traffic after the action (numbers keep the step's too)."""
        return Analysis(verdict, action, version, weight, self.test,
                        {**self.numbers, "weight": weight}, reason)

    def promote(self, when: str) -> Analysis:
        c, m = _v(self.challenger.version), _v(self.champion.version)
        return self.analysis(
            "successful", "promote", self.challenger.version, 1.0,
            f"challenger {c} beats champion {m} {when} with P(better) = {self.p_better:.3f} >= "
            f"{self.policy.confidence:g} ({self.means}): promote {c}")

    def rollback(self) -> Analysis:
        c, m = _v(self.challenger.version), _v(self.champion.version)
        margin = f" by more than {self.policy.tolerance:g}" if self.policy.tolerance else ""
        return self.analysis(
            "failed", "rollback", self.challenger.version, 0.0,
            f"challenger {c} is worse than champion {m}{margin} "
            f"with P(worse) = {self.p_worse:.3f} >= {self.policy.confidence:g} ({self.means}): "
            f"roll back to {m}")

    def too_little(self, what: str) -> Analysis:
        return self.analysis(
            "inconclusive", "pause", self.challenger.version, self.weight,
            f"too little feedback after {self.elapsed:g}s: {what}; paused for a person "
            f"(traffic stays at {_pct(self.weight)})")

    def no_verdict(self, when: str) -> Analysis:
        return self.analysis(
            "inconclusive", "pause", self.challenger.version, self.weight,
            f"no verdict after {self.elapsed:g}s {when}: P(better) = {self.p_better:.3f} and "
            f"P(worse) = {self.p_worse:.3f}, neither >= {self.policy.confidence:g} ({self.means}); "
            f"paused for a person (traffic stays at {_pct(self.weight)})")


def _bandit(policy: RolloutPolicy, arms: Sequence[Arm], champion: Arm, *, step: int,
            step_started_at: float, now: float) -> Analysis | None:
    held = now - step_started_at
    challengers = [a for a in arms if a.role != "champion"]
    total = sum(a.n for a in arms)
    share = round(sum(a.n for a in challengers) / total, 6) if total else 0.0   # the challengers' traffic so far
    numbers: dict = {}
    for arm in arms:
        numbers[f"n_{_v(arm.version)}"] = arm.n
        numbers[f"mean_{_v(arm.version)}"] = _round(arm.mean)
    numbers.update(confidence=policy.confidence, tolerance=policy.tolerance, step=step,
                   weight=share, elapsed_seconds=round(held, 3))
    test = ("Bayesian P(best arm) = product of its pairwise P(arm > other) "
            f"(champion - {_tol(policy.tolerance)}), " + _prior_words(policy))
    counts = ", ".join(f"{_v(a.version)}: {_fmt(a.mean)} over {a.n}" for a in arms)
    short = [a for a in arms if a.n < policy.min_samples]
    if short:
        if held < policy.max_step_seconds:
            return None
        return Analysis("inconclusive", "pause", None, share, test, numbers,
                        f"too little feedback after {held:g}s: "
                        + ", ".join(f"{_v(a.version)} has {a.n}" for a in short)
                        + f" of the {policy.min_samples} rewards each arm needs; paused for a person")
    best = prob_best(arms, reward=policy.reward, tolerance=policy.tolerance)
    for version, p in best.items():
        numbers[f"p_best_{_v(version)}"] = round(p, 6)
    leader = max(arms, key=lambda a: best[a.version])
    p_lead = best[leader.version]
    numbers["p_best"] = round(p_lead, 6)
    if p_lead >= policy.confidence:
        clear = f"{_v(leader.version)} is the best arm with P(best) = {p_lead:.3f} >= {policy.confidence:g}"
        if not policy.auto_promote:
            verdict = "failed" if leader.role == "champion" else "successful"
            return Analysis(verdict, "pause", leader.version, share, test, numbers,
                            f"{clear} (mean rewards {counts}); auto_promote is off: paused for a "
                            "person to promote or roll back")
        if leader.role != "champion":
            return Analysis("successful", "promote", leader.version, 1.0, test,
                            {**numbers, "weight": 1.0},
                            f"challenger {clear} (mean rewards {counts}): promote {_v(leader.version)}")
        loser = max(challengers, key=lambda a: best[a.version])
        dropped = ", ".join(_v(a.version) for a in challengers)
        return Analysis("failed", "rollback", loser.version, 0.0, test, {**numbers, "weight": 0.0},
                        f"champion {clear} (mean rewards {counts}): challengers {dropped} "
                        f"dropped, {_v(champion.version)} stays")
    if held >= policy.max_step_seconds:
        return Analysis("inconclusive", "pause", None, share, test, numbers,
                        f"no verdict after {held:g}s: the leader {_v(leader.version)} has P(best) = "
                        f"{p_lead:.3f} < {policy.confidence:g} (mean rewards {counts}); "
                        "paused for a person")
    return None


def _champion(arms: Sequence[Arm]) -> Arm:
    found = [a for a in arms if a.role == "champion"]
    if len(found) != 1:
        raise ValueError(f"an experiment has exactly one champion arm, got {len(found)}")
    return found[0]


def _prior_words(policy: RolloutPolicy) -> str:
    if policy.reward == "bernoulli":
        return "Beta(1,1) priors on 0/1 rewards"
    return "normal approximation of the mean rewards"


def _v(version: str) -> str:
    """"v3" for MLflow's version "3" (in reasons and number keys); a named version stays as is."""
    return f"v{version}" if version[:1].isdigit() else version


def _tol(tolerance: float) -> str:
    return f"{tolerance:.2f}" if round(tolerance, 2) == tolerance else f"{tolerance:g}"


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def _fmt(value: float | None) -> str:
    return "none" if value is None else f"{value:.3f}"


def _pct(weight: float) -> str:
    return f"{weight * 100:g}%"
