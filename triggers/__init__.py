"""The actions that start work: render, submit, watch.

"Trigger" here has Argo Events' meaning: the thing an event sets off. This layer
knows how to describe a training/evaluation pipeline (`pipeline`), name a run
deterministically so a redelivered request never starts a second one (`naming`),
decide whether a step runs (`conditions`), and launch + watch the run on a
runtime: `local` (a detached process), `cluster` (a Kubernetes Job or an Argo
Workflow per run, rendered by the pure `render_job` / `render_workflow`, watched
through `kube`, the one module that talks to the Kubernetes API, and run inside the
pods by `pod_entry`).

It may import `streams` only, and nothing here talks to Kafka: agents call in,
launchers report statuses back, agents turn those into events.
"""
