// artstore ui: a small hand-written front end over the JSON API (see artstore/ui/*.py). This file
// holds what every page shares (DOM and fetch helpers, the sortable table, the URL state, the
// router); each page is a file of its own (runs.js, charts.js, ...) that adds itself to PAGES.
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

function size(n) {  // as artstore.sizes.format_size (pydantic's ByteSize): 1024-based, IEC units
  if (n === null || n === undefined) return "";
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let i = 0, x = Math.abs(n);
  while (x >= 1024 && i < units.length - 1) { x /= 1024; i++; }
  return (n < 0 ? "-" : "") + (i === 0 ? `${x}B` : `${x.toFixed(1)}${units[i]}`);
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
  wrap.redraw = draw;
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
  // Once a page is up, fetch and compile plotly.min.js in the background, so the first chart a
  // person opens does not wait for it.
  setTimeout(() => plotly().catch(() => {}), 200);
}

window.addEventListener("hashchange", render);
document.addEventListener("click", e => {  // in-page links navigate like buttons do (see navigate)
  const a = e.target.closest && e.target.closest('a[href^="#"]');
  if (!a || e.ctrlKey || e.metaKey || e.shiftKey || e.button !== 0) return;
  e.preventDefault();
  navigate(a.getAttribute("href").slice(1));
});
window.addEventListener("DOMContentLoaded", () => {  // after every page script has registered
  api("/api/store").then(s => { document.getElementById("store-uri").textContent = s.uri; }).catch(() => {});
  render();
});
