"""Checkpoint files: a run's checkpoint files stored from a local folder, and found again (the
latest, the best by a metric, or a step's) as a local path, downloaded once from a bucket.

The rows that say which checkpoints exist are `artstore.checkpoints.table.CheckpointTable`'s; this
module moves their files (through `artstore.storage.files`). `Run` delegates here.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from artstore.checkpoints.table import Checkpoint, CheckpointTable, checkpoint_dir_name
from artstore.errors import CheckpointError, ValidationError
from artstore.storage import Location, files


def save(table: CheckpointTable, step: int, local_dir: str | os.PathLike[str], base_model: str | None,
         table_versions: Callable[[], Mapping[str, int]]) -> Checkpoint:
    """`Run.save_checkpoint_files`: record the row of `step` (`saving`, with `table_versions()`),
    clear what an interrupted save of it left, copy every file of `local_dir` to its place (each
    moved into place whole), then mark the row `ready` with its size."""
    src = Location.parse(os.fspath(local_dir))
    if not src.is_local or not Path(src.uri).is_dir():
        raise CheckpointError(f"{local_dir} is not a local folder")
    table.begin(step, base_model=base_model, table_versions=table_versions())
    dest = table.files_location(step)
    files.delete(dest)
    size_bytes = files.copy_tree(src, dest)
    return table.mark_ready(step, size_bytes)


def delete(table: CheckpointTable, step: int, storage_options: Mapping[str, Any] | None) -> None:
    """Delete the files of the checkpoint of `step` wherever its row says they are (none: fine)."""
    c = table.get(step)
    if c is not None:
        files.delete(Location.parse(c.uri, storage_options))


def choose(table: CheckpointTable, which: Literal["best", "latest"] | int, mode: Literal["max", "min"],
           scores: Callable[[], dict[int, float]], name: str) -> Checkpoint:
    """The ready checkpoint `which` names (see `Run.checkpoint`); `scores()`: the per-step means
    that rank them for "best". CheckpointError naming the run as `name` when there is none."""
    ready = [c for c in table.list() if c.status == "ready"]
    if which == "latest":
        chosen = ready[-1] if ready else None
    elif which == "best":
        # pydantic's models: imported on first use (as `run._retention`)
        from artstore.checkpoints.retention import rank

        order = rank(scores(), [c.step for c in ready], mode)
        chosen = next(c for c in ready if c.step == order[0]) if order else None
    elif isinstance(which, int) and not isinstance(which, bool):
        c = table.get(which)
        if c is not None and c.status != "ready":
            raise CheckpointError(f"checkpoint {which} of {name} is {c.status}"
                                  + (f" ({c.deleted_reason})" if c.deleted_reason else ""))
        chosen = c
    else:
        raise ValidationError("which", f"use 'best', 'latest' or a step, got {which!r}")
    if chosen is None:
        raise CheckpointError(f"no ready checkpoint ({which}) in {name}")
    return chosen


def local_path(chosen: Checkpoint, storage_options: Mapping[str, Any] | None,
               cache_dir: str | os.PathLike[str] | None) -> Path:
    """A local path to the files of `chosen`: where they are, on local disk; else downloaded once
    to `cache_dir` (default $ARTSTORE_CACHE or ~/.cache/artstore) and reused from there."""
    loc = Location.parse(chosen.uri, storage_options)
    if loc.is_local:
        return Path(loc.uri)
    root = Path(cache_dir or os.environ.get("ARTSTORE_CACHE") or Path.home() / ".cache" / "artstore")
    key = hashlib.sha256(loc.uri.encode()).hexdigest()[:16]
    return files.download_dir(loc, root / "checkpoints" / key / checkpoint_dir_name(chosen.step))
