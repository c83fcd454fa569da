"""The development harness: the whole loop on one machine, for the demo, the tests and the benches.

Runs in: `loopline demo`, pytest and `make bench`, never in production. `stack` supervises the
embedded broker, the worker and the serving endpoint as real processes; `observe` watches every
topic from outside; `demo` is `loopline demo`; `tracking_server` starts an MLflow server on
PostgreSQL. It may import everything; no production package imports it (import-linter holds
them to that; `loopline demo` is the one door in).
"""
