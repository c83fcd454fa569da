"""The serving process: each model's alias and live experiment over HTTP, N replicas.

Runs in: its own process and Deployment (`loopline serve`), with its own replicas, apart from
the worker. It reads the deployment and experiment-state topics and publishes predictions,
shadow pairs and feedback, so it may import `streams` (the bus contract) and MLflow; never
Faust, `agents`, `triggers` or the composition root (import-linter holds it to that).

    server   wiring and start order (`serve`), the MLflow loader
    app      HTTP routes (aiohttp): predict, feedback, /livez, /readyz, /metrics, /models
    store    the versions each model needs (champion + experiment arms), loaded in threads; readiness
    batcher  adaptive micro-batching per model version, one predict thread each
    routing  which version answers a request (pure)
    ids      signed prediction ids: feedback accepted by any replica, never forged
    bus      the consumer thread: deployments, experiment states (read back at start)
    predlog  what is published: PredictionLogged, ShadowPredicted, FeedbackReceived
    metrics  Prometheus metrics in the replica's own registry
"""
