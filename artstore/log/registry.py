"""The store's registry of runs: one Lance dataset at the store's root (`_runs.lance`), one row per
run, so listing the runs of a store reads one small table instead of walking every run's folder
(at 500 runs the walk was 65 ms locally, and one LIST per prefix level on a bucket).

- Written at commit: `log()` registers its run when the run's `logs` table does not exist yet,
  before its first log commits, so every run with a committed log is registered. (A first log
  that then fails leaves a registered run with no logs: `Run.exists()` is False for it.)
- Plain appends, read with duplicates dropped: racing first logs, or a run logged again after its
  folder was deleted, register it twice and read as one run.
- Stores written before the registry: the first registration of a store also records every run
  the old walk finds (the walk runs once per store), and `rescan` (`artstore compact`) records
  runs an older artstore created since. A store without the registry is listed by the walk.
- Stats (logs, trajectories, last step and time, last rewards, config, size): written into the
  run's row by the writer's background upkeep (`artstore.log.run_stats`), never by log() itself;
  `read_stats` gives them in one scan. With them, the commit-check counts (COMMIT_CHECK: the
  logs version and its commit time, the highest commit_seq, the rows written to each gated
  table), which let a cross-run query skip reading each run's logs (`artstore.read.scan`). A refresh replaces a row only with stats of the same or a
  later version of the run's logs table, so racing writers never move them backwards.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from artstore.schema import arrow_schema
from artstore.storage import Location, datasets, files, scans, writes

NAME = "_runs.lance"
KEYS = ["project", "model"]
STATS = ["logs", "trajectories", "last_step", "last_logged_at", "val_reward", "train_reward", "config", "size_bytes",
         "logs_version", "stats_at", "logs_committed_at", "last_seq", "groups", "metric_values"]
# Of STATS, what a reader needs to prove from counts alone that a gated table holds only visible
# rows (`artstore.log.visibility`), for the logs version they were computed at.
COMMIT_CHECK = ["logs_version", "logs_committed_at", "last_seq", "trajectories", "groups", "metric_values"]
# A refresh replaces the row it matches only with stats of the same or a later logs version.
_NEWER = "target.logs_version IS NULL OR source.logs_version >= target.logs_version"


def location(store: Location) -> Location:
    return store.child(NAME)


def walk(store: Location) -> list[tuple[str, str]]:
    """(project, model) of every folder holding a run's logs table, found by listing the store."""
    found = []
    for rel in files.glob(store, "*/models/*/logs.lance"):
        project, _, name, _ = rel.split("/")
        found.append((project, name))
    return sorted(found)


def read(store: Location) -> list[tuple[str, str]] | None:
    """(project, model) of every registered run, sorted; None when the store has no registry."""
    t = scans.scan(location(store), columns=["project", "model"])
    if t is None:
        return None
    return sorted(set(zip(t["project"].to_pylist(), t["model"].to_pylist(), strict=True)))


def read_stats(store: Location) -> pa.Table | None:
    """One row per registered run, sorted by project and model: the registry's columns (the
    STATS null where no refresh has run yet); None when the store has no registry. One scan."""
    t = scans.scan(location(store))
    if t is None:
        return None
    schema = arrow_schema("runs")
    t = pa.table({f.name: t[f.name] if f.name in t.column_names else pa.nulls(t.num_rows, f.type)
                  for f in schema}, schema=schema)  # a version 1 registry has no stats columns
    if t.num_rows > 1:
        t = t.sort_by([("project", "ascending"), ("model", "ascending"), ("logs_version", "descending")])
        keys = pc.binary_join_element_wise(t["project"], t["model"], "\x00")
        first = pc.not_equal(keys[1:], keys[:-1])  # the first row of each run: its newest stats
        t = t.filter(pa.concat_arrays([pa.array([True]), first.combine_chunks()]))
    return t


def write_stats(store: Location, project: str, model: str, stats: dict[str, Any]) -> bool:
    """Replace the stats in the row of the run `project/model` (one commit), unless the registry
    already holds stats of a later logs version; registers the run when missing. Returns whether
    the row changed."""
    loc = location(store)
    known = scans.scan(loc, columns=["registered_at"], filter=f"project = {_lit(project)} AND model = {_lit(model)}")
    registered = min(known["registered_at"].to_pylist()) if known is not None and known.num_rows else None
    row = {"project": project, "model": model, "registered_at": registered or writes.now_utc(),
           **{k: stats.get(k) for k in STATS}}
    return writes.upsert_where(loc, pa.Table.from_pylist([row], schema=arrow_schema("runs")),
                               KEYS, _NEWER)


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def split_run(run: Location) -> tuple[Location, str, str] | None:
    """(store, project, model) of the run at `run` (`{store}/{project}/models/{model}`); None for a
    location outside that layout."""
    parts = run.uri.rstrip("/").rsplit("/", 3)
    if len(parts) == 4 and parts[2] == "models" and parts[0]:
        return Location(parts[0], run.storage_options), parts[1], parts[3]
    return None


def rows(runs: list[tuple[str, str]]) -> pa.Table:
    """Registry rows of `runs` (project, model), registered now, no stats yet."""
    now = writes.now_utc()
    schema = arrow_schema("runs")
    return pa.table({"project": [p for p, _ in runs], "model": [m for _, m in runs],
                     "registered_at": [now] * len(runs),
                     **{k: pa.nulls(len(runs), schema.field(k).type) for k in STATS}}, schema=schema)


def _append(loc: Location, rows: pa.Table, message: str) -> None:
    """Append `rows`, only the columns the registry has (a version 1 registry: no stats columns
    until a stats refresh adds them)."""
    ds = datasets.open_dataset(loc)
    if ds is not None and len(ds.schema) < len(rows.schema):
        rows = rows.select([n for n in rows.column_names if n in ds.schema.names])
    writes.append(loc, rows, message)


def register(store: Location, project: str, model: str) -> None:
    """Record the run `project/model` (one commit; a store's first also records what `walk` finds)."""
    loc = location(store)
    runs = [(project, model)]
    if not datasets.exists(loc):
        runs = sorted({*runs, *walk(store)})
    _append(loc, rows(runs), f"register {project}/{model}")


def rescan(store: Location) -> int:
    """Record the runs `walk` finds that the registry lacks (created by an older artstore); returns
    how many. Creates the registry when the store has none."""
    known = set(read(store) or [])
    missing = [r for r in walk(store) if r not in known]
    if missing:
        _append(location(store), rows(missing), "rescan")
    return len(missing)
