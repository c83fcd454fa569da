"""The `when` language: what parses, what it means, and what is rejected (and where)."""

from __future__ import annotations

import pytest

from triggers.conditions import Condition, ConditionError, parse


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("evaluate.passed == true", Condition("evaluate", "passed", "==", True)),
        ("evaluate.passed==false", Condition("evaluate", "passed", "==", False)),
        ("  evaluate.accuracy >= 0.9  ", Condition("evaluate", "accuracy", ">=", 0.9)),
        ("prepare.rows > 1000", Condition("prepare", "rows", ">", 1000)),
        ("prepare.rows < -5", Condition("prepare", "rows", "<", -5)),
        ("prepare.rows <= 1e3", Condition("prepare", "rows", "<=", 1000.0)),
        ("prepare.delta != 2.5E-1", Condition("prepare", "delta", "!=", 0.25)),
        ("pre-process.out_1 == null", Condition("pre-process", "out_1", "==", None)),
        ("train.stage == 'prod'", Condition("train", "stage", "==", "prod")),
        ('train.stage != "staging"', Condition("train", "stage", "!=", "staging")),
        ("train.note == 'it\\'s'", Condition("train", "note", "==", "it's")),
        ("train.note == 'a == b'", Condition("train", "note", "==", "a == b")),
        ("train.note == ''", Condition("train", "note", "==", "")),
    ],
)
def test_parse(expr: str, expected: Condition) -> None:
    parsed = parse(expr)
    assert parsed == expected
    assert type(parsed.value) is type(expected.value)
    assert parse(str(parsed)) == parsed  # str() renders a parseable expression


@pytest.mark.parametrize(
    ("expr", "message", "position"),
    [
        ("", "expected a step name", 0),
        ("evaluate", "expected '.' after the step name", 8),
        ("evaluate.", "expected an output name", 9),
        ("evaluate.passed", "expected a comparison operator", 15),
        ("evaluate.passed = true", "expected a comparison operator", 16),
        ("evaluate.passed === true", "expected a literal", 18),
        ("evaluate.passed ==", "expected a literal", 18),
        ("evaluate.passed == True", "expected a literal", 19),
        ("evaluate.passed == yes", "expected a literal", 19),
        ("evaluate.passed == true and x", "unexpected trailing input", 24),
        ("evaluate.acc > 0.9 or 1", "unexpected trailing input", 19),
        ("evaluate.acc > 01", "unexpected trailing input", 16),
        ("evaluate.stage == 'prod", "unterminated string", 18),
        ("evaluate.stage == 'a\\x'", "unknown escape", 21),
        ("evaluate.passed < true", "operator < cannot compare with true", 18),
        ("evaluate.x >= null", "operator >= cannot compare with null", 14),
        ("__import__('os').system('x')", "expected '.' after the step name", 10),
        ("evaluate.x == open('f')", "expected a literal", 14),
        ("evaluate.x[0] == 1", "expected a comparison operator", 10),
        ("evaluate . x == 1", "expected '.' after the step name", 8),
    ],
)
def test_parse_rejects_garbage_with_position(expr: str, message: str, position: int) -> None:
    with pytest.raises(ConditionError) as raised:
        parse(expr)
    assert message in str(raised.value)
    assert raised.value.position == position
    assert f"at position {position}" in str(raised.value)
    assert isinstance(raised.value, ValueError)


def test_parse_rejects_non_strings() -> None:
    with pytest.raises(ConditionError):
        parse(None)  # type: ignore[arg-type]


OUTPUTS = {
    "evaluate": {"passed": True, "accuracy": 0.93, "rows": 1000, "stage": "prod", "missing_value": None,
                 "metrics": {"f1": 0.8}},
}


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("evaluate.passed == true", True),
        ("evaluate.passed == false", False),
        ("evaluate.passed != false", True),
        ("evaluate.accuracy >= 0.9", True),
        ("evaluate.accuracy > 0.93", False),
        ("evaluate.accuracy <= 0.93", True),
        ("evaluate.rows == 1000", True),
        ("evaluate.rows == 1000.0", True),  # numbers compare as numbers
        ("evaluate.rows < 999", False),
        ("evaluate.stage == 'prod'", True),
        ("evaluate.stage != 'prod'", False),
        ("evaluate.stage < 'zzz'", True),  # strings order lexicographically
        ("evaluate.missing_value == null", True),
        ("evaluate.missing_value != null", False),
        ("evaluate.rows != null", True),
        ("evaluate.rows == null", False),
        # missing outputs/steps are False, not errors
        ("evaluate.nope == true", False),
        ("evaluate.nope != true", False),
        ("train.passed == true", False),
        # incompatible types are False, whichever the operator
        ("evaluate.passed == 1", False),  # bool is not a number
        ("evaluate.rows == '1000'", False),
        ("evaluate.rows != '1000'", False),
        ("evaluate.stage > 3", False),
        ("evaluate.missing_value > 3", False),
        ("evaluate.metrics == 1", False),
        ("evaluate.metrics != 1", False),
    ],
)
def test_evaluate(expr: str, expected: bool) -> None:
    assert parse(expr).evaluate(OUTPUTS) is expected


def test_evaluate_tolerates_a_step_whose_outputs_are_not_a_mapping() -> None:
    assert parse("evaluate.passed == true").evaluate({"evaluate": ["passed"]}) is False  # type: ignore[dict-item]


def test_nan_never_compares_true_except_not_equal() -> None:
    outputs = {"e": {"x": float("nan")}}
    assert [parse(f"e.x {op} 1").evaluate(outputs) for op in ("==", "<", "<=", ">", ">=", "!=")] == [
        False, False, False, False, False, True,
    ]
