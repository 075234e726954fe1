// The runs page: every run of the store, sortable and filterable; sizes fill in when listed.
"use strict";

PAGES.runs = async (main) => {
  const data = await api("/api/runs");
  RUNS = data.rows.map(r => r.run);
  const sizes = {};
  const selected = new Set();
  const columns = data.columns.map(c => ({
    key: c, num: typeof (data.rows.find(r => r[c] !== null && r[c] !== undefined) || {})[c] === "number", wrap: c === "config",
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
  const table = dataTable(columns, data.rows, {sortKey: "project"});
  const filter = h("input", {id: "runs-filter", type: "search", placeholder: "filter runs", oninput: () => table.setFilter(filter.value)});
  main.append(
    h("div", {class: "controls"}, filter,
      h("button", {class: "primary", id: "chart-selected", onclick: () => go("charts", {runs: [...selected].join(",") || RUNS.join(",")})}, "Chart selected runs"),
      h("span", {class: "muted"}, `${data.rows.length} runs in ${data.store}`)),
    table);
  api("/api/runs/sizes").then(s => { Object.assign(sizes, s); table.redraw(); }).catch(e => main.append(errorBox(e)));
};
