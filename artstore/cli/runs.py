"""Commands about runs: list them, show one, and show one's metric history."""

from __future__ import annotations

import functools
from typing import Annotated

import pyarrow as pa
import pyarrow.compute as pc
import typer

from artstore.cli.common import (
    StorageOption,
    StoreOption,
    console,
    get_run,
    get_store,
    handle_errors,
)
from artstore.cli.output import Format, FormatOption, OutputOption, render
from artstore.errors import ValidationError

RunArgument = Annotated[str, typer.Argument(metavar="PROJECT/MODEL", help="The run, e.g. email-search/agent-001.")]

_RUNS = """
SELECT r.project, r.model, r.latest_step AS step, last.val_reward AS "val/reward",
       last.train_reward AS "train/reward", r.logs, r.trajectories
FROM runs r LEFT JOIN (
  SELECT project, model,
         arg_max(value, recorded_at) FILTER (WHERE name = 'val/reward') AS val_reward,
         arg_max(value, recorded_at) FILTER (WHERE name = 'train/reward') AS train_reward
  FROM metrics WHERE name IN ('val/reward', 'train/reward') GROUP BY project, model) last
  ON last.project = r.project AND last.model = r.model
ORDER BY r.project, r.model
"""


def register(app: typer.Typer) -> None:
    app.command("runs")(runs)
    app.command("show")(show)
    app.command("history")(history)


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


@handle_errors
def runs(store: StoreOption = ".art", storage_option: StorageOption = None,
         fmt: FormatOption = Format.table, output: OutputOption = None) -> None:
    """List the runs in the store: latest step, last val/train reward, rows logged, size on disk.

    `step` is the latest step logged; the rewards are the last logged; `logs` counts log() calls and
    `trajectories` their rows; the size counts every kept version and checkpoint file.

    Example:

        artstore runs --store s3://team-runs/art -o aws_region=us-east-1
    """
    s = get_store(store, storage_option)
    table = s.sql(_RUNS)
    sizes = {(r.project, r.name): r.size_bytes() for r in s.runs()}
    size = [sizes.get(k, 0) for k in zip(table["project"].to_pylist(), table["model"].to_pylist(), strict=True)]
    if fmt == Format.table:
        table = table.append_column("size", pa.array([_size(n) for n in size]))
    else:
        table = table.append_column("size_bytes", pa.array(size, pa.int64()))
    render(table, fmt, output, title=f"runs in {s.uri}")


@handle_errors
def show(run: RunArgument, store: StoreOption = ".art", storage_option: StorageOption = None) -> None:
    """Show one run: what it logged, its versions and tags, and its checkpoints.

    Example:

        artstore show email-search/agent-001
    """
    r = get_run(get_store(store, storage_option), run)
    logs = r.logs()
    versions = r.versions()
    console.print(f"[bold]{run}[/bold] at {r.location.uri}")
    counts = {x["values"]: x["counts"] for x in pc.value_counts(logs["split"]).to_pylist()}
    splits = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    steps = logs["step"].to_pylist()
    console.print(f"logs: {logs.num_rows} ({splits}); steps {min(steps)}..{max(steps)}; "
                  f"{pc.sum(logs['num_trajectories']).as_py()} trajectories")
    console.print(f"versions: {len(versions)}, latest {versions[-1]['version']} at "
                  f"{versions[-1]['timestamp'].isoformat(sep=' ', timespec='seconds')}")
    tags = r.tags()
    console.print("tags: " + (", ".join(f"{k} -> {v}" for k, v in sorted(tags.items())) or "none"))
    cps = r.checkpoints()
    status = pc.value_counts(cps["status"]).to_pylist() if cps.num_rows else []
    latest = r.latest_checkpoint_step()
    console.print("checkpoints: " + (", ".join(f"{x['counts']} {x['values']}" for x in status) or "none")
                  + ("" if latest is None else f"; latest ready step {latest}"))
    if cps.num_rows:
        render(cps.select(["step", "status", "size_bytes", "created_at", "deleted_at", "deleted_reason"]),
               title=f"checkpoints of {run}")


@handle_errors
def history(
    run: RunArgument,
    store: StoreOption = ".art",
    storage_option: StorageOption = None,
    metric: Annotated[list[str] | None, typer.Option(
        "--metric", "-m", help="Only this metric (repeatable), e.g. -m val/reward.")] = None,
    fmt: FormatOption = Format.table,
    output: OutputOption = None,
) -> None:
    """Show a run's metric history: one row per log call, one column per metric (as ART's history.jsonl).

    Examples:

        artstore history email-search/agent-001 -m val/reward -m train/reward

        artstore history email-search/agent-001 --format csv --output history.csv
    """
    h = get_run(get_store(store, storage_option), run).history()
    names = h.column_names[2:]
    unknown = [m for m in metric or [] if m not in names]
    if unknown:
        raise ValidationError("--metric", f"{unknown} not logged in {run}; it has {names}")
    cols = ["step", "recorded_at", *(metric or names)]
    h = h.select(cols)
    if metric:  # only the rows that hold one of the metrics asked for
        h = h.filter(functools.reduce(pc.or_, [pc.is_valid(h[m]) for m in metric]))
    render(h, fmt, output, title=f"history of {run}")
