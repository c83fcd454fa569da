"""Health endpoints of the Faust worker, for Kubernetes' probes (and docker-compose's healthcheck).

    GET /livez   200 while the event loop answers HTTP: a wedged loop fails it and gets restarted
    GET /readyz  200 once the consumer has joined its group and received an assignment (possibly
                 of no partition, when there are more workers than partitions), while no
                 rebalance is in progress and while Kafka answers; 503 otherwise, with the reason

A broker watch probes Kafka every second (one ApiVersions round trip, off the event loop).
While it fails, /readyz says so — nothing routes traffic to a worker, so this only informs
operators and rollouts — but /livez stays 200: the Kafka clients retry on their own, and a
restart would not bring the broker back. Only when Kafka has been gone longer than
`lost_seconds` does the worker log why and exit with code 3, instead of hanging forever.
The watch speaks the worker's TLS and SASL: a password or certificate that stops being
accepted (rotated on one side only) is not an outage to wait out, and exits with code 3 at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time

import faust

from streams.probe import probe
from streams.security import KafkaRefused, KafkaSecurity

log = logging.getLogger("loopline.health")
EXIT_BROKER_LOST = 3


def install(app: faust.App, broker: str | None = None, lost_seconds: float | None = None,
            security: KafkaSecurity | None = None) -> None:
    state = {"assigned": False, "broker_error": None, "broker_ok_at": time.monotonic()}

    @app.on_partitions_assigned.connect
    async def _assigned(sender, assigned, **kwargs):  # noqa: ARG001 - signal signature
        state["assigned"] = True

    @app.page("/livez")
    async def livez(self, request):
        return self.json({"ok": True})

    @app.page("/readyz")
    async def readyz(self, request):
        ready = state["assigned"] and not app.rebalancing and state["broker_error"] is None
        return self.json({"ready": ready, "assigned": state["assigned"], "rebalancing": app.rebalancing,
                          "broker_error": state["broker_error"]}, status=200 if ready else 503)

    if broker is None:
        return

    @app.timer(interval=1.0)
    async def broker_watch():
        try:
            error = await asyncio.to_thread(probe, broker, 2.0, security)
        except KafkaRefused as exc:
            _exit(f"giving up: {exc}")
        if error is None:
            if state["broker_error"] is not None:
                log.warning("Kafka at %s answers again", broker)
            state["broker_error"], state["broker_ok_at"] = None, time.monotonic()
            return
        gone = time.monotonic() - state["broker_ok_at"]
        if state["broker_error"] is None:
            log.error("Kafka at %s does not answer: %s (the clients keep retrying)", broker, error)
        state["broker_error"] = error
        if lost_seconds is not None and gone > lost_seconds:
            _exit(f"Kafka at {broker} has not answered for {gone:.0f}s (limit {lost_seconds:.0f}s): "
                  f"exiting with code {EXIT_BROKER_LOST} so the supervisor can restart this worker")


def _exit(why: str) -> None:
    log.error("%s", why)
    logging.shutdown()
    os._exit(EXIT_BROKER_LOST)     # at-least-once: uncommitted work is redelivered
