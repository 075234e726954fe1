"""The journal: a run's `logs` table holding each log call's rows, so a log costs one commit.

A run created by this artstore (schema version 2 or 3 of `logs`) stores each log() call as ONE row
of `logs`: its commit record plus its rows of the data tables, as payload columns
(`trajectories_ipc` and `groups_ipc`: the rows as an Arrow IPC stream; `metric_names` and
`metric_values`: its metric values). One append, one Lance commit, however small the log; the
data tables are filled later, many logs at a time, by the fold (`artstore.log.fold`). A Model's
log also carries what it added to the builder's running sums (`state_delta`, schema version 3:
`artstore.log.sums`), which no fold moves: it stays in the journal.

Commit order: each journal append is one fragment (a sync log's one row, or a group commit's rows
in log order), and Lance numbers fragments in commit order; compaction stores a row's original
fragment id in `commit_seq`. So `commit_seq or fragment id` (`committed_logs` fills it in) is a
unique, increasing integer per journal commit: its *sequence*; a commit's rows keep their order by
row address (the order is (sequence, row address) everywhere: `keys.first_per_key`). A watermark
(FOLDED, the sums' position, a version's or tag's highest sequence) always takes a commit whole.

Readers see folded and unfolded rows alike (`rows`): each data table's Lance config holds
FOLDED, the sequence of the last log folded into it; rows of committed logs up to it are read
from the table, the rest from the journal's payloads. Runs whose `logs` table predates the
journal (schema version 1) keep writing one commit per table, and are read as before.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from artstore.errors import StorageError
from artstore.schema import arrow_schema
from artstore.storage import datasets, failures, key_columns, keys, scans, writes

PAYLOAD_COLUMNS = ("metric_names", "metric_values", "trajectories_ipc", "groups_ipc", "state_delta")
DELTA_COLUMN = "state_delta"  # a Model log's change of the running sums (artstore.log.sums)
IPC_COLUMN = {"trajectories": "trajectories_ipc", "groups": "groups_ipc"}
FOLDED = "artstore.folded_seq"  # config key of a data table: sequence of the last commit folded in (whole)
ROW_COUNTS = {"trajectories": "num_trajectories", "groups": "num_groups", "metrics": "num_metrics"}
# Per data table, the columns that identify a row: a fold repeated by a taken-over claim may
# append a log's rows twice; readers then keep the first.
ROW_KEYS = {"trajectories": ("trajectory_id",), "groups": ("group_id",), "metrics": ("write_id", "name")}
_MARK = b"artstore.journal"
# What `rows_of_few` needs of a log's journal row
PAYLOAD_READ_COLUMNS = ["write_id", *IPC_COLUMN.values(), *ROW_COUNTS.values()]


def log_columns() -> list[str]:
    """The columns of `logs` other than the payloads (what readers of the commit records need)."""
    return [n for n in arrow_schema("logs").names if n not in PAYLOAD_COLUMNS]


def is_journal(schema: pa.Schema) -> bool:
    """Whether a `logs` table with this schema is a journal (holds its logs' rows)."""
    return IPC_COLUMN["trajectories"] in schema.names


def mark(committed: pa.Table) -> pa.Table:
    """`committed` (rows of a journal) marked as such in its schema metadata (`marked`)."""
    return committed.replace_schema_metadata({**(committed.schema.metadata or {}), _MARK: b"1"})


def marked(committed: pa.Table) -> bool:
    """Whether `committed` (committed logs rows) was read from a journal (see `mark`)."""
    return (committed.schema.metadata or {}).get(_MARK) == b"1"


_ZSTD = pa.Codec("zstd")
# A payload written since: this mark, the stream's size (8 bytes, little-endian), then the whole
# IPC stream zstd-compressed in one piece: 8 trajectories 52 -> 8 KB, in ~0.1 ms. (Compressing
# each buffer of the stream, Arrow's IPC option, took 1.4-4 ms for 17 KB: a context per buffer.)
# Payloads written before are plain IPC streams (each starts with 0xFFFFFFFF) and read as such.
_FRAMED = b"ASZ1"


def to_ipc(table: pa.Table) -> bytes | None:
    """`table` as one Arrow IPC stream, zstd-compressed whole (`from_ipc` reads it back); None
    when it has no rows."""
    if table.num_rows == 0:
        return None
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    plain = sink.getvalue()
    return _FRAMED + plain.size.to_bytes(8, "little") + _ZSTD.compress(plain, asbytes=True)


def from_ipc(blob: bytes) -> pa.Table:
    """The table a payload holds (`to_ipc`'s, or a plain IPC stream written before it)."""
    if blob[:4] == _FRAMED:
        blob = _ZSTD.decompress(memoryview(blob)[12:], decompressed_size=int.from_bytes(blob[4:12], "little"))
    return pa.ipc.open_stream(blob).read_all()


def payload_rows(table: str, journal_rows: pa.Table) -> pa.Table:
    """The rows of data table `table` that `journal_rows` (rows of a journal with the payload
    columns and log_id, write_id, split, step, recorded_at) hold, in their order, each log's rows
    in the order it wrote them. Schema: `arrow_schema(table)`."""
    schema = arrow_schema(table)
    if table == "metrics":
        names = journal_rows["metric_names"].combine_chunks() if journal_rows.num_rows else pa.array([], pa.list_(pa.string()))
        lengths = pc.fill_null(pc.list_value_length(names), 0)
        index = pa.array(np.repeat(np.arange(len(lengths), dtype=np.int64), lengths.to_numpy(zero_copy_only=False)))
        per_log = journal_rows.select(["log_id", "write_id", "step", "split", "recorded_at"]).take(index)
        return pa.table({
            "log_id": per_log["log_id"], "write_id": per_log["write_id"], "step": per_log["step"],
            "split": per_log["split"], "name": pc.list_flatten(names),
            "value": pc.list_flatten(journal_rows["metric_values"].combine_chunks()) if journal_rows.num_rows
            else pa.array([], pa.float64()),
            "recorded_at": per_log["recorded_at"],
        }, schema=schema)
    parts = []
    for blob in journal_rows[IPC_COLUMN[table]].to_pylist() if journal_rows.num_rows else []:
        if blob is not None:
            part = from_ipc(blob)
            parts.append(part if part.schema.equals(schema) else part.cast(schema))  # a cast costs ~0.15 ms
    return pa.concat_tables(parts) if parts else schema.empty_table()


def folded_seq(ds: object) -> int:
    """FOLDED of a data table's Lance dataset (-1: nothing folded, or no dataset)."""
    if ds is None:
        return -1
    return int(ds.config().get(FOLDED, -1))  # type: ignore[attr-defined]


def payloads_dropped(table: str, journal_rows: pa.Table) -> list[str]:
    """write_ids of `journal_rows` that hold rows of `table` but no longer their payload (dropped
    by a compaction of the journal once folded: `fold.drop_folded_payloads`)."""
    if table not in IPC_COLUMN or journal_rows.num_rows == 0:
        return []
    gone = pc.and_(pc.is_null(journal_rows[IPC_COLUMN[table]]), pc.greater(journal_rows[ROW_COUNTS[table]], 0))
    return journal_rows.filter(gone)["write_id"].to_pylist()


def _in_filter(write_ids: list[str], filter: str | None = None) -> str:
    where = "write_id IN (" + ", ".join("'" + i.replace("'", "''") + "'" for i in write_ids) + ")"
    return where if not filter else f"({where}) AND ({filter})"


def payload_columns(table: str) -> list[str]:
    """The journal columns `payload_rows(table, ...)` and `payloads_dropped` read."""
    if table == "metrics":
        return ["log_id", "write_id", "step", "split", "recorded_at", "metric_names", "metric_values"]
    return ["write_id", IPC_COLUMN[table], ROW_COUNTS[table]]


def read_payloads(logs_loc: object, write_ids: Iterable[str], filter: str | None = None,
                  columns: list[str] | None = None, dataset: Any = None) -> pa.Table:
    """The journal rows (all columns, or `columns`) of the logs with these write_ids, latest version
    (a committed row never changes) or the already open `dataset` of the logs, matching the Lance
    SQL `filter` on log-level columns. One row per write_id: a group commit's row committed twice
    (`artstore.log.group_commit`: two processes recovering one pending file) is read once."""
    ids = list(write_ids)
    schema = arrow_schema("logs")
    if columns is not None:
        schema = pa.schema([schema.field(c) for c in columns])
    if not ids:
        return schema.empty_table()
    read = None if columns is None else list(dict.fromkeys([*columns, "write_id"]))
    if dataset is not None:
        with failures.storage_errors(logs_loc, "read"):  # type: ignore[arg-type]
            found = dataset.to_table(columns=read, filter=_in_filter(ids, filter))
    else:
        found = scans.scan(logs_loc, columns=read, filter=_in_filter(ids, filter))  # type: ignore[arg-type]
    if found is None:
        return schema.empty_table()
    if found.num_rows > 1:
        keys = found["write_id"].combine_chunks()
        first = pc.index_in(pc.unique(keys), value_set=keys)
        if len(first) < found.num_rows:
            found = found.take(first)
    return found if columns is None else found.select(columns)


def read_rows(loc: Any, table: str, committed: pa.Table, *, filter: str | None = None,
              columns: list[str] | None = None) -> pa.Table:
    """The rows of data table `table` (at `loc`, opened now: after `committed` was read) written
    by the `committed` log calls (journal rows, `commit_seq` filled in), in the order of
    `committed`, each log's rows in the order it wrote them.

    Logs up to the table's FOLDED are read from the table: all its rows when it holds exactly as
    many as those logs wrote (the common case: then, as for a run before the journal, rows are
    ordered by `recorded_at` when no two logs share one, and no write_id is read), else the rows
    whose write_id is theirs, first copy of each row. The other logs' rows come from their
    journal payloads. `filter` (Lance SQL) must name only columns a log's journal row has too
    (split, step, log_id, write_id, recorded_at): it also selects the unfolded logs' journal rows."""
    schema = arrow_schema(table)
    wanted = schema.names if columns is None else list(columns)
    ds = datasets.open_dataset(loc)
    upto = folded_seq(ds)
    seq = committed[keys.SEQ]
    in_table = pc.less_equal(seq, upto) if committed.num_rows else pa.array([], pa.bool_())
    by_time = pc.count_distinct(committed["recorded_at"]).as_py() == committed.num_rows
    order = "recorded_at" if by_time else "write_id"
    cols = list(dict.fromkeys([*wanted, order]))
    parts = []
    if ds is not None and pc.any(in_table).as_py():
        folded = committed.filter(in_table)
        expected = pc.sum(folded[ROW_COUNTS[table]]).as_py() or 0
        with failures.storage_errors(loc, "read"):
            exact = upto <= pc.max(seq).as_py() and ds.count_rows() == expected
            if exact:
                data = ds.to_table(columns=cols, filter=filter)
            else:
                data = ds.to_table(columns=list(dict.fromkeys([*cols, "write_id", *ROW_KEYS[table]])), filter=filter)
                data = data.filter(pc.is_in(data["write_id"], value_set=folded["write_id"]))
                data = _first_copies(data, ROW_KEYS[table])
        parts.append(data.select(cols))
    rest = committed.filter(pc.invert(in_table)) if committed.num_rows else committed
    if rest.num_rows:
        logs_loc, ids = loc.sibling("logs.lance"), rest["write_id"].to_pylist()
        try:  # a filter on a log's own columns (split, step, ...) selects its journal rows
            journal_rows, row_filter = read_payloads(logs_loc, ids, filter), None
        except StorageError:  # it names a column of the rows only: filter them once decoded
            journal_rows, row_filter = read_payloads(logs_loc, ids), filter
        found = payload_rows(table, journal_rows)
        if row_filter is not None and found.num_rows:
            found = scans.filter_rows(found, row_filter)
        parts.append(found.select(cols))
        dropped = payloads_dropped(table, journal_rows)
        if dropped:  # folded since this read began: the table has them
            found = scans.scan(loc, columns=list(dict.fromkeys([*cols, "write_id", *ROW_KEYS[table]])),
                                filter=_in_filter(dropped, filter))
            if found is not None:
                parts.append(_first_copies(found, ROW_KEYS[table]).select(cols))
    if not parts:
        return schema.empty_table().select(wanted)
    data = pa.concat_tables(parts) if len(parts) > 1 else parts[0]
    if data.num_rows > 1:
        if by_time:
            at = data["recorded_at"].combine_chunks().cast(pa.int64()).to_numpy(zero_copy_only=False)
            if not bool(np.all(at[1:] >= at[:-1])):
                data = data.take(pc.sort_indices(data["recorded_at"]))  # stable: a log's rows keep their order
        else:
            data = data.take(pc.sort_indices(pc.index_in(data["write_id"], value_set=committed["write_id"])))
    return data.select(wanted)


def _first_copies(data: pa.Table, key: tuple[str, ...]) -> pa.Table:
    """`data` without the later copies of rows whose `key` columns repeat an earlier row's."""
    keys = data[key[0]] if len(key) == 1 else pc.binary_join_element_wise(*[data[k] for k in key], "\x00")
    keys = keys.combine_chunks() if isinstance(keys, pa.ChunkedArray) else keys
    first = pc.index_in(pc.unique(keys), value_set=keys)
    return data if len(first) == data.num_rows else data.take(first)  # ascending: unique keeps first-seen order


def rows_of(loc: Any, table: str, write_ids: list[str]) -> pa.Table:
    """The rows of data table `table` (at `loc`, latest) of the logs with these write_ids, first
    copy of each row (all columns)."""
    found = scans.scan(loc, filter=_in_filter(write_ids))
    return arrow_schema(table).empty_table() if found is None else _first_copies(found, ROW_KEYS[table])


def rows_of_few(loc: Any, table: str, committed: pa.Table, journal_rows: pa.Table,
                columns: list[str] | None = None, open_table: Callable[[Any], Any] = datasets.open_dataset) -> pa.Table:
    """The rows of data table `table` (at `loc`) written by the `committed` logs (journal rows, a
    few of a run's: e.g. one step's), given those logs' journal rows (`journal_rows`, with
    `PAYLOAD_READ_COLUMNS`; any order). Each log's rows come from its payload, or, where a
    compaction of the journal dropped it (the log was folded), from the fragments of the table
    holding them (`key_columns.rows_with`), first copy of each row. So the read costs the same at any
    length of the run. In the order of `committed`, each log's rows in the order it wrote them.
    `open_table(loc)` opens the table (at a version opened after `committed` was read)."""
    schema = arrow_schema(table)
    wanted = schema.names if columns is None else list(columns)
    cols = list(dict.fromkeys([*wanted, "write_id"]))
    parts = [payload_rows(table, journal_rows).select(cols)]
    dropped = payloads_dropped(table, journal_rows)
    if dropped:
        ds = open_table(loc)
        if ds is None:
            raise StorageError(f"{loc.uri} is missing, but the run's committed logs name rows of it that the "
                               "journal no longer holds: the store is damaged. Restore the run from a copy.")
        found = key_columns.rows_with(loc, ds, "write_id", dropped, list(dict.fromkeys([*cols, *ROW_KEYS[table]])))
        parts.append(_first_copies(found, ROW_KEYS[table]).select(cols))
    data = pa.concat_tables(parts) if len(parts) > 1 else parts[0]
    if data.num_rows > 1:  # stable: a log's rows keep their order
        data = data.take(pc.sort_indices(pc.index_in(data["write_id"], value_set=committed["write_id"])))
    return data.select(wanted)


def add_delta_column(logs_loc: Any) -> bool:
    """Give the journal at `logs_loc` (schema version 2) its `state_delta` column, all null (the
    rows before it keep their sums in `state.lance`); False when it has the column already."""
    ds = datasets.open_dataset(logs_loc)
    if ds is None or DELTA_COLUMN in ds.schema.names or not is_journal(ds.schema):
        return False
    writes.add_null_columns(logs_loc, [arrow_schema("logs").field(DELTA_COLUMN)])
    return True
