"""The pipeline model: validation messages, ordering, placeholders, serialization."""

from __future__ import annotations

import json

import pytest

from triggers.pipeline import (
    LaunchSpec,
    Pipeline,
    PipelineError,
    RunStatus,
    Step,
    UnknownOutputError,
    render_command,
)


def step(name: str, *depends: str, command: tuple[str, ...] = ("python", "x.py"), **kw) -> Step:
    return Step(name=name, command=command, depends=depends, **kw)


INVALID = [
    ("no steps", [], "pipeline has no steps"),
    ("duplicate", [step("a"), step("a")], "duplicate step name 'a'"),
    ("unknown dep", [step("a", "prep")], "step 'a': depends on unknown step 'prep'"),
    ("self cycle", [step("a", "a")], "cycle in depends: a -> a"),
    ("cycle", [step("ok"), step("a", "c"), step("b", "a"), step("c", "b")], "cycle in depends: a -> c -> b -> a"),
    ("uppercase name", [step("Train")], "step 'Train': bad name"),
    ("underscore name", [step("my_step")], "step 'my_step': bad name"),
    ("leading hyphen", [step("-a")], "step '-a': bad name"),
    ("too long name", [step("a" * 41)], f"step '{'a' * 41}': bad name"),
    ("empty command", [step("a", command=())], "step 'a': command is empty"),
    ("string command", [Step("a", "python train.py")], "step 'a': command must be a list of argv items, not a string"),
    ("non-str item", [step("a", command=("python", 3))], "step 'a': command item 1 must be a string, got int"),
    ("bad when", [step("a"), step("b", "a", when="a.x = 1")], "step 'b': invalid when: expected a comparison operator"),
    ("when not upstream", [step("a"), step("b", when="a.passed == true")],
     "step 'b': when 'a.passed == true' references step 'a', which is not upstream of 'b' (add it to depends)"),
    ("when on self", [step("a", when="a.x == 1")], "references step 'a', which is not upstream of 'a'"),
    ("placeholder not upstream", [step("a"), step("b", command=("run", "--in={{steps.a.outputs.uri}}"))],
     "step 'b': placeholder {{steps.a.outputs.uri}} references step 'a', which is not upstream of 'b'"),
    ("placeholder unknown step", [step("a", command=("run", "{{steps.zzz.outputs.uri}}"))],
     "references step 'zzz', which is not upstream of 'a'"),
    ("argo-style placeholder", [step("a"), step("b", "a", command=("run", "{{steps.a.outputs.parameters.uri}}"))],
     "step 'b': malformed placeholder '{{steps.a.outputs.parameters.uri}}'"),
    ("unclosed placeholder", [step("a"), step("b", "a", command=("run", "{{steps.a.outputs.uri}"))],
     "step 'b': malformed placeholder '{{steps.a.outputs.uri}'"),
    ("zero timeout", [step("a", timeout_seconds=0)], "step 'a': timeout_seconds must be a positive number"),
    ("non-str env", [step("a", env={"N": 3})], "step 'a': env must map strings to strings"),
    ("string depends", [Step("b", ("x",), depends="a")], "step 'b': depends must be a list of step names"),
]


@pytest.mark.parametrize(("steps", "message"), [case[1:] for case in INVALID], ids=[case[0] for case in INVALID])
def test_invalid_pipelines_name_the_problem(steps: list[Step], message: str) -> None:
    with pytest.raises(PipelineError) as raised:
        Pipeline(tuple(steps))
    assert message in str(raised.value)
    assert isinstance(raised.value, ValueError)


def test_several_problems_are_reported_together() -> None:
    with pytest.raises(PipelineError, match="step 'A': bad name.*step 'b': command is empty"):
        Pipeline((step("A"), step("b", command=())))


def test_order_is_topological_and_stable() -> None:
    pipeline = Pipeline(
        (step("report", "evaluate"), step("prepare"), step("lint"), step("train", "prepare"),
         step("evaluate", "train", "lint"))
    )
    assert [s.name for s in pipeline.order()] == ["prepare", "lint", "train", "evaluate", "report"]


def test_declaration_order_wins_among_ready_steps() -> None:
    pipeline = Pipeline((step("c"), step("b"), step("a")))
    assert [s.name for s in pipeline.order()] == ["c", "b", "a"]


def test_step_lookup_and_upstream() -> None:
    pipeline = Pipeline((step("prepare"), step("train", "prepare"), step("evaluate", "train")))
    assert pipeline.step("train").depends == ("prepare",)
    assert pipeline.upstream("evaluate") == {"prepare", "train"}
    with pytest.raises(KeyError, match="no step named 'nope'"):
        pipeline.step("nope")


def test_indirect_dependency_may_be_referenced() -> None:
    pipeline = Pipeline(
        (
            step("prepare"),
            step("train", "prepare"),
            step("evaluate", "train", when="prepare.rows > 0", command=("e", "{{steps.prepare.outputs.uri}}")),
        )
    )
    assert pipeline.step("evaluate").when == "prepare.rows > 0"


def test_lists_are_accepted_and_stored_as_tuples() -> None:
    s = Step(name="a", command=["python", "x.py"], depends=[])  # type: ignore[arg-type]
    assert s.command == ("python", "x.py") and s.depends == ()
    assert Pipeline([s]).steps == (s,)  # type: ignore[arg-type]


def test_pipeline_round_trips_through_json() -> None:
    pipeline = Pipeline(
        (
            step("prepare", env={"A": "1"}, image="img:1", timeout_seconds=30),
            step("train", "prepare", when="prepare.rows >= 10", command=("t", "{{steps.prepare.outputs.uri}}")),
        )
    )
    again = Pipeline.from_dict(json.loads(json.dumps(pipeline.to_dict())))
    assert again == pipeline
    assert [s.name for s in again.order()] == ["prepare", "train"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "a pipeline must be a mapping with a 'steps' list"),
        ({"steps": [{"name": "a", "command": ["x"], "retry": 3}]}, "step 'a': unknown field(s) retry"),
        ({"steps": [{"name": "a"}]}, "step 'a': missing field(s) command"),
        ({"steps": ["a"]}, "a step must be a mapping, got str"),
        ({"steps": [{"name": "a", "command": "python x.py"}]}, "not a string"),
    ],
)
def test_from_dict_rejects_bad_definitions(data: dict, message: str) -> None:
    with pytest.raises(PipelineError) as raised:
        Pipeline.from_dict(data)
    assert message in str(raised.value)


def test_from_dict_treats_null_optionals_as_defaults() -> None:
    pipeline = Pipeline.from_dict({"steps": [{"name": "a", "command": ["x"], "depends": None, "env": None}]})
    assert pipeline.step("a").depends == () and pipeline.step("a").env == {}


EVIL = "a b; rm -rf / $(x) 'q' \"dq\" `id` | > *"


@pytest.mark.parametrize(
    ("item", "value", "expected"),
    [
        ("{{steps.prepare.outputs.v}}", "file:///d", "file:///d"),
        ("--data={{ steps.prepare.outputs.v }}", "s3://b/k", "--data=s3://b/k"),
        ("{{steps.prepare.outputs.v}}", EVIL, EVIL),
        ("{{steps.prepare.outputs.v}}", 1000, "1000"),
        ("{{steps.prepare.outputs.v}}", 0.5, "0.5"),
        ("{{steps.prepare.outputs.v}}", True, "true"),
        ("{{steps.prepare.outputs.v}}", None, "null"),
        ("{{steps.prepare.outputs.v}}", {"a": [1, 2]}, '{"a": [1, 2]}'),
        ("{{steps.prepare.outputs.v}}", ["x", "y"], '["x", "y"]'),
        ("{{steps.prepare.outputs.v}}-{{steps.prepare.outputs.v}}", "ab", "ab-ab"),
        ("no placeholder {{ other }}", "x", "no placeholder {{ other }}"),
    ],
)
def test_render_command_fills_placeholders_as_one_item(item: str, value: object, expected: str) -> None:
    s = Step("train", ("python", item), depends=("prepare",))
    assert render_command(s, {"prepare": {"v": value}}) == ("python", expected)


def test_render_command_unknown_output_is_a_clear_error() -> None:
    s = Step("train", ("python", "{{steps.prepare.outputs.uri}}"), depends=("prepare",))
    with pytest.raises(UnknownOutputError, match=r"step train: unknown output prepare\.uri"):
        render_command(s, {"prepare": {"rows": 3}})


def _spec(**overrides) -> LaunchSpec:
    fields = dict(
        run_name="churn-0123456789abcdef",
        model="churn",
        pipeline=Pipeline((step("train"),)),
        env={"LOOPLINE_MODEL": "churn"},
        workdir="/tmp",
    )
    fields.update(overrides)
    return LaunchSpec(**fields)


def test_launch_spec_round_trips_and_validates() -> None:
    spec = _spec()
    assert LaunchSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    with pytest.raises(ValueError, match="not a DNS-1123 label"):
        _spec(run_name="../etc")
    with pytest.raises(ValueError, match="env must map strings to strings"):
        _spec(env={"N": 1})


def test_run_status_terminal_and_round_trip() -> None:
    status = RunStatus(
        run_name="r", model="m", phase="Failed", outputs={"a": {"x": 1}}, steps={"a": "Failed"},
        reason="step a exited with code 3", log_tail=("l1", "l2"), started_at=1.0, finished_at=2.0,
    )
    assert status.terminal
    assert RunStatus.from_dict(json.loads(json.dumps(status.to_dict()))) == status
    for phase, terminal in [("Pending", False), ("Running", False), ("Succeeded", True)]:
        assert RunStatus(run_name="r", model="m", phase=phase, outputs={}, steps={}).terminal is terminal
