"""Commands about checkpoints: list them, pin them, and prune them with a retention policy."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from artstore.cli.common import (
    RunArgument,
    StorageOption,
    StoreOption,
    console,
    get_run,
    get_store,
    handle_errors,
)
from artstore.cli.output import Format, FormatOption, OutputOption, render, resolve
from artstore.errors import ValidationError

if TYPE_CHECKING:
    from artstore.checkpoints.retention import KeepBest, Plan

RunArg = RunArgument


def register(app: typer.Typer) -> None:
    app.command("checkpoints")(checkpoints)
    app.command("pin")(pin)
    app.command("prune")(prune)


@handle_errors
def checkpoints(run: RunArg, store: StoreOption = ".art", storage_option: StorageOption = None,
                fmt: FormatOption = None, output: OutputOption = None) -> None:
    """List a run's checkpoints: step, status, size, times, pins, and why deleted.

    Example:

        artstore checkpoints email-search/agent-001 --format csv
    """
    import pyarrow as pa

    from artstore.sizes import format_size

    r = get_run(get_store(store, storage_option), run)
    pins = r.pinned_checkpoints()
    listed = r.checkpoints_table().list()
    table_format = resolve(fmt, output) == Format.table
    stamp = pa.timestamp("us", tz="UTC")
    table = pa.table({
        "step": pa.array([c.step for c in listed], pa.int64()),
        "status": pa.array([c.status + (" (linked)" if c.linked and table_format else "") for c in listed]),
        **({"size": pa.array([format_size(c.size_bytes) for c in listed], pa.string())} if table_format else
           {"size_bytes": pa.array([c.size_bytes for c in listed], pa.int64()),
            "linked": pa.array([c.linked for c in listed], pa.bool_())}),
        "ready_at": pa.array([c.ready_at for c in listed], stamp),
        "pinned": pa.array([(pins[c.step] or "yes") if c.step in pins else None for c in listed], pa.string()),
        "deleted_at": pa.array([c.deleted_at for c in listed], stamp),
        "why_deleted": pa.array([c.deleted_reason for c in listed], pa.string()),
    })
    render(table, fmt, output, title=f"checkpoints of {run}")


@handle_errors
def pin(
    run: RunArg,
    step: Annotated[int, typer.Argument(help="The checkpoint's step.")],
    note: Annotated[str | None, typer.Option("--note", help="Why it is pinned.")] = None,
    unpin: Annotated[bool, typer.Option("--unpin", help="Remove the pin instead.")] = False,
    store: StoreOption = ".art",
    storage_option: StorageOption = None,
) -> None:
    """Pin a checkpoint (every retention policy keeps it), or unpin it."""
    r = get_run(get_store(store, storage_option), run)
    if unpin:
        r.unpin_checkpoint(step)
    else:
        r.pin_checkpoint(step, note)
    console.print(f"checkpoint {step} of {run} {'unpinned' if unpin else 'pinned'}", markup=False)


def _keep_best(spec: str, k: int, smooth: str | None, unscored: str = "keep") -> KeepBest:
    from artstore.checkpoints.retention import KeepBest
    from artstore.checkpoints.smoothing import parse_smoothing

    metric, mode = spec, "max"
    if spec.rsplit(":", 1)[-1] in ("max", "min") and ":" in spec:
        metric, mode = spec.rsplit(":", 1)
    if not metric:
        raise ValidationError("--keep-best", f"{spec!r}: give METRIC, METRIC:max or METRIC:min")
    if unscored not in ("keep", "delete"):
        raise ValidationError("--unscored", f"{unscored!r}: use keep or delete")
    return KeepBest(metric=metric, mode=mode, k=k, smooth=parse_smoothing(smooth or "mean"), unscored=unscored)


@handle_errors
def prune(
    run: RunArg,
    keep_last: Annotated[int | None, typer.Option("--keep-last", min=1, help="Keep the N newest.")] = None,
    keep_best: Annotated[str | None, typer.Option(
        "--keep-best", metavar="METRIC[:max|:min]", help="Keep the best by this metric (default max).")] = None,
    best_k: Annotated[int, typer.Option("--best-k", min=1, help="How many best to keep.")] = 1,
    smooth: Annotated[str | None, typer.Option(
        "--smooth", metavar="mean|window:N|ema:ALPHA",
        help="Rank --keep-best by the per-step mean (default), a moving average over N steps with a value, "
             "or an EMA (ALPHA weighs the newest step).")] = None,
    unscored: Annotated[str | None, typer.Option(
        "--unscored", metavar="keep|delete",
        help="A checkpoint with no --keep-best metric value at its step: keep it (default) or let it be "
             "deleted (ART's delete_checkpoints deletes it).")] = None,
    keep_every: Annotated[int | None, typer.Option("--keep-every", min=1, help="Keep steps divisible by N.")] = None,
    max_size: Annotated[str | None, typer.Option(
        "--max-size", metavar="SIZE", help="Size budget, e.g. 50GB: evict the worst-ranked first.")] = None,
    sql: Annotated[str | None, typer.Option(
        "--sql", metavar="QUERY", help="Keep the steps this SELECT returns (tables: metrics, checkpoints).")] = None,
    apply: Annotated[bool, typer.Option("--apply", help="Delete the files (default: a dry run).")] = False,
    store: StoreOption = ".art",
    storage_option: StorageOption = None,
    fmt: FormatOption = None,
    output: OutputOption = None,
) -> None:
    """Plan (and with --apply, carry out) a checkpoint pruning: one line per checkpoint, with why.

    With no rule options, the run's stored policy is used, else nothing is deleted. The latest
    checkpoint, one still saving and a pinned one are kept; so is one a --keep-best metric cannot
    rank (no value at its step), unless --unscored delete."""
    from artstore.checkpoints.retention import KeepEvery, KeepLast, KeepSql, Policy
    from artstore.sizes import parse_size

    r = get_run(get_store(store, storage_option), run)
    for flag, value in (("--smooth", smooth), ("--unscored", unscored)):
        if value is not None and keep_best is None:
            raise ValidationError(flag, "only applies to --keep-best")
    rules: list = []
    if keep_last is not None:
        rules.append(KeepLast(n=keep_last))
    if keep_best is not None:
        rules.append(_keep_best(keep_best, best_k, smooth, unscored or "keep"))
    if keep_every is not None:
        rules.append(KeepEvery(n=keep_every))
    if sql is not None:
        rules.append(KeepSql(query=sql))
    budget = parse_size(max_size) if max_size is not None else None
    if rules or budget is not None:
        policy = Policy(rules=tuple(rules), max_size_bytes=budget)
    else:
        policy = r.retention_policy() or Policy()
    plan = r.apply_retention(policy) if apply else r.retention_plan(policy)
    if fmt is None and output is None or fmt == Format.table:
        _print_plan(plan, applied=apply)
    else:  # the plan as data: one row per checkpoint
        import pyarrow as pa

        done = {"delete": "deleted"} if apply else {}
        render(pa.Table.from_pylist(
            [{"step": d.step, "action": done.get(d.action, d.action), "reason": d.reason, "size_bytes": d.size_bytes,
              "uri": d.uri} for d in plan.decisions],
            schema=pa.schema([("step", pa.int64()), ("action", pa.string()), ("reason", pa.string()),
                              ("size_bytes", pa.int64()), ("uri", pa.string())])), fmt, output)


def _print_plan(plan: Plan, applied: bool) -> None:
    from artstore.sizes import format_size

    out = console
    width = max([len(str(d.step)) for d in plan.decisions] + [4])
    for d in plan.decisions:
        action = {"delete": "deleted" if applied else "delete", "keep": "keep", "gone": "gone"}[d.action]
        linked = f" [linked: files deleted in place at {d.uri}]" if d.linked and d.action == "delete" else ""
        out.print(f"{d.step:>{width}}  {action:<7}  {d.reason}{linked}", markup=False, highlight=False, soft_wrap=True)
    for w in [plan.blocked] if plan.blocked else []:
        out.print(f"note: {w}", markup=False, highlight=False)
    for w in plan.warnings:
        out.print(f"warning: {w}", markup=False, highlight=False)
    freed = sum(d.size_bytes or 0 for d in plan.decisions if d.action == "delete")
    n = len(plan.delete)
    if applied:
        out.print(f"deleted {n} checkpoint(s), {format_size(freed)} freed", markup=False, highlight=False)
    else:
        out.print(f"dry run: {n} checkpoint(s) would be deleted ({format_size(freed)}); add --apply to delete",
                  markup=False, highlight=False)
