"""Take a run out of the store as an OpenPipe ART model folder that ART's own readers load.

    {dest}/trajectories/{split}/{step:04d}.parquet   one file per split and step, parquet v2
                                                     (openpipe-art 0.5.2x) or v1 (earlier 0.5.x)
    {dest}/history.jsonl                             one line per log call, in commit order
    {dest}/model.json, state.json                    when the run was imported from ART
    {dest}/checkpoints/{step:04d}/                   the files of every ready checkpoint

Several log calls at one split and step (ART replaces the file; artstore keeps them all) go into
one file, their groups in commit order. Exporting v1 says what that format could not hold.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from artstore.art.format import FORMAT_VERSIONS, write_parquet_groups
from artstore.art.history_file import history_line
from artstore.art.importer import ART_FILES, ART_FILES_DIR
from artstore.checkpoints.table import checkpoint_dir_name
from artstore.errors import ValidationError
from artstore.read.run import Run
from artstore.storage import Location, files

Progress = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass
class ExportReport:
    """What `export_art` wrote, and what the chosen format could not hold (what -> how many)."""

    dest: str
    format: str
    trajectory_files: int = 0
    groups: int = 0
    trajectories: int = 0
    history_rows: int = 0
    art_files: list[str] = field(default_factory=list)
    checkpoints: list[int] = field(default_factory=list)
    checkpoints_skipped: list[str] = field(default_factory=list)
    lost: Counter = field(default_factory=Counter)


def _history_lines(run: Run) -> list[str]:
    """history.jsonl lines: one per log call in commit order, metrics in the order logged."""
    logs, long = run.logs(), run.metrics()
    by_log: dict[str, dict[str, float]] = {lid: {} for lid in logs["log_id"].to_pylist()}
    for lid, name, value in zip(long["log_id"].to_pylist(), long["name"].to_pylist(), long["value"].to_pylist(),
                                strict=True):
        by_log[lid][name] = value
    return [history_line(by_log[lid], step, at) for lid, step, at in zip(
        logs["log_id"].to_pylist(), logs["step"].to_pylist(), logs["recorded_at"].to_pylist(), strict=True)]


def export_art(run: Run, dest: str | Location, *, format: str = "v2", storage_options: dict[str, Any] | None = None,
               progress: Progress | None = None) -> ExportReport:
    """Write `run` as an ART model folder at `dest` (which must be absent or empty)."""
    if format not in FORMAT_VERSIONS:
        raise ValidationError("format", f"must be one of {FORMAT_VERSIONS}, got {format!r}")
    out = dest if isinstance(dest, Location) else Location.parse(dest, storage_options)
    if files.walk(out):
        raise ValidationError("dest", f"{out.uri} is not empty; export into a new folder")
    report = ExportReport(out.uri, format)
    logs = run.logs()
    pairs = sorted({(s, n) for s, n, g in zip(logs["split"].to_pylist(), logs["step"].to_pylist(),
                                              logs["num_groups"].to_pylist(), strict=True) if g})
    ready = [c for c in run.checkpoints_table().list() if c.status == "ready"]
    total = len(pairs) + 1 + len(ready)
    for done, (split, step) in enumerate(pairs, 1):
        groups = run.groups(split=split, step=step)
        data, lost = write_parquet_groups(groups, format)
        files.put_bytes(out.child("trajectories", split, f"{step:04d}.parquet"), data)
        report.trajectory_files += 1
        report.groups += len(groups)
        report.trajectories += sum(len(g.trajectories) for g in groups)
        report.lost.update(lost)
        if progress:
            progress(f"export {run.project}/{run.name}", done, total)

    lines = _history_lines(run)
    if lines:
        files.put_bytes(out.child("history.jsonl"), ("\n".join(lines) + "\n").encode())
    report.history_rows = len(lines)
    for name in ART_FILES:
        kept = run.location.child(ART_FILES_DIR, name)
        if files.exists(kept):
            files.put_bytes(out.child(name), files.get_bytes(kept))
            report.art_files.append(name)
    if progress:
        progress(f"export {run.project}/{run.name}", len(pairs) + 1, total)

    for done, c in enumerate(ready, len(pairs) + 2):
        src = Location.parse(c.uri, run.location.storage_options)
        if files.walk(src):
            files.copy_tree(src, out.child("checkpoints", checkpoint_dir_name(c.step)))
            report.checkpoints.append(c.step)
        else:
            report.checkpoints_skipped.append(f"{c.step}: no files at {c.uri}")
        if progress:
            progress(f"export {run.project}/{run.name}", done, total)
    return report
