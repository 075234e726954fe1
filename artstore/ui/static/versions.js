// The versions page: versions and tags of a run, and "view as of" (time travel).
"use strict";

PAGES.versions = async (main, params) => {
  const all = await runNames();
  const run = all.includes(params.get("run")) ? params.get("run") : all[0];
  if (!run) { main.append(h("div", {class: "note"}, "The store holds no runs.")); return; }
  const offset = parseInt(params.get("offset") || "0");
  const d = await api("/api/versions?" + qs({run, offset}));
  main.append(h("div", {class: "controls"}, await runPicker(run, r => go("versions", {run: r})),
    h("span", {class: "muted"}, `${d.total} versions; showing ${offset + 1}-${offset + d.versions.length}, newest first`),
    h("button", {disabled: offset <= 0, onclick: () => go("versions", {run, offset: Math.max(0, offset - 20)})}, "newer"),
    h("button", {disabled: offset + d.versions.length >= d.total, onclick: () => go("versions", {run, offset: offset + 20})}, "older")));
  const tags = Object.entries(d.tags);
  main.append(h("h3", {}, "Tags"), tags.length ? h("div", {class: "kv", id: "tags"}, tags.map(([t, v]) => h("span", {}, h("b", {}, t), ` → version ${v} `,
    h("button", {onclick: () => setAsOf(run, t)}, "view as of")))) : h("div", {class: "muted"}, "none (artstore tag RUN NAME makes one)"));
  if (Object.keys(d.config || {}).length) main.append(h("h3", {}, "Configuration"),
    h("div", {class: "card", id: "config"}, Object.entries(d.config).map(([source, c]) =>
      h("div", {}, h("b", {}, source === "model" ? "Model(config=...)" : source === "train" ? "last TrainConfig" : source),
        h("pre", {}, JSON.stringify(c, null, 2))))));
  const table = dataTable([
    {key: "version", num: true}, {key: "timestamp", label: "committed (UTC)"}, {key: "tags", value: v => v.tags.join(", ")},
    {key: "logs", label: "log calls", num: true}, {key: "latest_step", label: "latest step", num: true}, {key: "last_log", label: "last log"},
    {key: "_view", label: "", render: v => h("button", {class: "view-as-of", onclick: e => { e.stopPropagation(); setAsOf(run, String(v.version)); }}, "view as of")}],
    d.versions, {class: "versions"});
  main.append(h("h3", {}, "Versions"), table);
  // What each shown version held: one read per version (the server does 4 at once), filled in after.
  if (d.versions.length) {
    const held = await api("/api/versions/held?" + qs({run, versions: d.versions.map(v => v.version).join(",")}));
    d.versions.forEach((v, i) => Object.assign(v, held[i]));
    table.redraw();
  }
};
