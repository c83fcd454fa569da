"""The agents' ports, implemented on MLflow and Evidently.

Runs in: the worker (the registry behind the deployer and evaluator, the drift checker's
process pool) and the operator's commands (the registry, read-only). `registry` is the MLflow
model registry (aliases and their history); `drift` runs Evidently's tests off the event loop.
May import `streams`, `stepkit` (the reference format it reads) and `agents`' ports and pure
policies; never Faust or the composition root.
"""
