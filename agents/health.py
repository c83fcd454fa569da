"""Health endpoints of the Faust worker, for Kubernetes' probes (and docker-compose's healthcheck).

    GET /livez   200 while the event loop answers HTTP: a wedged loop fails it and gets restarted
    GET /readyz  200 once the consumer has joined its group and received an assignment (possibly
                 of no partition, when there are more workers than partitions), and while no
                 rebalance is in progress; 503 before that or during one

Readiness deliberately does not depend on Kafka being reachable right now: a broker blip
must not take every worker out of the Service at once (nothing routes traffic to it anyway);
it says "this worker has started and is part of the group".
"""

from __future__ import annotations

import faust


def install(app: faust.App) -> None:
    state = {"assigned": False}

    @app.on_partitions_assigned.connect
    async def _assigned(sender, assigned, **kwargs):  # noqa: ARG001 - signal signature
        state["assigned"] = True

    @app.page("/livez")
    async def livez(self, request):
        return self.json({"ok": True})

    @app.page("/readyz")
    async def readyz(self, request):
        ready = state["assigned"] and not app.rebalancing
        return self.json({"ready": ready, "assigned": state["assigned"], "rebalancing": app.rebalancing},
                         status=200 if ready else 503)
