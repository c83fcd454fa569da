"""The development harness: the whole loop on one machine, for the demo, the tests and the benches.

Runs in: `loopline demo`, pytest and `make bench`, never in production. `stack` supervises the
embedded broker, the worker and the serving endpoint as real processes; `observe` watches every
topic from outside; `demo` is `loopline demo`; `kafka` runs Apache Kafka itself (KRaft, on the
machine's Java, jars from Maven Central); `postgres` a throwaway PostgreSQL server and
`tracking_server` an MLflow server on it. It may import everything; no production package imports
it (import-linter holds them to that; `loopline demo` is the one door in).
"""
