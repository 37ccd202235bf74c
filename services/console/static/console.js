/* The lab console's page: panels from Prometheus (through /console/api/prometheus/, every 2 s),
   the stack's replicas, the controls (each action needs the operator token, kept in sessionStorage,
   sent as a bearer header, never in a URL), and every action as a mark on the charts' time axis. */
"use strict";

const API = "api/";
const REFRESH_MS = 2000;
const WINDOW_S = 300;
const TOKEN_KEY = "scaleshop-console-token";
const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"];
const RATE = "[10s]";
const zeroIfNone = (hits, all) => `(${hits} or (${all} * 0))`;

const PANELS = [
  { id: "replicas", title: "Replicas scraped and up, per service",
    query: 'sum by (service) (up{job="scaleshop", service!="gateway"})', label: m => m.service },
  { id: "throughput", title: "Throughput per replica (requests/s)",
    query: `sum by (replica) (rate(scaleshop_http_requests_total{service=~"user|catalog"}${RATE}))`, label: m => m.replica },
  { id: "p50", title: "p50 latency per route (ms)",
    query: "1000 * histogram_quantile(0.5, sum by (le, route) (rate(scaleshop_http_request_duration_seconds_bucket[20s])))", label: m => m.route },
  { id: "p99", title: "p99 latency per route (ms)",
    query: "1000 * histogram_quantile(0.99, sum by (le, route) (rate(scaleshop_http_request_duration_seconds_bucket[20s])))", label: m => m.route },
  { id: "errors", title: "Error rate (5xx share of requests) per service",
    query: zeroIfNone(`sum by (service) (rate(scaleshop_http_requests_total{status=~"5.."}${RATE}))`,
                      `sum by (service) (rate(scaleshop_http_requests_total${RATE}))`) +
           ` / sum by (service) (rate(scaleshop_http_requests_total${RATE}))`, label: m => m.service },
  { id: "hit-ratio", title: "Cache hit ratio per pattern",
    query: zeroIfNone(`sum by (pattern) (rate(scaleshop_cache_requests_total{result="hit"}${RATE}))`,
                      `sum by (pattern) (rate(scaleshop_cache_requests_total${RATE}))`) +
           ` / sum by (pattern) (rate(scaleshop_cache_requests_total${RATE}))`, label: m => m.pattern },
  { id: "round-trips", title: "Database round trips per request (catalog)",
    query: `sum(rate(scaleshop_db_round_trips_total{service="catalog", route!="background"}${RATE})) / sum(rate(scaleshop_http_requests_total{service="catalog"}${RATE}))`,
    label: () => "catalog" },
  { id: "consumer-lag", title: "Consumer lag per group (messages)",
    query: "sum by (group) (scaleshop_consumer_lag)", label: m => m.group },
  { id: "jobs", title: "Jobs by state",
    query: "sum by (state) (scaleshop_jobs)", label: m => m.state },
  { id: "event-lag", title: "Event-folding lag, p99 (s)",
    query: "histogram_quantile(0.99, sum by (le) (rate(scaleshop_event_fold_lag_seconds_bucket[30s])))", label: () => "p99" },
];

let marks = [];
const charts = {};

function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }

function showToken() {
  document.getElementById("token-state").textContent = token() ? "token set" : "no token";
}

function say(text, isError) {
  const el = document.getElementById("action-result");
  el.textContent = text;
  el.className = isError ? "error" : "";
}

async function getJson(path) {
  const response = await fetch(API + path, { headers: { Accept: "application/json" } });
  const body = await response.json();
  if (!response.ok) throw new Error(body.error ? body.error.message : response.statusText);
  return body;
}

async function act(method, path, body) {
  say(`${path}: running…`, false);
  const headers = { Authorization: "Bearer " + token(), Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  try {
    const response = await fetch(API + "actions/" + path, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    const answer = await response.json();
    if (!response.ok) {
      say(`${path}: ${response.status} ${answer.error.code}: ${answer.error.message}`, true);
      return;
    }
    say(`${answer.label}: ${answer.result}` + (answer.seconds === undefined ? " (running)" : ` (${answer.seconds} s)`), false);
  } catch (err) {
    say(`${path}: ${err}`, true);
  }
  refreshMarks();
  refreshState();
}

/* ---- the replicas and servers ---------------------------------------------------------- */

function replicaBox(service, replicas) {
  const box = document.createElement("div");
  box.className = "service";
  box.dataset.service = service;
  const title = document.createElement("h2");
  title.textContent = `${service}: ${replicas.filter(r => r.ready).length}/${replicas.length} ready`;
  box.append(title);
  for (const r of replicas) {
    const span = document.createElement("span");
    span.className = "replica " + (r.ready ? "ready" : "not-ready");
    span.dataset.replica = r.name;
    span.textContent = `${r.name} ${r.ready ? "ready" : r.state}`;
    box.append(span);
  }
  return box;
}

async function refreshState() {
  let state;
  try { state = await getJson("state"); } catch (err) { return; }
  const holder = document.getElementById("replicas");
  const boxes = Object.entries(state.replicas).map(([service, rs]) => replicaBox(service, rs));
  const servers = document.createElement("div");
  servers.className = "service";
  servers.id = "servers";
  const load = state.load ? `load ${state.load.rate}/s (pid ${state.load.pid})` : "no load run";
  servers.textContent = `memcached ${state.servers.memcached} · kafka ${state.servers.kafka} · ` +
    `CACHE_PATTERNS="${state.cache_patterns}" · ${load}` + (state.running ? ` · running: ${state.running}` : "");
  holder.replaceChildren(...boxes, servers);
  const log = document.getElementById("action-log");
  log.replaceChildren(...state.marks.slice(-6).reverse().map(m => {
    const li = document.createElement("li");
    li.textContent = `${new Date(m.time * 1000).toLocaleTimeString()} ${m.label}: ${m.result}`;
    return li;
  }));
  const select = document.getElementById("kill-replica");
  const current = select.value;
  const names = Object.values(state.replicas).flat().filter(r => r.state === "running").map(r => r.name);
  select.replaceChildren(...names.map(n => new Option(n, n, false, n === current)));
}

/* ---- marks ----------------------------------------------------------------------------- */

async function refreshMarks() {
  try { marks = (await getJson("marks")).marks; } catch (err) { /* keep the last ones */ }
}

function drawMarks(u) {
  const ctx = u.ctx;
  const { left, top, width, height } = u.bbox;
  ctx.save();
  ctx.strokeStyle = "#555";
  ctx.fillStyle = "#333";
  ctx.setLineDash([4, 3]);
  ctx.font = `${Math.round(10 * devicePixelRatio)}px sans-serif`;
  for (const [i, mark] of marks.entries()) {
    const x = Math.round(u.valToPos(mark.time, "x", true));
    if (x < left || x > left + width) continue;
    ctx.beginPath();
    ctx.moveTo(x, top);
    ctx.lineTo(x, top + height);
    ctx.stroke();
    ctx.fillText(mark.label, x + 3, top + (12 + 12 * (i % 3)) * devicePixelRatio);  // staggered: close marks stay legible
  }
  ctx.restore();
}

/* ---- panels ---------------------------------------------------------------------------- */

function panelElement(panel) {
  const el = document.createElement("div");
  el.className = "panel";
  el.id = "panel-" + panel.id;
  const title = document.createElement("h2");
  title.textContent = panel.title;
  const plot = document.createElement("div");
  plot.className = "plot";
  const latest = document.createElement("ul");
  latest.className = "latest";
  el.append(title, plot, latest);
  return el;
}

function toSeries(panel, result, start, end, step) {
  const times = [];
  for (let t = start; t <= end; t += step) times.push(t);
  const index = new Map(times.map((t, i) => [t, i]));
  const series = result.map(r => {
    const values = new Array(times.length).fill(null);
    for (const [t, v] of r.values) {
      const i = index.get(Math.round(t));
      const num = Number(v);
      if (i !== undefined && Number.isFinite(num)) values[i] = num;
    }
    return { label: String(panel.label(r.metric) || "?"), values };
  }).sort((a, b) => a.label.localeCompare(b.label));
  return { times, series };
}

function renderPanel(panel, el, data) {
  const plot = el.querySelector(".plot");
  const latest = el.querySelector(".latest");
  const shown = data.series.filter(s => s.values.some(v => v !== null));
  if (!shown.length) {
    charts[panel.id]?.destroy();
    delete charts[panel.id];
    plot.innerHTML = '<p class="no-data">no data yet</p>';
    latest.replaceChildren();
    el.dataset.state = "no-data";
    return;
  }
  el.dataset.state = "data";
  const labels = shown.map(s => s.label).join("|");
  const aligned = [data.times, ...shown.map(s => s.values)];
  let chart = charts[panel.id];
  if (!chart || chart._labels !== labels) {
    chart?.destroy();
    plot.replaceChildren();
    chart = new uPlot({
      width: Math.max(plot.clientWidth, 560), height: 200,
      series: [{}, ...shown.map((s, i) => ({ label: s.label, stroke: COLORS[i % COLORS.length], width: 1.5, spanGaps: false }))],
      axes: [{}, { size: 60 }],
      hooks: { draw: [drawMarks] },
    }, aligned, plot);
    chart._labels = labels;
    charts[panel.id] = chart;
  } else {
    chart.setData(aligned);
  }
  latest.replaceChildren(...shown.map(s => {
    const last = [...s.values].reverse().find(v => v !== null);
    const li = document.createElement("li");
    li.dataset.series = s.label;
    li.dataset.value = String(last);
    li.textContent = `${s.label}: ${formatValue(last)}`;
    return li;
  }));
}

function formatValue(v) {
  if (v === null || v === undefined) return "-";
  if (Math.abs(v) >= 100) return v.toFixed(0);
  if (Math.abs(v) >= 1) return v.toFixed(2);
  return v.toFixed(3);
}

async function refreshPanel(panel, el, end) {
  const step = 2;
  const start = end - WINDOW_S;
  const query = new URLSearchParams({ query: panel.query, start, end, step });
  try {
    const body = await getJson("prometheus/query_range?" + query);
    renderPanel(panel, el, toSeries(panel, body.data.result, start, end, step));
  } catch (err) {
    el.querySelector(".plot").innerHTML = "";
    const p = document.createElement("p");
    p.className = "no-data";
    p.textContent = `no data yet (${err.message})`;
    el.querySelector(".plot").append(p);
    el.dataset.state = "error";
  }
}

async function refreshAll(elements) {
  const end = Math.floor(Date.now() / 2000) * 2;
  await Promise.all([refreshState(), refreshMarks()]);
  await Promise.all(PANELS.map(panel => refreshPanel(panel, elements[panel.id], end)));
  document.body.dataset.refreshed = String(end);
}

/* ---- wiring ---------------------------------------------------------------------------- */

function wire() {
  document.getElementById("token-form").addEventListener("submit", event => {
    event.preventDefault();
    const input = document.getElementById("token");
    sessionStorage.setItem(TOKEN_KEY, input.value.trim());
    input.value = "";
    showToken();
  });
  document.getElementById("scale-form").addEventListener("submit", event => {
    event.preventDefault();
    act("POST", "scale", { service: document.getElementById("scale-service").value,
                           replicas: Number(document.getElementById("scale-replicas").value) });
  });
  document.getElementById("cache-form").addEventListener("submit", event => {
    event.preventDefault();
    const patterns = ["cache-objects", "cache-queries"].map(id => document.getElementById(id))
      .filter(box => box.checked).map(box => box.value);
    act("POST", "cache", { patterns });
  });
  document.getElementById("load-form").addEventListener("submit", event => {
    event.preventDefault();
    act("POST", "load", { rate: Number(document.getElementById("load-rate").value),
                          duration: Number(document.getElementById("load-duration").value),
                          mix: document.getElementById("load-mix").value.trim() });
  });
  document.getElementById("load-stop").addEventListener("click", () => act("DELETE", "load"));
  document.getElementById("kill").addEventListener("click",
    () => act("POST", "kill", { replica: document.getElementById("kill-replica").value }));
  const seconds = () => Number(document.getElementById("fault-seconds").value);
  document.getElementById("pause-memcached").addEventListener("click",
    () => act("POST", "pause-memcached", { seconds: seconds() }));
  document.getElementById("stop-kafka").addEventListener("click",
    () => act("POST", "stop-kafka", { seconds: seconds() }));
}

function main() {
  showToken();
  wire();
  const holder = document.getElementById("panels");
  const elements = {};
  for (const panel of PANELS) {
    elements[panel.id] = panelElement(panel);
    holder.append(elements[panel.id]);
  }
  let busy = false;
  const tick = async () => {
    if (busy) return;
    busy = true;
    try { await refreshAll(elements); } finally { busy = false; }
  };
  tick();
  setInterval(tick, REFRESH_MS);
}

document.addEventListener("DOMContentLoaded", main);
