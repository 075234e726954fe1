"""Commands about checkpoints: list them, pin them, and prune them with a retention policy."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from artstore.checkpoints.retention import (
    KeepBest,
    KeepEvery,
    KeepLast,
    KeepSql,
    Plan,
    Policy,
    format_size,
    parse_size,
    parse_smoothing,
)
from artstore.cli.common import (
    StorageOption,
    StoreOption,
    console,
    get_run,
    get_store,
    handle_errors,
)
from artstore.errors import ValidationError

RunArg = Annotated[str, typer.Argument(help="PROJECT/MODEL")]


def register(app: typer.Typer) -> None:
    app.command("checkpoints")(checkpoints)
    app.command("pin")(pin)
    app.command("prune")(prune)


def _time(t: object) -> str:
    return "" if t is None else t.strftime("%Y-%m-%d %H:%M:%S")  # type: ignore[attr-defined]


@handle_errors
def checkpoints(run: RunArg, store: StoreOption = ".art", storage_option: StorageOption = None) -> None:
    """List a run's checkpoints: step, status, size, times, pins, and why deleted."""
    r = get_run(get_store(store, storage_option), run)
    pins = r.pinned_checkpoints()
    table = Table("step", "status", "size", "ready (UTC)", "pinned", "deleted (UTC)", "why deleted",
                  title=f"checkpoints of {run}")
    for c in r.checkpoints_table().list():
        pinned = ("yes" + (f": {pins[c.step]}" if pins[c.step] else "")) if c.step in pins else ""
        table.add_row(str(c.step), c.status + (" (linked)" if c.linked else ""), format_size(c.size_bytes),
                      _time(c.ready_at), pinned, _time(c.deleted_at), c.deleted_reason or "")
    console.print(table)


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
) -> None:
    """Plan (and with --apply, carry out) a checkpoint pruning: one line per checkpoint, with why.

    With no rule options, the run's stored policy is used, else nothing is deleted. The latest
    checkpoint, one still saving and a pinned one are kept; so is one a --keep-best metric cannot
    rank (no value at its step), unless --unscored delete."""
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
    _print_plan(plan, applied=apply)


def _print_plan(plan: Plan, applied: bool) -> None:
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
