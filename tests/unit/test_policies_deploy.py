"""Deploy, rollback and champion history, one rule per table row."""

from __future__ import annotations

from typing import Sequence

import pytest

from agents.policies import Deploy, Refuse, decide_deploy, decide_rollback, push_history

DEPLOY = [
    pytest.param("1", None, (), False, Deploy("1", None), id="first-champion"),
    pytest.param("3", "2", ("1", "2"), False, Deploy("3", "2"), id="newer-version-replaces-champion"),
    pytest.param("10", "9", ("9",), False, Deploy("10", "9"), id="versions-compare-numerically-not-as-text"),
    pytest.param("3", "3", ("1", "2", "3"), False, Deploy("3", "2"), id="redelivered-promotion-is-idempotent"),
    pytest.param("1", "1", ("1",), False, Deploy("1", None), id="redelivered-first-promotion-has-no-previous"),
    pytest.param("3", "5", ("3", "4", "5"), False,
                 Refuse("stale promotion: v3 is older than champion v5"), id="stale-promotion-refused"),
    pytest.param("9", "10", ("9", "10"), False,
                 Refuse("stale promotion: v9 is older than champion v10"), id="stale-check-is-numeric"),
    pytest.param("3", "2", ("1", "3", "2"), False,
                 Refuse("v3 was rolled back from (champion is v2); promote it explicitly to deploy it again"),
                 id="late-promotion-does-not-undo-a-rollback"),
    pytest.param("3", "2", ("1", "3", "2"), True, Deploy("3", "2"), id="forced-promotion-may-redeploy"),
    pytest.param("1", "3", ("1", "2", "3"), True, Deploy("1", "3"), id="forced-promotion-may-go-older"),
    pytest.param("v3", "2", ("2",), False, Refuse("not a model version: 'v3'"), id="non-numeric-version"),
    pytest.param("", None, (), False, Refuse("not a model version: ''"), id="empty-version"),
    pytest.param("3", "latest", (), False,
                 Refuse("current champion 'latest' is not a model version; fix the alias first"),
                 id="non-numeric-champion"),
]


@pytest.mark.parametrize("version, champion, history, force, expected", DEPLOY)
def test_decide_deploy(version: str, champion: str | None, history: Sequence[str], force: bool,
                       expected: Deploy | Refuse) -> None:
    assert decide_deploy(version, champion, history, force=force) == expected


ROLLBACK = [
    pytest.param("3", ("1", "2", "3"), None, Deploy("2", "3"), id="back-to-the-previous-champion"),
    pytest.param("2", ("1", "3", "2"), None, Deploy("1", "2"), id="second-rollback-walks-further-back"),
    pytest.param("4", ("1", "3", "2", "4"), None, Deploy("2", "4"), id="skips-versions-rolled-back-from"),
    pytest.param("10", ("9", "10"), None, Deploy("9", "10"), id="numeric-order"),
    pytest.param("1", ("1",), None, Refuse("no previous champion to roll back to (champion v1)"),
                 id="nothing-before-the-first-champion"),
    pytest.param("1", ("1", "3", "2"), None, Refuse("no previous champion to roll back to (champion v1)"),
                 id="only-newer-abandoned-versions-left"),
    pytest.param(None, ("1", "2"), None, Deploy("1", "2"), id="champion-unknown-uses-history"),
    pytest.param(None, (), None, Refuse("no usable champion to roll back from (None)"), id="nothing-deployed-yet"),
    pytest.param("3", ("1", "2", "3"), "1", Deploy("1", "3"), id="explicit-target-in-history"),
    pytest.param("3", ("1", "2", "3"), "7",
                 Refuse("v7 was never champion (history: v1, v2, v3); cannot roll back to it"),
                 id="explicit-target-never-champion"),
    pytest.param("3", (), "2", Refuse("v2 was never champion (history: none); cannot roll back to it"),
                 id="explicit-target-with-empty-history"),
    pytest.param("2", ("1", "3", "2"), "2", Deploy("2", "3"), id="redelivered-rollback-to-is-idempotent"),
    pytest.param("3", ("1", "2", "3"), "two", Refuse("not a model version: 'two'"), id="explicit-target-not-a-version"),
]


@pytest.mark.parametrize("champion, history, to, expected", ROLLBACK)
def test_decide_rollback(champion: str | None, history: Sequence[str], to: str | None,
                         expected: Deploy | Refuse) -> None:
    assert decide_rollback(champion, history, to=to) == expected


PUSH = [
    pytest.param((), "1", 20, ("1",), id="first-entry"),
    pytest.param(("1", "2"), "3", 20, ("1", "2", "3"), id="append"),
    pytest.param(["1", "2", "3"], "2", 20, ("1", "3", "2"), id="present-moves-to-the-end"),
    pytest.param(("1", "2", "3"), "3", 20, ("1", "2", "3"), id="current-again-is-unchanged"),
    pytest.param(("1", "2", "3"), "4", 3, ("2", "3", "4"), id="bounded-oldest-dropped"),
    pytest.param(("1", "2"), "3", 1, ("3",), id="limit-one-keeps-current"),
]


@pytest.mark.parametrize("history, version, limit, expected", PUSH)
def test_push_history(history: Sequence[str], version: str, limit: int, expected: tuple[str, ...]) -> None:
    assert push_history(history, version, limit=limit) == expected


def test_push_history_needs_room_for_the_current() -> None:
    with pytest.raises(ValueError, match="limit"):
        push_history(("1",), "2", limit=0)


def test_a_day_of_promotions_and_rollbacks() -> None:
    """The deployer's loop: decide, then push the deployed version onto the history."""
    champion: str | None = None
    history: tuple[str, ...] = ()
    log: list[Deploy | Refuse] = []

    def apply(decision: Deploy | Refuse) -> None:
        nonlocal champion, history
        log.append(decision)
        if isinstance(decision, Deploy):
            champion, history = decision.version, push_history(history, decision.version)

    for v in ("1", "2", "3"):
        apply(decide_deploy(v, champion, history))
    apply(decide_rollback(champion, history))          # 3 is bad -> 2
    apply(decide_deploy("3", champion, history))       # the promotion of 3, redelivered late
    apply(decide_deploy("2", champion, history))       # 2 promoted again: harmless
    apply(decide_deploy("4", champion, history))       # a fixed model
    apply(decide_rollback(champion, history))          # 4 is bad too -> 2, never 3

    assert log == [
        Deploy("1", None), Deploy("2", "1"), Deploy("3", "2"),
        Deploy("2", "3"),
        Refuse("v3 was rolled back from (champion is v2); promote it explicitly to deploy it again"),
        Deploy("2", "3"),
        Deploy("4", "2"),
        Deploy("2", "4"),
    ]
    assert (champion, history) == ("2", ("1", "3", "4", "2"))
