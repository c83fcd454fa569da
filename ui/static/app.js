/* loopline ui: the page, in plain JavaScript (no framework, no build step, nothing from a CDN).
 *
 * Views: timeline (swimlanes, live over /api/stream), the event panel (why / why not), a
 * version's lineage graph, champion history and rollout charts, dead letters.
 *
 * Fast with many events: a lane is ONE SVG <path> whose subpaths are the marks (10,000 events
 * are 10 DOM nodes, not 10,000), and clicks are hit-tested against the sorted lane arrays from a
 * single listener on the SVG. Every value from the bus is inserted as text, never as HTML.
 * When the timeline is first drawn the page sets performance.mark("timeline-drawn") and
 * <html data-drawn>, which the browser tests and bench/ui.py wait for.
 */
"use strict";
(function () {
  const LANES = document.body.dataset.lanes.split(",");
  const LANE_H = 30, GUTTER = 92, PAD_R = 18, TOP = 4, AXIS_H = 24, MARK = LANE_H - 12, HIT_PX = 6;
  const SVGNS = "http://www.w3.org/2000/svg";
  const $ = (id) => document.getElementById(id);

  // --- DOM helpers (text only) -----------------------------------------------------------------
  function h(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v; else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      node.appendChild(typeof c === "string" || typeof c === "number" ? document.createTextNode(String(c)) : c);
    }
    return node;
  }
  function s(tag, attrs, text) {
    const node = document.createElementNS(SVGNS, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    return node;
  }
  function safeHref(url) {   // only web links become links; runs:/ and file: URIs stay text
    return typeof url === "string" && /^https?:\/\//.test(url) ? url : null;
  }
  async function getJSON(url) {
    const r = await fetch(url, { headers: { Accept: "application/json" } });
    const body = await r.json();
    if (!r.ok) throw new Error(body.error || r.statusText);
    return body;
  }
  const shortType = (t) => (t || "").replace(/^io\.loopline\./, "");
  const fmtTime = (ts) => new Date(ts * 1000).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
  const hhmmss = (ts) => new Date(ts * 1000).toISOString().slice(11, 19);
  const enc = encodeURIComponent;

  // --- the timeline ----------------------------------------------------------------------------
  const T = { events: [], ids: new Set(), lanes: {}, t0: 0, t1: 1, width: 1000, svg: null, paths: {},
              model: "", enabled: new Set(LANES), type: "", source: null, selected: null, drawn: false,
              pending: false };

  function passes(e) {
    if (T.model && e.model !== T.model) return false;
    if (!T.enabled.has(e.lane)) return false;
    return !T.type || e.type.indexOf(T.type) >= 0;
  }
  const xOf = (ts) => GUTTER + (ts - T.t0) / (T.t1 - T.t0) * (T.width - GUTTER - PAD_R);
  const tsOf = (x) => T.t0 + (x - GUTTER) / (T.width - GUTTER - PAD_R) * (T.t1 - T.t0);
  const mark = (e, lane) => "M" + xOf(e.ts).toFixed(1) + " " + (TOP + lane * LANE_H + 6) + "v" + MARK;

  function draw() {
    const box = $("timeline");
    T.width = Math.max(box.clientWidth || 1000, 400);
    T.lanes = {};
    for (const lane of LANES) T.lanes[lane] = [];
    let lo = Infinity, hi = -Infinity;
    for (const e of T.events) {
      if (!passes(e) || !(e.lane in T.lanes)) continue;
      T.lanes[e.lane].push(e);
      if (e.ts < lo) lo = e.ts;
      if (e.ts > hi) hi = e.ts;
    }
    if (!isFinite(lo)) { lo = Date.now() / 1000 - 60; hi = lo + 60; }
    const span = Math.max(hi - lo, 10);
    T.t0 = lo - span * 0.02; T.t1 = hi + span * 0.04;
    const height = TOP + LANES.length * LANE_H + AXIS_H;
    // The scale is on the element, so a test (or a person's devtools) can find where a mark is.
    const svg = s("svg", { viewBox: `0 0 ${T.width} ${height}`, role: "img", id: "timeline-svg",
                           "aria-label": "events per lane over time", "data-t0": T.t0, "data-t1": T.t1,
                           "data-left": GUTTER, "data-right": T.width - PAD_R, "data-top": TOP,
                           "data-lane-height": LANE_H, "data-width": T.width });
    T.paths = {};
    LANES.forEach((lane, i) => {
      const y = TOP + i * LANE_H;
      svg.appendChild(s("rect", { class: "lane-bg" + (i % 2 ? " odd" : ""), x: 0, y, width: T.width, height: LANE_H }));
      const list = T.lanes[lane];
      const label = s("text", { class: "lane-label", x: 8, y: y + LANE_H / 2 + 4 }, `${lane} · ${list.length}`);
      svg.appendChild(label);
      list.sort((a, b) => a.ts - b.ts);
      const parts = new Array(list.length);
      for (let k = 0; k < list.length; k++) parts[k] = mark(list[k], i);
      const path = s("path", { class: "marks lane-" + lane, "data-lane": lane, "data-count": list.length,
                               d: parts.join("") || "M0 0" });
      T.paths[lane] = path;
      path.label = label;
      svg.appendChild(path);
    });
    const axis = s("g", { class: "axis" });
    const axisY = TOP + LANES.length * LANE_H;
    for (let k = 0; k <= 6; k++) {
      const ts = T.t0 + (T.t1 - T.t0) * k / 6, x = xOf(ts);
      axis.appendChild(s("line", { x1: x, x2: x, y1: TOP, y2: axisY }));
      axis.appendChild(s("text", { x: Math.min(x, T.width - 50), y: axisY + 16, "text-anchor": k ? "middle" : "start" },
                         hhmmss(ts)));
    }
    svg.appendChild(axis);
    T.selectedMark = s("circle", { class: "selected-mark", r: 7, cx: -20, cy: -20 });
    svg.appendChild(T.selectedMark);
    svg.addEventListener("click", onTimelineClick);
    svg.addEventListener("mousemove", onTimelineHover);
    svg.addEventListener("mouseleave", () => tooltip(null));
    box.replaceChildren(svg);
    T.svg = svg;
    if (T.selected) placeSelection(T.selected);
    $("count").textContent = `${T.events.length} events`;
    if (!T.drawn) {
      T.drawn = true;
      performance.mark("timeline-drawn");
      document.documentElement.dataset.drawn = String(T.events.length);
    }
  }

  function hit(evt) {
    const rect = T.svg.getBoundingClientRect();
    const x = (evt.clientX - rect.left) * (T.width / rect.width);
    const y = (evt.clientY - rect.top) * (T.width / rect.width);
    const laneIndex = Math.floor((y - TOP) / LANE_H);
    const list = T.lanes[LANES[laneIndex]];
    if (!list || !list.length) return null;
    const ts = tsOf(x);
    let lo = 0, hi = list.length - 1;
    while (lo < hi) { const mid = (lo + hi) >> 1; if (list[mid].ts < ts) lo = mid + 1; else hi = mid; }
    let best = null, bestPx = HIT_PX + 1;
    for (const k of [lo - 1, lo, lo + 1]) {
      if (k < 0 || k >= list.length) continue;
      const px = Math.abs(xOf(list[k].ts) - x);
      if (px < bestPx) { best = list[k]; bestPx = px; }
    }
    return best;
  }
  function onTimelineClick(evt) { const e = hit(evt); if (e) select(e.id); }
  function onTimelineHover(evt) {
    const e = hit(evt);
    tooltip(e ? `${shortType(e.type)} · ${e.model} · ${e.summary}` : null, evt);
  }
  let tip = null;
  function tooltip(text, evt) {
    if (!text) { if (tip) tip.hidden = true; return; }
    if (!tip) { tip = h("div", { class: "tooltip" }); $("timeline").appendChild(tip); }
    if (tip.parentNode !== $("timeline")) $("timeline").appendChild(tip);
    const rect = $("timeline").getBoundingClientRect();
    tip.textContent = text; tip.hidden = false;
    tip.style.left = Math.min(evt.clientX - rect.left + 12, rect.width - 300) + "px";
    tip.style.top = (evt.clientY - rect.top + 14) + "px";
  }

  function addLive(e) {
    if (T.ids.has(e.id)) return;
    T.ids.add(e.id);
    T.events.push(e);
    $("count").textContent = `${T.events.length} events`;
    if (!passes(e) || !T.paths[e.lane]) return;
    if (e.ts < T.t0 || e.ts > T.t1) { scheduleDraw(); return; }
    const lane = LANES.indexOf(e.lane), path = T.paths[e.lane];
    T.lanes[e.lane].push(e);
    const count = Number(path.getAttribute("data-count"));
    path.setAttribute("d", (count ? path.getAttribute("d") : "") + mark(e, lane));
    path.setAttribute("data-count", count + 1);
    path.label.textContent = `${e.lane} · ${count + 1}`;
  }
  function scheduleDraw() {
    if (T.pending) return;
    T.pending = true;
    setTimeout(() => { T.pending = false; draw(); }, 0);
  }

  async function loadTimeline() {
    const q = T.model ? `&model=${enc(T.model)}` : "";
    const events = await getJSON(`/api/events?limit=100000${q}`);
    T.events = events; T.ids = new Set(events.map((e) => e.id));
    draw();
    connect();
  }

  function connect() {
    if (T.source) T.source.close();
    const live = $("live");
    const source = new EventSource("/api/stream" + (T.model ? `?model=${enc(T.model)}` : ""));
    source.onopen = () => { live.textContent = "live"; live.classList.add("on"); };
    source.onerror = () => { live.textContent = "reconnecting…"; live.classList.remove("on"); };
    source.onmessage = (m) => addLive(JSON.parse(m.data));
    T.source = source;
  }

  // --- the event panel: why, and why not -------------------------------------------------------
  function placeSelection(id) {
    const e = T.events.find((x) => x.id === id);
    if (!e || !T.paths[e.lane] || !passes(e)) { T.selectedMark.setAttribute("cx", -20); return; }
    T.selectedMark.setAttribute("cx", xOf(e.ts));
    T.selectedMark.setAttribute("cy", TOP + LANES.indexOf(e.lane) * LANE_H + LANE_H / 2);
  }

  async function select(id) {
    T.selected = id;
    if (T.svg) placeSelection(id);
    const panel = $("panel");
    panel.hidden = false;
    if (T.svg && $("timeline").clientWidth !== T.width) draw();      // the panel took some width
    panel.replaceChildren(h("p", { class: "empty" }, "loading…"));
    let d;
    try { d = await getJSON(`/api/events/${enc(id)}`); } catch (err) {
      panel.replaceChildren(h("p", { class: "empty" }, String(err.message))); return;
    }
    if (T.selected !== id) return;
    panel.replaceChildren(...renderDetail(d));
    panel.dataset.event = id;
  }

  function eventRow(e) {
    return h("li", { "data-id": e.id, class: "lane-row" },
      h("span", { class: `badge lane lane-bg-${e.lane}` }, e.lane), " ",
      h("button", { class: "link", type: "button", "data-id": e.id }, shortType(e.type)), " ",
      e.summary || "", h("div", { class: "meta" }, `${e.model} · ${fmtTime(e.ts)}`));
  }

  function decisionRow(d) {
    return h("li", { class: "decision", "data-outcome": d.outcome || "" },
      h("span", { class: "badge" }, `${d.policy || "?"} · ${d.outcome || "?"}`), " ",
      h("span", { class: "reason" }, d.reason || "(no reason given)"),
      h("div", { class: "meta" }, `${fmtTime(d.ts)} · ${d.id}`));
  }

  function renderDetail(d) {
    const e = d.event, out = [];
    out.push(h("h2", {}, shortType(e.type)));
    out.push(h("div", { class: "meta" }, `${e.model} · ${fmtTime(e.ts)} · ${e.id}`));
    out.push(h("div", { class: "meta" }, `source ${e.source} · correlation ${e.correlationid}`));
    out.push(h("p", { class: "summary" }, e.summary || ""));
    // a data event's `version` is a dataset's; every other lane's names a model version
    const version = e.lane !== "data" && e.data && (e.data.version || e.data.model_version);
    if (version && e.model) {
      out.push(h("p", {}, h("a", { href: `#lineage/${enc(e.model)}/${enc(version)}` }, `lineage of v${version} →`)));
    }
    out.push(h("h3", {}, "Caused by"));
    out.push(d.causes.length ? h("ul", { class: "causes" }, d.causes.map(eventRow))
                             : h("p", { class: "empty" }, "nothing on the record: an outside event"));
    out.push(h("h3", {}, "Caused"));
    out.push(d.effects.length ? h("ul", { class: "effects" }, d.effects.map(eventRow))
                              : h("p", { class: "empty" }, "nothing (yet)"));
    if (d.signal && !d.started_training) {
      out.push(h("h3", {}, "Why not"));
      out.push(h("div", { class: "why-not" }, d.decisions.length
        ? h("ul", { class: "decisions" }, d.decisions.map(decisionRow))
        : h("p", { class: "empty" }, "no decision recorded about this signal (yet)")));
    } else if (d.decisions.length) {
      out.push(h("h3", {}, "Decisions"));
      out.push(h("ul", { class: "decisions" }, d.decisions.map(decisionRow)));
    }
    out.push(h("details", {}, h("summary", {}, "data"), h("pre", {}, JSON.stringify(e.data, null, 2))));
    return out;
  }

  // --- lineage graph ------------------------------------------------------------------------------
  const BOX_W = 168, BOX_H = 46, GAP_X = 44, GAP_Y = 14;

  function lineageColumns(c) {
    const ev = c.evaluation, links = c.links || {};
    const reports = {};
    for (const r of links.drift_reports || []) reports[r.event_id] = r.link || r.uri;
    return [
      ["trigger", (c.triggers || []).map((t) => ({ label: shortType(t.type) || "event", sub: t.summary || t.id,
                                                  href: reports[t.id], id: t.id }))],
      ["request", c.request ? [{ label: "training requested", sub: c.request.reason
        ? `${c.request.reason}, ${c.request.rows} rows` : (c.request.id || ""), id: c.request.id }] : []],
      ["run", c.run && c.run.run_id ? [{ label: `run ${c.training.run_name || ""}`, sub: c.run.run_id,
                                         href: links.mlflow || c.run.link }] : []],
      ["data", (c.data_versions || []).map((v) => ({ label: "data version", sub: v }))],
      ["evaluation", ev ? [{ label: ev.passed ? "evaluation: passed" : "evaluation: rejected",
        sub: Object.entries(ev.candidate_metrics || {}).map(([k, v]) => `${k}=${typeof v === "number" ? v.toFixed(3) : v}`)
          .join(", ") || (ev.reasons || []).join("; "), id: ev.id }] : []],
      ["promotion", c.promotion ? [{ label: "promoted", sub: c.promotion.champion_version
        ? `over v${c.promotion.champion_version}` : "first champion", id: c.promotion.id,
        href: links.model_version }] : []],
      ["rollout", (c.rollouts || []).map((r) => ({ label: `${r.strategy} rollout`,
        sub: r.analyses.length ? `${r.analyses[r.analyses.length - 1].verdict} → ${r.analyses[r.analyses.length - 1].action}`
                               : r.experiment, id: r.id }))],
      ["deployment", (c.deployments || []).map((d) => ({ label: "deployment", sub: d.summary || d.id, id: d.id }))],
    ];
  }

  function drawLineage(c) {
    const box = $("lineage");
    const cols = lineageColumns(c).filter(([, nodes]) => nodes.length);
    const rows = Math.max(1, ...cols.map(([, nodes]) => nodes.length));
    const width = cols.length * (BOX_W + GAP_X) + 20, height = rows * (BOX_H + GAP_Y) + 30;
    const svg = s("svg", { width, height, viewBox: `0 0 ${width} ${height}`, class: "lineage-graph",
                           role: "img", "aria-label": `lineage of ${c.model} v${c.version}` });
    const defs = s("defs");
    const marker = s("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 7,
                                 markerHeight: 7, orient: "auto-start-reverse" });
    marker.appendChild(s("path", { d: "M0 0L10 5L0 10z", fill: "#a0aec0" }));
    defs.appendChild(marker); svg.appendChild(defs);
    const pos = cols.map(([, nodes], i) => nodes.map((_, k) => ({
      x: 10 + i * (BOX_W + GAP_X), y: 20 + (height - 30 - nodes.length * (BOX_H + GAP_Y)) / 2 + k * (BOX_H + GAP_Y) })));
    for (let i = 0; i + 1 < cols.length; i++) {
      for (const a of pos[i]) for (const b of pos[i + 1]) {
        const x1 = a.x + BOX_W, y1 = a.y + BOX_H / 2, x2 = b.x - 2, y2 = b.y + BOX_H / 2, mx = (x1 + x2) / 2;
        svg.appendChild(s("path", { class: "edge", d: `M${x1} ${y1}C${mx} ${y1} ${mx} ${y2} ${x2} ${y2}`,
                                    "marker-end": "url(#arrow)" }));
      }
    }
    cols.forEach(([kind, nodes], i) => nodes.forEach((n, k) => {
      const p = pos[i][k];
      const g = s("g", { class: `node node-${kind}`, "data-kind": kind, transform: `translate(${p.x},${p.y})` });
      if (n.id) g.setAttribute("data-id", n.id);
      g.appendChild(s("rect", { width: BOX_W, height: BOX_H, rx: 4 }));
      g.appendChild(s("text", { class: "kind", x: 8, y: 13 }, kind));
      g.appendChild(s("text", { x: 8, y: 27 }, clip(n.label, 26)));
      g.appendChild(s("text", { x: 8, y: 40 }, clip(n.sub || "", 28)));
      g.appendChild(s("title", {}, `${n.label}\n${n.sub || ""}`));
      const href = safeHref(n.href);
      if (href) {
        const a = s("a", { href, target: "_blank", rel: "noopener noreferrer" });
        a.appendChild(g); svg.appendChild(a);
      } else svg.appendChild(g);
    }));
    const links = c.links || {};
    const list = h("ul", { class: "links" });
    const link = (label, url) => list.appendChild(h("li", {}, `${label}: `,
      safeHref(url) ? h("a", { href: url, target: "_blank", rel: "noopener noreferrer" }, url) : h("code", {}, url || "-")));
    link("MLflow run", links.mlflow || (c.run && c.run.link));
    if (links.model_version) link("MLflow model version", links.model_version);
    for (const r of links.drift_reports || []) link(`Evidently drift report (${r.event_id})`, r.link || r.uri);
    box.replaceChildren(h("h2", {}, `${c.model} v${c.version}`), svg, list);
    box.dataset.nodes = String(svg.querySelectorAll("g.node").length);
  }
  const clip = (text, n) => (String(text).length > n ? String(text).slice(0, n - 1) + "…" : String(text));

  async function showLineage(model, version) {
    const box = $("lineage");
    if (!model || !version) { box.replaceChildren(h("p", { class: "empty" }, "no version yet")); return; }
    box.replaceChildren(h("p", { class: "empty" }, "loading…"));
    try { drawLineage(await getJSON(`/api/lineage/${enc(model)}/${enc(version)}`)); } catch (err) {
      box.replaceChildren(h("p", { class: "empty" }, String(err.message)));
    }
  }

  // --- champions and rollouts --------------------------------------------------------------------
  function lineChart(title, series, yMin, yMax, fmt) {
    const W = 720, H = 180, L = 48, R = 90, B = 22, Tp = 18;
    const all = series.flatMap((x) => x.points);
    const svg = s("svg", { class: "chart", width: W, height: H, viewBox: `0 0 ${W} ${H}` });
    svg.appendChild(s("text", { x: L, y: 12 }, title));
    if (!all.length) { svg.appendChild(s("text", { x: L, y: H / 2 }, "no points yet")); return svg; }
    const t0 = Math.min(...all.map((p) => p[0])), t1 = Math.max(t0 + 1, ...all.map((p) => p[0]));
    const x = (t) => L + (t - t0) / (t1 - t0) * (W - L - R), y = (v) => H - B - (v - yMin) / ((yMax - yMin) || 1) * (H - B - Tp);
    for (const v of [yMin, (yMin + yMax) / 2, yMax]) {
      svg.appendChild(s("line", { class: "grid", x1: L, x2: W - R, y1: y(v), y2: y(v) }));
      svg.appendChild(s("text", { x: 4, y: y(v) + 4 }, fmt(v)));
    }
    svg.appendChild(s("text", { x: L, y: H - 6 }, hhmmss(t0)));
    svg.appendChild(s("text", { x: W - R, y: H - 6, "text-anchor": "end" }, hhmmss(t1)));
    series.forEach((ser, i) => {
      const pts = ser.points.filter((p) => p[1] !== null && p[1] !== undefined);
      if (!pts.length) return;
      svg.appendChild(s("path", { class: `series s${i % 4}`, "data-series": ser.name,
                                  d: pts.map((p, k) => `${k ? "L" : "M"}${x(p[0]).toFixed(1)} ${y(p[1]).toFixed(1)}`).join("") }));
      svg.appendChild(s("text", { x: W - R + 6, y: y(pts[pts.length - 1][1]) + 4, class: `s${i % 4}` }, ser.name));
    });
    return svg;
  }

  function championChart(history) {
    const W = 720, H = 160, L = 48, R = 20, B = 22, Tp = 14;
    const svg = s("svg", { class: "chart champion-chart", width: W, height: H, viewBox: `0 0 ${W} ${H}` });
    if (!history.length) { svg.appendChild(s("text", { x: L, y: H / 2 }, "no champion yet")); return svg; }
    const versions = [...new Set(history.map((m) => m.version))].sort((a, b) => Number(a) - Number(b));
    const now = Date.now() / 1000, t0 = history[0].from_ts, t1 = Math.max(now, t0 + 1);
    const x = (t) => L + (t - t0) / (t1 - t0) * (W - L - R);
    const y = (v) => H - B - (versions.indexOf(v) + 0.5) / versions.length * (H - B - Tp);
    for (const v of versions) svg.appendChild(s("text", { x: 4, y: y(v) + 4 }, `v${v}`));
    let d = "";
    history.forEach((m, k) => { d += `${k ? "H" + x(m.from_ts).toFixed(1) + "V" : "M" + x(m.from_ts).toFixed(1) + " "}${y(m.version).toFixed(1)}`; });
    d += `H${x(t1).toFixed(1)}`;
    svg.appendChild(s("path", { class: "step", d }));
    for (const m of history) {
      const c = s("circle", { class: "move" + (m.rolled_back ? " rolled-back" : ""), r: 4, cx: x(m.from_ts), cy: y(m.version),
                              "data-version": m.version });
      c.appendChild(s("title", {}, `v${m.version} from ${m.from}: ${m.reason}`));
      svg.appendChild(c);
    }
    svg.appendChild(s("text", { x: L, y: H - 6 }, hhmmss(t0)));
    svg.appendChild(s("text", { x: W - R, y: H - 6, "text-anchor": "end" }, "now"));
    return svg;
  }

  async function showChampions(model) {
    const box = $("champions"), ex = $("experiments");
    if (!model) { box.replaceChildren(h("p", { class: "empty" }, "no model yet")); return; }
    const [history, experiments] = await Promise.all([getJSON(`/api/champions/${enc(model)}`),
                                                      getJSON(`/api/experiments/${enc(model)}`)]);
    const table = h("table", { class: "rows champion-history" },
      h("tr", {}, h("th", {}, "version"), h("th", {}, "from"), h("th", {}, "until"), h("th", {}, "why")),
      history.map((m) => h("tr", { "data-version": m.version },
        h("td", {}, h("a", { href: `#lineage/${enc(model)}/${enc(m.version)}` }, `v${m.version}`)),
        h("td", {}, m.from), h("td", {}, m.to || "now"), h("td", {}, m.reason))));
    box.replaceChildren(h("h2", {}, `Champion history of ${model}`), championChart(history), table);
    const parts = [h("h2", {}, "Rollouts")];
    if (!experiments.length) parts.push(h("p", { class: "empty" }, "no rollout of this model on the record"));
    for (const e of experiments) {
      const versions = [...new Set(e.points.flatMap((p) => p.arms.map((a) => a.version)))];
      const series = (field) => versions.map((v) => ({ name: `v${v}`, points: e.points.map((p) => {
        const arm = p.arms.find((a) => a.version === v); return [p.ts, arm ? arm[field] : null]; }) }));
      parts.push(h("h3", { class: "experiment", "data-experiment": e.experiment },
        `${e.strategy} ${e.experiment} · ${e.status}` + (e.winner ? ` · winner v${e.winner}` : "")));
      if (e.strategy !== "bandit") parts.push(lineChart("traffic weight", series("weight"), 0, 1, (v) => `${Math.round(v * 100)}%`));
      parts.push(lineChart("mean reward", series("mean"), 0, 1, (v) => v.toFixed(2)));
      parts.push(lineChart("rewards counted (n)", series("n"), 0,
        Math.max(1, ...e.points.flatMap((p) => p.arms.map((a) => a.n))), (v) => String(Math.round(v))));
    }
    ex.replaceChildren(...parts);
  }

  // --- dead letters ----------------------------------------------------------------------------
  async function showDeadLetters() {
    const rows = await getJSON("/api/deadletters");
    const box = $("deadletters");
    if (!rows.length) { box.replaceChildren(h("p", { class: "empty" }, "no dead letters")); return; }
    box.replaceChildren(h("table", { class: "rows dead-letters" },
      h("tr", {}, ["id", "time", "from", "model", "reason", "replay (CLI)"].map((c) => h("th", {}, c))),
      rows.map((r) => h("tr", { "data-id": r.id },
        h("td", {}, r.id), h("td", {}, r.time), h("td", {}, `${r.topic}[${r.partition}]@${r.offset}`),
        h("td", {}, r.model || "-"), h("td", {}, r.reason), h("td", {}, h("code", {}, r.replay))))));
  }

  // --- views and wiring ------------------------------------------------------------------------
  let MODELS = [];
  function fillVersions(model, wanted) {
    const m = MODELS.find((x) => x.name === model);
    const versions = m ? m.versions : [];
    const select = $("lineage-version");
    select.replaceChildren(...versions.map((v) => h("option", { value: v }, `v${v}`)));
    const chosen = wanted || (m && m.champion) || versions[versions.length - 1] || "";
    select.value = chosen;
    return chosen;
  }

  async function route() {
    const [view, ...args] = (location.hash.slice(1) || "timeline").split("/").map(decodeURIComponent);
    const name = ["timeline", "lineage", "champions", "deadletters"].includes(view) ? view : "timeline";
    for (const v of document.querySelectorAll(".view")) v.hidden = v.id !== `view-${name}`;
    for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.view === name);
    if (name === "lineage") {
      MODELS = await getJSON("/api/models");
      const model = args[0] || $("lineage-model").value || (MODELS[0] && MODELS[0].name);
      if (model) $("lineage-model").value = model;
      await showLineage(model, fillVersions(model, args[1]));
    } else if (name === "champions") {
      const model = args[0] || $("champions-model").value;
      if (model) $("champions-model").value = model;
      await showChampions(model);
    } else if (name === "deadletters") {
      await showDeadLetters();
    } else if (!T.drawn) {
      await loadTimeline();
    }
  }

  function wire() {
    $("model").addEventListener("change", (e) => { T.model = e.target.value; loadTimeline(); });
    for (const box of document.querySelectorAll('input[name="lane"]')) {
      box.addEventListener("change", () => {
        T.enabled = new Set([...document.querySelectorAll('input[name="lane"]:checked')].map((b) => b.value));
        draw();
      });
    }
    $("type").addEventListener("input", (e) => { T.type = e.target.value.trim(); draw(); });
    $("filters").addEventListener("submit", (e) => e.preventDefault());
    $("panel").addEventListener("click", (e) => {        // one listener for every row (delegation)
      const target = e.target.closest("[data-id]");
      if (target && target.tagName === "BUTTON") select(target.dataset.id);
    });
    $("lineage-model").addEventListener("change", (e) => { location.hash = `lineage/${enc(e.target.value)}`; });
    $("lineage-version").addEventListener("change", (e) => {
      location.hash = `lineage/${enc($("lineage-model").value)}/${enc(e.target.value)}`;
    });
    $("champions-model").addEventListener("change", (e) => { location.hash = `champions/${enc(e.target.value)}`; });
    window.addEventListener("hashchange", route);
    let resize = null;
    window.addEventListener("resize", () => { clearTimeout(resize); resize = setTimeout(() => T.drawn && draw(), 150); });
  }

  wire();
  loadTimeline().then(route);
})();
