"""Commands about runs: list them, show one, and show one's metric history."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer

from artstore.cli.common import (
    RunArgument,
    StorageOption,
    StoreOption,
    console,
    did_you_mean,
    get_run,
    get_store,
    handle_errors,
)
from artstore.cli.output import Format, FormatOption, OutputOption, render, resolve, write_json

if TYPE_CHECKING:
    import pyarrow as pa


# The metrics `history` shows by default, when logged: rewards first, then training's own
# (exception rates only when some rollout failed).
KEY_METRICS = ("val/reward", "train/reward", "test/reward", "train/loss", "train/grad_norm", "val/exception_rate",
               "train/exception_rate")


def register(app: typer.Typer) -> None:
    app.command("runs")(runs)
    app.command("show")(show)
    app.command("history")(history)


def config_items(config: dict[str, Any]) -> dict[str, str]:
    """A run's stored configuration as {key: text}: the training config's keys, then the model's
    (`model.` before a key both have); keys without a value are left out."""
    out: dict[str, str] = {}
    for source in ("train", "model"):
        value = config.get(source)
        if isinstance(value, dict):
            for k, v in value.items():
                if v is not None:
                    out[f"model.{k}" if k in out else k] = v if isinstance(v, str) else json.dumps(v)
        elif value is not None:
            out[source] = json.dumps(value)
    return out


def config_text(config: dict[str, Any], keys: set[str] | None = None) -> str:
    """A run's stored configuration on one line, `key=value ...` (only `keys` when given)."""
    return " ".join(f"{k}={v}" for k, v in config_items(config).items() if keys is None or k in keys)


def _differing(configs: list[dict[str, Any]]) -> set[str] | None:
    """The config keys whose values differ between runs (None: show every key, one run or no difference)."""
    items = [config_items(c) for c in configs if c]
    if len(items) < 2:
        return None
    keys = {k for i in items for k in i}
    differ = {k for k in keys if len({i.get(k) for i in items}) > 1}
    return differ or None


@handle_errors
def runs(store: StoreOption = ".art", storage_option: StorageOption = None,
         fmt: FormatOption = None, output: OutputOption = None) -> None:
    """List the runs in the store: latest step, last val/train reward, rows logged, config, size.

    `step` is the latest step logged; the rewards are the last logged; `logs` counts log() calls and
    `trajectories` their rows; `config` is the run's stored configuration (Model(config=...) and
    the last TrainConfig; in a table, the keys whose values differ between runs); the size counts
    each table's latest version and the checkpoint files (KiB = 1024 bytes). Read in one scan of
    the store's registry of runs, which the writers refresh a few seconds after their logs
    (`artstore compact --all` refreshes every run's now).

    Example:

        artstore runs --store s3://team-runs/art -o aws_region=us-east-1
    """
    import pyarrow as pa

    s = get_store(store, storage_option)
    stats = [row for row in s.run_stats().to_pylist() if row["logs"]]  # a run with no committed log: not listed
    table = pa.Table.from_pylist([{
        "project": r["project"], "model": r["model"], "step": r["last_step"], "val/reward": r["val_reward"],
        "train/reward": r["train_reward"], "logs": r["logs"], "trajectories": r["trajectories"]} for r in stats],
        schema=pa.schema([("project", pa.string()), ("model", pa.string()), ("step", pa.int64()),
                          ("val/reward", pa.float64()), ("train/reward", pa.float64()), ("logs", pa.int64()),
                          ("trajectories", pa.int64())]))
    configs = [json.loads(r["config"]) if r["config"] else {} for r in stats]
    size = [r["size_bytes"] for r in stats]
    fmt = resolve(fmt, output)
    if fmt == Format.table:
        # pydantic's ByteSize: only where sizes are shown as text
        from artstore.sizes import format_size

        differ = _differing(configs)  # in a table, what tells the runs apart
        table = table.append_column("config", pa.array([config_text(c, differ) for c in configs], pa.string()))
        table = table.append_column("size", pa.array([format_size(n) for n in size], pa.string()))
    else:
        table = table.append_column("config", pa.array([json.dumps(c) if c else None for c in configs], pa.string()))
        table = table.append_column("size_bytes", pa.array(size, pa.int64()))
    if fmt == Format.json:  # the config as an object, not as text
        from artstore.cli.output import rows

        objects = [{**r, "config": c or None} for r, c in zip(rows(table), configs, strict=True)]
        write_json(objects, output)
        return
    render(table, fmt, output, title=f"runs in {s.uri}")


def _when(t: Any) -> str:
    return t.isoformat(sep=" ", timespec="seconds") if t is not None else "?"


@handle_errors
def show(run: RunArgument, store: StoreOption = ".art", storage_option: StorageOption = None,
         metric: Annotated[str, typer.Option("--metric", "-m", help="The metric that ranks steps.")] = "val/reward",
         ) -> None:
    """Show one run in a few lines: what it logged, its latest and best step, versions and tags,
    checkpoints (counts and sizes, not every one: `artstore checkpoints` lists them) and config.

    Example:

        artstore show email-search/agent-001
    """
    import pyarrow.compute as pc

    from artstore.errors import RetentionError
    from artstore.sizes import format_size

    r = get_run(get_store(store, storage_option), run)
    logs = r.logs()
    out = _lines(console)
    out(f"{run}  ({r.location.uri})")
    counts = {x["values"]: x["counts"] for x in pc.value_counts(logs["split"]).to_pylist()}
    steps = logs["step"].to_pylist()
    out(f"logs         {logs.num_rows} ({', '.join(f'{k} {v}' for k, v in sorted(counts.items()))}); "
        f"steps {min(steps)}..{max(steps)}; {pc.sum(logs['num_trajectories']).as_py()} trajectories, "
        f"{pc.sum(logs['num_exceptions']).as_py()} exceptions; last logged {_when(logs['recorded_at'][-1].as_py())}")
    h = _per_step(r.history())
    latest = h.num_rows - 1
    shown = [m for m in KEY_METRICS if m in h.column_names][:4]
    values = ", ".join(f"{m} {h[m][latest].as_py():.4g}" for m in shown if h[m][latest].is_valid)
    out(f"latest       step {h['step'][latest].as_py()}" + (f": {values}" if values else ""))
    try:
        best = r.best_step(metric)
        means = r.step_summary().means(metric)
        out(f"best         step {best} by {metric} (step mean {means[best]:.4g})")
    except RetentionError:
        out(f"best         no {metric} logged")
    versions = r.versions()
    tags = r.tags()
    out(f"versions     {len(versions)}, latest {versions[-1]['version']} at {_when(versions[-1]['timestamp'])}; "
        "tags " + (", ".join(f"{k} -> {int(v)}" + (" (pinned)" if v.pinned else "") for k, v in sorted(tags.items()))
                 or "none"))
    cps = r.checkpoints_table().list()
    if cps:
        by_status: dict[str, list[Any]] = {}
        for c in cps:
            by_status.setdefault(c.status, []).append(c)
        ready = by_status.get("ready", [])
        parts = [f"{len(v)} {k}" for k, v in sorted(by_status.items())]
        kept = sum(c.size_bytes or 0 for c in ready)
        ready_steps = ", ".join(str(c.step) for c in ready[-8:])
        out(f"checkpoints  {', '.join(parts)}; ready: {'... ' if len(ready) > 8 else ''}{ready_steps or 'none'} "
            f"({format_size(kept)})")
    else:
        out("checkpoints  none")
    config = config_text(r.config())
    out(f"config       {config or 'none stored'}")


def _lines(target: Any) -> Any:
    def out(text: str) -> None:
        target.print(text, markup=False, highlight=False, soft_wrap=True)
    return out


def _per_step(h: pa.Table) -> pa.Table:
    """ART's history (one row per log call) as one row per step: the last value of each metric
    logged at that step, so val and train of one step share a row."""
    import pyarrow as pa
    import pyarrow.compute as pc

    names = h.column_names[2:]
    if h.num_rows == 0:
        return h.drop_columns(["recorded_at"])
    order = pc.sort_indices(h, [("step", "ascending")])  # stable: log order within a step
    h = h.take(order)
    steps = h["step"].to_pylist()
    last: dict[int, dict[str, Any]] = {}
    columns = {n: h[n].to_pylist() for n in names}
    for i, step in enumerate(steps):
        row = last.setdefault(step, {})
        for n in names:
            if columns[n][i] is not None:
                row[n] = columns[n][i]
    out = {"step": pa.array(list(last), pa.int64())}
    for n in names:
        out[n] = pa.array([row.get(n) for row in last.values()], pa.float64())
    return pa.table(out)


@handle_errors
def history(
    run: RunArgument,
    store: StoreOption = ".art",
    storage_option: StorageOption = None,
    metric: Annotated[list[str] | None, typer.Option(
        "--metric", "-m", help="Show this metric (repeatable), e.g. -m val/reward.")] = None,
    all_metrics: Annotated[bool, typer.Option(
        "--all", help="Every metric, one row per log call, with recorded_at (ART's history.jsonl).")] = False,
    list_metrics: Annotated[bool, typer.Option(
        "--list", help="One metric per line: how often it was logged, its steps and last value.")] = False,
    fmt: FormatOption = None,
    output: OutputOption = None,
) -> None:
    """Show a run's metric history, one row per step: val and train of a step on one row.

    Without -m: the key metrics (rewards, exception rates, loss); --list names every metric;
    --all gives every metric, one row per log call (as ART's history.jsonl).

    Examples:

        artstore history email-search/agent-001

        artstore history email-search/agent-001 -m val/reward -m train/loss

        artstore history email-search/agent-001 --all --format csv --output history.csv
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    h = get_run(get_store(store, storage_option), run).history()
    names = h.column_names[2:]
    for m in metric or []:
        if m not in names:
            from artstore.errors import ValidationError

            raise ValidationError("--metric", f"{m!r} is not logged in {run}{did_you_mean(m, names)}; "
                                              f"`artstore history {run} --list` names its metrics")
    if list_metrics:
        listing = []
        for n in names:
            valid = h.filter(pc.is_valid(h[n]))
            s = valid["step"]
            listing.append({"metric": n, "values": valid.num_rows, "first_step": pc.min(s).as_py(),
                            "last_step": pc.max(s).as_py(), "last_value": valid[n][-1].as_py()})
        render(pa.Table.from_pylist(listing, schema=pa.schema([
            ("metric", pa.string()), ("values", pa.int64()), ("first_step", pa.int64()), ("last_step", pa.int64()),
            ("last_value", pa.float64())])), fmt, output, title=f"metrics of {run}")
        return
    if all_metrics:
        chosen = metric or names
        h = h.select(["step", "recorded_at", *chosen])
    else:
        chosen = metric or [m for m in KEY_METRICS if m in names and (
            not m.endswith("exception_rate") or pc.max(h[m]).as_py())] or names[:6]
        h = _per_step(h.select(["step", "recorded_at", *chosen]))
    if chosen:  # only the rows that hold one of the metrics shown
        import functools

        h = h.filter(functools.reduce(pc.or_, [pc.is_valid(h[m]) for m in chosen]))
    render(h, fmt, output, title=f"history of {run}")
    others = len(names) - len(chosen)
    if not metric and not all_metrics and others > 0 and resolve(fmt, output) == Format.table:
        console.print(f"{others} more metrics: --list names them, -m NAME shows one, --all shows every one",
                      style="dim", highlight=False)
