"""Commands that bring OpenPipe ART run folders in (`import-art`) and take runs out (`export-art`)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import typer

from artstore.cli.common import (
    StorageOption,
    StoreOption,
    console,
    err_console,
    get_run,
    get_store,
    handle_errors,
    parse_options,
)

if TYPE_CHECKING:
    from artstore.art.importer import RunPlan

FORMAT_VERSIONS = ("v1", "v2")  # artstore.art.format.FORMAT_VERSIONS (a test holds them equal)


def register(app: typer.Typer) -> None:
    app.command("import-art")(import_art)
    app.command("export-art")(export_art_command)


@contextmanager
def _progress():
    """A rich progress bar per stage; yields the callback artstore's ART functions take."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bars = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=err_console, transient=False, disable=not err_console.is_terminal)
    tasks: dict[str, int] = {}

    def update(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = bars.add_task(stage, total=total)
        bars.update(tasks[stage], completed=done, total=total)

    with bars:
        yield update


def _summary(plans: list[RunPlan], written: dict[tuple[str, str], tuple[int, int, int, int]] | None,
             link: bool) -> None:
    console.print("[bold]dry run: nothing written[/bold]" if written is None else "[bold]imported[/bold]")
    for p in plans:
        formats = ", ".join(f"{n} {f}" for f, n in sorted(p.formats.items())) or "no trajectory files"
        lines = [f"{p.num_groups} groups, {p.num_trajectories} trajectories, {p.num_exceptions} exceptions, "
                 f"{p.history_rows} history rows, {len(p.checkpoints)} checkpoints"]
        if written is not None:
            lw, lp, cw, cp = written[(p.project, p.name)]
            lines.append(f"logs: {lw} written, {lp} already there; checkpoints: {cw} "
                         f"{'linked' if link else 'copied'}, {cp} already there")
        if p.art_files:
            lines.append(f"kept ART's {', '.join(sorted(p.art_files))} in the run's art/ folder")
        lines += [f"could not hold: {c}" for c in p.cannot_hold()] + p.notes
        lines += [f"not imported: {s}" for s in p.skipped]
        console.print(f"[bold]{p.project}/{p.name}[/bold] from {p.source.uri} ({formats})")
        for line in lines:
            console.print(f"  {line}", markup=False, highlight=False)


@handle_errors
def import_art(
    src: Annotated[str, typer.Argument(help="An ART base folder (.art), a project folder or a model folder.")],
    store: StoreOption = ".art",
    storage_option: StorageOption = None,
    project: Annotated[str | None, typer.Option(help="Project name to import under (default: from SRC).")] = None,
    model: Annotated[str | None, typer.Option(help="Model name to import as (SRC must hold one model).")] = None,
    link: Annotated[bool, typer.Option(
        "--link", help="Reference checkpoint files in place instead of copying them; pruning then deletes them there.")
    ] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Read and check everything, write nothing.")] = False,
) -> None:
    """Import ART runs (any openpipe-art version): trajectories, history, model/state JSON, checkpoints.

    Every file is read and checked before anything is written; a malformed file stops the import
    with its name. Importing again changes nothing."""
    from artstore.art.importer import apply_import, plan_import

    s = get_store(store, storage_option, must_exist=False)  # the import creates it
    with _progress() as progress:
        plans = plan_import(src, project=project, model=model, storage_options=parse_options(storage_option),
                            progress=progress)
        results = None if dry_run else apply_import(s, plans, link=link, progress=progress)
    written = None if results is None else {
        (r.plan.project, r.plan.name): (r.logs_written, r.logs_present, r.checkpoints_written, r.checkpoints_present)
        for r in results}
    _summary(plans, written, link)
    if link and any(p.checkpoints for p in plans):
        console.print("[yellow]note:[/yellow] checkpoints are linked in place: pruning them "
                      "(`artstore prune --apply`, `delete_checkpoints()`) deletes the files in the ART folder itself.")


@handle_errors
def export_art_command(
    run: Annotated[str, typer.Argument(help="PROJECT/MODEL")],
    dest: Annotated[str, typer.Argument(help="The ART model folder to write, e.g. .art/PROJECT/models/MODEL (new or empty).")],
    store: StoreOption = ".art",
    storage_option: StorageOption = None,
    format: Annotated[str, typer.Option(
        "--format", help="v2: openpipe-art 0.5.2x parquet (lossless); v1: earlier 0.5.x (drops exceptions, "
        "additional histories, Choice details).")] = "v2",
) -> None:
    """Export a run as an ART model folder that ART's own readers load."""
    from artstore.art.exporter import export_art

    if format not in FORMAT_VERSIONS:
        raise typer.BadParameter(f"use one of {', '.join(FORMAT_VERSIONS)}", param_hint="--format")
    r = get_run(get_store(store, storage_option), run)
    with _progress() as progress:
        report = export_art(r, dest, format=format, storage_options=parse_options(storage_option), progress=progress)
    console.print(f"wrote {report.dest} (parquet {report.format}): {report.trajectory_files} trajectory files, "
                  f"{report.groups} groups, {report.trajectories} trajectories, {report.history_rows} history rows, "
                  f"{len(report.checkpoints)} checkpoints" + (f", {', '.join(report.art_files)}" if report.art_files else ""))
    for what, n in sorted(report.lost.items()):
        console.print(f"  not held by parquet {report.format}: {what} ({n})", markup=False, highlight=False)
    for line in report.checkpoints_skipped:
        console.print(f"  checkpoint skipped: {line}", markup=False, highlight=False)
