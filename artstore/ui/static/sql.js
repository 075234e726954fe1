// The SQL box: one read-only SELECT, its rows as a table and a chart.
"use strict";

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
  const asof = asOfMap();  // runs viewed as of a version or tag are queried as of it too
  if (Object.keys(asof).length) main.append(h("div", {class: "note"}, "Queried as of: " + Object.entries(asof).map(([r, v]) => `${r}@${v}`).join(", ")));
  const [d, Plotly] = await Promise.all([api("/api/sql", {query: params.get("q"), as_of: asof}), plotly()]);
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
