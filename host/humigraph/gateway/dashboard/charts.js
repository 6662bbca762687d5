/* humigraph dashboard: hand-written SVG charts (no library, no build step).
 *
 * HG.timeChart(svg, opts) draws one quantity of one board: the readings as a line broken at
 * gaps, gaps shaded, failed reads as red ticks, and the forecast drawn ahead of the last reading.
 * HG.forceLayout(ids, edges, prev) places nodes with a small spring model where stronger learned
 * links pull harder; HG.graph(svg, ...) draws it.
 */
"use strict";
var HG = window.HG || {};
window.HG = HG;

(function () {
  var NS = "http://www.w3.org/2000/svg";

  function el(tag, attrs, parent) {
    var e = document.createElementNS(NS, tag);
    for (var k in attrs) if (attrs[k] !== undefined && attrs[k] !== null) e.setAttribute(k, attrs[k]);
    if (parent) parent.appendChild(e);
    return e;
  }
  HG.svgEl = el;

  function hhmm(ts) {
    var d = new Date(ts * 1000);
    return String(d.getHours()).padStart(2, "0") + ":" + String(d.getMinutes()).padStart(2, "0");
  }
  HG.hhmm = hhmm;

  /* Splits readings (sorted by ts) into runs without a gap, and lists the gaps.
   * A gap: a seq jump within one boot (readings the gateway never got), or a silence longer
   * than 3 typical intervals (the board was off or unreachable). */
  HG.findGaps = function (readings) {
    var gaps = [];
    var steps = [];
    for (var i = 1; i < readings.length; i++) steps.push(readings[i].ts - readings[i - 1].ts);
    steps.sort(function (a, b) { return a - b; });
    var typical = steps.length ? steps[Math.floor(steps.length / 2)] : 0;
    for (var j = 1; j < readings.length; j++) {
      var a = readings[j - 1], b = readings[j];
      var seqJump = a.boot === b.boot && b.seq - a.seq > 1;
      var silence = typical > 0 && b.ts - a.ts > Math.max(3 * typical, typical + 5);
      if (seqJump || silence) {
        gaps.push({ from: a.ts, to: b.ts, missing: seqJump ? b.seq - a.seq - 1 : null });
      }
    }
    return gaps;
  };

  /* opts: {key: "t"|"rh", unit, readings: [{ts, t, rh, ok, boot, seq}], forecast: {ts, horizons,
   * t, rh} | null, now: server time (s), history: seconds shown before now} */
  HG.timeChart = function (svg, opts) {
    var W = 360, H = 130, L = 34, R = 8, T = 8, B = 18;
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    svg.setAttribute("viewBox", "0 0 " + W + " " + H);
    var key = opts.key;
    var rs = opts.readings;
    var fc = opts.forecast && Array.isArray(opts.forecast[key]) ? opts.forecast : null;
    var last = rs.length ? rs[rs.length - 1].ts : opts.now;
    var t1 = Math.max(opts.now, last);
    var t0 = t1 - opts.history;
    var horizonEnd = t1 + 1800;
    if (fc) {
      var hs = fc.horizons || [];
      horizonEnd = Math.max(horizonEnd, fc.ts + (hs.length ? hs[hs.length - 1] : 1800));
    }
    var shown = rs.filter(function (r) { return r.ts >= t0; });
    var vals = [];
    shown.forEach(function (r) { if (r.ok && r[key] !== null && r[key] !== undefined) vals.push(r[key]); });
    if (fc) fc[key].forEach(function (v) { if (v !== null && isFinite(v)) vals.push(v); });
    var lo = vals.length ? Math.min.apply(null, vals) : 0;
    var hi = vals.length ? Math.max.apply(null, vals) : 1;
    var pad = Math.max((hi - lo) * 0.15, key === "t" ? 0.3 : 1);
    lo -= pad; hi += pad;
    // The past and the forecast get their own time scales (70 % / 30 % of the width): an hour of
    // history and 30 min ahead both stay readable, as does a demo's first two minutes.
    var split = L + (W - L - R) * 0.7;
    function x(ts) {
      if (ts <= t1) return L + (ts - t0) / Math.max(t1 - t0, 1) * (split - L);
      return split + (ts - t1) / Math.max(horizonEnd - t1, 1) * (W - R - 10 - split);  // room for "+30"
    }
    function y(v) { return T + (hi - v) / (hi - lo) * (H - T - B); }

    el("line", { x1: L, x2: W - R, y1: H - B, y2: H - B, "class": "axis" }, svg);
    el("line", { x1: L, x2: L, y1: T, y2: H - B, "class": "axis" }, svg);
    el("text", { x: L - 3, y: T + 8, "text-anchor": "end" }, svg).textContent = hi.toFixed(1);
    el("text", { x: L - 3, y: H - B, "text-anchor": "end" }, svg).textContent = lo.toFixed(1);
    el("text", { x: L, y: H - 4 }, svg).textContent = hhmm(t0);
    el("text", { x: x(t1), y: H - 4, "text-anchor": "middle" }, svg).textContent = "now";
    el("text", { x: W - R, y: H - 4, "text-anchor": "end" }, svg).textContent =
      "+" + Math.round((horizonEnd - t1) / 60) + " min";
    el("text", { x: L + 4, y: T + 8 }, svg).textContent = opts.unit;
    el("line", { x1: x(t1), x2: x(t1), y1: T, y2: H - B, "class": "now" }, svg);

    var gaps = HG.findGaps(shown);
    gaps.forEach(function (g) {
      var r = el("rect", { x: x(g.from), y: T, width: Math.max(1.5, x(g.to) - x(g.from)),
                           height: H - T - B, "class": "gap" }, svg);
      el("title", {}, r).textContent = g.missing ? g.missing + " readings missing"
        : "no readings for " + Math.round(g.to - g.from) + " s";
    });
    var gapStarts = {};
    gaps.forEach(function (g) { gapStarts[g.to] = true; });
    var d = "", pen = false;
    shown.forEach(function (r) {
      var v = r[key];
      if (!r.ok || v === null || v === undefined) { pen = false; return; }
      if (gapStarts[r.ts]) pen = false;
      d += (pen ? "L" : "M") + x(r.ts).toFixed(1) + " " + y(v).toFixed(1);
      pen = true;
    });
    if (d) el("path", { d: d, "class": "hist" }, svg);
    shown.forEach(function (r) {
      if (r.ok) return;
      var cx = x(r.ts), by = H - B;
      var tick = el("path", { d: "M" + (cx - 3) + " " + by + "L" + cx + " " + (by - 6) + "L" + (cx + 3) + " " + by + "Z",
                              "class": "failed" }, svg);
      el("title", {}, tick).textContent = "failed read: " + (r.err || "error") + " at " + hhmm(r.ts);
    });

    if (fc) {
      var okShown = shown.filter(function (r) { return r.ok && r[key] !== null; });
      var anchor = okShown.length ? okShown[okShown.length - 1] : null;
      var fd = anchor ? "M" + x(anchor.ts).toFixed(1) + " " + y(anchor[key]).toFixed(1) : "";
      var g = el("g", { "class": "forecast-group" }, svg);
      fc.horizons.forEach(function (h, i) {
        var v = fc[key][i];
        if (v === null || v === undefined || !isFinite(v)) return;
        var px = x(fc.ts + h), py = y(v);
        fd += (fd ? "L" : "M") + px.toFixed(1) + " " + py.toFixed(1);
        var c = el("circle", { cx: px, cy: py, r: 2.6, "class": "forecast-pt" }, g);
        el("title", {}, c).textContent = "+" + Math.round(h / 60) + " min: " + v.toFixed(1) + " " + opts.unit;
        el("text", { x: px, y: py - 5, "text-anchor": "middle", "class": "forecast-label" }, g)
          .textContent = "+" + Math.round(h / 60);
      });
      if (fd) g.insertBefore(el("path", { d: fd, "class": "forecast" }), g.firstChild);  // under the points
    }
  };

  /* ids: node ids; edges: [{from, to, weight}]; prev: {id: {x, y}} from the last layout (kept so
   * the picture does not jump when the model's graph changes a little). Deterministic. */
  HG.forceLayout = function (ids, edges, prev, W, H) {
    var n = ids.length, pos = {}, i;
    ids.forEach(function (id, k) {
      var p = prev && prev[id];
      var a = 2 * Math.PI * k / Math.max(1, n);
      pos[id] = p ? { x: p.x, y: p.y } : { x: W / 2 + Math.cos(a) * W * 0.3, y: H / 2 + Math.sin(a) * H * 0.3 };
    });
    if (n < 2) { if (n === 1) pos[ids[0]] = { x: W / 2, y: H / 2 }; return pos; }
    var maxW = 0;
    edges.forEach(function (e) { maxW = Math.max(maxW, e.weight || 0); });
    var k0 = Math.sqrt(W * H / n) * 0.6;
    for (var it = 0; it < 250; it++) {
      var temp = 12 * (1 - it / 250) + 0.5, f = {};
      ids.forEach(function (id) { f[id] = { x: 0, y: 0 }; });
      for (i = 0; i < n; i++) for (var j = i + 1; j < n; j++) {
        var a = pos[ids[i]], b = pos[ids[j]];
        var dx = a.x - b.x, dy = a.y - b.y, d2 = Math.max(dx * dx + dy * dy, 1), d = Math.sqrt(d2);
        var rep = k0 * k0 / d;
        f[ids[i]].x += dx / d * rep; f[ids[i]].y += dy / d * rep;
        f[ids[j]].x -= dx / d * rep; f[ids[j]].y -= dy / d * rep;
      }
      edges.forEach(function (e) {
        var a = pos[e.from], b = pos[e.to];
        if (!a || !b || e.from === e.to) return;
        var s = maxW > 0 ? (e.weight || 0) / maxW : 0;
        var dx = a.x - b.x, dy = a.y - b.y, d = Math.max(Math.sqrt(dx * dx + dy * dy), 1);
        var pull = d * d / k0 * s * 1.5;
        f[e.from].x -= dx / d * pull; f[e.from].y -= dy / d * pull;
        f[e.to].x += dx / d * pull; f[e.to].y += dy / d * pull;
      });
      ids.forEach(function (id) {
        var p = pos[id], v = f[id];
        v.x += (W / 2 - p.x) * 0.05; v.y += (H / 2 - p.y) * 0.05;  // gravity: stay in view
        var m = Math.sqrt(v.x * v.x + v.y * v.y) || 1;
        p.x += v.x / m * Math.min(m, temp); p.y += v.y / m * Math.min(m, temp);
      });
    }
    // Fill the picture: scale the layout's bounding box to the view (labels need the margins).
    var xs = ids.map(function (id) { return pos[id].x; }), ys = ids.map(function (id) { return pos[id].y; });
    var x0 = Math.min.apply(null, xs), x1 = Math.max.apply(null, xs);
    var y0 = Math.min.apply(null, ys), y1 = Math.max.apply(null, ys);
    var sx = (W - 100) / Math.max(x1 - x0, 1), sy = (H - 80) / Math.max(y1 - y0, 1), sc = Math.min(sx, sy);
    var ox = (W - (x1 - x0) * sc) / 2, oy = (H - 20 - (y1 - y0) * sc) / 2;
    ids.forEach(function (id) {
      pos[id] = { x: ox + (pos[id].x - x0) * sc, y: oy + (pos[id].y - y0) * sc };
    });
    return pos;
  };

  /* nodes: [{id, label, sub, state: "ok"|"fault"|"warn"|"unknown", online}], edges as above. */
  /* One line per pair of boards: the learned graph is directed (i listens to j), the line shows
   * the stronger direction and names both. */
  HG.pairs = function (edges) {
    var pairs = {}, out = [];
    edges.forEach(function (e) {
      if (e.from === e.to || !(e.weight > 0)) return;
      var k = e.from < e.to ? e.from + "|" + e.to : e.to + "|" + e.from;
      var p = pairs[k];
      if (!p) { p = pairs[k] = { a: e.from < e.to ? e.from : e.to, b: e.from < e.to ? e.to : e.from, weight: 0, dirs: [] }; out.push(p); }
      p.weight = Math.max(p.weight, e.weight);
      p.dirs.push(e.to + " listens to " + e.from + ": " + e.weight.toFixed(3));
    });
    return out;
  };

  HG.graph = function (svg, nodes, edges, pos, onClick) {
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    var pairs = HG.pairs(edges), maxW = 0;
    pairs.forEach(function (p) { maxW = Math.max(maxW, p.weight); });
    pairs.forEach(function (p) {
      var a = pos[p.a], b = pos[p.b];
      if (!a || !b) return;
      var s = maxW > 0 ? p.weight / maxW : 0;
      var line = el("line", { x1: a.x, y1: a.y, x2: b.x, y2: b.y, "class": "edge",
                              "stroke-width": (0.8 + 7 * s).toFixed(2), "stroke-opacity": (0.25 + 0.6 * s).toFixed(2),
                              "data-a": p.a, "data-b": p.b, "data-weight": p.weight }, svg);
      el("title", {}, line).textContent = "learned link " + p.a + " – " + p.b + "\n" + p.dirs.join("\n");
    });
    var colors = { ok: "#1f9d55", warn: "#d98a00", fault: "#d2333f", unknown: "#9aa1ad" };
    nodes.forEach(function (nd) {
      var p = pos[nd.id];
      if (!p) return;
      var g = el("g", { "class": "node", "data-dev": nd.id, transform: "translate(" + p.x.toFixed(1) + "," + p.y.toFixed(1) + ")" }, svg);
      var c = colors[nd.state] || colors.unknown;
      el("circle", { r: 13, fill: nd.online ? c : "#fff", stroke: c, "stroke-dasharray": nd.online ? null : "3 2" }, g);
      el("text", { y: 26 }, g).textContent = nd.label;
      if (nd.sub) el("text", { y: 37, "class": "val" }, g).textContent = nd.sub;
      el("title", {}, g).textContent = nd.title || nd.label;
      if (onClick) g.addEventListener("click", function () { onClick(nd.id); });
    });
  };
})();
