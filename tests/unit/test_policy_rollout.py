"""The rollout analysis, one rule per table row, and its statistics against a simulation.

Each case gives a policy, the arms' counts and the times, and asserts the action (None: hold),
the verdict, the version and the weight after the action, plus words the reason must carry.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest

from agents.policy.rollout import Analysis, Arm, RolloutPolicy, analyse, prob_best, prob_better

CANARY = RolloutPolicy(strategy="canary", steps=(0.05, 0.25, 1.0), min_step_seconds=60,
                       min_samples=100, max_step_seconds=3600, confidence=0.95)
AB = RolloutPolicy(strategy="ab", split=0.5, duration_seconds=86_400, sample_size=1000,
                   min_samples=100)
SHADOW = RolloutPolicy(strategy="shadow", duration_seconds=3600, min_samples=100)
BANDIT = RolloutPolicy(strategy="bandit", min_samples=100, max_step_seconds=3600)


def champ(n: int, wins: float, weight: float = 0.95, step_n: int = 0) -> Arm:
    return Arm("3", "champion", weight, n, wins, wins, step_n)


def chall(n: int, wins: float, weight: float = 0.05, step_n: int | None = None,
          version: str = "4") -> Arm:
    return Arm(version, "challenger", weight, n, wins, wins, n if step_n is None else step_n)


# Bernoulli counts (reward_sq == reward_sum for 0/1 rewards)
BASE = champ(2000, 1400)                 # 0.70
BETTER = chall(400, 320)                 # 0.80: P(better) ~ 1
WORSE = chall(400, 240)                  # 0.60: P(worse) ~ 1
SAME = chall(400, 281)                   # 0.70: no verdict


@dataclass(frozen=True)
class Case:
    policy: RolloutPolicy
    arms: tuple[Arm, ...]
    action: str | None                      # None: hold
    verdict: str | None = None
    version: str | None = None
    weight: float | None = None
    says: tuple[str, ...] = ()              # words the reason must carry
    step: int = 0
    now: float = 100.0                      # seconds since the experiment and the step began
    paused: bool = False
    numbers: dict = field(default_factory=dict)


def run(case: Case) -> Analysis | None:
    result = analyse(case.policy, case.arms, step=case.step, started_at=0.0, step_started_at=0.0,
                     now=case.now, paused=case.paused)
    if case.action is None:
        assert result is None
        return None
    assert result is not None
    assert (result.action, result.verdict) == (case.action, case.verdict)
    assert result.version == case.version
    assert result.weight == pytest.approx(case.weight, abs=1e-6)
    assert result.numbers["weight"] == pytest.approx(case.weight, abs=1e-6)
    for words in case.says:
        assert words in result.reason, (words, result.reason)
    for name, value in case.numbers.items():
        assert result.numbers[name] == pytest.approx(value), name
    return result


CANARY_CASES = [
    pytest.param(Case(CANARY, (BASE, BETTER), "step", "progressing", "4", 0.25,
                      ("challenger v4 beats champion v3", "5% -> 25%", "0.800 over 400")),
                 id="clearly-better-after-min-time-and-samples-steps-up"),
    pytest.param(Case(CANARY, (BASE, BETTER), "step", "progressing", "4", 1.0, ("25% -> 100%",), step=1),
                 id="second-step-goes-to-the-next-weight"),
    pytest.param(Case(CANARY, (BASE, BETTER), "promote", "successful", "4", 1.0,
                      ("at the last step (100%)", "promote v4"), step=2),
                 id="better-at-the-last-step-promotes"),
    pytest.param(Case(CANARY, (BASE, BETTER), "promote", "successful", "4", 1.0, step=7),
                 id="a-step-past-the-end-counts-as-the-last"),
    pytest.param(Case(CANARY, (BASE, BETTER), None, now=59.0),
                 id="better-but-step-too-young-holds"),
    pytest.param(Case(CANARY, (BASE, chall(400, 320, step_n=99)), None, step=1),
                 id="better-but-too-few-rewards-in-this-step-holds"),
    pytest.param(Case(CANARY, (BASE, WORSE), "rollback", "failed", "4", 0.0,
                      ("worse than champion v3", "roll back to v3")),
                 id="clearly-worse-rolls-back"),
    pytest.param(Case(CANARY, (BASE, chall(100, 45)), "rollback", "failed", "4", 0.0, now=5.0),
                 id="worse-fails-fast-before-min-step-seconds"),
    pytest.param(Case(CANARY, (BASE, chall(400, 240, step_n=10)), "rollback", "failed", "4", 0.0, step=1),
                 id="worse-fails-fast-on-all-rewards-not-just-this-steps"),
    pytest.param(Case(CANARY, (BASE, chall(99, 20)), None),
                 id="worse-but-below-min-samples-holds"),
    pytest.param(Case(CANARY, (BASE, SAME), None, now=3599.0),
                 id="no-verdict-before-max-step-seconds-holds"),
    pytest.param(Case(CANARY, (BASE, SAME), "pause", "inconclusive", "4", 0.05,
                      ("no verdict after 3600s at step 0 (5%)", "paused for a person"), now=3600.0),
                 id="no-verdict-at-max-step-seconds-pauses"),
    pytest.param(Case(CANARY, (BASE, chall(30, 24)), "pause", "inconclusive", "4", 0.05,
                      ("too little feedback", "30 of the 100 rewards needed"), now=3600.0),
                 id="too-little-feedback-at-max-step-seconds-pauses"),
    pytest.param(Case(RolloutPolicy(strategy="canary", steps=(0.05, 0.25, 1.0), tolerance=0.05,
                                    min_samples=100),
                      (BASE, SAME), "promote", "successful", "4", 1.0, step=2),
                 id="equal-within-tolerance-counts-as-not-worse"),
    pytest.param(Case(CANARY, (BASE, BETTER), None, paused=True),
                 id="paused-is-never-analysed-again"),
    pytest.param(Case(CANARY, (BASE, WORSE), None, paused=True, now=99_999.0),
                 id="paused-worse-is-not-rolled-back-by-the-policy"),
]


AB_CASES = [
    pytest.param(Case(AB, (champ(5000, 3500, 0.5), chall(999, 800, 0.5)), None),
                 id="before-duration-and-sample-size-holds-even-if-clear"),
    pytest.param(Case(AB, (champ(5000, 3500, 0.5), chall(1000, 800, 0.5)), "promote", "successful", "4",
                      1.0, ("at the end of the ab test", "promote v4")),
                 id="sample-size-reached-better-promotes"),
    pytest.param(Case(AB, (champ(1000, 700, 0.5), chall(1000, 600, 0.5)), "rollback", "failed", "4", 0.0),
                 id="sample-size-reached-worse-rolls-back"),
    pytest.param(Case(AB, (champ(1000, 700, 0.5), chall(1000, 701, 0.5)), "pause", "inconclusive", "4",
                      0.5, ("no verdict", "traffic stays at 50%")),
                 id="sample-size-reached-no-verdict-pauses-split-held"),
    pytest.param(Case(AB, (champ(500, 350, 0.5), chall(500, 400, 0.5)), "promote", "successful", "4", 1.0,
                      now=86_400.0),
                 id="duration-passed-analyses-with-what-there-is"),
    pytest.param(Case(AB, (champ(500, 350, 0.5), chall(40, 38, 0.5)), "pause", "inconclusive", "4", 0.5,
                      ("too little feedback", "challenger 40"), now=86_400.0),
                 id="duration-passed-with-too-little-feedback-pauses"),
    pytest.param(Case(RolloutPolicy(strategy="ab", sample_size=1000, min_samples=100),
                      (champ(500, 350, 0.5), chall(500, 400, 0.5)), None, now=10 ** 6),
                 id="sample-size-only-waits-for-it"),
    pytest.param(Case(RolloutPolicy(strategy="ab", min_samples=100, max_step_seconds=3600),
                      (champ(500, 350, 0.5), chall(500, 400, 0.5)), "promote", "successful", "4", 1.0,
                      now=3600.0),
                 id="no-horizon-configured-analyses-at-max-step-seconds"),
    pytest.param(Case(AB, (champ(1000, 700, 0.5), chall(1000, 800, 0.5)), None, paused=True),
                 id="paused-ab-is-never-analysed-again"),
]


SHADOW_CASES = [
    pytest.param(Case(SHADOW, (champ(300, 210, 1.0), chall(300, 260, 0.0)), None, now=3599.0),
                 id="before-duration-holds"),
    pytest.param(Case(SHADOW, (champ(300, 210, 1.0), chall(300, 260, 0.0)), "promote", "successful", "4",
                      1.0, ("at the end of the shadow test",), now=3600.0),
                 id="shadow-better-promotes"),
    pytest.param(Case(SHADOW, (champ(300, 210, 1.0), chall(300, 150, 0.0)), "rollback", "failed", "4", 0.0,
                      now=3600.0),
                 id="shadow-worse-rolls-back"),
    pytest.param(Case(SHADOW, (champ(300, 210, 1.0), chall(300, 211, 0.0)), "pause", "inconclusive", "4",
                      0.0, ("traffic stays at 0%",), now=3600.0),
                 id="shadow-no-verdict-pauses-with-no-traffic"),
    pytest.param(Case(SHADOW, (champ(300, 210, 1.0), chall(5, 5, 0.0)), "pause", "inconclusive", "4", 0.0,
                      ("too little feedback",), now=3600.0),
                 id="shadow-pairs-too-few-pauses"),
]


def arm(version: str, n: int, wins: float, role: str = "challenger") -> Arm:
    return Arm(version, role, 0.0, n, wins, wins, n)


BANDIT_CASES = [
    pytest.param(Case(BANDIT, (arm("3", 500, 350, "champion"), arm("4", 99, 90)), None),
                 id="an-arm-below-min-samples-holds"),
    pytest.param(Case(BANDIT, (arm("3", 500, 350, "champion"), arm("4", 99, 90)), "pause", "inconclusive",
                      None, 99 / 599, ("too little feedback", "v4 has 99"), now=3600.0),
                 id="an-arm-still-below-min-samples-at-max-step-seconds-pauses"),
    pytest.param(Case(BANDIT, (arm("3", 500, 350, "champion"), arm("4", 2000, 1600)), "promote",
                      "successful", "4", 1.0, ("v4 is the best arm", "promote v4"),
                      numbers={"n_v3": 500, "mean_v3": 0.7, "n_v4": 2000, "mean_v4": 0.8}),
                 id="a-challenger-clearly-best-is-promoted"),
    pytest.param(Case(BANDIT, (arm("3", 2000, 1600, "champion"), arm("4", 300, 210), arm("5", 400, 300)),
                      "rollback", "failed", "5", 0.0, ("champion v3 is the best arm", "v4, v5 dropped")),
                 id="bandit-picks-the-champion-rolls-back-every-challenger"),
    pytest.param(Case(BANDIT, (arm("3", 500, 350, "champion"), arm("4", 500, 360), arm("5", 2000, 1600)),
                      "promote", "successful", "5", 1.0),
                 id="three-arms-the-clear-best-challenger-is-promoted"),
    pytest.param(Case(BANDIT, (arm("3", 500, 350, "champion"), arm("4", 2000, 1600), arm("5", 2000, 1605)),
                      None),
                 id="two-challengers-neck-and-neck-hold"),
    pytest.param(Case(BANDIT, (arm("3", 500, 350, "champion"), arm("4", 500, 352)), "pause", "inconclusive",
                      None, 0.5, ("no verdict after 3600s", "paused for a person"), now=3600.0),
                 id="no-clear-best-at-max-step-seconds-pauses"),
    pytest.param(Case(RolloutPolicy(strategy="bandit", min_samples=100, auto_promote=False),
                      (arm("3", 500, 350, "champion"), arm("4", 2000, 1600)), "pause", "successful", "4",
                      0.8, ("auto_promote is off",)),
                 id="clear-best-without-auto-promote-pauses-for-a-person"),
    pytest.param(Case(BANDIT, (arm("3", 500, 350, "champion"), arm("4", 2000, 1600)), None, paused=True),
                 id="paused-bandit-is-never-analysed-again"),
]


@pytest.mark.parametrize("case", CANARY_CASES + AB_CASES + SHADOW_CASES + BANDIT_CASES)
def test_analyse(case: Case) -> None:
    run(case)


def test_numbers_carry_counts_means_probability_and_the_test() -> None:
    result = run(Case(CANARY, (BASE, BETTER), "step", "progressing", "4", 0.25))
    assert result is not None
    assert {k: result.numbers[k] for k in ("n_champion", "mean_champion", "n_challenger",
                                           "mean_challenger", "confidence", "step")} == {
        "n_champion": 2000, "mean_champion": 0.7, "n_challenger": 400, "mean_challenger": 0.8,
        "confidence": 0.95, "step": 0}
    assert result.numbers["p_better"] > 0.99
    assert result.test == "Bayesian P(challenger > champion - 0.00), Beta(1,1) priors on 0/1 rewards"
    assert f"{result.numbers['p_better']:.3f}" in result.reason


def test_gaussian_rewards_use_the_sample_variance() -> None:
    policy = RolloutPolicy(strategy="ab", reward="gaussian", sample_size=200, min_samples=100)
    # means -1.0 and -0.8 (negated mae), sd 1 each: z = 0.2 / sqrt(2/200) = 2.0
    a = Arm("3", "champion", 0.5, 200, -200.0, 199.0 + 200.0, 200)      # var = (399 - 200) / 199 = 1
    b = Arm("4", "challenger", 0.5, 200, -160.0, 199.0 + 128.0, 200)    # var = (327 - 128) / 199 = 1
    result = analyse(policy, (a, b), step=0, started_at=0, step_started_at=0, now=1, paused=False)
    assert result is not None and result.action == "promote"
    assert result.numbers["p_better"] == pytest.approx(0.97725, abs=1e-4)
    assert "normal approximation" in result.test


@pytest.mark.parametrize("kwargs, words", [
    ({"strategy": "blue-green"}, "strategy must be one of"),
    ({"algorithm": "greedy"}, "algorithm must be one of"),
    ({"reward": "poisson"}, "reward must be one of"),
    ({"steps": (0.5, 0.25, 1.0)}, "rising"),
    ({"steps": (0.05, 0.5)}, "ending at 1.0"),
    ({"steps": (0.0, 1.0)}, "in (0, 1]"),
    ({"steps": ()}, "canary steps"),
    ({"confidence": 0.5}, "confidence must be in (0.5, 1)"),
    ({"confidence": 1.0}, "confidence must be in (0.5, 1)"),
    ({"epsilon": 1.5}, "epsilon must be in [0, 1]"),
    ({"split": 1.0}, "split must be in (0, 1)"),
    ({"tolerance": -0.1}, "tolerance"),
    ({"min_samples": 0}, "min_samples"),
    ({"max_step_seconds": 0}, "max_step_seconds"),
    ({"duration_seconds": 0}, "duration_seconds"),
    ({"sample_size": 0}, "sample_size"),
])
def test_policy_refuses_what_cannot_work(kwargs: dict, words: str) -> None:
    with pytest.raises(ValueError) as raised:
        RolloutPolicy(**kwargs)
    assert words in str(raised.value)


def test_policy_takes_steps_as_a_list() -> None:
    assert RolloutPolicy(steps=[0.1, 1.0]).steps == (0.1, 1.0)    # type: ignore[arg-type]


@pytest.mark.parametrize("arms, words", [
    ((chall(10, 5),), "exactly one champion"),
    ((BASE, chall(10, 5), chall(10, 5, version="5")), "one challenger"),
    ((BASE,), "one challenger"),
])
def test_malformed_experiments_are_refused(arms: tuple[Arm, ...], words: str) -> None:
    with pytest.raises(ValueError) as raised:
        analyse(CANARY, arms, step=0, started_at=0, step_started_at=0, now=0, paused=False)
    assert words in str(raised.value)


# -- the statistics against a simulation ----------------------------------------------------------

def monte_carlo_better(s_b: int, f_b: int, s_a: int, f_a: int, tolerance: float = 0.0,
                       draws: int = 40_000) -> float:
    rng = random.Random(15)
    wins = sum(rng.betavariate(1 + s_b, 1 + f_b) > rng.betavariate(1 + s_a, 1 + f_a) - tolerance
               for _ in range(draws))
    return wins / draws


def bern(n: int, s: int, role: str = "challenger") -> Arm:
    return Arm("x", role, 0.5, n, float(s), float(s), n)


@pytest.mark.parametrize("s_b, f_b, s_a, f_a, tolerance", [
    pytest.param(3, 7, 5, 5, 0.0, id="exact-tiny"),
    pytest.param(45, 55, 40, 60, 0.0, id="exact-hundred"),
    pytest.param(820, 180, 790, 210, 0.0, id="exact-thousand"),
    pytest.param(1900, 100, 5000, 300, 0.0, id="exact-sums-over-the-smaller-alpha"),
    pytest.param(3050, 2950, 3000, 3000, 0.0, id="approximate-both-alphas-over-2000"),
    pytest.param(9000, 1000, 8950, 1050, 0.0, id="approximate-large"),
    pytest.param(45, 55, 50, 50, 0.05, id="approximate-with-tolerance"),
])
def test_prob_better_matches_a_simulation(s_b: int, f_b: int, s_a: int, f_a: int,
                                          tolerance: float) -> None:
    exact = prob_better(bern(s_b + f_b, s_b), bern(s_a + f_a, s_a, "champion"), reward="bernoulli",
                        tolerance=tolerance)
    assert exact == pytest.approx(monte_carlo_better(s_b, f_b, s_a, f_a, tolerance), abs=0.01)


@pytest.mark.parametrize("b, a", [((3, 7), (5, 5)), ((45, 55), (40, 60)), ((3050, 2950), (3000, 3000)),
                                  ((0, 0), (10, 0))])
def test_prob_better_is_symmetric(b: tuple[int, int], a: tuple[int, int]) -> None:
    arm_b, arm_a = bern(sum(b), b[0]), bern(sum(a), a[0])
    forward = prob_better(arm_b, arm_a, reward="bernoulli", tolerance=0.0)
    backward = prob_better(arm_a, arm_b, reward="bernoulli", tolerance=0.0)
    assert forward + backward == pytest.approx(1.0, abs=1e-9)


def test_gaussian_with_fewer_than_two_rewards_carries_no_information() -> None:
    one = Arm("4", "challenger", 0.5, 1, 5.0, 25.0, 1)
    many = Arm("3", "champion", 0.5, 100, 10.0, 200.0, 100)
    assert prob_better(one, many, reward="gaussian", tolerance=0.0) == 0.5


def test_prob_best_of_three_sums_to_at_most_one_and_ranks_the_arms() -> None:
    arms = (bern(500, 250, "champion"), Arm("5", "challenger", 0, 500, 300, 300, 0),
            Arm("6", "challenger", 0, 500, 350, 350, 0))
    best = prob_best(arms, reward="bernoulli")
    assert best["6"] > 0.99 and best["6"] > best["5"] > best["x"]
    assert sum(best.values()) <= 1.0 + 1e-9
