"""The step SDK: what a training, evaluation or prepare step imports inside its image.

Runs in: the step's own process (a local run, a Kubernetes pod, an Argo step), never in the
worker. `stepkit.job` turns loopline's job contract (environment variables) into one object and
puts the lineage on every MLflow run and model version (tag names in `stepkit.lineage`, which the
registry adapter and `loopline lineage` read back); `stepkit.reference` records the data a
version learned from; `stepkit.atomic` writes a step's files so no reader sees half of one. It stays light so a training image can install and import it cheaply:
the standard library at import time, MLflow and pandas only when a step logs; no Faust, no
Kafka client, no Evidently, nothing else of loopline (import-linter holds it to that).
"""
