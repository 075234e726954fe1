"""The scan plan: what an engine reads to see exactly the committed rows of a store at one point.

`Store.snapshot()` pins every run's `logs` table first (at `as_of`, or latest), as `Store.sql`
does: per run a `read.scan.RunSnapshot`, whose committed logs and visibility gate come from
`artstore.log.visibility` (the one place the rule lives). `scan_parts(table)` then opens the
table (after the pin, so it holds every row the pinned logs name), lists its fragments, and
cuts them into `ScanPart`s of about `rows_per_part` rows, each with the Lance filter that keeps
the visible rows:
- no filter when row counts prove every row visible (`visibility.all_visible`), or when every
  write_id of a part's fragments is committed;
- otherwise `write_id NOT IN (hidden ids)`, the ids of crashed writers and of the losers of
  racing retries (usually few), or `write_id IN (committed ids)` when that list is shorter
  (e.g. an old `as_of`); fragments holding no visible row are left out.
Deciding this reads the `write_id` column once, on the planning machine, and only when counts
don't prove every row visible. A journal run's logs not folded into a data table yet (issue 13:
their rows are payloads of the `logs` table) come as one more part per run and table, holding
those rows (`RunSnapshot.tail`, read when planning; the fold keeps them few).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from artstore.engines.parts import ScanPart
from artstore.errors import ValidationError
from artstore.log.visibility import GATED
from artstore.names import check_segment, sql_quote
from artstore.read.as_of import as_of_args, check_as_of
from artstore.read.scan import RunSnapshot, view_schema
from artstore.storage.fragments import distinct_per_fragment, fragment_rows

if TYPE_CHECKING:  # the facade calls this service, never the other way
    from artstore.read.store import Store

ROWS_PER_PART = 250_000  # one engine task each: tiny tasks cost more to schedule than to read
FILTERED = (*GATED, "logs")
TABLES = (*FILTERED, "checkpoints", "configs", "tokens")  # tables whose rows pass through the committed logs (logs: first per log_id)


class Snapshot:
    """Every run of a store (or of `projects`, or the `runs` named "project/model") at one point:
    each run's `logs` pinned when the snapshot is made (`as_of` as in `Store.sql`: a version, tag or
    timezone-aware datetime for every run, or {"project/model": as_of}). Each table is opened once,
    by the first `scan_parts` naming it, and stays at that version."""

    def __init__(self, store: Store, projects: Sequence[str] | None = None, runs: Sequence[str] | None = None,
                 as_of: Any = None, rows_per_part: int = ROWS_PER_PART):
        if projects is not None:
            projects = [check_segment("project", p) for p in ([projects] if isinstance(projects, str) else projects)]
        spec = check_as_of(store, as_of, projects)
        if not isinstance(spec, dict):
            as_of_args(spec)  # a bad spec fails here, not on a worker
        if rows_per_part < 1:
            raise ValidationError("rows_per_part", f"must be at least 1, got {rows_per_part}")
        self.store = store
        self.rows_per_part = rows_per_part
        found = store.runs(projects)
        if runs is not None:
            wanted = {runs} if isinstance(runs, str) else set(runs)
            found = [r for r in found if f"{r.project}/{r.name}" in wanted]
        self._runs: dict[str, RunSnapshot] = {}
        for run in found:
            key = f"{run.project}/{run.name}"
            snap = RunSnapshot(run, spec.get(key) if isinstance(spec, dict) else spec)
            if snap.dataset("logs") is not None:  # else the run did not exist at `as_of`
                snap.committed()  # pinned now: later logs are not part of this snapshot
                self._runs[key] = snap

    @property
    def runs(self) -> list[str]:
        """The runs this snapshot reads, as "project/model"."""
        return list(self._runs)

    def versions(self) -> dict[str, dict[str, int]]:
        """The versions pinned so far, {"project/model": {table: version}}: an `as_of` that reads
        them again (with `Store.sql` or another snapshot)."""
        return {k: dict(sorted(s.read.items())) for k, s in self._runs.items()}

    def schema(self, table: str, columns: Sequence[str] | None = None) -> pa.Schema:
        """The schema of every part's `read()` for `table`: project, model, then `columns`."""
        stored = self._stored_schema(table)
        names = self._columns(table, stored, columns)
        return pa.schema([pa.field("project", pa.string()), pa.field("model", pa.string()),
                          *[stored.field(c) for c in names]])

    def scan_parts(self, table: str, columns: Sequence[str] | None = None,
                   filter: str | None = None) -> list[ScanPart]:
        """The parts that together hold exactly the visible rows of `table` in every run of the
        snapshot (matching `filter`, a Lance SQL predicate over the table's columns), with
        `columns` (default: the columns of the `Store.sql` view, without project and model,
        which every part adds). Parts are picklable; `part.read()` works on any machine that can
        reach the store."""
        stored = self._stored_schema(table)
        names = tuple(self._columns(table, stored, columns))
        return [p for key, snap in self._runs.items() for p in self._run_parts(key, snap, table, names, filter)]

    def __repr__(self) -> str:
        return f"Snapshot({self.store.uri!r}, {len(self._runs)} runs)"

    # -- per run -------------------------------------------------------------------------------
    def _run_parts(self, key: str, snap: RunSnapshot, table: str, columns: tuple[str, ...],
                   filter: str | None) -> Iterator[ScanPart]:
        ds = snap.dataset(table)
        if ds is None:
            yield from self._tail_part(snap, *key.split("/"), table, columns, filter)
            return
        loc = snap.run.table_location(table)
        frags = [(f, n) for f, n in fragment_rows(loc, ds) if n]
        committed = snap.gate(table) if table in FILTERED else None
        ids: dict[int, tuple[set[str], set[str]]] = {}  # fragment -> (visible, hidden) write_ids
        if committed is not None:
            names = set(committed.to_pylist())
            for f, values in distinct_per_fragment(loc, ds, "write_id").items():
                present = set(values.to_pylist())
                ids[f] = (present & names, present - names)
            frags = [(f, n) for f, n in frags if ids[f][0]]  # no visible row: nothing to read
        project, model = key.split("/")
        yield from self._tail_part(snap, project, model, table, columns, filter)
        for group in _ranges(frags, self.rows_per_part):
            visible = set().union(*(ids[f][0] for f, _ in group)) if ids else set()
            hidden = set().union(*(ids[f][1] for f, _ in group)) if ids else set()
            # ds.version: the physical version (a logs version read through the map is the latest's rows, gated)
            yield ScanPart(project=project, model=model, table=table, location=loc, version=ds.version,
                           fragment_ids=tuple(f for f, _ in group), columns=columns,
                           filter=_and(filter, _gate(visible, hidden)), rows=sum(n for _, n in group))

    @staticmethod
    def _tail_part(snap: RunSnapshot, project: str, model: str, table: str, columns: tuple[str, ...],
                   filter: str | None) -> Iterator[ScanPart]:
        """A journal run's rows of `table` not folded yet, as one part holding them (the fold keeps
        their number small); read from the journal's payloads, as `Store.sql` does."""
        tail = snap.tail(table) if table in GATED else None
        if tail is None or not tail.num_rows:
            return
        if filter is not None:  # the caller's Lance SQL predicate, applied here to Arrow rows
            # (imports duckdb: only for a filtered journal tail)
            from artstore.read.sql import query_tables

            tail = query_tables(f"SELECT * FROM tail WHERE {filter}", {"tail": tail}).cast(tail.schema)
        yield ScanPart(project=project, model=model, table=table, location=snap.run.table_location("logs"),
                       version=snap.read["logs"], fragment_ids=(), columns=columns, filter=None,
                       rows=tail.num_rows, inline=tail.select(list(columns)))

    def _stored_schema(self, table: str) -> pa.Schema:
        if table == "tokens":  # no schema file: each run's own (the first run that has one)
            for snap in self._runs.values():
                ds = snap.dataset("tokens")
                if ds is not None:
                    return ds.schema
            return pa.schema([])
        if table not in TABLES:
            raise ValidationError("table", f"no table {table!r}; give one of {', '.join(TABLES)}")
        return view_schema(table)

    @staticmethod
    def _columns(table: str, stored: pa.Schema, columns: Sequence[str] | None) -> list[str]:
        if columns is None:
            return [c for c in stored.names if c not in ("write_id", "commit_seq")]
        names = [c for c in dict.fromkeys(columns) if c not in ("project", "model")]
        unknown = [c for c in names if c not in stored.names]
        if unknown:
            raise ValidationError("columns", f"{table} has no columns {unknown}; it has {stored.names}")
        return names


def _ranges(frags: list[tuple[int, int]], rows_per_part: int) -> Iterator[list[tuple[int, int]]]:
    """Consecutive fragments, cut after each range reaches `rows_per_part` rows."""
    group: list[tuple[int, int]] = []
    rows = 0
    for f, n in frags:
        group.append((f, n))
        rows += n
        if rows >= rows_per_part:
            yield group
            group, rows = [], 0
    if group:
        yield group


def _gate(visible: set[str], hidden: set[str]) -> str | None:
    """The Lance filter keeping rows whose write_id is in `visible` (rows of the fragments hold
    only `visible` and `hidden` ids): none, NOT IN the hidden, or IN the visible, the shorter."""
    if not hidden:
        return None
    if len(hidden) <= len(visible):
        return f"write_id NOT IN ({', '.join(sql_quote(i) for i in sorted(hidden))})"
    return f"write_id IN ({', '.join(sql_quote(i) for i in sorted(visible))})"


def _and(user: str | None, gate: str | None) -> str | None:
    if user is None or gate is None:
        return gate if user is None else user
    return f"({user}) AND ({gate})"


def plan(store: Store, table: str, *, projects: Sequence[str] | None = None, runs: Sequence[str] | None = None,
         as_of: Any = None, columns: Sequence[str] | None = None, filter: str | None = None,
         rows_per_part: int = ROWS_PER_PART) -> tuple[list[ScanPart], pa.Schema]:
    """One table's parts, and the schema each part's `read()` returns: what every adapter reads."""
    snap = Snapshot(store, projects, runs, as_of, rows_per_part)
    return snap.scan_parts(table, columns, filter), snap.schema(table, columns)
