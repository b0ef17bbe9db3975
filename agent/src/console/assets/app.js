// Edgewatch console: one page over the JSON API (/api/v1, see /api/v1/openapi.json).
// No build step and no library: plain DOM, text set with textContent (never HTML from data),
// charts drawn as SVG here. The token stays in this page's memory and goes in the
// Authorization header of each fetch; it is never stored or put in a URL.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const SYMBOL = { up: "✓", missing: "✕", flapping: "↯", never_seen: "?" };
  const WORD = { up: "up", missing: "missing", flapping: "flapping", never_seen: "never seen" };
  let token = "";
  let devices = [];
  let feed = [];
  const FEED_MAX = 200;

  // ----------------------------------------------------------------------------- basics
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null) continue;
      if (k === "text") e.textContent = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v);
    }
    for (const c of children) if (c !== null && c !== undefined) e.append(c);
    return e;
  }
  const when = (t) => (t ? new Date(t).toLocaleString() : "—");
  function say(text) {
    const m = $("message");
    m.textContent = text || "";
    m.hidden = !text;
  }
  async function api(path, init) {
    const headers = Object.assign({}, (init && init.headers) || {});
    if (token) headers.Authorization = "Bearer " + token;
    const r = await fetch(path, Object.assign({}, init, { headers }));
    let body = null;
    try { body = await r.json(); } catch (_) { body = null; }
    if (!r.ok) {
      const err = new Error((body && body.error) || r.statusText);
      err.status = r.status;
      throw err;
    }
    return body;
  }
  function refused(e) {
    if (e.status === 401) say("This needs a token: type it above (" + e.message + ").");
    else if (e.status === 403) say("Refused: " + e.message);
    else say(e.message);
  }
  function debounce(f, ms) {
    let t = null;
    return () => { clearTimeout(t); t = setTimeout(f, ms); };
  }

  // ---------------------------------------------------------------------------- devices
  async function loadDevices() {
    try {
      const d = await api("/api/v1/devices");
      devices = d.devices;
      const c = d.counts;
      $("counts").textContent = `${d.total} devices: ${c.up} up, ${c.missing} missing, ${c.flapping} flapping, ${c.never_seen} never seen`;
      renderDevices();
    } catch (e) { refused(e); }
  }
  function renderDevices() {
    const q = $("device-filter").value.trim();
    const s = $("state-filter").value;
    const list = $("devices");
    list.replaceChildren(...devices
      .filter((d) => (!q || d.key.includes(q)) && (!s || d.state === s))
      .map((d) => el("li", { "data-key": d.key, "data-state": d.state },
        el("a", { href: "#/device/" + encodeURIComponent(d.key), class: "tile state-" + d.state },
          el("span", { class: "key", text: d.key }),
          el("span", { class: "state", text: `${SYMBOL[d.state]} ${WORD[d.state]}` + (d.active_alarms ? ` · ${d.active_alarms} alarm` : "") })))));
  }

  // ----------------------------------------------------------------------------- alarms
  async function loadAlarms() {
    try {
      const d = await api("/api/v1/alarms");
      $("alarms").tBodies[0].replaceChildren(...d.alarms.map((a) => el("tr", { "data-rule": a.rule, "data-key": a.key },
        el("td", { text: a.rule }), el("td", { text: a.key }),
        el("td", { class: "alarm-state", text: a.state.replace(/_/g, " ") + (a.out_of_service ? " (out of service)" : "") }),
        el("td", { text: when(a.since) }), el("td", { text: when(a.snoozed_until) }),
        el("td", {},
          el("button", { type: "button", class: "ack", onclick: () => command(a, { action: "ack" }) }, "Acknowledge"), " ",
          el("button", { type: "button", class: "snooze", onclick: () => command(a, { action: "snooze", for: "1h" }) }, "Snooze 1 h")))));
    } catch (e) { refused(e); }
  }
  async function command(a, body) {
    try {
      const path = `/api/v1/alarms/${encodeURIComponent(a.rule)}/${encodeURIComponent(a.key)}`;
      body.by = "console";
      await api(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
      say("");
      loadAlarms();
    } catch (e) { refused(e); }
  }

  // ----------------------------------------------------------------------------- events
  function eventItem(e) {
    const ce = e.event || {};
    const time = ce.time ? new Date(ce.time).toLocaleTimeString() : "";
    return el("li", { "data-rule": e.rule, "data-key": e.key },
      el("button", { type: "button", onclick: () => {
        const pre = $("event-detail");
        pre.textContent = JSON.stringify(ce, null, 2);
        pre.hidden = false;
        pre.focus();
      } }, `${time} ${e.rule} · ${e.key}` + (ce.data && typeof ce.data.status === "string" ? ` · ${ce.data.status}` : "")));
  }
  function renderFeed() {
    const rule = $("event-rule").value;
    const key = $("event-key").value.trim();
    $("feed").replaceChildren(...feed.filter((e) => (!rule || e.rule === rule) && (!key || e.key === key)).map(eventItem));
  }
  async function loadEvents() {
    try {
      const d = await api("/api/v1/events?limit=100");
      feed = d.events.reverse().map((l) => ({ rule: (l.event.type || "").replace(/^edgewatch\./, ""), key: l.event.subject, event: l.event }));
      renderFeed();
    } catch (e) { refused(e); }
  }

  // ------------------------------------------------------------------------------ rules
  async function loadRules() {
    try {
      const d = await api("/api/v1/rules");
      const rows = d.rules.map((r) => el("tr", { "data-rule": r.name, "data-status": r.status },
        el("td", { text: r.name }), el("td", { text: r.kind }),
        el("td", {}, el("span", { class: "badge", text: { running: "✓ running", error: "✕ error", disabled: "⏸ disabled" }[r.status] })),
        el("td", { class: "error", text: r.error || "" }), el("td", { text: String(r.keys) }),
        el("td", { text: String(r.events_last_hour) }), el("td", { class: "mono", text: r.file || "" }),
        el("td", { class: "mono", text: r.hash || "" }), el("td", { text: when(r.loaded_at) })));
      // A file whose only version fails runs no rule: shown with its error all the same.
      for (const f of d.files.filter((f) => f.error && !d.rules.some((r) => r.file === f.file))) {
        rows.push(el("tr", { "data-status": "error" }, el("td", { text: "—" }), el("td", {}),
          el("td", {}, el("span", { class: "badge", text: "✕ error" })), el("td", { class: "error", text: f.error }),
          el("td", {}), el("td", {}), el("td", { class: "mono", text: f.file }), el("td", { class: "mono", text: f.hash }), el("td", {})));
      }
      $("rules").tBodies[0].replaceChildren(...rows);
      const select = $("event-rule");
      const chosen = select.value;
      select.replaceChildren(el("option", { value: "" }, "all"), ...d.rules.map((r) => el("option", { value: r.name }, r.name)));
      select.value = chosen;
    } catch (e) { refused(e); }
  }
  async function reload() {
    try {
      await api("/api/v1/reload", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ by: "console" }) });
      say("");
    } catch (e) { refused(e); }
  }

  async function backtest(e) {
    e.preventDefault();
    const summary = $("backtest-summary");
    summary.textContent = "Running…";
    $("backtest-result").hidden = true;
    try {
      const body = { rules: $("backtest-rules").value, since: $("backtest-since").value.trim() || "24h" };
      const d = await api("/api/v1/backtest", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
      const r = d.report;
      summary.textContent = `${r.inputs} inputs from ${when(r.first)} to ${when(r.last)}: ` +
        (r.identical ? "the candidate says exactly what the running rules said." : "the candidate differs.");
      $("backtest-result").tBodies[0].replaceChildren(...r.rules.map((x) => el("tr", { "data-rule": x.rule, "data-status": x.status },
        el("td", { text: x.rule }), el("td", { text: x.status }), el("td", { text: String(x.baseline) }),
        el("td", { text: String(x.candidate) }), el("td", { text: String(x.same) }),
        el("td", { text: String(x.only_baseline) }), el("td", { text: String(x.only_candidate) }))));
      $("backtest-result").hidden = false;
      say("");
    } catch (err) {
      summary.textContent = "";
      refused(err);
    }
  }

  async function loadDeadLetters() {
    try {
      const d = await api("/api/v1/deadletters");
      $("deadletters").tBodies[0].replaceChildren(...d.deadletters.slice().reverse().map((l) => el("tr", {},
        el("td", { text: when(l.received) }), el("td", { class: "mono", text: l.topic }),
        el("td", { text: l.reason }), el("td", { text: l.error }))));
    } catch (e) { refused(e); }
  }

  // ----------------------------------------------------------------------------- charts
  const SVG = "http://www.w3.org/2000/svg";
  function svg(tag, attrs) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    return e;
  }
  // A line of the averages in a band from min to max, a dot per roll-up. Hand-written: about
  // forty lines, where a charting library would be the largest asset.
  function chart(field, points) {
    const W = 640, H = 200, L = 48, R = 8, T = 10, B = 22;
    const figure = el("figure", { class: "chart", "data-field": field }, el("figcaption", { text: `${field} (${points.length} points)` }));
    const s = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": `${field}: ${points.length} roll-ups` });
    const t0 = Date.parse(points[0].start), t1 = Date.parse(points[points.length - 1].start);
    const lo = Math.min(...points.map((p) => p.min)), hi = Math.max(...points.map((p) => p.max));
    const x = (t) => L + (t1 === t0 ? (W - L - R) / 2 : ((t - t0) / (t1 - t0)) * (W - L - R));
    const y = (v) => T + (hi === lo ? (H - T - B) / 2 : (1 - (v - lo) / (hi - lo)) * (H - T - B));
    const xy = (p, v) => `${x(Date.parse(p.start)).toFixed(1)},${y(v).toFixed(1)}`;
    s.append(svg("polygon", { class: "band", points: points.map((p) => xy(p, p.max)).concat(points.slice().reverse().map((p) => xy(p, p.min))).join(" ") }));
    s.append(svg("polyline", { class: "avg", points: points.map((p) => xy(p, p.avg)).join(" ") }));
    for (const p of points) {
      const [cx, cy] = xy(p, p.avg).split(",");
      const dot = svg("circle", { class: "pt", cx, cy, r: 2.5 });
      dot.append(svg("title", {}));
      dot.firstChild.textContent = `${new Date(p.start).toLocaleString()}: avg ${p.avg}, min ${p.min}, max ${p.max} (${p.count})`;
      s.append(dot);
    }
    const label = (tx, ty, text, anchor) => {
      const e = svg("text", { x: tx, y: ty, "text-anchor": anchor || "start" });
      e.textContent = text;
      s.append(e);
    };
    label(2, T + 10, String(hi));
    label(2, H - B, String(lo));
    label(L, H - 6, new Date(t0).toLocaleTimeString());
    label(W - R, H - 6, new Date(t1).toLocaleTimeString(), "end");
    figure.append(s);
    return figure;
  }

  // ------------------------------------------------------------------------ device page
  async function showDevice(key) {
    $("device-title").textContent = key;
    try {
      const d = await api("/api/v1/devices/" + encodeURIComponent(key));
      $("device-state").textContent = `${SYMBOL[d.state]} ${WORD[d.state]} · last seen ${when(d.last_seen)}` +
        (d.missing_since ? ` · missing since ${when(d.missing_since)} (${Math.round(d.downtime_ms / 1000)} s)` : "");
      $("device-rules").tBodies[0].replaceChildren(...d.rules.map((r) => el("tr", {},
        el("td", { text: r.rule }), el("td", { text: `${SYMBOL[r.state]} ${WORD[r.state]}` }),
        el("td", { text: when(r.last_seen) }), el("td", { text: when(r.missing_since) }))));
      $("device-events").replaceChildren(...d.events.slice().reverse().map((l) =>
        eventItem({ rule: (l.event.type || "").replace(/^edgewatch\./, ""), key, event: l.event })));
      const charts = [];
      for (const field of d.history_fields) {
        const base = `/api/v1/history/${encodeURIComponent(key)}/${encodeURIComponent(field)}`;
        let h = await api(base + "?since=24h&resolution=fine");
        if (h.points.length === 0) h = await api(base + "?since=30d&resolution=coarse");
        charts.push(h.points.length ? chart(field, h.points) : el("p", { class: "muted", text: `${field}: no closed roll-ups yet` }));
      }
      $("charts").replaceChildren(...(charts.length ? charts : [el("p", { class: "muted", text: "No field of this device is remembered." })]));
    } catch (e) { refused(e); }
  }

  // ------------------------------------------------------------------- live stream, routes
  // Server-Sent Events read with fetch, which can send the token (EventSource cannot).
  let stream = null;
  async function live() {
    if (stream) stream.abort();
    const ctl = new AbortController();
    stream = ctl;
    const status = $("live");
    let wait = 1000;
    while (!ctl.signal.aborted) {
      try {
        const headers = token ? { Authorization: "Bearer " + token } : {};
        const r = await fetch("/api/v1/stream", { headers, signal: ctl.signal });
        if (r.status === 401) { status.textContent = "Live updates need a token"; status.className = "off"; return; }
        if (!r.ok || !r.body) throw new Error(r.statusText);
        status.textContent = "Live"; status.className = "on"; wait = 1000;
        const reader = r.body.getReader();
        const text = new TextDecoder();
        let buf = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += text.decode(value, { stream: true });
          let end;
          while ((end = buf.indexOf("\n\n")) >= 0) {
            frame(buf.slice(0, end));
            buf = buf.slice(end + 2);
          }
        }
      } catch (_) { if (ctl.signal.aborted) return; }
      status.textContent = "Reconnecting…"; status.className = "off";
      await new Promise((ok) => setTimeout(ok, wait));
      wait = Math.min(wait * 2, 10000);
    }
  }
  const refreshDevices = debounce(loadDevices, 300);
  const refreshAlarms = debounce(loadAlarms, 300);
  const refreshRules = debounce(loadRules, 300);
  function frame(text) {
    let kind = "message", data = "";
    for (const line of text.split("\n")) {
      if (line.startsWith("event: ")) kind = line.slice(7);
      else if (line.startsWith("data: ")) data += line.slice(6);
    }
    if (!data) return;
    const d = JSON.parse(data);
    if (kind === "event") {
      feed.unshift({ rule: d.rule, key: d.key, event: d.event });
      feed.length = Math.min(feed.length, FEED_MAX);
      renderFeed();
      const first = $("feed").firstElementChild;
      if (first) first.classList.add("new");
    } else if (kind === "device") refreshDevices();
    else if (kind === "alarm") refreshAlarms();
    else if (kind === "rules") refreshRules();
    else if (kind === "lagged") loadAll();
  }
  function loadAll() {
    loadDevices(); loadAlarms(); loadEvents(); loadRules(); loadDeadLetters();
  }
  function route() {
    const m = location.hash.match(/^#\/device\/(.+)$/);
    $("overview").hidden = !!m;
    $("device-page").hidden = !m;
    if (m) showDevice(decodeURIComponent(m[1]));
    else loadAll();
  }

  $("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    token = $("token").value.trim();
    say("");
    route();
    live();
  });
  $("device-filter").addEventListener("input", renderDevices);
  $("state-filter").addEventListener("change", renderDevices);
  $("event-rule").addEventListener("change", renderFeed);
  $("event-key").addEventListener("input", renderFeed);
  $("reload").addEventListener("click", reload);
  $("backtest-form").addEventListener("submit", backtest);
  window.addEventListener("hashchange", route);
  // States age without events (downtimes grow): a slow refresh besides the stream.
  setInterval(() => { if (!$("overview").hidden) { loadDevices(); loadDeadLetters(); } }, 10000);
  route();
  live();
})();
