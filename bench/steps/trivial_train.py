"""A trivial training step for the loop-overhead benchmark: register a constant model, report it.

It does what a real training step does for loopline (an MLflow run tagged with the request,
a registered model version, candidate metrics for the gate) around a model that takes no time
to fit, and records its own start and end (wall clock) in its outputs so the benchmark can
subtract the step's run time from the loop's.
"""

import time

STARTED = time.time()

import pandas as pd  # noqa: E402
from sklearn.dummy import DummyClassifier  # noqa: E402

from stepkit import job  # noqa: E402


def main() -> None:
    ctx = job.context()
    frame = pd.DataFrame({"f0": [0.0, 1.0, 2.0, 3.0], "f1": [1.0, 0.0, 1.0, 0.0]})
    labels = [0, 1, 0, 1]
    with ctx.start_run():
        model = DummyClassifier(strategy="most_frequent").fit(frame, labels)
        ctx.log_metrics({"accuracy": 1.0})
        version = ctx.log_model(model, input_example=frame.head(2))
    ctx.output(candidate_version=version, candidate_metrics={"accuracy": 1.0},
               step_started_at=STARTED, step_finished_at=time.time())


if __name__ == "__main__":
    main()
