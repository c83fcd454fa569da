"""Waiting for Kafka at start-up: bounded back-off, honest health, a clear exit.

A worker started before its broker must neither hang nor crash-loop with a traceback: it probes
the broker with growing pauses (capped), answers its health port meanwhile (`/livez` 200,
`/readyz` 503 with the reason, so an orchestrator sees "starting, not ready"), logs one clear
line per attempt, and exits with code 3 when the configured wait is over. A broker that answers
but refuses our password or whose certificate we refuse (`KafkaRefused`) is not waited for:
no retry fixes a configuration, so that is one line and exit code 3 at once.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from streams.probe import probe
from streams.security import KafkaSecurity

log = logging.getLogger("loopline.startup")
EXIT_BROKER_UNREACHABLE = 3


class BrokerUnreachable(RuntimeError):
    pass


class StartupHealth:
    """A stand-in health endpoint on the worker's web port until Faust's own server takes over."""

    def __init__(self, host: str, port: int):
        self.reason = "starting"
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                # By hand: the standard library's server has no JSON reply, and this one runs in a thread
                # before Faust's aiohttp server exists (it is the only JSON reply on http.server we ship).
                status, body = (200, {"ok": True}) if self.path == "/livez" else (
                    503, {"ready": False, "reason": owner.reason})
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "StartupHealth":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()          # free the port for Faust's web server


def wait_for_broker(bootstrap: str, wait_seconds: float, health: StartupHealth | None = None,
                    first_delay: float = 0.5, max_delay: float = 5.0,
                    security: KafkaSecurity | None = None) -> None:
    """Return once Kafka answers (and lets us in); BrokerUnreachable after `wait_seconds`;
    KafkaRefused at once when it refuses the credentials or we refuse its certificate."""
    deadline = time.monotonic() + wait_seconds
    delay, attempt = first_delay, 1
    while (reason := probe(bootstrap, security=security)) is not None:
        if health:
            health.reason = f"waiting for Kafka at {bootstrap}: {reason}"
        left = deadline - time.monotonic()
        if left <= 0:
            raise BrokerUnreachable(f"Kafka at {bootstrap} was not reachable for {wait_seconds:.0f}s "
                                    f"({attempt} attempts); last error: {reason}")
        pause = min(delay, max_delay, left)
        log.error("Kafka at %s is not reachable (attempt %d: %s); retrying in %.1fs, giving up in %.0fs",
                  bootstrap, attempt, reason, pause, left)
        time.sleep(pause)
        delay, attempt = delay * 2, attempt + 1
