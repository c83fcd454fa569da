"""Pipeline step for the fault tests: the gate's report on the constant model, without scoring.

Reports what examples.classifier.evaluate reports for a model's first version (the evaluator
agent reads it: agents.evaluator.read_report): the candidate version the train step registered,
its metrics (accuracy 1.0, above any gate the tests set) and no champion. Stdlib and stepkit
only: no MLflow, so it costs an interpreter start. Only for pipelines that register a model's
first version: it never looks for a champion.

Run (inside a pipeline): python -m tests.faults.steps.evaluate
"""

from __future__ import annotations

from stepkit import job


def main() -> None:
    ctx = job.context()
    train = ctx.inputs("train")
    ctx.output(candidate_version=str(train["model_version"]), candidate_run_id=train["run_id"],
               candidate_metrics={"accuracy": 1.0}, champion_version=None, champion_metrics=None,
               holdout_rows=0)


if __name__ == "__main__":
    main()
