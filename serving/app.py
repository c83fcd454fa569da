"""The HTTP side of a serving replica (aiohttp): routes, request checks, answers.

    GET  /livez  (/healthz)         the process answers
    GET  /readyz                    200 when the serving set is loaded; 503 names what is missing
    GET  /metrics                   Prometheus text (serving.metrics)
    GET  /models                    {NAME: {"version", "alias", "loaded", "experiment", ...}}
    POST /models/NAME/predict       {"rows": [{...}, ...]}  (header X-Loopline-Unit: a unit key)
                                    -> {"model", "version", "predictions", "prediction_ids"
                                        [, "arm", "experiment"]}
    POST /models/NAME/feedback      {"prediction_id", "label"} or {"feedback": [...]} -> 202 {"accepted"}

A request is routed (serving.routing) by the model's live experiment, if any, and answered by
that version's micro-batcher. Feedback is verified from the signed id alone (serving.ids) and
published as `FeedbackReceived`; a batch is all or nothing, the refusal names the bad item.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time

import msgspec
from aiohttp import web
# Every JSON reply is aiohttp's web.json_response given msgspec's bytes: faster than its json.dumps,
# and a bytes body keeps the content type a plain "application/json" (ui/server.py does the same).
from msgspec.json import encode as json_bytes

from serving import ids
from serving.batcher import PredictError
from serving.metrics import CONTENT_TYPE, ServingMetrics
from serving.predlog import PredictionLog
from serving.routing import route
from serving.store import ModelStore
from streams.events import FeedbackReceived

log = logging.getLogger("loopline.serving")
MAX_BODY = 10_000_000
UNIT_HEADER = "X-Loopline-Unit"
LABEL_TYPES = (bool, int, float, str)


class Refused(Exception):
    def __init__(self, status: int, reason: str, outcome: str = "bad_request"):
        super().__init__(reason)
        self.status, self.reason, self.outcome = status, reason, outcome


class Handlers:
    def __init__(self, store: ModelStore, plog: PredictionLog | None, key: bytes,
                 metrics: ServingMetrics, rng: random.Random | None = None):
        self.store, self.plog, self.key, self.metrics = store, plog, key, metrics
        self.rng = rng or random.Random()
        self.background: set[asyncio.Task] = set()

    async def livez(self, _request: web.Request) -> web.Response:
        return web.json_response(body=json_bytes({"ok": True}))

    async def readyz(self, _request: web.Request) -> web.Response:
        ready, missing = self.store.readiness()
        return web.json_response(body=json_bytes({"ready": ready, "missing": missing}), status=200 if ready else 503)

    async def metrics_text(self, _request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    async def models(self, _request: web.Request) -> web.Response:
        return web.json_response(body=json_bytes(self.store.describe()))

    # -- predict ------------------------------------------------------------------------------

    async def predict(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        name = request.match_info["name"]
        state = self.store.admitted(name)
        if state is None:
            return web.json_response(body=json_bytes({"error": f"model {name!r} is not served here"}), status=404)
        try:
            rows = await _rows(request)
        except Refused as refused:
            self.metrics.error(name, "bad_request")
            return web.json_response(body=json_bytes({"error": refused.reason}), status=refused.status)
        experiment = state.experiment
        chosen = route(experiment, state.champion, _unit(request, experiment, rows), self.rng)
        loaded = self.store.loaded(name, chosen.version) if chosen else None
        if chosen is not None and loaded is None:     # an arm still loading: the champion answers
            loaded = self.store.loaded(name, state.champion)
        if loaded is None:
            self.metrics.error(name, "not_loaded")
            return web.json_response(body=json_bytes({"error": f"model {name!r} has no version loaded yet"}),
                                     status=503)
        try:
            predictions = await loaded.batcher.predict(rows)
        except PredictError as exc:
            self.metrics.error(name, "predict")
            return web.json_response(body=json_bytes({"error": f"prediction failed: {exc}"}), status=422)
        version, routed_by = loaded.version, chosen.experiment
        pids = ids.sign_many(self.key, name, version, routed_by, predictions)
        if self.plog is not None:
            self.plog.log(name, version, rows, predictions, pids)
        answer = {"model": name, "version": version, "predictions": predictions, "prediction_ids": pids}
        arm = "champion"
        if routed_by is not None:
            arm = next((a.role for a in experiment.arms if a.version == version), "champion")
            answer["arm"], answer["experiment"] = arm, routed_by
            if chosen.shadow is not None and chosen.shadow != version:
                self._shadow(name, routed_by, version, chosen.shadow, rows, pids, predictions)
        self.metrics.answered(name, version, arm, time.perf_counter() - started)
        return web.json_response(body=json_bytes(answer))

    def _shadow(self, name: str, experiment: str, champion: str, challenger: str, rows: list[dict],
                pids: list[str], answers: list) -> None:
        """The challenger predicts the same rows after the answer is on its way; one pair published."""
        loaded = self.store.loaded(name, challenger)
        if loaded is None or self.plog is None:
            self.metrics.error(name, "shadow")
            return

        async def score() -> None:
            try:
                theirs = await loaded.batcher.predict(rows)
            except PredictError as exc:
                self.metrics.error(name, "shadow")
                log.warning("serving: shadow v%s of %s failed: %s", challenger, name, exc)
                return
            self.plog.shadow(name, experiment, champion, challenger, pids, answers, theirs)

        task = asyncio.get_running_loop().create_task(score())
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    # -- feedback -----------------------------------------------------------------------------

    async def feedback(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if self.store.admitted(name) is None:
            return web.json_response(body=json_bytes({"error": f"model {name!r} is not served here"}), status=404)
        if self.plog is None:
            return web.json_response(body=json_bytes({"error": "feedback is not enabled on this endpoint"}), status=404)
        try:
            events = self._verified(name, await _feedback_items(request))
        except Refused as refused:
            self.metrics.feedback.labels(name, refused.outcome).inc()
            return web.json_response(body=json_bytes({"error": refused.reason}), status=refused.status)
        try:
            await asyncio.to_thread(self.plog.feedback, name, events)
        except Exception as exc:  # noqa: BLE001 - the broker did not take it: the caller retries
            self.metrics.error(name, "publish")
            return web.json_response(body=json_bytes({"error": f"feedback not published, retry: {exc}"}), status=503)
        self.metrics.feedback.labels(name, "accepted").inc(len(events))
        return web.json_response(body=json_bytes({"accepted": len(events)}), status=202)

    def _verified(self, model: str, items: list[tuple[str, dict]]) -> list[FeedbackReceived]:
        events = []
        for where, item in items:
            try:
                fields = ids.verify(self.key, item["prediction_id"])
            except ids.MalformedId as exc:
                raise Refused(400, f"{where}malformed prediction id: {exc}", "malformed") from None
            except ids.ForgedId as exc:
                raise Refused(403, f"{where}forged prediction id: {exc}", "forged") from None
            if fields["m"] != model:
                raise Refused(400, f"{where}the prediction id is of model {fields['m']!r}, not {model!r}",
                              "mismatch")
            prediction = fields.get("p")
            events.append(FeedbackReceived(
                prediction_id=item["prediction_id"], model_version=fields["v"], label=item["label"],
                prediction=prediction if isinstance(prediction, LABEL_TYPES) else None,
                predicted_at=float(fields["t"]), experiment=fields.get("e")))
        return events


async def _body(request: web.Request):
    try:
        return msgspec.json.decode(await request.read())
    except web.HTTPRequestEntityTooLarge:
        raise Refused(413, f"body over {MAX_BODY} bytes") from None
    except msgspec.DecodeError as exc:
        raise Refused(400, f"bad request: body is not JSON: {exc}") from None


async def _rows(request: web.Request) -> list[dict]:
    body = await _body(request)
    rows = body.get("rows") if isinstance(body, dict) else None
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
        raise Refused(400, "bad request: expected {'rows': [{column: value, ...}, ...]} (at least one row)")
    return rows


async def _feedback_items(request: web.Request) -> list[tuple[str, dict]]:
    """(where, item) pairs; `where` names the item in a refusal ("feedback[3]: ")."""
    body = await _body(request)
    batch = isinstance(body, dict) and "feedback" in body
    items = body["feedback"] if batch else [body]
    if not isinstance(items, list) or not items:
        raise Refused(400, "bad request: expected {'prediction_id', 'label'} or {'feedback': [...]}")
    checked = []
    for index, item in enumerate(items):
        where = f"feedback[{index}]: " if batch else ""
        if not isinstance(item, dict) or "prediction_id" not in item or "label" not in item:
            raise Refused(400, f"{where}bad request: expected {{'prediction_id', 'label'}}")
        if not isinstance(item["label"], LABEL_TYPES):
            raise Refused(400, f"{where}bad request: 'label' must be a number, string or boolean")
        checked.append((where, item))
    return checked


def _unit(request: web.Request, experiment, rows: list[dict]) -> str | None:
    """The unit a sticky split hashes: the X-Loopline-Unit header, else the experiment's
    `unit_key` as a header or as a field of the first row."""
    unit = request.headers.get(UNIT_HEADER)
    if unit is None and experiment is not None and experiment.unit_key:
        unit = request.headers.get(experiment.unit_key)
        if unit is None and experiment.unit_key in rows[0]:
            unit = rows[0][experiment.unit_key]
    return None if unit is None else str(unit)


def make_app(store: ModelStore, plog: PredictionLog | None, key: bytes, metrics: ServingMetrics,
             rng: random.Random | None = None) -> web.Application:
    handlers = Handlers(store, plog, key, metrics, rng)
    app = web.Application(client_max_size=MAX_BODY)
    app.add_routes([
        web.get("/livez", handlers.livez), web.get("/healthz", handlers.livez),
        web.get("/readyz", handlers.readyz), web.get("/metrics", handlers.metrics_text),
        web.get("/models", handlers.models),
        web.post("/models/{name}/predict", handlers.predict),
        web.post("/models/{name}/feedback", handlers.feedback),
    ])
    app["handlers"] = handlers
    return app
