// The charts page: a metric against step for several runs, smoothed, val vs train.
"use strict";

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
