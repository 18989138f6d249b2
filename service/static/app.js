// sparsefinder web page: reports' Pareto curves and one input's attention graph, drawn as inline SVG.
// Vanilla JS, no dependencies: everything it loads comes from this service.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
  "#bcbd22", "#17becf"];
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
  const box = $("report-predictors");
  box.replaceChildren();
  report.predictors.forEach((p, i) => {
    const label = document.createElement("label");
    const cb = document.createElement("input");
    cb.type = "checkbox";
    cb.checked = true;
    cb.value = p.spec;
    cb.addEventListener("change", () => {
      if (cb.checked) state.shown.add(p.spec); else state.shown.delete(p.spec);
      drawPareto();
    });
    label.append(cb, " ", p.spec);
    label.style.color = COLORS[i % COLORS.length];
    box.appendChild(label);
  });
  $("report-note").textContent = `dataset: ${report.dataset.path} · ${report.dataset.sequences} sequences · ` +
    `L=${report.dataset.max_length} · gold sparsity ${fmt(report.gold.sparsity)} · ` +
    `static plot: /v1/reports/${report.id}/pareto.svg`;
  drawPareto();
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
  report.predictors.forEach((p, i) => {
    if (!state.shown.has(p.spec)) return;
    const color = COLORS[i % COLORS.length];
    const pts = p.settings.map((s) => [settingValue(s, "sparsity"), settingValue(s, "recall"), s]);
    const order = [...pts].sort((a, b) => a[0] - b[0]);
    el("polyline", { points: order.map(([s, r]) => `${x(s)},${y(r)}`).join(" "), fill: "none", stroke: color,
      "stroke-width": 1.5, "stroke-dasharray": p.reference ? "4 3" : "" }, svg);
    for (const [s, r, setting] of pts) {
      const c = el("circle", { cx: x(s), cy: y(r), r: 4, fill: color, class: "point",
        "data-predictor": p.spec, "data-setting": setting.spec }, svg);
      c.addEventListener("mouseenter", () => showTip(c, p, setting, s, r));
      c.addEventListener("mouseleave", () => { $("tip").hidden = true; });
    }
  });
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
