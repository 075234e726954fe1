"""The store's pool of small runs' rows: one Lance table per log-written table at the store's root
(`_pool/{trajectories,groups,metrics}.lance`) holding a copy of each small run's visible rows,
so that a fresh cross-run query scans one table instead of opening 500 runs' (at 500 small runs,
~2 ms per run of Lance opens and takes, against DuckDB's ~0.3 ms per ART parquet file).

A cache, not the record: the runs' own tables stay the truth; time travel and `Run` never read
the pool. Each copy is tagged with the run's logs version it holds exactly the visible rows of
(its number and its manifest's mtime_ns, so a run deleted and written again is not taken for the
old one), the run's table version it was read from, and a generation id. A reader
(`artstore.read.pool_scan`) uses a run's copy only when the run's logs are still at that version:
the rows visible at a logs version never change (invariant 1, commit order), so a copy of them
is exactly what the run's own tables would give; any other run (stale, never copied, large, on a
bucket) is read from its own tables as before.

Written off log()'s path, after the registry's stats refresh (`run_stats.refresh`), and only
when those counts prove the table visible as the registry's check does (same logs version and
commit time; the table holds exactly the rows the committed logs wrote; a journal run's table
folded up to its last log): no write_id gate is needed, so the copy holds no internal columns.
A copy replaces the run's earlier one (a delete, then an append: in between a reader finds no
copy and reads the run's own tables; two racing copies of one version are told apart by their
generation, and the reader takes one). A refresh that proves nothing (a run still logging, its
last logs not folded) leaves the stale copy, which no reader uses, and commits nothing. What it costs: the bytes of the small runs' rows once
more (RESULTS.md, "500 runs: the pool"); old versions go after the reader window.
"""

from __future__ import annotations

import logging
import os
import uuid
from typing import Any

import pyarrow as pa

from artstore.log import journal
from artstore.log.windows import DEFAULT_READER_WINDOW
from artstore.schema import arrow_schema
from artstore.storage import Location, compaction, datasets, keys, scans, writes

logger = logging.getLogger(__name__)

NAME = "_pool"
MAX_ROWS = 2048  # a run's table is copied only up to this many rows (`read.small_tables.SMALL_TABLE`)
TABLES = {"trajectories": "trajectories", "groups": "groups", "metrics": "metric_values"}  # -> registry count
LOGS_VERSION, LOGS_MTIME, TABLE_VERSION, GENERATION = ("pool_logs_version", "pool_logs_mtime_ns",
                                                       "pool_table_version", "pool_generation")
STAMP = [LOGS_VERSION, LOGS_MTIME, TABLE_VERSION, GENERATION]
_INTERNAL = ("write_id", keys.SEQ, *journal.PAYLOAD_COLUMNS)
_GROWN: set[tuple[str, str, str]] = set()  # (pool uri, project, model) whose copy this process removed for size


def location(store: Location, table: str) -> Location:
    return store.child(NAME, f"{table}.lance")


def schema(table: str) -> pa.Schema:
    """project, model, the columns `table` shows in the SQL views (no write_id, commit_seq or
    journal payloads), then the copy's stamp (STAMP). No key markers: ids repeat across runs."""
    shown = [pa.field(f.name, f.type, f.nullable) for f in arrow_schema(table) if f.name not in _INTERNAL]
    return pa.schema([pa.field("project", pa.string(), False), pa.field("model", pa.string(), False), *shown,
                      pa.field(LOGS_VERSION, pa.int64(), False), pa.field(LOGS_MTIME, pa.int64(), False),
                      pa.field(TABLE_VERSION, pa.int64(), False), pa.field(GENERATION, pa.string(), False)])


def logs_stamp(store: Location, project: str, model: str) -> tuple[int, int] | None:
    """(latest version, its manifest's mtime_ns) of the run's logs table; None on a bucket or
    without Lance's version hint (`datasets.latest_stamp`)."""
    if not store.is_local:
        return None
    return datasets.latest_stamp(Location(os.path.join(store.uri, project, "models", model, "logs.lance"),
                                          store.storage_options))


def refresh(store: Location, project: str, model: str, run: Location, stats: dict[str, Any]) -> int:
    """Copy the run's visible rows into the pool, replacing its earlier copy, for each table the
    registry's `stats` (computed at the run's latest logs version) prove visible and small; a
    table grown past MAX_ROWS has its copy removed. Returns how many tables were copied. Local stores
    only (on a bucket the per-run stamp check would cost a request per run)."""
    if not store.is_local:
        return 0
    stamp = logs_stamp(store, project, model)
    if stamp is None or stamp[0] != stats.get("logs_version"):
        return 0  # the logs moved on since the stats: the next refresh copies
    logs = datasets.open_dataset(run.child("logs.lance"), version=stamp[0])
    if logs is None or datasets.version_time(logs) != stats.get("logs_committed_at"):
        return 0
    is_journal = journal.is_journal(logs.schema)
    copied = 0
    for table, count in TABLES.items():
        # opened after the logs' stamp: it holds every row the stamped logs name
        ds = datasets.open_dataset(run.child(f"{table}.lance"))
        rows = stats.get(count)
        proven = (ds is not None and rows is not None and 0 < rows <= MAX_ROWS and ds.count_rows() == rows
                  and (not is_journal or stats.get("last_seq") is not None
                       and journal.folded_seq(ds) == stats["last_seq"]))
        loc = location(store, table)
        if proven:
            _remove(loc, project, model)
            writes.append(loc, _copy(table, ds, project, model, stamp), f"pool {project}/{model}")
            copied += 1
            compaction.maintain(loc, "pool", retention=DEFAULT_READER_WINDOW)
        elif rows is not None and rows > MAX_ROWS and (loc.uri, project, model) not in _GROWN:
            _remove(loc, project, model)  # grown past small: its last copy would only take room
            _GROWN.add((loc.uri, project, model))
        # else (not folded up to its last log yet, say): a stale copy is never read; the next proven
        # refresh replaces it, so a refresh while a run logs costs no pool commit
    return copied


def _copy(table: str, ds: Any, project: str, model: str, stamp: tuple[int, int]) -> pa.Table:
    target = schema(table)
    n = ds.count_rows()
    present = [f.name for f in target if f.name in ds.schema.names]
    rows = ds.to_table(columns=present)
    generation = uuid.uuid4().hex
    columns = {"project": pa.array([project] * n, pa.string()), "model": pa.array([model] * n, pa.string()),
               LOGS_VERSION: pa.array([stamp[0]] * n, pa.int64()), LOGS_MTIME: pa.array([stamp[1]] * n, pa.int64()),
               TABLE_VERSION: pa.array([ds.version] * n, pa.int64()), GENERATION: pa.array([generation] * n)}
    return pa.table([columns[f.name] if f.name in columns else
                     rows[f.name].cast(f.type) if f.name in present else pa.nulls(n, f.type) for f in target],
                    schema=target)


def _remove(loc: Location, project: str, model: str) -> None:
    """Delete the run's copy (one commit, only when it has one)."""
    where = f"project = {_lit(project)} AND model = {_lit(model)}"
    if scans.count_rows(loc, where):
        writes.delete_where(loc, where)


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"

