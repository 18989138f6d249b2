// sparsefinder web page: reports' Pareto curves and one input's attention graph, drawn as inline SVG.
// Vanilla JS, no dependencies: everything it loads comes from this service.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
// Colours and kinds come with the report (sparsefinder.report.style_predictors, the same as the PNG);
// this only orders the kinds and gives each its dash pattern.
const KINDS = { learned: "", "data-informed": "", fixed: "2 3", reference: "6 4" };
const state = { report: null, shown: new Set() };

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, parent = null) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (parent) parent.appendChild(node);
  return node;
}

async function api(path, options = {}) {
  const res = await fetch(path, options);
  const body = await res.json();
  if (!res.ok) throw new Error(body.error ? body.error.message : res.statusText);
  return body;
}

function fmt(x) { return typeof x === "number" ? x.toFixed(4) : String(x); }

// ---------------------------------------------------------------- predictors
async function loadPredictors() {
  const data = await api("/v1/predictors");
  const tbody = $("predictors").querySelector("tbody");
  tbody.replaceChildren();
  const names = $("predictor-names");
  names.replaceChildren();
  for (const p of data.predictors) {
    const tr = document.createElement("tr");
    for (const v of [p.id, p.spec, p.model_id, p.created]) {
      const td = document.createElement("td");
      td.textContent = v ?? "";
      tr.appendChild(td);
    }
    tbody.appendChild(tr);
    const opt = document.createElement("option");
    opt.value = p.id;
    names.appendChild(opt);
  }
  const problems = Object.entries(data.problems);
  $("predictors-note").textContent = (data.predictors.length ? "" : "No stored predictors yet. ") +
    (problems.length ? "Unreadable: " + problems.map(([k, v]) => `${k} (${v})`).join(", ") : "");
}

// ---------------------------------------------------------------- reports
async function loadReports() {
  const data = await api("/v1/reports");
  const sel = $("report");
  sel.replaceChildren();
  for (const r of data.reports) {
    const opt = document.createElement("option");
    opt.value = r.id;
    opt.textContent = `${r.id} (${r.predictors.length} predictors)`;
    sel.appendChild(opt);
  }
  if (data.reports.length) await selectReport(data.reports[0].id);
  else $("report-note").textContent = "No reports yet: run `sparsefinder evaluate`.";
}

async function selectReport(id) {
  const report = await api(`/v1/reports/${encodeURIComponent(id)}`);
  state.report = report;
  state.shown = new Set(report.predictors.map((p) => p.spec));
  for (const [select, count] of [[$("layer"), report.num_layers], [$("head"), report.num_heads]]) {
    select.replaceChildren(new Option("all", ""));
    for (let i = 0; i < count; i++) select.appendChild(new Option(String(i), String(i)));
  }
  drawLegend(report);
  drawSummary(report);
  $("report-note").textContent = `dataset: ${report.dataset.path} · ${report.dataset.sequences} sequences · ` +
    `L=${report.dataset.max_length} · gold sparsity ${fmt(report.gold.sparsity)} · ` +
    `static plot: /v1/reports/${report.id}/pareto.svg`;
  drawPareto();
}

// The legend, one group per kind: a tick box, a line swatch in the curve's colour and dash, the spec.
function drawLegend(report) {
  const box = $("report-predictors");
  box.replaceChildren();
  for (const kind of Object.keys(KINDS)) {
    const members = report.predictors.filter((p) => p.kind === kind);
    if (!members.length) continue;
    const group = document.createElement("div");
    group.className = "kind-group";
    group.dataset.kind = kind;
    const title = document.createElement("strong");
    title.textContent = kind;
    group.appendChild(title);
    for (const p of members) {
      const label = document.createElement("label");
      label.className = "legend-entry";
      label.dataset.predictor = p.spec;
      const cb = document.createElement("input");
      cb.type = "checkbox";
      cb.checked = true;
      cb.value = p.spec;
      cb.addEventListener("change", () => {
        if (cb.checked) state.shown.add(p.spec); else state.shown.delete(p.spec);
        drawPareto();
      });
      const swatch = document.createElementNS(SVG, "svg");
      swatch.setAttribute("width", "22");
      swatch.setAttribute("height", "10");
      swatch.setAttribute("class", "swatch");
      el("line", { x1: 1, y1: 5, x2: 21, y2: 5, stroke: p.color, "stroke-width": 2.5,
        "stroke-dasharray": KINDS[kind] }, swatch);
      label.append(cb, swatch, " ", p.spec);
      group.appendChild(label);
    }
    box.appendChild(group);
  }
}

// The summary numbers of every predictor (all layers and heads), grouped like the legend.
function drawSummary(report) {
  const tbody = $("summary").querySelector("tbody");
  tbody.replaceChildren();
  const order = Object.keys(KINDS);
  const rows = [...report.predictors].sort((a, b) => order.indexOf(a.kind) - order.indexOf(b.kind) ||
    (b.summary.auc ?? 0) - (a.summary.auc ?? 0));
  for (const p of rows) {
    const tr = document.createElement("tr");
    tr.dataset.predictor = p.spec;
    const s = p.summary;
    for (const v of [p.spec, p.kind, s["sparsity_at_recall_0.95"], s["sparsity_at_recall_0.99"], s.auc]) {
      const td = document.createElement("td");
      td.textContent = v === null || v === undefined ? "–" : fmt(v);
      tr.appendChild(td);
    }
    tr.firstChild.style.borderLeft = `4px solid ${p.color}`;
    tbody.appendChild(tr);
  }
}

// Indices of the non-dominated [sparsity, recall, ...] points, by increasing sparsity.
function paretoFront(points) {
  const order = points.map((_, i) => i).sort((i, j) => points[j][0] - points[i][0] || points[j][1] - points[i][1]);
  const front = [];
  let best = -1;
  for (const i of order) if (points[i][1] > best) { front.push(i); best = points[i][1]; }
  return front.sort((i, j) => points[i][0] - points[j][0]);
}

function goldSparsity(report) {
  const layer = $("layer").value, head = $("head").value;
  if (layer === "" && head === "") return report.gold.sparsity;
  const cells = [];
  report.gold.per_head.gold_sparsity.forEach((row, l) => row.forEach((v, h) => {
    if ((layer === "" || Number(layer) === l) && (head === "" || Number(head) === h)) cells.push(v);
  }));
  return cells.reduce((a, b) => a + b, 0) / cells.length;
}

function settingValue(setting, metric) {
  const layer = $("layer").value, head = $("head").value;
  if (layer === "" && head === "") return setting[metric];
  const table = setting.per_head[metric];
  const cells = [];
  table.forEach((row, l) => row.forEach((v, h) => {
    if ((layer === "" || Number(layer) === l) && (head === "" || Number(head) === h)) cells.push(v);
  }));
  return cells.reduce((a, b) => a + b, 0) / cells.length;
}

function drawPareto() {
  const svg = $("pareto");
  svg.replaceChildren();
  const report = state.report;
  if (!report) return;
  const W = 640, H = 420, m = { l: 50, r: 15, t: 10, b: 40 };
  const x = (s) => m.l + s * (W - m.l - m.r);
  const y = (r) => H - m.b - r * (H - m.t - m.b);
  el("rect", { x: m.l, y: m.t, width: W - m.l - m.r, height: H - m.t - m.b, fill: "none", stroke: "#ccc" }, svg);
  for (let t = 0; t <= 1.0001; t += 0.2) {
    el("text", { x: x(t), y: H - m.b + 15, "text-anchor": "middle" }, svg).textContent = t.toFixed(1);
    el("text", { x: m.l - 6, y: y(t) + 4, "text-anchor": "end" }, svg).textContent = t.toFixed(1);
  }
  el("text", { x: (W + m.l) / 2, y: H - 5, "text-anchor": "middle" }, svg).textContent = "sparsity (pairs skipped)";
  el("text", { x: 12, y: H / 2, transform: `rotate(-90 12 ${H / 2})`, "text-anchor": "middle" }, svg)
    .textContent = "recall of the gold graph";
  const shown = report.predictors.filter((p) => state.shown.has(p.spec));
  const curves = shown.map((p) => [p, p.settings.map((s) => [settingValue(s, "sparsity"), settingValue(s, "recall"), s])]);
  // the Pareto front over every shown non-reference predictor, under the curves
  const all = curves.filter(([p]) => p.kind !== "reference").flatMap(([, pts]) => pts);
  const front = paretoFront(all).map((i) => all[i]);
  if (front.length) {
    el("polyline", { points: front.map(([s, r]) => `${x(s)},${y(r)}`).join(" "), class: "front", fill: "none",
      stroke: "#facc15", "stroke-opacity": 0.7, "stroke-width": 10, "stroke-linecap": "round",
      "stroke-linejoin": "round" }, svg);
  }
  const gold = goldSparsity(report);
  el("line", { id: "gold-line", x1: x(gold), x2: x(gold), y1: m.t, y2: H - m.b, stroke: "#b45309",
    "stroke-width": 1.5, "stroke-dasharray": "6 3 2 3", "data-sparsity": gold }, svg);
  el("text", { id: "gold-label", x: x(gold) - 4, y: H - m.b - 6, "text-anchor": "end", fill: "#b45309" }, svg)
    .textContent = `gold sparsity ${gold.toFixed(3)}`;
  for (const [p, pts] of curves) {
    const onFront = new Set(paretoFront(pts));
    const order = [...pts].sort((a, b) => a[0] - b[0]);
    el("polyline", { points: order.map(([s, r]) => `${x(s)},${y(r)}`).join(" "), fill: "none", stroke: p.color,
      "stroke-width": 1.8, "stroke-dasharray": KINDS[p.kind] ?? "", class: "curve", "data-predictor": p.spec }, svg);
    pts.forEach(([s, r, setting], i) => {
      // filled: on this predictor's own Pareto front; hollow: dominated by another of its settings
      const c = el("circle", { cx: x(s), cy: y(r), r: onFront.has(i) ? 4 : 3, fill: onFront.has(i) ? p.color : "#fff",
        stroke: p.color, "stroke-width": 1.5, class: "point", "data-predictor": p.spec,
        "data-setting": setting.spec }, svg);
      c.addEventListener("mouseenter", () => showTip(c, p, setting, s, r));
      c.addEventListener("mouseleave", () => { $("tip").hidden = true; });
    });
  }
}

function showTip(circle, predictor, setting, sparsity, recall) {
  const tip = $("tip");
  tip.textContent = `${setting.spec}\n${predictor.knob ?? "knob"} = ${setting.knob_value}\n` +
    `recall ${fmt(recall)}\nsparsity ${fmt(sparsity)}\nprecision ${fmt(settingValue(setting, "precision"))}`;
  tip.style.left = `${Number(circle.getAttribute("cx")) + 8}px`;
  tip.style.top = `${Number(circle.getAttribute("cy")) + 8}px`;
  tip.hidden = false;
}

// ---------------------------------------------------------------- attention graph
async function showAttention(ev) {
  ev.preventDefault();
  const stats = $("attn-stats");
  stats.className = "muted";
  stats.textContent = "computing…";
  try {
    const res = await api("/v1/attention", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ text: $("attn-text").value, predictor: $("attn-predictor").value,
        layer: Number($("attn-layer").value), head: Number($("attn-head").value), truncate: true }),
    });
    stats.textContent = `recall ${fmt(res.recall)} · sparsity ${fmt(res.sparsity)} · precision ` +
      `${fmt(res.precision)} · gold sparsity ${fmt(res.gold_sparsity)} · ${res.tokens.length} tokens`;
    drawAttention(res);
  } catch (err) {
    stats.className = "error";
    stats.textContent = err.message;
  }
}

function drawAttention(res) {
  const n = res.tokens.length, cell = Math.max(4, Math.min(18, Math.floor(560 / n))), pad = 90;
  const svg = $("attn");
  svg.replaceChildren();
  svg.setAttribute("width", pad + n * cell + 10);
  svg.setAttribute("height", pad + n * cell + 10);
  for (let i = 0; i < n; i++) {
    const pred = new Set(res.predicted[i]), gold = new Set(res.gold[i]);
    for (const j of new Set([...pred, ...gold])) {
      const kind = pred.has(j) && gold.has(j) ? "both" : gold.has(j) ? "missed" : "extra";
      el("rect", { x: pad + j * cell, y: pad + i * cell, width: cell - 1, height: cell - 1, class: kind }, svg);
    }
    if (cell >= 8) {
      el("text", { x: pad - 4, y: pad + i * cell + cell - 2, "text-anchor": "end" }, svg).textContent = res.tokens[i];
      const tx = pad + i * cell + cell - 2;
      el("text", { x: tx, y: pad - 4, transform: `rotate(-60 ${tx} ${pad - 4})` }, svg).textContent = res.tokens[i];
    }
  }
}

// ---------------------------------------------------------------- start
async function start() {
  $("report").addEventListener("change", (e) => selectReport(e.target.value));
  $("layer").addEventListener("change", drawPareto);
  $("head").addEventListener("change", drawPareto);
  $("attn-form").addEventListener("submit", showAttention);
  for (let i = 0; i < 60; i++) {
    const res = await fetch("/readyz");
    if (res.ok) { $("ready").textContent = `ready · ${(await res.json()).model}`; break; }
    const why = (await res.json().catch(() => ({}))).error?.message || "";
    $("ready").textContent = why.includes("failed") ? why : "loading the model…";
    if (why.includes("failed")) break;
    await new Promise((r) => setTimeout(r, 1000));
  }
  await Promise.all([loadPredictors(), loadReports()]).catch((err) => {
    $("report-note").className = "error";
    $("report-note").textContent = err.message;
  });
  document.body.dataset.loaded = "true";
}

start();
