/* humigraph dashboard: state from the gateway's HTTP API, kept live by /api/events (SSE).
 *
 * Start: every endpoint is read once. Then each event updates the state (readings, status and
 * meta directly; forecast, health, insight and alerts are re-read from the API, so the page
 * shows exactly what the API serves). When the stream cannot be opened the page polls every 5 s
 * and keeps trying the stream. Endpoints of the reasoning model that answer 404 mean the gateway
 * runs without a model: the page says "no model yet" and shows everything else.
 */
"use strict";
(function () {
  var HISTORY_S = 30 * 60;   // readings shown before now
  var POLL_MS = 5000;        // polling period while the stream is down
  var HEALTHZ_MS = 10000;    // /healthz is read this often in any case (broker state)
  var LEVELS = { critical: 3, warning: 2, info: 1 };

  var S = {
    skew: 0,                 // gateway clock - browser clock, seconds
    devices: {},             // dev -> /api/devices row (+ .meta from meta events)
    readings: {},            // dev -> readings sorted by ts
    keys: {},                // dev -> {"boot:seq": true}
    forecast: {}, health: {}, insight: {},
    alerts: [], alertsApi: null,
    sites: null, modelApi: null,  // modelApi: true, false (404: no reasoning), null (unknown)
    site: null,
    broker: "unknown", reachable: true,
    positions: {},
    stream: null, streamState: "connecting", streamRetryMs: 1000,
    lastEventAt: 0, refreshing: null, selected: null,
  };
  HG.state = S;

  function now() { return Date.now() / 1000 + S.skew; }

  // -- HTTP ---------------------------------------------------------------------------------

  function getJSON(path) {
    return fetch(path, { cache: "no-store" }).then(function (r) {
      var date = r.headers.get("Date");
      if (date && !S.sawHello) S.skew = Date.parse(date) / 1000 - Date.now() / 1000;
      return r.json().then(function (body) { return { status: r.status, body: body }; },
                           function () { return { status: r.status, body: null }; });
    }, function () { return { status: 0, body: null }; });
  }

  var timers = {};
  function soon(key, fn, ms) {  // debounce: many events, one request
    if (timers[key]) return;
    timers[key] = setTimeout(function () { delete timers[key]; fn(); }, ms || 300);
  }

  function addReadings(dev, rows) {
    var list = S.readings[dev] || (S.readings[dev] = []);
    var keys = S.keys[dev] || (S.keys[dev] = {});
    var unsorted = false;
    rows.forEach(function (r) {
      var k = r.boot + ":" + r.seq;
      if (keys[k]) return;
      keys[k] = true;
      var row = { ts: r.ts === null || r.ts === undefined ? now() : r.ts, t: r.t, rh: r.rh,
                  ok: r.ok !== false, err: r.err || null, boot: r.boot, seq: r.seq };
      if (list.length && row.ts < list[list.length - 1].ts) unsorted = true;
      list.push(row);
    });
    if (unsorted) list.sort(function (a, b) { return a.ts - b.ts || a.boot - b.boot || a.seq - b.seq; });
    var cut = now() - HISTORY_S - 600;
    var drop = 0;
    while (drop < list.length - 1 && list[drop].ts < cut) { delete keys[list[drop].boot + ":" + list[drop].seq]; drop++; }
    if (drop) list.splice(0, drop);
  }

  function fetchReadings(dev) {
    var list = S.readings[dev];
    var since = list && list.length ? list[list.length - 1].ts : now() - HISTORY_S;
    return getJSON("/api/readings?dev=" + encodeURIComponent(dev) + "&since=" + since.toFixed(3) + "&limit=5000")
      .then(function (r) { if (r.status === 200) addReadings(dev, r.body); });
  }

  function modelRunning() {  // a model is loaded for some site (per /api/sites)
    return S.modelApi !== false && (S.sites === null || S.sites.some(function (s) { return !!s.model; }));
  }

  function fetchModelFor(dev) {
    if (!modelRunning()) { delete S.forecast[dev]; delete S.health[dev]; return Promise.resolve(); }
    var q = "?dev=" + encodeURIComponent(dev);
    return Promise.all([
      getJSON("/api/forecast" + q).then(function (r) { S.forecast[dev] = r.status === 200 ? r.body : null; }),
      getJSON("/api/health" + q).then(function (r) { S.health[dev] = r.status === 200 ? r.body : null; }),
    ]);
  }

  function fetchInsight(site) {
    if (!modelRunning()) { delete S.insight[site]; return Promise.resolve(); }
    return getJSON("/api/insight?site=" + encodeURIComponent(site)).then(function (r) {
      S.insight[site] = r.status === 200 ? r.body : null;
    });
  }

  function fetchSites() {
    return getJSON("/api/sites").then(function (r) {
      if (r.status === 200 && Array.isArray(r.body)) { S.sites = r.body; S.modelApi = true; }
      else if (r.status === 404) { S.sites = null; S.modelApi = false; }
    });
  }

  function fetchAlerts() {
    return getJSON("/api/alerts").then(function (r) {
      if (r.status === 200 && Array.isArray(r.body)) { S.alerts = r.body; S.alertsApi = true; }
      else if (r.status === 404) { S.alerts = []; S.alertsApi = false; }
    });
  }

  function fetchHealthz() {
    return getJSON("/healthz").then(function (r) {
      S.reachable = r.status !== 0;
      if (r.body && r.body.broker) S.broker = r.body.broker;
      render();
    });
  }

  function fetchDevices() {
    return getJSON("/api/devices").then(function (r) {
      if (r.status !== 200 || !Array.isArray(r.body)) return;
      r.body.forEach(function (d) {
        var old = S.devices[d.dev];
        if (old && old.meta) d.meta = old.meta;
        S.devices[d.dev] = d;
      });
    });
  }

  function refreshAll() {
    if (S.refreshing) return S.refreshing;
    S.refreshing = Promise.all([fetchHealthz(), fetchSites(), fetchAlerts(), fetchDevices()])
      .then(function () {
        var devs = Object.keys(S.devices);
        var jobs = devs.map(fetchReadings).concat(devs.map(fetchModelFor));
        siteNames().forEach(function (s) { jobs.push(fetchInsight(s)); });
        return Promise.all(jobs);
      })
      .then(render, render)
      .then(function () { S.refreshing = null; }, function () { S.refreshing = null; });
    return S.refreshing;
  }

  // -- live stream ----------------------------------------------------------------------------

  function connect() {
    if (!window.EventSource) { S.streamState = "polling"; return; }
    var es = new EventSource("/api/events");
    S.stream = es;
    es.onopen = function () {
      S.streamState = "live"; S.streamRetryMs = 1000; S.reachable = true;
      refreshAll();  // catch up with what happened while we were not listening
    };
    es.onerror = function () {
      if (es.readyState === EventSource.CLOSED) {
        // The browser gave up (the gateway answered 503, or is gone): retry ourselves, poll meanwhile.
        es.close();
        S.streamState = "polling";
        setTimeout(connect, S.streamRetryMs);
        S.streamRetryMs = Math.min(S.streamRetryMs * 2, 15000);
      } else {
        S.streamState = "reconnecting";  // the browser retries by itself (the server's retry hint)
      }
      render();
    };
    function on(kind, fn) {
      es.addEventListener(kind, function (ev) {
        S.lastEventAt = Date.now();
        var data;
        try { data = JSON.parse(ev.data); } catch (e) { return; }
        fn(data);
        render();
      });
    }
    on("hello", function (d) { if (d.server_time) { S.skew = d.server_time - Date.now() / 1000; S.sawHello = true; } });
    on("reading", function (d) {
      if (!d.dev) return;
      if (!S.devices[d.dev]) soon("devices", refreshAll, 500);
      else S.devices[d.dev].last_seen = now();
      addReadings(d.dev, [d]);
      // The gateway's gap count and last-seen time change with readings: re-read them, at most
      // every 2 s.
      soon("device-rows", function () { fetchDevices().then(render); }, 2000);
    });
    on("status", function (d) {
      var dev = S.devices[d.dev];
      if (dev) dev.online = d.status === "online"; else soon("devices", refreshAll, 500);
    });
    on("meta", function (d) {
      var dev = S.devices[d.dev];
      if (!dev) { soon("devices", refreshAll, 500); return; }
      var m = d.meta || {};
      dev.meta = m;
      if (m.fw !== undefined) dev.fw = m.fw;
      if (m.sensor !== undefined) dev.sensor = m.sensor;
      if (m.buffered !== undefined) dev.buffered = m.buffered;
    });
    on("forecast", function (d) {
      if (S.modelApi !== true) soon("sites", fetchSites, 200);
      if (d.dev) soon("forecast:" + d.dev, function () { fetchModelFor(d.dev).then(render); }, 300);
    });
    on("health", function (d) {
      if (d.dev) soon("health:" + d.dev, function () { fetchModelFor(d.dev).then(render); }, 300);
    });
    on("insight", function (d) {
      if (d.site) soon("insight:" + d.site, function () { fetchInsight(d.site).then(render); }, 300);
    });
    on("alert", function () { soon("alerts", function () { fetchAlerts().then(render); }, 200); });
    on("broker", function (d) { if (d.state) S.broker = d.state; });
    on("dropped", function () { soon("all", refreshAll, 100); });
  }

  // -- rendering ------------------------------------------------------------------------------

  function h(tag, attrs, kids) {
    var e = document.createElement(tag);
    for (var k in attrs || {}) {
      if (attrs[k] === null || attrs[k] === undefined || attrs[k] === false) continue;
      if (k === "text") e.textContent = attrs[k]; else e.setAttribute(k, attrs[k]);
    }
    (kids || []).forEach(function (c) { if (c) e.appendChild(typeof c === "string" ? document.createTextNode(c) : c); });
    return e;
  }
  function fmt(v, digits) { return v === null || v === undefined || !isFinite(v) ? "–" : Number(v).toFixed(digits); }
  function ago(ts) {
    if (!ts) return "never";
    var s = Math.max(0, Math.round(now() - ts));
    if (s < 60) return s + " s ago";
    if (s < 3600) return Math.round(s / 60) + " min ago";
    return Math.round(s / 3600) + " h ago";
  }
  function clock(ts) { return ts ? new Date(ts * 1000).toLocaleTimeString() : "–"; }
  function pct(p) { return p === null || p === undefined ? "–" : Math.round(p * 100) + "%"; }
  function meter(label, p, cls) {
    var w = Math.max(0, Math.min(1, p || 0)) * 100;
    return h("div", { "class": "meter " + (cls || "") }, [
      h("span", { text: label }),
      h("span", { "class": "bar" }, [h("span", { style: "width:" + w.toFixed(0) + "%" })]),
      h("span", { text: pct(p) })]);
  }

  function siteNames() {
    var names = {};
    Object.keys(S.devices).forEach(function (d) { names[S.devices[d].site] = true; });
    (S.sites || []).forEach(function (s) { names[s.site] = true; });
    return Object.keys(names).sort();
  }
  function siteInfo(site) {
    return (S.sites || []).filter(function (s) { return s.site === site; })[0] || null;
  }
  function activeAlerts(dev) {
    return S.alerts.filter(function (a) { return a.active && (!dev || a.dev === dev); });
  }
  function faultP(hl) {  // probability of the verdict's class (1 when the API gives none)
    var p = hl.probs ? hl.probs[hl.fault] : null;
    return p === null || p === undefined ? 1 : p;
  }
  function boardState(dev) {
    var hl = S.health[dev];
    var worst = 0;
    activeAlerts(dev).forEach(function (a) { worst = Math.max(worst, LEVELS[a.level] || 0); });
    // A confident verdict (the alert engine's default floor, p >= 0.6) is a fault; a hesitant one
    // a warning.
    if (hl && hl.fault && hl.fault !== "ok") worst = Math.max(worst, faultP(hl) >= 0.6 ? 3 : 2);
    if (worst >= 3) return "fault";
    if (worst === 2) return "warn";
    return hl || (S.readings[dev] || []).length ? "ok" : "unknown";
  }

  var renderQueued = false;
  function render() {
    if (renderQueued) return;
    renderQueued = true;
    (window.requestAnimationFrame || setTimeout)(function () { renderQueued = false; draw(); });
  }

  function draw() {
    var sites = siteNames();
    if (!S.site || sites.indexOf(S.site) < 0) S.site = sites[0] || null;
    drawHeader(sites);
    drawBanner();
    drawSite();
    drawAlerts();
    drawBoards();
  }

  function drawHeader(sites) {
    var nav = document.getElementById("sites");
    nav.textContent = "";
    if (sites.length > 1) sites.forEach(function (s) {
      var b = h("button", { text: s, "class": s === S.site ? "on" : null, type: "button" });
      b.onclick = function () { S.site = s; S.positions = {}; draw(); };
      nav.appendChild(b);
    });
    document.getElementById("site-name").textContent = S.site || "(no boards yet)";
    var model = document.getElementById("model");
    var info = S.site && siteInfo(S.site);
    if (S.modelApi === false) { model.textContent = "no model yet"; model.className = "pill muted"; }
    else if (info && info.model) { model.textContent = "model " + info.model.id + " (" + info.model.backend + ")"; model.className = "pill ok"; }
    else if (S.modelApi) { model.textContent = "no model loaded"; model.className = "pill warn"; }
    else { model.textContent = "model: …"; model.className = "pill muted"; }
    var live = document.getElementById("live");
    var labels = { live: "live", reconnecting: "reconnecting…", polling: "polling every 5 s", connecting: "connecting…" };
    live.textContent = labels[S.streamState] || S.streamState;
    live.className = "pill " + (S.streamState === "live" ? "ok" : "warn");
    live.setAttribute("data-state", S.streamState);
  }

  function drawBanner() {
    var b = document.getElementById("banner");
    var text = null, cls = "banner";
    if (!S.reachable) text = "The gateway does not answer: retrying. What you see may be out of date.";
    else if (S.broker === "disconnected") {
      text = "The gateway has lost the MQTT broker: no new readings arrive until it reconnects (it retries by itself).";
    } else if (S.streamState !== "live" && S.streamState !== "connecting") {
      text = "Live updates are interrupted: reconnecting; the page refreshes every 5 s meanwhile.";
      cls = "banner warn";
    }
    b.hidden = !text;
    b.className = cls;
    b.textContent = text || "";
    b.setAttribute("data-broker", S.broker);
  }

  function drawSite() {
    var svg = document.getElementById("graph");
    var devs = Object.keys(S.devices).filter(function (d) { return S.devices[d].site === S.site; }).sort();
    var ins = S.site ? S.insight[S.site] : null;
    var edges = [];
    if (ins && ins.graph && Array.isArray(ins.graph.edges)) {
      edges = ins.graph.edges.filter(function (e) { return devs.indexOf(e.from) >= 0 && devs.indexOf(e.to) >= 0; });
    }
    var sig = devs.join(",") + "|" + edges.map(function (e) { return e.from + e.to + (e.weight || 0).toFixed(2); }).join(",");
    if (sig !== S.layoutSig) { S.positions = HG.forceLayout(devs, edges, S.positions, 400, 260); S.layoutSig = sig; }
    var nodes = devs.map(function (d) {
      var list = S.readings[d] || [], last = null;
      for (var i = list.length - 1; i >= 0; i--) if (list[i].ok) { last = list[i]; break; }
      var dv = S.devices[d], hl = S.health[d];
      return { id: d, label: d, online: dv.online !== false,
               sub: last ? fmt(last.t, 1) + "° " + fmt(last.rh, 0) + "%" : "",
               state: boardState(d),
               title: d + (dv.online === false ? " (offline)" : "") + (hl && hl.fault ? ", health: " + hl.fault : "") };
    });
    HG.graph(svg, nodes, edges, S.positions, selectBoard);
    document.getElementById("legend").textContent = (edges.length
      ? "Boards are placed by the model's learned graph; thicker lines are stronger learned links. "
      : "No learned graph yet: boards are placed evenly. ") +
      "Green: healthy, orange: warning, red: judged faulty, hollow: offline. Tap a board for its charts.";

    var box = document.getElementById("insight");
    box.textContent = "";
    if (S.modelApi === false) {
      box.appendChild(h("p", { "class": "empty no-model", text: "No model yet: this gateway runs without the reasoning model, so there are no forecasts, health verdicts, insights or learned graph. Readings are live." }));
      return;
    }
    if (!modelRunning()) {
      box.appendChild(h("p", { "class": "empty no-model", text: "Reasoning is off: the gateway has no model loaded (see /healthz), so there are no forecasts, health verdicts, insights or learned graph. The alert rules still run." }));
      return;
    }
    if (!ins) {
      box.appendChild(h("p", { "class": "empty", text: "Waiting for the model's first site insight…" }));
      return;
    }
    // the label says the card's decision; the bar shows the probability behind it
    var said = ins.detected || {};
    box.appendChild(meter("occupancy" + (said.occupancy === undefined ? "" : said.occupancy ? ": yes" : ": no"), ins.occupancy));
    box.appendChild(meter("ventilation" + (said.ventilation === undefined ? "" : said.ventilation ? ": yes" : ": no"), ins.ventilation));
    box.appendChild(h("p", { "class": "muted", text: "model " + (ins.model || "?") + ", " + clock(ins.ts) }));
    var faulty = devs.filter(function (d) { return S.health[d] && S.health[d].fault && S.health[d].fault !== "ok"; });
    faulty.sort(function (a, b) { return faultP(S.health[b]) - faultP(S.health[a]); });
    if (faulty.length > 3) {
      box.appendChild(h("p", { "class": "muted", text: faulty.length + " boards judged faulty; the 3 most certain:" }));
    }
    faulty.slice(0, 3).forEach(function (d) {
      var r = (ins.router || {})[d] || (S.health[d] || {}).router;
      if (!r) return;
      box.appendChild(h("div", { "class": "router", "data-dev": d }, [
        h("strong", { text: d + " judged " + S.health[d].fault + " (p " + pct(faultP(S.health[d])) + "): the model forecasts it from" }),
        meter("its own history", r.self), meter("its neighbours", r.neighbours)]));
    });
  }

  function alertItem(a) {
    var vals = a.values && typeof a.values === "object" ? Object.keys(a.values).filter(function (k) {
      return a.values[k] === null || typeof a.values[k] !== "object";  // lists are in the message
    }).map(function (k) {
      var v = a.values[k];
      if (typeof v === "number" && v > 1e9 && v < 5e9) v = clock(v);  // a timestamp
      else if (typeof v === "number") v = Math.abs(v) >= 100 || v === Math.round(v) ? String(Math.round(v * 10) / 10) : String(Number(v.toPrecision(3)));
      else if (typeof v !== "string") v = JSON.stringify(v);
      return k.replace(/_/g, " ") + " " + v;
    }).join(" · ") : "";
    return h("li", { "class": (a.level || "info") + (a.active ? "" : " cleared"), "data-id": a.id,
                     "data-kind": a.kind, "data-dev": a.dev || "" }, [
      h("div", { "class": "head" }, [
        h("span", { "class": "lvl", text: a.level || "info" }),
        h("strong", { text: a.kind || "" }),
        h("span", { text: a.dev || a.site || "" }),
        h("span", { "class": "when", text: "since " + clock(a.since) + " (" + ago(a.since) + ")" +
                                            (a.cleared ? ", cleared " + clock(a.cleared) : "") })]),
      h("p", { "class": "msg", text: a.message || "" }),
      vals ? h("div", { "class": "values", text: vals }) : null]);
  }

  function drawAlerts() {
    var act = document.getElementById("alerts"), rec = document.getElementById("alerts-recent");
    act.textContent = ""; rec.textContent = "";
    var inSite = S.alerts.filter(function (a) { return !S.site || !a.site || a.site === S.site; });
    var active = inSite.filter(function (a) { return a.active; }).sort(function (a, b) {
      return (LEVELS[b.level] || 0) - (LEVELS[a.level] || 0) || (b.since || 0) - (a.since || 0);
    });
    var recent = inSite.filter(function (a) { return !a.active; })
      .sort(function (a, b) { return (b.cleared || b.since || 0) - (a.cleared || a.since || 0); }).slice(0, 30);
    active.forEach(function (a) { act.appendChild(alertItem(a)); });
    recent.forEach(function (a) { rec.appendChild(alertItem(a)); });
    if (!active.length) {
      act.appendChild(h("li", { "class": "empty", text: S.alertsApi === false
        ? "No alert engine yet (the gateway has no /api/alerts)." : "No active alerts." }));
    }
    var count = document.getElementById("alert-count");
    count.textContent = active.length + " active";
    var worst = 0;
    active.forEach(function (a) { worst = Math.max(worst, LEVELS[a.level] || 0); });
    count.className = "pill " + (worst >= 3 ? "crit" : worst === 2 ? "warn" : "muted");
  }

  function selectBoard(dev) {
    S.selected = dev;
    var card = document.getElementById("board-" + dev);
    if (card) card.scrollIntoView({ behavior: "smooth", block: "start" });
    drawBoards();
  }

  function boardCard(dev) {
    var id = "board-" + dev;
    var card = document.getElementById(id);
    if (card) return card;
    card = h("article", { "class": "board", id: id, "data-dev": dev }, [
      h("header", {}, [h("span", { "class": "dot" }), h("h3", { text: dev }),
                       h("span", { "class": "pill health-badge" })]),
      h("div", { "class": "latest" }, [h("span", { "class": "big t-value" }), h("span", { "class": "big rh-value" }),
                                       h("span", { "class": "muted reading-info" })]),
      document.createElementNS("http://www.w3.org/2000/svg", "svg"),
      document.createElementNS("http://www.w3.org/2000/svg", "svg"),
      h("div", { "class": "health" }),
      h("dl", { "class": "meta" })]);
    var svgs = card.querySelectorAll("svg");
    svgs[0].setAttribute("class", "chart t"); svgs[0].setAttribute("aria-label", "temperature");
    svgs[1].setAttribute("class", "chart rh"); svgs[1].setAttribute("aria-label", "humidity");
    return card;
  }

  function drawBoards() {
    var box = document.getElementById("boards");
    var devs = Object.keys(S.devices).filter(function (d) { return S.devices[d].site === S.site; }).sort();
    Array.prototype.slice.call(box.children).forEach(function (c) {
      if (devs.indexOf(c.getAttribute("data-dev")) < 0) box.removeChild(c);
    });
    if (!devs.length && !box.querySelector(".empty")) {
      box.appendChild(h("p", { "class": "empty", text: "No board has reported yet." }));
    }
    if (devs.length) Array.prototype.slice.call(box.querySelectorAll(".empty")).forEach(function (e) { box.removeChild(e); });
    devs.forEach(function (dev) {
      var card = boardCard(dev);
      box.appendChild(card);  // keeps the sorted order
      drawBoard(card, dev);
    });
  }

  function drawBoard(card, dev) {
    var d = S.devices[dev], list = S.readings[dev] || [], hl = S.health[dev], fc = S.forecast[dev];
    var m = d.meta || {};
    card.className = "board" + (d.online === false ? " offline" : "") + (S.selected === dev ? " selected" : "");
    card.setAttribute("data-online", d.online === null || d.online === undefined ? "unknown" : String(d.online));
    card.querySelector(".dot").className = "dot" + (d.online ? " online" : "");
    card.querySelector(".dot").title = d.online ? "online" : d.online === false ? "offline" : "never heard";
    var last = list.length ? list[list.length - 1] : null;
    var lastOk = null;
    for (var i = list.length - 1; i >= 0; i--) if (list[i].ok) { lastOk = list[i]; break; }
    card.querySelector(".t-value").textContent = lastOk ? fmt(lastOk.t, 1) + " °C" : "– °C";
    card.querySelector(".rh-value").textContent = lastOk ? fmt(lastOk.rh, 1) + " %RH" : "– %RH";
    card.querySelector(".reading-info").textContent = last
      ? (last.ok ? "" : "last read failed (" + (last.err || "error") + "), ") + "boot " + last.boot + " seq " + last.seq + " at " + clock(last.ts)
      : "no reading yet";

    var badge = card.querySelector(".health-badge");
    var state = boardState(dev);
    if (hl && hl.fault) badge.textContent = hl.fault === "ok" ? "healthy" : hl.fault;
    else badge.textContent = S.modelApi === false ? "no model yet" : modelRunning() ? "health: waiting" : "no model";
    badge.className = "pill health-badge " + (state === "fault" ? "crit" : state === "warn" ? "warn" : hl ? "ok" : "muted");
    badge.setAttribute("data-fault", hl && hl.fault ? hl.fault : "");

    var svgs = card.querySelectorAll("svg.chart");
    var t = now();
    // Show what there is: from 2 min (a board just started) up to HISTORY_S.
    var span = list.length ? Math.min(HISTORY_S, Math.max(120, t - list[0].ts)) : 120;
    HG.timeChart(svgs[0], { key: "t", unit: "°C", readings: list, forecast: fc, now: t, history: span });
    HG.timeChart(svgs[1], { key: "rh", unit: "%RH", readings: list, forecast: fc, now: t, history: span });

    var hb = card.querySelector(".health");
    hb.textContent = "";
    if (fc && fc.horizons) {
      hb.appendChild(h("div", { "class": "muted forecast-text", text: "forecast: " + fc.horizons.map(function (s, k) {
        return "+" + Math.round(s / 60) + " min " + fmt(fc.t[k], 1) + " °C " + fmt(fc.rh[k], 0) + " %";
      }).join(" · ") }));
    }
    if (hl && hl.fault && hl.fault !== "ok") {
      var p = hl.probs ? hl.probs[hl.fault] : null;
      hb.appendChild(h("strong", { text: "Judged " + hl.fault + (p !== null && p !== undefined ? " (p " + pct(p) + ")" : "") +
                                         ". The router weighs its forecast between:" }));
      if (hl.router) {
        hb.appendChild(h("div", { "class": "router" }, [meter("own history", hl.router.self), meter("neighbours", hl.router.neighbours)]));
      }
    }
    if (hl && Array.isArray(hl.neighbours) && hl.neighbours.length) {
      hb.appendChild(h("div", { "class": "muted", text: "most influential: " + hl.neighbours.slice(0, 3).map(function (n) {
        return n.dev + " " + fmt(n.weight, 2);
      }).join(", ") }));
    }

    var failed = list.filter(function (r) { return !r.ok; }).length;
    var rssi = d.rssi !== undefined ? d.rssi : m.rssi;
    var metaRows = [["firmware", d.fw], ["sensor", d.sensor], ["rssi", rssi === null || rssi === undefined ? null : rssi + " dBm"],
                    ["buffered", d.buffered], ["gaps", d.gaps], ["failed reads (30 min)", failed],
                    ["last seen", ago(d.last_seen)]];
    var dl = card.querySelector(".meta");
    dl.textContent = "";
    metaRows.forEach(function (row) {
      dl.appendChild(h("div", { "data-key": row[0] }, [h("dt", { text: row[0] }),
        h("dd", { text: row[1] === null || row[1] === undefined ? "–" : String(row[1]) })]));
    });
  }

  // -- start ----------------------------------------------------------------------------------

  refreshAll().then(connect);
  setInterval(function () { if (S.streamState !== "live") refreshAll(); }, POLL_MS);
  setInterval(fetchHealthz, HEALTHZ_MS);
  setInterval(render, 5000);  // "now" moves on: relative times and the charts' now line
  window.addEventListener("resize", render);
})();
