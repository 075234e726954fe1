// artstore ui: a small hand-written front end over the JSON API (see artstore/ui/*.py).
// Pages live in the URL hash (#rollouts?run=p/m&split=val&step=3), so every view can be linked.
// Time travel: `asof=p/m@12` (a version or tag per run) applies to that run on every page.
"use strict";

// -- helpers ------------------------------------------------------------------------------------
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

async function api(path, body) {
  const init = body === undefined ? {} : {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)};
  const r = await fetch(path, init);
  let data = null;
  try { data = await r.json(); } catch (e) { /* not JSON */ }
  if (!r.ok) {
    const msg = data && (data.message || (data.detail && JSON.stringify(data.detail))) || `${r.status} ${r.statusText}`;
    throw new Error((data && data.error ? data.error + ": " : "") + msg);
  }
  return data;
}

function qs(params) {
  const u = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined && v !== "") u.set(k, v);
  return u.toString();
}

function fmt(v) {
  if (v === null || v === undefined) return "";
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : (Math.abs(v) >= 1e4 || Math.abs(v) < 1e-3) && v !== 0 ? v.toExponential(3) : v.toFixed(4).replace(/\.?0+$/, "");
  if (typeof v === "object") return JSON.stringify(v);
  const t = /^(\d{4}-\d\d-\d\d)T(\d\d:\d\d:\d\d)(\.\d+)?(\+00:00|Z)$/.exec(v);  // a UTC time: to the second
  return t ? `${t[1]} ${t[2]}` : String(v);
}

function size(n) {  // 1000-based, as pydantic's ByteSize.human_readable(decimal=True)
  if (n === null || n === undefined) return "";
  const units = ["B", "kB", "MB", "GB", "TB"];
  let i = 0;
  while (Math.abs(n) >= 1000 && i < units.length - 1) { n /= 1000; i++; }
  return i === 0 ? `${n} B` : `${n.toFixed(1)} ${units[i]}`;
}

// plotly.min.js (4.8 MB, from the plotly wheel) is loaded on the first page that draws a chart.
let PLOTLY = null;
function plotly() {
  if (!PLOTLY) PLOTLY = new Promise((resolve, reject) => {
    const s = h("script", {src: "/static/plotly.min.js"});
    s.onload = () => resolve(window.Plotly);
    s.onerror = () => { PLOTLY = null; reject(new Error("could not load /static/plotly.min.js")); };
    document.head.append(s);
  });
  return PLOTLY;
}

function errorBox(e) { return h("div", {class: "error"}, String(e && e.message || e)); }

async function guard(target, fn) {
  try { await fn(); } catch (e) { console.error(e); target.append(errorBox(e)); }
}

// A sortable, filterable table. columns: [{key, label, num, render(row), wrap}]
function dataTable(columns, rows, opts = {}) {
  let sortKey = opts.sortKey || null, desc = !!opts.desc, filter = "";
  const wrap = h("div", {class: "table-wrap"});
  const tbody = h("tbody");
  const heads = columns.map(c => h("th", {onclick: () => {
    desc = sortKey === c.key ? !desc : false; sortKey = c.key; draw(); }}, c.label ?? c.key));
  const table = h("table", {class: opts.class || null}, h("thead", {}, h("tr", {}, heads)), tbody);
  wrap.append(table);
  const val = (r, c) => c.value ? c.value(r) : r[c.key];
  function draw() {
    heads.forEach((th, i) => th.className = columns[i].key === sortKey ? (desc ? "sorted-desc" : "sorted-asc") : "");
    let shown = rows;
    if (filter) {
      const f = filter.toLowerCase();
      shown = rows.filter(r => columns.some(c => fmt(val(r, c)).toLowerCase().includes(f)));
    }
    if (sortKey) {
      const c = columns.find(c => c.key === sortKey);
      shown = [...shown].sort((a, b) => {
        const x = val(a, c), y = val(b, c);
        if (x === y) return 0;
        if (x === null || x === undefined) return 1;
        if (y === null || y === undefined) return -1;
        const r = typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y));
        return desc ? -r : r;
      });
    }
    tbody.replaceChildren(...shown.map(r => {
      const tr = h("tr", {class: [opts.rowClass ? opts.rowClass(r) : "", opts.onRow ? "clickable" : ""].join(" ").trim() || null,
                          onclick: opts.onRow ? () => opts.onRow(r, tr) : null},
        columns.map(c => h("td", {class: c.num ? "num" : c.wrap ? "wrap" : null}, c.render ? c.render(r) : fmt(val(r, c)))));
      return tr;
    }));
  }
  draw();
  wrap.setFilter = f => { filter = f; draw(); };
  return wrap;
}

// -- state in the URL ---------------------------------------------------------------------------
function route() {
  const [page, query] = (location.hash.slice(1) || "runs").split("?");
  return {page, params: new URLSearchParams(query || "")};
}

// Every navigation goes through here: the page is marked loading at once (tests and people wait
// for data-state=ready), and an unchanged hash renders again instead of doing nothing.
function navigate(hash) {
  document.getElementById("page").dataset.state = "loading";
  if (location.hash.slice(1) === hash) render(); else location.hash = hash;
}

function go(page, params) {
  const p = new URLSearchParams(params);
  const asof = route().params.get("asof");
  if (asof && !p.has("asof")) p.set("asof", asof);
  for (const [k, v] of [...p.entries()]) if (v === "" || v === "null" || v === "undefined") p.delete(k);
  navigate(page + (p.toString() ? "?" + p.toString() : ""));
}

function asOfMap() {
  const out = {};
  for (const part of (route().params.get("asof") || "").split(",")) {
    const at = part.lastIndexOf("@");
    if (at > 0) out[part.slice(0, at)] = part.slice(at + 1);
  }
  return out;
}

function asOfParam(map) {
  return Object.entries(map).map(([r, v]) => `${r}@${v}`).join(",");
}

function setAsOf(run, value) {
  const map = asOfMap();
  if (value === null) delete map[run]; else map[run] = value;
  const {page, params} = route();
  params.set("asof", asOfParam(map));
  if (!params.get("asof")) params.delete("asof");
  navigate(page + (params.toString() ? "?" + params.toString() : ""));
}

function banner() {
  const b = document.getElementById("asof-banner");
  const map = asOfMap();
  const entries = Object.entries(map);
  b.hidden = entries.length === 0;
  b.replaceChildren(...entries.map(([run, v]) => h("span", {}, "Viewing ", h("b", {}, run), ` as of ${/^\d+$/.test(v) ? "version" : "tag"} `,
    h("b", {}, v), " ", h("button", {onclick: () => setAsOf(run, null)}, "back to latest"), " ")));
}

let RUNS = null;  // cached list of "project/model"
async function runNames() {
  if (!RUNS) RUNS = (await api("/api/runs")).rows.map(r => r.run);
  return RUNS;
}

async function runPicker(current, onchange) {
  const names = await runNames();
  const sel = h("select", {id: "run-select", onchange: () => onchange(sel.value)},
    names.map(n => h("option", {value: n, selected: n === current}, n)));
  return h("label", {}, "Run", sel);
}

// -- pages ----------------------------------------------------------------------------------------
const PAGES = {};

PAGES.runs = async (main) => {
  const data = await api("/api/runs");
  RUNS = data.rows.map(r => r.run);
  const sizes = {};
  const selected = new Set();
  const columns = data.columns.map(c => ({
    key: c, num: typeof (data.rows.find(r => r[c] !== null && r[c] !== undefined) || {})[c] === "number",
    render: c === "model" ? r => h("a", {href: "#rollouts?" + qs({run: r.run})}, r.model)
          : c === "status" ? r => h("span", {class: "badge " + r.status}, r.status) : null,
  }));
  columns.unshift({key: "_pick", label: "", value: r => selected.has(r.run) ? 1 : 0, render: r =>
    h("input", {type: "checkbox", class: "pick", "data-run": r.run, checked: selected.has(r.run),
                onclick: e => { e.stopPropagation(); e.target.checked ? selected.add(r.run) : selected.delete(r.run); }})});
  columns.splice(columns.findIndex(c => c.key === "checkpoints") + 1, 0,
                 {key: "size", value: r => sizes[r.run], num: true, render: r => size(sizes[r.run])});
  columns.push({key: "_links", label: "", render: r => h("span", {},
    h("a", {href: "#charts?" + qs({runs: r.run})}, "charts"), " · ",
    h("a", {href: "#checkpoints?" + qs({run: r.run})}, "checkpoints"), " · ",
    h("a", {href: "#versions?" + qs({run: r.run})}, "versions"))});
  let table = dataTable(columns, data.rows, {sortKey: "project"});
  const filter = h("input", {id: "runs-filter", type: "search", placeholder: "filter runs", oninput: () => table.setFilter(filter.value)});
  main.append(
    h("div", {class: "controls"}, filter,
      h("button", {class: "primary", id: "chart-selected", onclick: () => go("charts", {runs: [...selected].join(",") || RUNS.join(",")})}, "Chart selected runs"),
      h("span", {class: "muted"}, `${data.rows.length} runs in ${data.store}`)),
    table);
  api("/api/runs/sizes").then(s => {
    Object.assign(sizes, s);
    const fresh = dataTable(columns, data.rows, {sortKey: "project"});
    table.replaceWith(fresh); table = fresh; table.setFilter(filter.value);
  }).catch(e => main.append(errorBox(e)));
};

const SMOOTHING = ["none", "ema:0.6", "ema:0.9", "ema:0.98", "window:5", "window:20", "window:100"];

function counterpart(metric) {
  if (metric.startsWith("val/")) return "train/" + metric.slice(4);
  if (metric.startsWith("train/")) return "val/" + metric.slice(6);
  return null;
}

PAGES.charts = async (main, params) => {
  const all = await runNames();
  let runs = (params.get("runs") || "").split(",").filter(r => all.includes(r));
  if (!runs.length) runs = all.slice(0, 2);
  const asof = asOfMap();
  const loading = plotly();
  const metricsData = await api("/api/metrics?" + qs({runs: runs.join(",")}));
  const metrics = metricsData.metrics;
  const metric = metrics.includes(params.get("metric")) ? params.get("metric") : (metrics.includes("val/reward") ? "val/reward" : metrics[0]);
  const smooth = params.get("smooth") || "none";
  const pair = params.get("pair") === "1";
  const state = () => ({runs: [...main.querySelectorAll(".runs-pick input:checked")].map(i => i.value).join(","),
                        metric: metricSel.value, smooth: smoothSel.value, pair: pairBox.checked ? "1" : ""});
  const update = () => go("charts", state());
  const metricSel = h("select", {id: "metric-select", onchange: update}, metrics.map(m => h("option", {value: m, selected: m === metric}, m)));
  const smoothSel = h("select", {id: "smooth-select", onchange: update}, SMOOTHING.map(s => h("option", {value: s, selected: s === smooth}, s)));
  const pairBox = h("input", {type: "checkbox", id: "pair-box", checked: pair, onchange: update});
  main.append(
    h("div", {class: "runs-pick"}, all.map(r => h("label", {}, h("input", {type: "checkbox", value: r, checked: runs.includes(r), onchange: update}), r))),
    h("div", {class: "controls", style: "margin-top:10px"}, h("label", {}, "Metric", metricSel), h("label", {}, "Smoothing", smoothSel),
      h("label", {}, pairBox, "val vs train")));
  const chart = h("div", {class: "chart", id: "chart"});
  main.append(chart);
  if (!metric) { main.append(h("div", {class: "note"}, "These runs logged no metrics.")); return; }
  const wanted = [metric];
  if (pair && counterpart(metric) && metrics.includes(counterpart(metric))) wanted.push(counterpart(metric));
  const palette = ["#2f6fde", "#d9534f", "#49a35b", "#e09a23", "#8e5bd0", "#17a2b8", "#6c757d", "#c2185b"];
  const traces = [];
  const problems = [];
  await Promise.all(runs.flatMap((run, i) => wanted.map(async (m, j) => {
    let s;
    try { s = await api("/api/series?" + qs({run, metric: m, smooth: smooth === "none" ? "" : smooth, as_of: asof[run]})); }
    catch (e) { problems.push(e); return; }
    const name = `${run}${asof[run] ? "@" + asof[run] : ""} ${m}`;
    const line = {color: palette[i % palette.length], dash: j ? "dash" : "solid"};
    traces.push({x: s.steps, y: s.values, name, mode: "lines+markers", type: "scatter", line: {...line, width: s.smoothed ? 1 : 2},
                 opacity: s.smoothed ? 0.35 : 1, marker: {size: 4}, showlegend: !s.smoothed, sortKey: [i, j, 0]});
    if (s.smoothed) traces.push({x: s.steps, y: s.smoothed, name: `${name} (${smooth})`, mode: "lines", type: "scatter",
                                 line: {...line, width: 2.5}, sortKey: [i, j, 1]});
  })));
  for (const e of problems) main.append(errorBox(e));
  traces.sort((a, b) => a.sortKey.join() < b.sortKey.join() ? -1 : 1);
  traces.forEach(t => delete t.sortKey);
  const Plotly = await loading;
  Plotly.newPlot(chart, traces, {margin: {t: 30, r: 20, b: 45, l: 60}, xaxis: {title: {text: "step"}}, yaxis: {title: {text: metric}},
                                 legend: {orientation: "h", y: -0.18}, title: {text: wanted.join(" vs "), font: {size: 14}}},
                 {responsive: true, displaylogo: false});
};

function kv(obj) {
  const entries = Object.entries(obj || {});
  if (!entries.length) return null;
  return h("div", {class: "kv"}, entries.map(([k, v]) => h("span", {}, h("b", {}, k + ": "), fmt(v))));
}

function message(m) {
  const who = m.role + (m.name ? ` (${m.name})` : "") + (m.role === "tool" && m.tool_name ? ` · result of ${m.tool_name}` : "")
            + (m.tool_call_id ? ` · ${m.tool_call_id}` : "") + (m.finish_reason ? ` · finish: ${m.finish_reason}` : "")
            + (m.trainable ? " · sampled" : "");
  return h("div", {class: "msg " + m.role},
    h("div", {class: "role"}, who),
    m.content !== null && m.content !== undefined ? h("div", {class: "content"}, m.content) : null,
    m.content_parts ? h("pre", {}, JSON.stringify(m.content_parts, null, 2)) : null,
    m.refusal ? h("div", {class: "content"}, "refusal: " + m.refusal) : null,
    m.tool_calls.map(c => h("div", {class: "toolcall"}, h("span", {class: "fn"}, `${c.name}(`), h("span", {class: "muted"}, c.id || ""),
      h("span", {class: "fn"}, ")"), h("pre", {}, typeof c.arguments === "string" ? c.arguments : JSON.stringify(c.arguments, null, 2)))),
    m.logprobs ? h("div", {class: "logprobs values"}, `logprobs (${m.logprobs.length}): ` + m.logprobs.map(x => x === null ? "?" : x.toFixed(3)).join(" "))
      : m.logprob_count ? h("div", {class: "logprobs"}, `${m.logprob_count} logprobs: tick "logprobs" to show them`) : null);
}

function trajectoryCard(t, group) {
  const tag = t.index === group.best ? " best" : t.index === group.worst ? " worst" : "";
  return h("div", {class: "card trajectory" + tag, id: `trajectory-${t.index}`},
    h("div", {class: "card-head"}, h("b", {}, `trajectory ${t.index}`), h("span", {class: "reward"}, `reward ${fmt(t.reward)}`),
      tag ? h("span", {class: "badge"}, tag.trim()) : null,
      t.initial_policy_version !== null ? h("span", {class: "muted"}, `policy ${t.initial_policy_version}→${t.final_policy_version}`) : null),
    kv(t.metrics), t.metadata && Object.keys(t.metadata).length ? h("div", {class: "kv muted"}, "metadata: ", fmt(t.metadata)) : null,
    t.messages.map(message),
    t.logs.length ? h("details", {}, h("summary", {}, `logs (${t.logs.length})`), h("pre", {}, t.logs.join("\n"))) : null,
    t.tools ? h("details", {}, h("summary", {}, "tools offered"), h("pre", {}, JSON.stringify(t.tools, null, 2))) : null,
    t.additional_histories.map((hist, i) => h("details", {}, h("summary", {}, `additional history ${i + 1}`), hist.messages.map(message))));
}

PAGES.rollouts = async (main, params) => {
  const all = await runNames();
  const run = all.includes(params.get("run")) ? params.get("run") : all[0];
  if (!run) { main.append(h("div", {class: "note"}, "The store holds no runs.")); return; }
  const asof = asOfMap()[run];
  const steps = await api("/api/rollouts/steps?" + qs({run, as_of: asof}));
  const splits = Object.keys(steps.splits);
  if (!splits.length) { main.append(await runPicker(run, r => go("rollouts", {run: r})), h("div", {class: "note"}, `${run} logged no rollouts.`)); return; }
  const split = splits.includes(params.get("split")) ? params.get("split") : (splits.includes("val") ? "val" : splits[0]);
  const stepList = steps.splits[split];
  const wantStep = parseInt(params.get("step"));
  const step = stepList.some(s => s.step === wantStep) ? wantStep : stepList[stepList.length - 1].step;
  const at = stepList.findIndex(s => s.step === step);
  const nav = p => go("rollouts", {run, split, step, ...p});
  const stepSel = h("select", {id: "step-select", onchange: () => nav({step: stepSel.value})},
    stepList.map(s => h("option", {value: s.step, selected: s.step === step}, `step ${s.step} (${s.trajectories} trajectories)`)));
  main.append(h("div", {class: "controls"}, await runPicker(run, r => go("rollouts", {run: r})),
    h("label", {}, "Split", h("select", {id: "split-select", onchange: e => go("rollouts", {run, split: e.target.value})},
      splits.map(s => h("option", {value: s, selected: s === split}, s)))),
    h("button", {disabled: at <= 0, onclick: () => nav({step: stepList[at - 1].step})}, "◀"), stepSel,
    h("button", {disabled: at >= stepList.length - 1, onclick: () => nav({step: stepList[at + 1].step})}, "▶")));
  const groups = (await api("/api/rollouts/groups?" + qs({run, split, step, as_of: asof}))).groups;
  const groupId = groups.some(g => g.group_id === params.get("group")) ? params.get("group") : (groups[0] || {}).group_id;
  const left = h("div", {}, h("h3", {}, `${groups.length} groups at ${split} step ${step}`),
    dataTable([
      {key: "group_index", label: "group", num: true}, {key: "trajectories", label: "n", num: true},
      {key: "mean", label: "mean", num: true, value: g => g.reward.mean}, {key: "min", num: true, value: g => g.reward.min},
      {key: "max", num: true, value: g => g.reward.max}, {key: "exceptions", label: "exc", num: true},
      {key: "scenario", wrap: true, value: g => fmt(Object.keys(g.metadata || {}).length ? g.metadata : g.first_trajectory_metadata)},
    ], groups, {class: "groups", onRow: g => nav({group: g.group_id, sort: params.get("sort")}),
                rowClass: g => g.group_id === groupId ? "selected" : ""}));
  const right = h("div", {id: "group-view"});
  main.append(h("div", {class: "split"}, left, right));
  if (!groupId) return;
  await guard(right, async () => {
    const logprobs = params.get("logprobs") === "1";
    const g = await api("/api/rollouts/group?" + qs({run, split, step, group_id: groupId, as_of: asof, logprobs: logprobs ? "true" : ""}));
    const sort = params.get("sort") || "index";
    const order = [...g.trajectories];
    if (sort === "reward-desc") order.sort((a, b) => (b.reward ?? -Infinity) - (a.reward ?? -Infinity));
    if (sort === "reward-asc") order.sort((a, b) => (a.reward ?? Infinity) - (b.reward ?? Infinity));
    const jump = i => { const el = document.getElementById(`trajectory-${i}`); if (el) el.scrollIntoView({block: "start"}); };
    const sortSel = h("select", {id: "sort-select", onchange: () => nav({group: groupId, sort: sortSel.value, logprobs: logprobs ? "1" : ""})},
      [["index", "by index"], ["reward-desc", "reward, high first"], ["reward-asc", "reward, low first"]].map(([v, l]) => h("option", {value: v, selected: v === sort}, l)));
    right.append(h("div", {},
      h("div", {class: "controls"}, h("b", {}, `group ${g.group_index}`), h("label", {}, "Sort", sortSel),
        h("button", {id: "jump-best", onclick: () => jump(g.best)}, "best"), h("button", {id: "jump-worst", onclick: () => jump(g.worst)}, "worst"),
        h("label", {}, h("input", {type: "checkbox", id: "logprobs-box", checked: logprobs,
          onchange: e => nav({group: groupId, sort, logprobs: e.target.checked ? "1" : ""})}), "logprobs"),
        h("button", {id: "compare-steps", onclick: () => compare(g)}, "compare across steps")),
      kv(g.metrics), Object.keys(g.metadata || {}).length ? h("div", {class: "kv muted"}, "group metadata: ", fmt(g.metadata)) : null,
      g.exceptions.length ? h("div", {class: "card"}, h("b", {}, `${g.exceptions.length} exceptions`),
        g.exceptions.map(x => h("details", {}, h("summary", {}, `${x.type}: ${x.message}`), h("pre", {}, x.traceback || "")))) : null,
      g.logs.length ? h("details", {}, h("summary", {}, `group logs (${g.logs.length})`), h("pre", {}, g.logs.join("\n"))) : null,
      h("div", {id: "compare"}),
      order.map(t => trajectoryCard(t, g))));
  });

  async function compare(g) {
    const box = document.getElementById("compare");
    box.replaceChildren();
    const meta = (g.trajectories[0] || {}).metadata || {};
    const keys = Object.keys(meta).filter(k => meta[k] === null || typeof meta[k] !== "object");
    const by = h("select", {id: "compare-by"}, h("option", {value: ""}, `same group index (${g.group_index})`),
      keys.map(k => h("option", {value: k}, `same ${k} (${fmt(meta[k])})`)));
    const out = h("div", {});
    const load = () => guard(out, async () => {
      out.replaceChildren();
      const key = by.value;
      const res = await api("/api/rollouts/scenario?" + qs(key ? {run, split, key, value: JSON.stringify(meta[key]), as_of: asof}
                                                               : {run, split, group_index: g.group_index, as_of: asof}));
      const Plotly = await plotly();
      const chart = h("div", {class: "chart small", id: "compare-chart"});
      out.append(chart, dataTable([
        {key: "step", num: true}, {key: "group_index", label: "group", num: true}, {key: "trajectories", label: "n", num: true},
        {key: "mean", num: true}, {key: "min", num: true}, {key: "max", num: true}, {key: "best", label: "best trajectory", num: true}],
        res.groups, {onRow: r => nav({step: r.step, group: r.group_id})}));
      Plotly.newPlot(chart, [
        {x: res.groups.map(r => r.step), y: res.groups.map(r => r.mean), name: "mean reward", mode: "lines+markers", type: "scatter"},
        {x: res.groups.map(r => r.step), y: res.groups.map(r => r.max), name: "max", mode: "lines", type: "scatter", line: {dash: "dot"}},
        {x: res.groups.map(r => r.step), y: res.groups.map(r => r.min), name: "min", mode: "lines", type: "scatter", line: {dash: "dot"}}],
        {margin: {t: 10, r: 10, b: 40, l: 50}, xaxis: {title: {text: "step"}}, yaxis: {title: {text: "reward"}}}, {displaylogo: false});
    });
    by.addEventListener("change", load);
    box.append(h("div", {class: "card"}, h("div", {class: "controls"}, h("b", {}, "Same scenario across steps"), by), out));
    await load();
  }
};

PAGES.checkpoints = async (main, params) => {
  const all = await runNames();
  const run = all.includes(params.get("run")) ? params.get("run") : all[0];
  if (!run) { main.append(h("div", {class: "note"}, "The store holds no runs.")); return; }
  const metric = params.get("metric") || "val/reward";
  const asof = asOfMap()[run];
  const metricIn = h("input", {id: "metric-input", value: metric, size: 24});
  main.append(h("div", {class: "controls"}, await runPicker(run, r => go("checkpoints", {run: r, metric})),
    h("label", {}, "Best by", metricIn), h("button", {onclick: () => go("checkpoints", {run, metric: metricIn.value})}, "rank")));
  const d = await api("/api/checkpoints?" + qs({run, metric, as_of: asof}));
  const plan = d.plan ? Object.fromEntries(d.plan.decisions.map(x => [x.step, x])) : {};
  const live = d.checkpoints.filter(c => c.status !== "deleted");
  main.append(h("div", {class: "kv", id: "checkpoint-summary"},
    h("span", {}, h("b", {}, "latest ready: "), d.latest ?? "none"),
    h("span", {}, h("b", {}, `best ${metric}: `), d.best ?? "none"),
    h("span", {}, h("b", {}, "checkpoints: "), `${d.checkpoints.length} (${live.length} live)`),
    h("span", {}, h("b", {}, "live size: "), size(live.reduce((a, c) => a + (c.size_bytes || 0), 0)))));
  if (d.best_error) main.append(h("div", {class: "note"}, d.best_error));
  if (d.plan_error) main.append(h("div", {class: "note"}, "No retention plan: " + d.plan_error));
  if (d.plan) {
    main.append(h("div", {class: "note", id: "plan-summary"}, h("b", {}, "Retention plan"), ` (${d.plan.source}): keeps ${d.plan.keep.length}, deletes ${d.plan.delete.length}. `,
      "Nothing is deleted here; ", h("code", {}, `artstore prune ${run} --apply`), " applies a plan.",
      d.plan.blocked ? h("div", {}, "blocked: " + d.plan.blocked) : null, d.plan.warnings.map(w => h("div", {}, w))));
  } else if (asof) {
    main.append(h("div", {class: "note"}, `Checkpoints as of ${asof}; the retention plan is shown for the latest version only.`));
  }
  main.append(dataTable([
    {key: "step", num: true}, {key: "status", render: c => h("span", {}, c.status,
      c.step === d.latest ? h("span", {class: "badge"}, " latest") : null, c.step === d.best ? h("span", {class: "badge active"}, " best") : null)},
    {key: "size_bytes", label: "size", num: true, render: c => size(c.size_bytes)},
    {key: "created_at", label: "created"}, {key: "deleted_at", label: "deleted"},
    {key: "plan", value: c => (plan[c.step] || {}).action}, {key: "why", wrap: true, value: c => (plan[c.step] || {}).reason || c.deleted_reason},
    {key: "uri"}],
    d.checkpoints, {class: "checkpoints", sortKey: "step", rowClass: c => (plan[c.step] || {}).action || (c.status === "deleted" ? "gone" : "")}));
};

PAGES.versions = async (main, params) => {
  const all = await runNames();
  const run = all.includes(params.get("run")) ? params.get("run") : all[0];
  if (!run) { main.append(h("div", {class: "note"}, "The store holds no runs.")); return; }
  const offset = parseInt(params.get("offset") || "0");
  const d = await api("/api/versions?" + qs({run, offset}));
  main.append(h("div", {class: "controls"}, await runPicker(run, r => go("versions", {run: r})),
    h("span", {class: "muted"}, `${d.total} versions; showing ${offset + 1}-${offset + d.versions.length}, newest first`),
    h("button", {disabled: offset <= 0, onclick: () => go("versions", {run, offset: Math.max(0, offset - 25)})}, "newer"),
    h("button", {disabled: offset + d.versions.length >= d.total, onclick: () => go("versions", {run, offset: offset + 25})}, "older")));
  const tags = Object.entries(d.tags);
  main.append(h("h3", {}, "Tags"), tags.length ? h("div", {class: "kv", id: "tags"}, tags.map(([t, v]) => h("span", {}, h("b", {}, t), ` → version ${v} `,
    h("button", {onclick: () => setAsOf(run, t)}, "view as of")))) : h("div", {class: "muted"}, "none (artstore tag RUN NAME makes one)"));
  main.append(h("h3", {}, "Versions"), dataTable([
    {key: "version", num: true}, {key: "timestamp", label: "committed (UTC)"}, {key: "tags", value: v => v.tags.join(", ")},
    {key: "logs", label: "log calls", num: true}, {key: "latest_step", label: "latest step", num: true}, {key: "last_log", label: "last log"},
    {key: "_view", label: "", render: v => h("button", {class: "view-as-of", onclick: e => { e.stopPropagation(); setAsOf(run, String(v.version)); }}, "view as of")}],
    d.versions, {class: "versions"}));
};

const EXAMPLES = [
  "SELECT model, step, avg(reward) AS reward FROM trajectories WHERE split = 'train' GROUP BY ALL ORDER BY model, step",
  "SELECT model, step, value FROM metrics WHERE name = 'val/reward' ORDER BY model, step",
  "SELECT tool_names[1] AS tool, count(*) AS calls FROM messages WHERE role = 'assistant' AND len(tool_names) > 0 GROUP BY ALL ORDER BY calls DESC",
  "SELECT project, model, step, status, size_bytes, deleted_reason FROM checkpoints ORDER BY project, model, step",
];

PAGES.sql = async (main, params) => {
  const box = h("textarea", {id: "sql-query", spellcheck: "false"}, params.get("q") || EXAMPLES[0]);
  const runQuery = () => go("sql", {q: box.value, t: Date.now()});
  box.addEventListener("keydown", e => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) runQuery(); });
  main.append(h("div", {class: "muted"}, "One read-only SELECT over the views runs, logs, trajectories, groups, messages, metrics, history, checkpoints (Ctrl+Enter runs it)."),
    box, h("div", {class: "controls"}, h("button", {class: "primary", id: "sql-run", onclick: runQuery}, "Run"),
      h("select", {onchange: e => { box.value = e.target.value; }}, h("option", {value: box.value}, "examples…"), EXAMPLES.map(q => h("option", {value: q}, q.slice(0, 90))))));
  if (!params.get("q")) return;
  const [d, Plotly] = await Promise.all([api("/api/sql", {query: params.get("q")}), plotly()]);
  const cols = d.columns;
  main.append(h("div", {class: "muted", id: "sql-count"}, `${d.total} rows` + (d.truncated ? ` (first ${d.rows.length} shown)` : "")));
  const numeric = cols.filter(c => c.kind === "number").map(c => c.name);
  const chart = h("div", {class: "chart", id: "sql-chart"});
  const opt = (names, sel) => names.map(n => h("option", {value: n, selected: n === sel}, n));
  const names = cols.map(c => c.name);
  // Defaults: x is `step` when there is one, else the first number or time column when another
  // number is left for y, else the first column; y the last number; one series per text value.
  const axis = cols.filter(c => c.kind === "number" || c.kind === "time").map(c => c.name);
  const x0 = names.includes("step") ? "step" : (axis.length >= 2 || (axis.length && axis[0] !== numeric[numeric.length - 1]) ? axis[0] : names[0]);
  const y0 = [...numeric].reverse().find(n => n !== x0) || numeric[0];
  const text = cols.filter(c => c.kind === "text" && c.name !== x0).map(c => c.name);
  const distinct = n => new Set(d.rows.map(r => r[names.indexOf(n)])).size;
  const s0 = text.find(n => distinct(n) > 1 && distinct(n) <= 20) || "";
  const xSel = h("select", {id: "sql-x"}, opt(names, x0));
  const ySel = h("select", {id: "sql-y"}, opt(numeric, y0));
  const series = h("select", {id: "sql-series"}, h("option", {value: ""}, "(none)"), opt(text, s0));
  const kind = h("select", {id: "sql-kind"}, opt(["line", "bar", "scatter"], "line"));
  function draw() {
    const xi = names.indexOf(xSel.value), yi = names.indexOf(ySel.value), si = names.indexOf(series.value);
    if (yi < 0) { chart.replaceChildren(h("div", {class: "note"}, "No numeric column to chart.")); return; }
    const groups = new Map();
    for (const r of d.rows) {
      const key = si >= 0 ? fmt(r[si]) : ySel.value;
      if (!groups.has(key)) groups.set(key, {x: [], y: []});
      groups.get(key).x.push(r[xi]); groups.get(key).y.push(r[yi]);
    }
    const traces = [...groups.entries()].map(([name, g]) => kind.value === "bar" ? {type: "bar", name, x: g.x, y: g.y}
      : {type: "scatter", mode: kind.value === "line" ? "lines+markers" : "markers", name, x: g.x, y: g.y});
    Plotly.newPlot(chart, traces, {margin: {t: 20, r: 20, b: 45, l: 60}, xaxis: {title: {text: xSel.value}}, yaxis: {title: {text: ySel.value}}},
                   {responsive: true, displaylogo: false});
  }
  for (const s of [xSel, ySel, series, kind]) s.addEventListener("change", draw);
  main.append(h("div", {class: "controls"}, h("label", {}, "x", xSel), h("label", {}, "y", ySel), h("label", {}, "series", series), h("label", {}, "chart", kind)),
    chart, h("h3", {}, "Rows"),
    dataTable(cols.map((c, i) => ({key: c.name, label: c.name, value: r => r[i], num: c.kind === "number", wrap: c.kind === "text"})), d.rows, {class: "sql-result"}));
  draw();
};

// -- the router -----------------------------------------------------------------------------------
let RENDERS = 0;
async function render() {
  const {page, params} = route();
  const token = ++RENDERS;
  const root = document.getElementById("page");
  const main = h("div", {class: "page-" + page});  // a render overtaken by a newer one fills a detached div
  root.replaceChildren(main);
  root.dataset.state = "loading";
  const asof = params.get("asof");
  document.querySelectorAll("nav a").forEach(a => {  // the tabs keep the time travel
    a.classList.toggle("active", a.dataset.page === page);
    a.setAttribute("href", "#" + a.dataset.page + (asof ? "?" + qs({asof}) : ""));
  });
  banner();
  const fn = PAGES[page] || PAGES.runs;
  await guard(main, () => fn(main, params));
  if (token === RENDERS) root.dataset.state = "ready";
}

window.addEventListener("hashchange", render);
document.addEventListener("click", e => {  // in-page links navigate like buttons do (see navigate)
  const a = e.target.closest && e.target.closest('a[href^="#"]');
  if (!a || e.ctrlKey || e.metaKey || e.shiftKey || e.button !== 0) return;
  e.preventDefault();
  navigate(a.getAttribute("href").slice(1));
});
api("/api/store").then(s => { document.getElementById("store-uri").textContent = s.uri; }).catch(() => {});
render();
