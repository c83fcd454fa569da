"""The page: a read-only web view of what loopline decided, and why (`loopline ui`).

Its own process (and its own small Deployment): it reads the topics and MLflow, nothing else,
and never writes to either. `ui.server` is the aiohttp app and the threat model; `ui.store`
holds the events read from the bus (history, then live); `ui.views` turns them into the
page's JSON (pure functions); `ui.static/` is the vendored page (plain JS, CSS, SVG: no CDN,
no build step).
"""
