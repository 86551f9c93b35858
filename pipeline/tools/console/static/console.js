// The Segflow console: plain script, no build step. Reads /console/api/* and draws with uPlot.
"use strict";

const params = new URLSearchParams(location.search);
if (params.get("key")) sessionStorage.setItem("segflow-key", params.get("key"));
const KEY = sessionStorage.getItem("segflow-key");
const COLOURS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04",
  "#db2777", "#4b5563", "#65a30d"];

function $(selector) { return document.querySelector(selector); }

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v; else node.setAttribute(k, v);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

async function api(path) {
  const headers = KEY ? { Authorization: "Bearer " + KEY } : {};
  const response = await fetch("api/" + path, { headers });
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function status(text, bad) {
  const node = $("#status");
  node.textContent = text;
  node.classList.toggle("bad", !!bad);
}

function fmt(n) {
  if (n === null || n === undefined || Number.isNaN(n)) return "–";
  if (Math.abs(n) >= 100) return Math.round(n).toLocaleString("en");
  return (Math.round(n * 10) / 10).toLocaleString("en");
}

// -- charts -------------------------------------------------------------------------------

const charts = {};

function draw(id, names, xs, columns) {
  const node = document.getElementById(id);
  let chart = charts[id];
  const key = names.join("\u0000");
  if (!chart || chart.key !== key) {
    if (chart) chart.plot.destroy();
    node.textContent = "";
    const opts = {
      width: Math.max(280, node.clientWidth || 480),
      height: 180,
      scales: { x: { time: true } },
      series: [{}, ...names.map((name, i) => ({
        label: name, stroke: COLOURS[i % COLOURS.length], width: 1.5, points: { show: false },
      }))],
      axes: [{}, { size: 60 }],
      legend: { show: true },
    };
    chart = charts[id] = { key, plot: new uPlot(opts, [xs, ...columns], node) };
    node.dataset.series = String(names.length);
  } else {
    chart.plot.setData([xs, ...columns]);
  }
  node.dataset.points = String(xs.length);
}

window.addEventListener("resize", () => {
  for (const [id, chart] of Object.entries(charts)) {
    const node = document.getElementById(id);
    chart.plot.setSize({ width: Math.max(280, node.clientWidth), height: 180 });
  }
});

// -- the pipeline, live ---------------------------------------------------------------------

let samples = [];

function rate(a, b, value) {
  const dt = b.t - a.t;
  return dt > 0 ? Math.max(0, (value(b) - value(a)) / dt) : 0;
}

function sinksOf(sample, kind, figure) {
  let total = 0;
  for (const [name, figures] of Object.entries(sample.sinks)) {
    if (kind && sample.kinds[name] !== kind) continue;
    total += figures[figure] || 0;
  }
  return total;
}

function webhookDelivered(s) {
  let total = 0;
  for (const figures of Object.values(s.sinks)) {
    total += (figures.webhook_toggles_delivered_total || 0)
      + (figures.destination_exports_delivered_total || 0);
  }
  return total;
}

function retries(s) {
  let total = 0;
  for (const figures of Object.values(s.sinks)) total += figures.webhook_retries_total || 0;
  return total;
}

const postgresRows = (s) => sinksOf(s, "postgres", "records_total");
const documentsOut = (s) => Object.values(s.documents_out).reduce((a, b) => a + b, 0);

function renderPipeline() {
  if (samples.length < 2) return;
  const pairs = samples.slice(1).map((b, i) => [samples[i], b]);
  const xs = pairs.map(([, b]) => b.t);
  const [a, b] = pairs[pairs.length - 1];
  $("#tile-events").textContent = fmt(rate(a, b, (s) => s.events_in));
  $("#tile-documents").textContent = fmt(rate(a, b, documentsOut));
  $("#tile-lag").textContent = fmt(Object.values(b.lag).reduce((x, y) => x + y, 0));
  $("#tile-dead").textContent = fmt(b.dead_letters);
  $("#tile-webhooks").textContent = fmt(rate(a, b, webhookDelivered));
  $("#tile-retries").textContent = fmt(retries(b));
  $("#tile-rows").textContent = fmt(rate(a, b, postgresRows));
  $("#tile-events-total").textContent = fmt(b.events_in);

  draw("chart-events", ["events in /s"], xs, [pairs.map(([p, q]) => rate(p, q, (s) => s.events_in))]);
  const collections = [...new Set(samples.flatMap((s) => Object.keys(s.documents_out)))].sort();
  draw("chart-documents", collections, xs, collections.map((c) =>
    pairs.map(([p, q]) => rate(p, q, (s) => s.documents_out[c] || 0))));
  const loops = Object.keys(b.lag);
  draw("chart-lag", loops, xs, loops.map((l) => pairs.map(([, q]) => q.lag[l] || 0)));
  draw("chart-webhooks", ["delivered /s", "retries /s"], xs, [
    pairs.map(([p, q]) => rate(p, q, webhookDelivered)),
    pairs.map(([p, q]) => rate(p, q, retries)),
  ]);
  draw("chart-rows", ["rows /s"], xs, [pairs.map(([p, q]) => rate(p, q, postgresRows))]);
  draw("chart-dead", ["dead letters"], xs, [pairs.map(([, q]) => q.dead_letters)]);
}

async function pollLive() {
  const since = samples.length ? samples[samples.length - 1].t : 0;
  const body = await api("live?since=" + since);
  samples = samples.concat(body.samples);
  const cutoff = Date.now() / 1000 - 15 * 60;
  samples = samples.filter((s) => s.t >= cutoff);
  renderPipeline();
}

// -- segments and groups ----------------------------------------------------------------------

async function pollSegments() {
  const body = await api("segments");
  const tbody = $("#segments-table tbody");
  tbody.textContent = "";
  for (const s of body.segments) {
    const change = s.change > 0 ? "+" + s.change : String(s.change);
    tbody.append(el("tr", { "data-key": s.key },
      el("td", {}, s.vendor),
      el("td", {}, s.name, s.group ? el("span", { class: "tag" }, "group") : null),
      el("td", { class: "num members" }, s.members),
      el("td", { class: "num" }, s.ever),
      el("td", { class: "num " + (s.change > 0 ? "up" : s.change < 0 ? "down" : "") }, change)));
  }
  if (!body.segments.length) {
    tbody.append(el("tr", {}, el("td", { colspan: 5 }, "no memberships in Postgres yet")));
  }
  const movers = $("#movers");
  movers.textContent = "";
  for (const m of body.movers) {
    movers.append(el("li", {}, m.label, " ", el("b", { class: m.change > 0 ? "up" : "down" },
      (m.change > 0 ? "+" : "") + m.change)));
  }
  if (!body.movers.length) movers.append(el("li", { class: "hint" }, "no change yet"));
  if (body.since) $("#movers-since").textContent = "since " + new Date(body.since * 1000).toLocaleTimeString();
  const top = body.segments.slice().sort((a, b) => b.members - a.members).slice(0, 10);
  if (top.length && top[0].series.length) {
    const xs = top[0].series.map(([t]) => t);
    draw("chart-sizes", top.map((s) => s.label), xs, top.map((s) => s.series.map(([, n]) => n)));
  }
}

// -- a person or record ---------------------------------------------------------------------

function table(headers, rows) {
  return el("table", {},
    el("thead", {}, el("tr", {}, ...headers.map((h) => el("th", {}, h)))),
    el("tbody", {}, ...rows.map((r) => el("tr", {}, ...r.map((c) => el("td", {}, c))))));
}

function show(value) {
  return typeof value === "string" ? value : JSON.stringify(value);
}

async function lookup(id) {
  const out = $("#lookup-result");
  out.textContent = "looking up " + id + "…";
  let body;
  try {
    body = await api("lookup?id=" + encodeURIComponent(id));
  } catch (err) {
    out.textContent = "";
    out.append(el("p", { class: "error" }, err.message));
    return;
  }
  out.textContent = "";
  const found = body.record || body.profile || body.memberships.length || body.toggles.length;
  out.append(el("h2", { id: "lookup-title" }, body.id, found ? null : " — nothing found"));
  if (body.record) {
    const r = body.record;
    out.append(el("h3", {}, "Record"),
      el("p", { class: "meta" }, "userId ", show(r.userId ?? "–"), " · devices ",
        (r.anonymousIds || []).join(", ") || "–", " · updated ", r.updatedAt || "–"),
      table(["property", "value"], Object.entries(r.properties || {}).map(([k, v]) => [k, show(v)])));
    const invalid = Object.entries(r.invalid || {});
    if (invalid.length) out.append(el("h3", {}, "Left out"), table(["property", "why"], invalid.map(([k, v]) => [k, show(v)])));
  }
  if (body.groups.length) {
    out.append(el("h3", {}, "Groups, and why"));
    for (const g of body.groups) {
      const mark = g.member === true ? "in" : g.member === false ? "not in" : "unknown";
      const verdict = (g.why[0] || "").split(" — ").slice(1).join(" — ");
      out.append(el("details", { class: "why", "data-group": g.name },
        el("summary", {}, el("span", { class: "tag " + mark.replace(" ", "-") }, mark), " ",
          el("b", {}, g.name), " ", el("span", { class: "meta" }, verdict)),
        el("pre", {}, g.why.join("\n"))));
    }
  }
  if (body.memberships.length) {
    out.append(el("h3", {}, "Memberships"), table(["vendor", "segment", "member", "first", "last"],
      body.memberships.map((m) => [m.vendor, m.segment, m.member ? "yes" : "no", m.first || "–", m.last || "–"])));
  }
  if (body.toggles.length) {
    out.append(el("h3", {}, "Recent toggles"), table(["when", "vendor", "segment", "change"],
      body.toggles.map((t) => [t.timestamp, t.vendor, t.segment, t.remove ? "left" : "entered"])));
  }
}

$("#lookup-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const id = $("#lookup-id").value.trim();
  if (id) location.hash = "lookup?id=" + encodeURIComponent(id);
});

// -- dead letters -----------------------------------------------------------------------------

async function pollDeadLetters() {
  const body = await api("dead-letters");
  const out = $("#dead-letters");
  out.textContent = "";
  const total = body.targets.reduce((n, t) => n + t.count, 0);
  out.append(el("p", { id: "dead-total" }, total + " dead letters in " + body.targets.length + " topics"));
  for (const t of body.targets) {
    if (!t.count) continue;
    out.append(el("h3", {}, t.name, " ", el("small", {}, t.kind + " · " + t.count + " · " + t.topic)),
      el("p", {}, "replay: ", el("code", {}, t.replay)),
      table(["when", "reason", "from", "document"], t.letters.map((l) => {
        const h = l.headers;
        const topic = h["segflow.source.topic"] || h.topic;
        const partition = h["segflow.source.partition"] ?? h.partition;
        const offset = h["segflow.source.offset"] ?? h.offset;
        return [
          new Date(l.timestamp).toISOString(),
          h["segflow.error"] || h.error || JSON.stringify(h),
          topic ? topic + "[" + partition + "] @" + offset : "–",
          show(l.payload).slice(0, 300),
        ];
      })));
  }
}

// -- pages ------------------------------------------------------------------------------------

const pages = {
  pipeline: { poll: pollLive, every: 2000 },
  segments: { poll: pollSegments, every: 10000 },
  lookup: { poll: null },
  "dead-letters": { poll: pollDeadLetters, every: 10000 },
};
let timer = null;

async function run(poll, every) {
  try {
    await poll();
    status("live · " + new Date().toLocaleTimeString());
  } catch (err) {
    status(err.message, true);
  }
  timer = setTimeout(() => run(poll, every), every);
}

function route() {
  const [name, query] = (location.hash.slice(1) || "pipeline").split("?");
  const page = pages[name] ? name : "pipeline";
  for (const section of document.querySelectorAll(".page")) section.hidden = section.id !== "page-" + page;
  for (const link of document.querySelectorAll("nav a")) link.classList.toggle("active", link.dataset.page === page);
  clearTimeout(timer);
  if (pages[page].poll) run(pages[page].poll, pages[page].every);
  if (page === "lookup") {
    const id = new URLSearchParams(query || "").get("id");
    if (id) { $("#lookup-id").value = id; lookup(id); }
  }
  // Charts drawn while hidden have no width: draw them again.
  window.dispatchEvent(new Event("resize"));
}

window.addEventListener("hashchange", route);
route();
