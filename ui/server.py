"""`loopline ui`: the page's aiohttp server — the HTML shell, the vendored assets, a JSON API.

    GET /                               the page (server-rendered shell; ui/static/app.js draws it)
    GET /static/<file>                  vendored JS and CSS (no CDN, no build step)
    GET /api/models                     [{"name", "champion", "alias", "rollout", "events"}]
    GET /api/events?model=&type=&limit= the timeline's events, newest last (type: lanes or types, comma list)
    GET /api/stream?model=              text/event-stream: each new event, live from the bus
    GET /api/events/<id>                the event, what caused it, what it caused, decisions about it
    GET /api/lineage/<model>/<version>  `loopline lineage`'s chain plus links (MLflow, drift reports)
    GET /api/champions/<model>          champion history
    GET /api/experiments/<model>        each rollout's arms over time
    GET /api/deadletters                dead letters with reasons and the replay command
    GET /livez, /readyz                 the process answers; the history is read and the bus followed

Read-only: there is no POST (or PUT, DELETE) route at all; replaying a dead letter or any
operator action stays a signed CLI command, which the page shows and never runs.

Threat model, if the page is exposed beyond localhost (it binds 127.0.0.1 by default):
- What it shows: model names and versions; every event's payload, including operator names and
  their free-text reasons, policy reasons, data URIs and dataset versions, run names and links;
  dead letters' provenance (topic, partition, offset, model) and refusal reasons. It does not
  serve a dead letter's raw bytes (a refused record may hold anything a producer sent: the CLI
  shows them to whoever holds the broker's credentials). No secrets travel on the topics
  (operator signatures are verifiable, not reusable: a replayed signed command is refused).
- Who may look: anyone who can reach the port sees all of the above for every model. Put it
  behind the cluster's authenticating proxy (oauth2-proxy, an ingress with SSO) and a
  NetworkPolicy; it has no login of its own and no write path to protect.
- The page itself: every value from the bus is inserted as text (never as HTML), and a
  Content-Security-Policy allows only this origin's scripts and styles, so an event payload
  cannot run script in a viewer's browser. The API sends no CORS headers (same origin only).
"""

from __future__ import annotations

import asyncio
import html
import logging
import threading
from pathlib import Path
from typing import Any, Mapping

import msgspec
from aiohttp import web

from ui import views
from ui.store import LANES, EventStore, Item

log = logging.getLogger("loopline.ui")
STATIC = Path(__file__).resolve().parent / "static"
DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8090
MAX_LIMIT = 100_000
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; "
                               "script-src 'self'; connect-src 'self'; frame-ancestors 'none'; "
                               "base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
HEARTBEAT_SECONDS = 15.0
STREAM_QUEUE = 5000                  # events waiting for one slow viewer before it is cut off


class Reader:
    """What is read on request; the bench's in-process page has none (empty answers)."""

    def dead_letters(self) -> list[dict[str, Any]]:
        return []

    def experiment_states(self, model: str) -> list:
        return []

    def lineage(self, model: str, version: str, items: list[Item]) -> dict[str, Any] | None:
        return None


class BusReader(Reader):
    def __init__(self, settings, mlflow_ui: str | None):
        self.settings, self.mlflow_ui = settings, mlflow_ui

    def dead_letters(self):
        from ui import bus
        return bus.dead_letters(self.settings)

    def experiment_states(self, model):
        from ui import bus
        return bus.experiment_states(self.settings, model)

    def lineage(self, model, version, items):
        from ui import bus
        return bus.lineage(self.settings, model, version, items, self.mlflow_ui)


def json_bytes(value: Any) -> bytes:
    """The JSON of the API's replies (as `web.json_response(body=...)`: a bytes body keeps the content type a
    plain "application/json", as serving's replies) and of the live stream. msgspec: 10,000 timeline rows
    encode in ~20 ms, where json.dumps takes ~160 ms (bench.ui); str() for what JSON has no type for."""
    return msgspec.json.encode(value, enc_hook=str)


@web.middleware
async def security_headers(request: web.Request, handler):
    response = await handler(request)
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


class Page:
    def __init__(self, store: EventStore, reader: Reader, aliases: Mapping[str, str], title: str = "loopline"):
        self.store, self.reader, self.aliases, self.title = store, reader, dict(aliases), title

    # -- the shell ----------------------------------------------------------------------------

    async def index(self, _request: web.Request) -> web.Response:
        models = sorted(set(self.aliases) | self.store.models())
        options = "".join(f'<option value="{html.escape(m)}">{html.escape(m)}</option>' for m in models)
        lanes = "".join(f'<label class="lane-filter"><input type="checkbox" name="lane" value="{lane}" checked>'
                        f"{lane}</label>" for lane in LANES)
        body = SHELL.format(title=html.escape(self.title), options=options, lanes=lanes,
                            lane_list=html.escape(",".join(LANES)), count=len(self.store.items))
        return web.Response(text=body, content_type="text/html")

    # -- JSON ---------------------------------------------------------------------------------

    async def models(self, _request: web.Request) -> web.Response:
        return web.json_response(body=json_bytes(views.models_view(self.store, self.aliases)))

    async def events(self, request: web.Request) -> web.Response:
        q = request.query
        try:
            limit = min(int(q.get("limit", 5000)), MAX_LIMIT)
        except ValueError:
            return web.json_response(body=json_bytes({"error": "limit must be an integer"}), status=400)
        events = views.events_view(self.store, q.get("model") or None, q.get("type") or None, limit)
        return web.json_response(body=json_bytes(events))

    async def event(self, request: web.Request) -> web.Response:
        found = views.detail(self.store, request.match_info["id"])
        if not found:
            return web.json_response(body=json_bytes({"error": "no such event (yet, or any more)"}), status=404)
        return web.json_response(body=json_bytes(found))

    async def lineage(self, request: web.Request) -> web.Response:
        model, version = request.match_info["model"], request.match_info["version"]
        items = self.store.typed(model)
        chain = await asyncio.to_thread(self.reader.lineage, model, version, items)
        if chain is None:
            return web.json_response(body=json_bytes({"error": f"{model} has no version {version}"}), status=404)
        return web.json_response(body=json_bytes(chain))

    async def champions(self, request: web.Request) -> web.Response:
        model = request.match_info["model"]
        history = views.champion_history(self.store.typed(model), model, self.aliases.get(model, "champion"))
        return web.json_response(body=json_bytes(history))

    async def experiments(self, request: web.Request) -> web.Response:
        states = await asyncio.to_thread(self.reader.experiment_states, request.match_info["model"])
        return web.json_response(body=json_bytes(views.experiment_series(states)))

    async def deadletters(self, _request: web.Request) -> web.Response:
        return web.json_response(body=json_bytes(await asyncio.to_thread(self.reader.dead_letters)))

    async def livez(self, _request: web.Request) -> web.Response:
        return web.json_response(body=json_bytes({"ok": True}))

    async def readyz(self, _request: web.Request) -> web.Response:
        ready = self.store.ready
        return web.json_response(body=json_bytes({"ready": ready, "events": len(self.store.items)}),
                                 status=200 if ready else 503)

    # -- live ---------------------------------------------------------------------------------

    async def stream(self, request: web.Request) -> web.StreamResponse:
        model = request.query.get("model") or None
        queue: asyncio.Queue[Item] = asyncio.Queue(STREAM_QUEUE)
        cut = asyncio.Event()

        def listener(item: Item) -> None:
            if model and item.event.subject != model:
                return
            try:
                queue.put_nowait(item)
            except asyncio.QueueFull:        # a viewer this far behind reloads (EventSource retries)
                self.store.listeners.discard(listener)
                cut.set()

        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                               "X-Accel-Buffering": "no"})
        await response.prepare(request)
        await response.write(b"retry: 2000\n: connected\n\n")
        self.store.listeners.add(listener)
        try:
            while not (cut.is_set() and queue.empty()):
                try:
                    item = await asyncio.wait_for(queue.get(), HEARTBEAT_SECONDS)
                except asyncio.TimeoutError:
                    await response.write(b": ping\n\n")
                    continue
                await response.write(b"data: " + json_bytes(item.to_json()) + b"\n\n")
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.store.listeners.discard(listener)
        return response


def make_app(store: EventStore, reader: Reader | None = None, aliases: Mapping[str, str] | None = None,
             title: str = "loopline") -> web.Application:
    page = Page(store, reader or Reader(), aliases or {}, title)
    app = web.Application(middlewares=[security_headers])
    app.add_routes([
        web.get("/", page.index),
        web.get("/livez", page.livez), web.get("/readyz", page.readyz),
        web.get("/api/models", page.models),
        web.get("/api/events", page.events),
        web.get("/api/events/{id}", page.event),
        web.get("/api/stream", page.stream),
        web.get("/api/lineage/{model}/{version}", page.lineage),
        web.get("/api/champions/{model}", page.champions),
        web.get("/api/experiments/{model}", page.experiments),
        web.get("/api/deadletters", page.deadletters),
        web.static("/static", STATIC, show_index=False, follow_symlinks=False),
    ])
    return app


def serve(settings, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, mlflow_ui: str | None = None) -> None:
    """Read the history, follow the bus, serve until interrupted."""
    from loopline import config
    from ui import bus

    aliases = {}
    if settings.config.exists():
        aliases = {name: m.alias for name, m in config.load(settings.config).items()}
    if mlflow_ui is None and settings.tracking_uri.startswith(("http://", "https://")):
        mlflow_ui = settings.tracking_uri
    store = EventStore()
    app = make_app(store, BusReader(settings, mlflow_ui), aliases, title=f"loopline · {settings.topics.prefix}")
    stop = threading.Event()

    async def start_following(app: web.Application) -> None:
        topics = bus.timeline_topics(settings)
        loop = asyncio.get_running_loop()

        async def load() -> None:
            items, positions = await asyncio.to_thread(bus.read_history, settings, topics)
            store.extend(items)
            store.ready = True
            log.info("ui: %d events read from %d topics; following", len(items), len(topics))
            bus.Follower(settings, topics, positions, lambda item: loop.call_soon_threadsafe(store.add, item),
                         stop).start()
            await asyncio.to_thread(_warm)     # MLflow's import takes seconds: not on the first click


        app["loader"] = loop.create_task(load())

    async def stop_following(_app: web.Application) -> None:
        stop.set()

    app.on_startup.append(start_following)
    app.on_shutdown.append(stop_following)
    print(f"loopline ui: http://{host}:{port}/ (read-only; topics {settings.topics.prefix}.*, "
          f"MLflow {settings.tracking_uri})", flush=True)
    web.run_app(app, host=host, port=port, print=None, access_log=None, shutdown_timeout=2.0)


def _warm() -> None:
    import mlflow  # noqa: F401

    import loopline.commands.lineage  # noqa: F401


SHELL = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/static/app.css">
<script src="/static/app.js" defer></script>
</head>
<body data-lanes="{lane_list}">
<header>
  <h1>{title}</h1>
  <nav>
    <a href="#timeline" data-view="timeline">Timeline</a>
    <a href="#lineage" data-view="lineage">Lineage</a>
    <a href="#champions" data-view="champions">Champions &amp; rollouts</a>
    <a href="#deadletters" data-view="deadletters">Dead letters</a>
  </nav>
  <span class="readonly">read-only</span>
</header>
<main>
<section id="view-timeline" class="view">
  <form id="filters" class="filters">
    <label>model <select id="model" name="model"><option value="">all models</option>{options}</select></label>
    <span class="lanes">{lanes}</span>
    <label>type <input id="type" name="type" placeholder="e.g. training.failed" size="18"></label>
    <span id="live" class="live">connecting…</span>
    <span id="count" class="count">{count} events</span>
  </form>
  <div class="timeline-wrap"><div id="timeline" class="timeline"></div>
  <aside id="panel" class="panel" hidden></aside></div>
  <p class="hint">Click a mark: what caused it, what it caused, and why (not).</p>
</section>
<section id="view-lineage" class="view" hidden>
  <form id="lineage-form" class="filters">
    <label>model <select id="lineage-model">{options}</select></label>
    <label>version <select id="lineage-version"></select></label>
  </form>
  <div id="lineage" class="lineage"></div>
</section>
<section id="view-champions" class="view" hidden>
  <form class="filters"><label>model <select id="champions-model">{options}</select></label></form>
  <div id="champions"></div>
  <div id="experiments"></div>
</section>
<section id="view-deadletters" class="view" hidden>
  <p class="hint">Replay stays a signed CLI action: run the command shown, where the broker's credentials are.</p>
  <div id="deadletters"></div>
</section>
</main>
</body>
</html>
"""


class Background:
    """`with Background(app) as url:` the app served from a thread of this process (the bench's
    in-process page, fed with injected events: no broker needed)."""

    def __init__(self, app: web.Application, host: str = DEFAULT_HOST, port: int = 0):
        self.app, self.host, self.port = app, host, port
        self.loop: asyncio.AbstractEventLoop | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ui-background", daemon=True)

    def _run(self) -> None:
        self.loop = asyncio.new_event_loop()
        runner = web.AppRunner(self.app, access_log=None)
        self.loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, self.host, self.port, shutdown_timeout=1.0)
        self.loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]
        self._started.set()
        try:
            self.loop.run_forever()
        finally:
            self.loop.run_until_complete(runner.cleanup())
            self.loop.close()

    def __enter__(self) -> str:
        self._thread.start()
        if not self._started.wait(30):
            raise RuntimeError("the in-process page did not start")
        return f"http://{self.host}:{self.port}"

    def call(self, fn, *args) -> None:
        """Run `fn(*args)` on the page's loop (e.g. `store.add`: a live event)."""
        self.loop.call_soon_threadsafe(fn, *args)

    def __exit__(self, *exc) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
