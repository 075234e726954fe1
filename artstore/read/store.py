"""Store: a folder or bucket of runs, `{uri}/{project}/models/{name}/`, and `open_store`."""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from artstore.log import registry
from artstore.log.windows import DEFAULT_READER_WINDOW, DEFAULT_RETENTION
from artstore.read.as_of import AsOf
from artstore.storage import Location, files

if TYPE_CHECKING:
    from artstore.engines.plan import Snapshot
    from artstore.read.run import Run


class Store:
    """A folder or bucket holding runs: `{uri}/{project}/models/{name}/`."""

    def __init__(self, uri: str | os.PathLike[str] = ".art", storage_options: Mapping[str, Any] | None = None,
                 retention: timedelta = DEFAULT_RETENTION, reader_window: timedelta = DEFAULT_READER_WINDOW):
        self.location = Location.parse(uri, storage_options)
        self.retention = retention  # how long old versions are kept
        self.reader_window = reader_window  # ... of a journal run's logs and data tables

    @property
    def uri(self) -> str:
        return self.location.uri

    def __repr__(self) -> str:
        return f"Store({self.location.uri!r})"

    def run(self, project: str, name: str) -> Run:
        """The run `project/name` (it need not exist yet; `Run.exists()` says)."""
        from artstore.read.run import Run  # on first use: listing runs needs none of its imports

        return Run(self, project, name)

    def runs(self, projects: list[str] | None = None) -> list[Run]:
        """Every run in the store that has logged anything, sorted by project and name: read from the
        store's registry of runs (`artstore.log.registry`), or found by listing a store without one."""
        found = registry.read(self.location)
        if found is None:
            found = registry.walk(self.location)
        return [self.run(project, name) for project, name in found if projects is None or project in projects]

    def run_stats(self, projects: list[str] | None = None) -> pa.Table:
        """One row per run, sorted by project and model, read in one scan of the store's registry
        of runs (no run's files are opened): project, model, registered_at, then its stats, as of
        the last refresh (`logs_version`, `stats_at`; null until a run's first refresh): logs,
        trajectories, last_step, last_logged_at, val_reward, train_reward (the last logged),
        config (JSON), size_bytes (latest versions' data files and checkpoints). The writer
        refreshes them a few seconds after its logs (see `artstore.log.run_stats` for how fresh);
        `refresh_run_stats` does it now. A run without stats yet (its first refresh not run, a
        store written before them, or one without a registry: its runs are walked) has them
        computed here from its files, not written."""
        table = registry.read_stats(self.location)
        if table is None:
            table = registry.rows(registry.walk(self.location))
        if projects is not None:
            table = table.filter(pc.is_in(table["project"], value_set=pa.array(list(projects), pa.string())))
        missing = pc.is_null(table["logs_version"]).to_pylist()
        if any(missing):
            from artstore.log import run_stats  # its imports only where stats are computed here

            rows = table.to_pylist()
            for row, absent in zip(rows, missing, strict=True):
                if absent:
                    row.update(run_stats.compute(self.run(row["project"], row["model"]).location) or {"logs": 0})
            table = pa.Table.from_pylist(rows, schema=table.schema)
        return table

    def refresh_run_stats(self, projects: list[str] | None = None) -> int:
        """Recompute every run's stats (or of `projects`) and write them into the registry; returns
        how many runs were refreshed. `artstore compact --all` does this."""
        from artstore.log import run_stats

        return sum(run_stats.refresh(r.location) for r in self.runs(projects))

    def rescan_runs(self) -> int:
        """Record in the store's registry the runs found by listing the store that it lacks (runs an
        older artstore created); returns how many. `artstore compact --all` does this first."""
        return registry.rescan(self.location)

    def sql(self, query: str, params: list[Any] | Mapping[str, Any] | None = None,
            as_of: AsOf | Mapping[str, Any] = None, projects: list[str] | None = None,
            runs: list[str] | None = None) -> pa.Table:
        """Run one read-only SELECT over views of every run (or of `projects`): runs, logs,
        trajectories, groups, messages, metrics, history, checkpoints, configs, tokens. `params` is a list
        for `?` or a dict for `$name`; `as_of` a version, tag or datetime, or {"project/model": as_of};
        `runs` ("project/model", ...) limits the views to those runs.
        Anything but a SELECT raises SqlError. See `artstore.read.sql` for the views and guarantees."""
        from artstore.read import sql  # imports duckdb, on first use only

        return sql.query(self, query, params, as_of, projects, runs)

    def snapshot(self, projects: list[str] | None = None, runs: list[str] | None = None,
                 as_of: AsOf | Mapping[str, Any] = None) -> Snapshot:
        """Every run (or of `projects`, or the `runs` "project/model") pinned at one point, for a
        distributed read: `snapshot.scan_parts(table)` gives picklable parts that each read part of
        exactly the committed rows (see `artstore.engines.plan`). `as_of` as in `sql`."""
        from artstore.engines.plan import Snapshot

        return Snapshot(self, projects, runs, as_of)

    def table_names(self, run: Run) -> list[str]:
        """Tables present in `run` (e.g. trajectories, groups, metrics, logs, checkpoints)."""
        return [n[: -len(".lance")] for n in files.list_dir(run.location) if n.endswith(".lance")]


def open_store(uri: str | os.PathLike[str] = ".art", storage_options: Mapping[str, Any] | None = None,
               retention: timedelta = DEFAULT_RETENTION, reader_window: timedelta = DEFAULT_READER_WINDOW) -> Store:
    """Open the store at `uri` (a path, file://, s3:// or gs://). Nothing is created until a write.
    `retention`: how long old versions are kept; `reader_window`: how long a journal run keeps
    the physical versions of its logs and data tables (older ones are read through its version
    map: `as_of` answers the same)."""
    return Store(uri, storage_options, retention, reader_window)
