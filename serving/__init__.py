"""The serving process: `models:/NAME@champion` over HTTP, reloaded on deployment events.

Runs in: its own process and Deployment (`loopline serve`), with its own replicas, apart from
the worker. It reads the deployment topic and publishes predictions and feedback, so it may
import `streams` (the bus contract) and MLflow; never Faust, `agents`, `triggers` or the
composition root (import-linter holds it to that).
"""
