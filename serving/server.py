"""A small local serving endpoint: `models:/NAME@champion`, reloaded on deployment events.

It loads the champion of every configured model at start, then follows the deployment topic
and swaps in the exact version each Deployment event names (the version, not the alias, so two
quick deployments cannot race it into serving a stale model). Every answer says which version
produced it, which is how the demo and the tests see a promotion land.

    GET  /healthz                      -> {"ok": true}
    GET  /models                       -> {"NAME": {"version": "3", "loaded_at": ...}}
    POST /models/NAME/predict          {"rows": [{"f0": 1.0, ...}, ...]}
                                       -> {"version", "predictions", "prediction_ids"}
    POST /models/NAME/feedback         {"prediction_id": "...", "label": 1}
                                       or {"feedback": [{"prediction_id", "label"}, ...]} -> 202

Predictions and feedback are published to the prediction and feedback topics
(`serving.predlog`) for the drift monitor and the online metric windows.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from streams.codec import DecodeError, decode
from streams.events import DeploymentDone, DeploymentRolledBack
from streams.security import KafkaSecurity
from streams.topics import Topics

log = logging.getLogger("loopline.serving")
MAX_BODY = 10_000_000


class ModelStore:
    """The loaded models, swapped atomically under a lock."""

    def __init__(self, tracking_uri: str, alias: str = "champion"):
        import mlflow

        self.mlflow = mlflow
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
        self.alias = alias
        self.lock = threading.Lock()
        self.models: dict[str, dict] = {}

    def load(self, name: str, version: str | None = None) -> bool:
        uri = f"models:/{name}/{version}" if version else f"models:/{name}@{self.alias}"
        try:
            model = self.mlflow.pyfunc.load_model(uri)
            if version is None:
                version = self.mlflow.MlflowClient().get_model_version_by_alias(name, self.alias).version
        except Exception as exc:  # noqa: BLE001 - no champion yet is normal; say why and go on
            log.info("serving: %s not loaded from %s: %s", name, uri, str(exc).splitlines()[0])
            return False
        with self.lock:
            self.models[name] = {"model": model, "version": str(version), "loaded_at": time.time()}
        log.info("serving: %s v%s loaded", name, version)
        return True

    def predict(self, name: str, rows: list[dict]) -> tuple[str, list]:
        import pandas as pd

        with self.lock:
            entry = self.models.get(name)
        if entry is None:
            raise KeyError(name)
        predictions = entry["model"].predict(pd.DataFrame(rows))
        return entry["version"], [p.item() if hasattr(p, "item") else p for p in predictions]

    def describe(self) -> dict:
        with self.lock:
            return {n: {"version": e["version"], "loaded_at": e["loaded_at"]} for n, e in self.models.items()}


def follow_deployments(store: ModelStore, bootstrap: str, topics: Topics, stop: threading.Event,
                       **config) -> None:
    """Reload a model whenever a deployment event names a new version for it."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(topics.deployment, bootstrap_servers=bootstrap, group_id=None,
                             auto_offset_reset="latest", fetch_max_wait_ms=50, **config)
    try:
        while not stop.is_set():
            for records in consumer.poll(timeout_ms=200).values():
                for record in records:
                    try:
                        data = decode(record.value, record.headers).data
                    except DecodeError:
                        continue
                    if isinstance(data, (DeploymentDone, DeploymentRolledBack)):
                        store.load(decode(record.value, record.headers).event.subject, data.version)
    finally:
        consumer.close()


def make_handler(store: ModelStore, plog=None):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt, *args):  # quiet: the demo's screen is for the loop
            log.debug(fmt, *args)

        def _send(self, status: int, body: dict) -> None:
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self):
            if self.path == "/healthz":
                return self._send(200, {"ok": True})
            if self.path == "/models":
                return self._send(200, store.describe())
            return self._send(404, {"error": f"no route {self.path}"})

        def do_POST(self):
            parts = self.path.strip("/").split("/")
            if len(parts) != 3 or parts[0] != "models" or parts[2] not in ("predict", "feedback"):
                return self._send(404, {"error": f"no route {self.path}"})
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                return self._send(413, {"error": f"body over {MAX_BODY} bytes"})
            if parts[2] == "feedback":
                return self._feedback(parts[1], length)
            try:
                rows = json.loads(self.rfile.read(length))["rows"]
                if not isinstance(rows, list):
                    raise ValueError("'rows' must be a list of objects")
                version, predictions = store.predict(parts[1], rows)
            except KeyError:
                return self._send(404, {"error": f"model {parts[1]!r} has no champion loaded"})
            except (ValueError, TypeError) as exc:
                return self._send(400, {"error": f"bad request: {exc}"})
            except Exception as exc:  # noqa: BLE001 - a model that fails on this input
                return self._send(422, {"error": f"prediction failed: {exc}"})
            answer = {"model": parts[1], "version": version, "predictions": predictions}
            if plog is not None:
                answer["prediction_ids"] = plog.log(parts[1], version, rows, predictions)
            return self._send(200, answer)

        def _feedback(self, model: str, length: int):
            if plog is None:
                return self._send(404, {"error": "feedback is not enabled on this endpoint"})
            try:
                body = json.loads(self.rfile.read(length))
                items = body["feedback"] if isinstance(body, dict) and "feedback" in body else [body]
                if not isinstance(items, list) or not all(
                        isinstance(i, dict) and "prediction_id" in i and "label" in i for i in items):
                    raise ValueError("expected {'prediction_id', 'label'} or {'feedback': [...]}")
                accepted = [plog.feedback(model, str(i["prediction_id"]), i["label"]).prediction_id
                            for i in items]
            except KeyError as exc:
                return self._send(404, {"error": str(exc)})
            except (ValueError, TypeError) as exc:
                return self._send(400, {"error": f"bad request: {exc}"})
            return self._send(202, {"accepted": len(accepted)})

    return Handler


def serve(tracking_uri: str, bootstrap: str, topics: Topics, models: list[str], host: str = "127.0.0.1",
          port: int = 8080, alias: str = "champion", security: KafkaSecurity | None = None) -> None:
    security = security or KafkaSecurity()
    store = ModelStore(tracking_uri, alias)
    stop = threading.Event()
    follower = threading.Thread(target=follow_deployments, args=(store, bootstrap, topics, stop),
                                kwargs=security.kafka_python(), daemon=True, name="deployments")
    follower.start()                 # follow first, then load: no deployment falls in between
    for name in models:
        store.load(name)
    from serving.predlog import PredictionLog

    plog = PredictionLog(bootstrap, topics, **security.kafka_python())
    server = ThreadingHTTPServer((host, port), make_handler(store, plog))
    log.info("serving on http://%s:%d", host, port)
    try:
        server.serve_forever()
    finally:
        stop.set()
        server.server_close()
        plog.close()
