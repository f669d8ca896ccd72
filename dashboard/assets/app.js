// Shoal dashboard: follows /ui/events (server-sent events) and redraws
// each section from the snapshot it carries. No framework, nothing loaded
// from elsewhere.
"use strict";

const $ = (id) => document.getElementById(id);

// el builds an element: el("div", {class: "x"}, child, "text", ...).
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "width") e.style.width = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function svg(tag, attrs) {
  const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  return e;
}

function fill(id, ...children) {
  $(id).replaceChildren(...children.filter((c) => c !== undefined && c !== null && c !== false));
}

// dur prints milliseconds the way an operator reads them.
function dur(ms) {
  if (ms < 0) return "unknown";
  if (ms < 1000) return ms + " ms";
  if (ms < 60000) return (ms / 1000).toFixed(ms < 10000 ? 1 : 0) + " s";
  const m = Math.floor(ms / 60000), s = Math.round((ms % 60000) / 1000);
  if (m < 60) return m + " min " + s + " s";
  return Math.floor(m / 60) + " h " + (m % 60) + " min";
}

function ago(snapTime, t) {
  return dur(Math.max(0, Date.parse(snapTime) - Date.parse(t))) + " ago";
}

function bar(fraction, cls) {
  const pct = Math.max(0, Math.min(1, fraction)) * 100;
  return el("div", { class: "bar " + (cls || "") }, el("div", { width: pct.toFixed(1) + "%" }));
}

const stateWords = {
  up: "up", leaving: "leaving", down: "DOWN", recovering: "recovering", recovered: "down, recovered", left: "left",
};

function renderNodes(s) {
  const cards = s.nodes.map((n) => {
    const roles = [];
    if (n.self) roles.push(el("span", { class: "badge self" }, "this node"));
    if (n.coordinator) roles.push(el("span", { class: "badge role", "data-role": "coordinator" }, "coordinator"));
    if (n.etcd_leader) roles.push(el("span", { class: "badge role", "data-role": "etcd-leader" }, "etcd leader"));
    const live = n.state === "up" || n.state === "leaving";
    let lease = "none";
    if (live) lease = n.lease_left_ms < 0 ? "unknown" : dur(n.lease_left_ms);
    return el("div", { class: "node " + n.state, "data-node": n.name, "data-state": n.state },
      el("div", { class: "row" },
        el("span", { class: "name" }, n.name),
        el("span", { class: "badge " + n.state, "data-field": "state" }, stateWords[n.state] || n.state)),
      el("div", {}, ...roles),
      el("div", { class: "row" }, "incarnation", el("b", {}, n.incarnation || "\u2014")),
      el("div", { class: "row" }, "lease left", el("b", {}, lease)),
      n.step ? el("div", { class: "row" }, "recovery step", el("b", { "data-field": "step" }, n.step)) : null,
      n.slot !== undefined && n.slot !== null ? el("div", { class: "row" }, "bitmap slot", el("b", {}, n.slot)) : null,
      el("div", { class: "row" }, "since", el("b", {}, ago(s.time, n.since))));
  });
  fill("nodes", ...(cards.length ? cards : [el("p", { class: "muted" }, "No member seen yet.")]));
}

function renderRecoveries(s) {
  if (!s.recoveries.length) {
    fill("recoveries", el("p", { class: "muted" }, "No recovery recorded."));
    return;
  }
  fill("recoveries", ...s.recoveries.map((r) => {
    const steps = [];
    r.steps.forEach((st, i) => {
      if (i > 0) steps.push(el("span", { class: "arrow" }, "\u2192"));
      let text = st.name;
      if (st.state === "done") text = "\u2713 " + st.name + " " + dur(st.took_ms) + (st.outcome ? " \u00B7 " + st.outcome : "");
      else if (st.state === "running") text = "\u25B6 " + st.name + " (" + dur(st.took_ms) + ")";
      else if (st.state === "failing") text = "\u2717 " + st.name + " (attempt " + st.attempts + ")";
      steps.push(el("span", { class: "step " + st.state, "data-step": st.name, "data-state": st.state }, text));
    });
    const status = r.done ? "done in " + dur(r.took_ms) : "in progress for " + dur(r.took_ms);
    return el("div", { class: "recovery", "data-recovery": r.id, "data-done": String(r.done) },
      el("div", { class: "title" },
        el("span", {}, el("b", {}, r.victim), " incarnation " + r.incarnation),
        el("span", { class: "muted" }, status + (r.coordinator ? " \u00B7 coordinator " + r.coordinator : ""))),
      el("div", { class: "steps" }, ...steps),
      r.last_error ? el("div", { class: "muted" }, "last error: " + r.last_error) : null);
  }));
}

function renderEtcd(s) {
  const e = s.etcd;
  const rows = e.members.map((m) => el("tr", { "data-etcd-member": m.name },
    el("td", {}, el("span", { class: "dot " + (m.live ? "ok" : "bad") }), m.name),
    el("td", {}, m.leader ? "leader" : (m.learner ? "learner" : "follower")),
    el("td", {}, m.live ? "node live" : "node not live")));
  fill("etcd",
    el("p", {}, el("span", { class: "badge " + (e.healthy ? "up" : "down"), "data-field": "etcd-health" }, e.healthy ? "healthy" : "unhealthy"),
      " " + (e.mode || "") + " \u00B7 leader " + (e.leader || "none")),
    el("table", {}, el("tr", {}, el("th", {}, "member"), el("th", {}, "role"), el("th", {}, "")), ...rows));
}

function renderLocks(s) {
  const l = s.locks;
  if (!l) {
    fill("locks", el("p", { class: "muted" }, "The lock manager is not running on this node."));
    return;
  }
  const modes = ["NL", "CR", "CW", "PR", "PW", "EX"];
  fill("locks",
    el("table", {},
      el("tr", {}, ...modes.map((m) => el("th", {}, m))),
      el("tr", {}, ...modes.map((m) => el("td", { "data-mode": m }, l.held[m] || 0)))),
    el("p", {}, "resources " + l.resources + " \u00B7 waiters " + l.waiters + " \u00B7 ",
      el("span", { "data-field": "orphans" }, "orphans " + l.orphans),
      " \u00B7 wait-for cycles " + (l.cycles ? l.cycles.length : 0)),
    l.dead_owners && l.dead_owners.length ? el("p", { class: "muted" }, "dead owners: " + l.dead_owners.join(", ")) : null,
    l.cycles && l.cycles.length ? el("ul", {}, ...l.cycles.map((c) => el("li", {}, c.join(" \u2192 ") + " \u2192 " + c[0]))) : null,
    l.check !== "ok" ? el("p", { class: "muted" }, "check: " + l.check) : null);
}

function renderVolume(s) {
  const v = s.volume;
  if (!v) {
    fill("volume", el("p", { class: "muted" }, "No volume on this node."));
    return;
  }
  const legs = v.legs.map((l) => el("div", { "data-leg": l.index, "data-state": l.state },
    el("div", { class: "row" }, el("span", { class: "nowrap" }, el("span", { class: "dot " + (l.online && l.state !== "failed" ? "ok" : "bad") }),
      "leg " + l.index + " \u00B7 " + l.state + (l.online ? "" : " \u00B7 offline")), el("span", { class: "muted addr", title: l.addr }, l.addr.length > 48 ? "\u2026" + l.addr.slice(-47) : l.addr)),
    bar(l.resync, l.state === "in-sync" ? "" : (l.state === "failed" ? "bad" : "warn"))));
  let work = null;
  if (v.work) {
    const frac = v.work.total > 0 ? v.work.done / v.work.total : 0;
    work = el("div", { "data-field": "work" },
      el("div", {}, v.work.op + (v.work.leg ? " " + v.work.leg : "") + ": " + v.work.done + " / " + v.work.total + " regions"),
      bar(frac, "warn"));
  }
  fill("volume",
    el("p", {}, el("b", {}, v.name || "volume"), " \u00B7 " + (v.size_bytes / 1048576).toFixed(0) + " MiB \u00B7 " +
      v.regions + " regions \u00B7 dirty " + v.dirty_regions),
    ...legs, work);
}

function renderTraffic(s) {
  if (!s.traffic.length) {
    fill("traffic", el("p", { class: "muted" }, "No web tier serves on this cluster yet."));
    return;
  }
  fill("traffic", el("table", {},
    el("tr", {}, el("th", {}, "node"), el("th", {}, "requests/s"), el("th", {}, "errors/s"), el("th", {}, "p99")),
    ...s.traffic.map((t) => el("tr", { "data-traffic": t.node },
      el("td", {}, t.node), el("td", {}, t.requests_per_second.toFixed(1)),
      el("td", {}, t.errors_per_second.toFixed(2)), el("td", {}, t.p99_ms.toFixed(1) + " ms")))));
}

function renderServices(s) {
  if (!s.services.length) {
    fill("services", el("p", { class: "muted" }, "No service addresses configured."));
    return;
  }
  fill("services", el("table", {}, el("tr", {}, el("th", {}, "address"), el("th", {}, "held by")),
    ...s.services.map((a) => el("tr", {}, el("td", {}, a.addr), el("td", {}, a.holder || "nobody")))));
}

// renderAvailability plots live members over the window as an area, with
// the buckets where fewer nodes were live than known shaded red.
function renderAvailability(s) {
  const pts = s.availability;
  const W = 1000, H = 100, top = 8, bottom = 18;
  const end = Date.parse(s.time), start = end - s.window_ms;
  const known = Math.max(1, ...pts.map((p) => p.known));
  const x = (t) => ((Date.parse(t) - start) / s.window_ms) * W;
  const y = (v) => top + (1 - v / known) * (H - top - bottom);
  const plot = svg("svg", { class: "plot", viewBox: "0 0 " + W + " " + H, preserveAspectRatio: "none", "data-points": pts.length });
  const bucketW = (s.window_ms / 360 / s.window_ms) * W;
  let d = "";
  for (const p of pts) {
    const x0 = x(p.t), x1 = x0 + bucketW;
    // At least 4 units wide: a ten-second outage must stay visible on
    // an hour's plot.
    if (p.up < p.known) plot.append(svg("rect", { class: "gap", x: Math.min(x0, W - 4), y: top, width: Math.max(bucketW, 4), height: H - top - bottom }));
    d += (d ? "L" : "M") + x0.toFixed(1) + "," + y(p.up).toFixed(1) + "L" + x1.toFixed(1) + "," + y(p.up).toFixed(1);
  }
  if (pts.length) {
    const first = x(pts[0].t), last = x(pts[pts.length - 1].t) + bucketW;
    plot.append(svg("path", { class: "area", d: d + "L" + last.toFixed(1) + "," + y(0) + "L" + first.toFixed(1) + "," + y(0) + "Z" }));
  }
  const label = (tx, text, anchor) => { const t = svg("text", { x: tx, y: H - 4, "text-anchor": anchor }); t.textContent = text; plot.append(t); };
  label(2, "-" + dur(s.window_ms), "start");
  label(W - 2, "now", "end");
  const ty = svg("text", { x: 4, y: top + 10 }); ty.textContent = known + " nodes"; plot.append(ty);
  const down = pts.filter((p) => p.up < p.known).length;
  $("availability-span").textContent = "\u2014 live members over the last " + dur(s.window_ms) +
    (down ? " \u00B7 " + down + " interval(s) with a node down" : " \u00B7 all nodes up");
  fill("availability", plot);
}

function renderProblems(s) {
  const ps = s.problems || [];
  fill("problems", ...(ps.length ? ps.map((p) => el("li", {}, p)) : [el("li", { class: "muted" }, "none")]));
}

function render(s) {
  $("cluster").textContent = "cluster " + s.cluster;
  $("served-by").textContent = s.node + (s.ready ? "" : " (not ready)");
  $("clock").textContent = new Date(s.time).toISOString().replace("T", " ").slice(0, 19) + " UTC";
  renderNodes(s);
  renderRecoveries(s);
  renderEtcd(s);
  renderLocks(s);
  renderVolume(s);
  renderTraffic(s);
  renderServices(s);
  renderAvailability(s);
  renderProblems(s);
  document.body.dataset.snapshot = s.time;
}

function setConn(state, text) {
  const c = $("conn");
  c.className = "badge conn-" + state;
  c.dataset.conn = state;
  c.textContent = text;
}

function connect() {
  const es = new EventSource("events");
  es.addEventListener("open", () => setConn("live", "live"));
  es.addEventListener("error", () => setConn(es.readyState === EventSource.CLOSED ? "lost" : "wait",
    es.readyState === EventSource.CLOSED ? "disconnected" : "reconnecting"));
  es.addEventListener("snapshot", (ev) => {
    setConn("live", "live");
    render(JSON.parse(ev.data));
  });
}

connect();
