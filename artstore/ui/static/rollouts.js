// The rollout viewer: run / split / step / group, each trajectory's conversation, and the
// same scenario across steps.
"use strict";

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
    const scalar = m => Object.keys(m || {}).filter(k => m[k] === null || typeof m[k] !== "object");
    const meta = (g.trajectories[0] || {}).metadata || {};
    const by = h("select", {id: "compare-by"}, h("option", {value: ""}, `same group index (${g.group_index})`),
      scalar(meta).map(k => h("option", {value: "trajectory:" + k}, `same ${k} (${fmt(meta[k])})`)),
      scalar(g.metadata).map(k => h("option", {value: "group:" + k}, `same group ${k} (${fmt(g.metadata[k])})`)));
    const out = h("div", {});
    const load = () => guard(out, async () => {
      out.replaceChildren();
      const [level, key] = by.value.split(":");
      const value = level === "group" ? g.metadata[key] : meta[key];
      const res = await api("/api/rollouts/scenario?" + qs(key ? {run, split, key, level, value: JSON.stringify(value), as_of: asof}
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
