"""Commands about runs: list them, and show one's history."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from artstore.cli.common import (
    StorageOption,
    StoreOption,
    console,
    get_run,
    get_store,
    handle_errors,
)


def register(app: typer.Typer) -> None:
    app.command("runs")(runs)
    app.command("history")(history)


@handle_errors
def runs(store: StoreOption = ".art", storage_option: StorageOption = None) -> None:
    """List the runs in the store: project, model, latest step, rows logged."""
    s = get_store(store, storage_option)
    table = Table("project", "model", "logs", "latest step", title=f"runs in {s.uri}")
    for run in s.runs():
        logs = run.logs()
        latest = max(logs["step"].to_pylist(), default=0)
        table.add_row(run.project, run.name, str(logs.num_rows), str(latest))
    console.print(table)


@handle_errors
def history(
    run: Annotated[str, typer.Argument(help="PROJECT/MODEL")],
    store: StoreOption = ".art",
    storage_option: StorageOption = None,
    metric: Annotated[list[str] | None, typer.Option("--metric", "-m", help="Only these metrics.")] = None,
) -> None:
    """Show a run's metric history: one row per log call."""
    r = get_run(get_store(store, storage_option), run)
    h = r.history()
    cols = ["step"] + [c for c in h.column_names[2:] if not metric or c in metric]
    table = Table(*cols, title=f"history of {run}")
    for row in h.select(cols).to_pylist():
        table.add_row(*("" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v) for v in row.values()))
    console.print(table)
