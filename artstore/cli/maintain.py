"""Maintenance: compact runs (merge small fragments, drop versions past the retention window)."""

from __future__ import annotations

from typing import Annotated

import typer

from artstore.cli.common import (
    StorageOption,
    StoreOption,
    err_console,
    get_run,
    get_store,
    handle_errors,
)
from artstore.cli.output import FormatOption, OutputOption, render


def register(app: typer.Typer) -> None:
    app.command("compact")(compact)


@handle_errors
def compact(
    run: Annotated[str | None, typer.Argument(metavar="[PROJECT/MODEL]", help="The run to compact.")] = None,
    all_runs: Annotated[bool, typer.Option("--all", help="Compact every run in the store.")] = False,
    store: StoreOption = ".art",
    storage_option: StorageOption = None,
    fmt: FormatOption = None,
    output: OutputOption = None,
) -> None:
    """Compact a run (or every run): merge small fragments, drop versions past retention.

    With --all, runs an older artstore created are first recorded in the store's registry of
    runs. Old versions go once older than the store's retention window (7 days by default); tagged
    versions are kept. Safe beside running writers and readers inside the window.

    Examples:

        artstore compact email-search/agent-001

        artstore compact --all --store s3://team-runs/art
    """
    if (run is None) == (not all_runs):
        raise typer.BadParameter("give PROJECT/MODEL or --all (not both)", param_hint="PROJECT/MODEL")
    import pyarrow as pa
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    s = get_store(store, storage_option)
    if all_runs and (found := s.rescan_runs()):
        err_console.print(f"registered {found} run(s) the store's registry of runs lacked")
    runs = s.runs() if all_runs else [get_run(s, run)]
    summary = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err_console, transient=True, disable=not err_console.is_terminal) as progress:
        task = progress.add_task("compacting", total=len(runs))
        for r in runs:
            progress.update(task, description=f"compacting {r.project}/{r.name}")
            for table, stats in sorted(r.compact().items()):
                summary.append({"run": f"{r.project}/{r.name}", "table": table, "fragments": stats["fragments"],
                                "fragments_compacted": stats["compacted"],
                                "versions_removed": stats["removed_versions"]})
            progress.advance(task)
    render(pa.Table.from_pylist(summary, schema=pa.schema([
        ("run", pa.string()), ("table", pa.string()), ("fragments", pa.int64()), ("fragments_compacted", pa.int64()),
        ("versions_removed", pa.int64())])), fmt, output, title="compacted")
