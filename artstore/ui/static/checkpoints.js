// The checkpoints page: status, sizes, best and latest, and the retention plan with its reasons.
"use strict";

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
