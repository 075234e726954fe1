"""The fold: moves the rows of journaled logs (`artstore.log.journal`) into the data tables, many
logs per commit, off the log() caller's path (`artstore.log.upkeep` runs it).

For each data table T (trajectories, groups, metrics), the logs to fold are the committed logs
(first row of each log_id) whose sequence is above FOLDED (T's Lance config), in commit order.
One fold of T:

1. claim: an UpdateConfig of T setting CLAIM (a token and the time), committed on the version
   the folder read with no retry: Lance fails it when any other config change landed since, so
   of two folders that read the same version one goes on. A folder that finds a fresh claim of
   another (younger than LEASE) leaves T alone;
2. append the rows of those logs (one commit);
3. an UpdateConfig setting FOLDED to the last sequence folded and clearing CLAIM.

A SIGKILL at any point loses nothing and doubles nothing for readers: before 3, FOLDED still
names the old point, so readers take those logs' rows from the journal and read T only for the
logs up to FOLDED (filtering T's rows by write_id when T holds more rows than those logs wrote:
`journal` readers check the counts). The next fold after the claim's lease checks which of its
logs T already holds (a fold killed after 2) and appends only the others.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from artstore.errors import StorageError
from artstore.log import journal
from artstore.log.visibility import GATED, ROW_COUNTS, committed_logs
from artstore.storage import Location, compaction, datasets, failures, keys, scans, writes

logger = logging.getLogger(__name__)

CLAIM = "artstore.fold_claim"
LEASE_S = 120.0  # a claim older than this is taken over (its folder is presumed dead)
# log() asks for a fold when its journal version is a multiple of this. A fold costs ~3 commits and
# a few opens per data table whatever its size (~60% of a 32-log fold's CPU), so that is the
# upkeep's largest cost per log: 64 made the background CPU per small log ~20% less than 32
# (benchmarks/RESULTS.md, bgcpu), while the journal holds at most ~64 unfolded logs' payloads
# (~8 KB each for 8 trajectories; a reader decodes only the ones it reads).
FOLD_EVERY = 64
MAX_LOGS = 1024  # logs folded per commit at most (a run never folded before is folded in rounds)


def fold(run: Location, *, max_logs: int | None = None) -> dict[str, int]:
    """Fold the unfolded committed logs of the run at `run` into its data tables; {table: logs
    folded}. A run whose `logs` is not a journal has nothing to fold. Safe beside writers,
    readers and other folders (see the module doc); errors of one table are logged and left to
    the next fold."""
    logs_loc = run.child("logs.lance")
    ds = datasets.open_dataset(logs_loc)
    if ds is None or not journal.is_journal(ds.schema):
        return {}
    committed = committed_logs(logs_loc, ds, columns=journal.log_columns())
    done: dict[str, int] = {}
    payloads = _Payloads(logs_loc)
    for table in GATED:
        try:
            done[table] = _fold_table(run, logs_loc, table, committed, max_logs, payloads)
        except Exception as e:  # noqa: BLE001 - a failed fold is retried by the next one
            logger.warning("fold of %s into %s skipped: %s", logs_loc.redact(run.uri), table, e)
    return done


def _expected_rows(committed: pa.Table, table: str, upto: int) -> int:
    mask = pc.less_equal(committed[keys.SEQ], upto)
    return pc.sum(pc.filter(committed[ROW_COUNTS[table]], mask)).as_py() or 0


class _Payloads:
    """The journal rows of the logs one fold moves, read once for all data tables (each table's
    logs to fold are usually the same ones)."""

    def __init__(self, logs_loc: Location) -> None:
        self._loc, self._ids, self._rows = logs_loc, set[str](), None

    def rows(self, write_ids: list[str]) -> pa.Table:
        if self._rows is None or not self._ids.issuperset(write_ids):
            self._ids, self._rows = set(write_ids), journal.read_payloads(self._loc, write_ids)
            return self._rows
        return self._rows.filter(pc.is_in(self._rows["write_id"], value_set=pa.array(write_ids, pa.string())))


def _fold_table(run: Location, logs_loc: Location, table: str, committed: pa.Table, max_logs: int | None,
                payloads: _Payloads) -> int:
    loc = run.child(f"{table}.lance")
    ds = datasets.open_dataset(loc)
    folded = journal.folded_seq(ds)
    todo = committed.filter(pc.greater(committed[keys.SEQ], folded))
    if max_logs is not None:
        todo = todo.slice(0, max_logs)
    if todo.num_rows == 0:
        return 0
    upto = pc.max(todo[keys.SEQ]).as_py()
    version = None
    if ds is not None:
        claim = ds.config().get(CLAIM, "")
        if claim and time.time() - float(claim.split()[1]) < LEASE_S:
            return 0  # another folder is at it
        version = writes.update_config(loc, {CLAIM: f"{uuid.uuid4().hex} {time.time():.3f}"}, ds.version)
        if version is None:
            return 0  # another folder claimed it first
        if ds.count_rows() != _expected_rows(committed, table, folded):
            todo = _not_yet_in(loc, todo)  # a fold killed after its append: those logs are in
    if todo.num_rows:
        rows = journal.payload_rows(table, payloads.rows(todo["write_id"].to_pylist()))
        if rows.num_rows:
            if ds is None:
                version = writes.create(loc, rows, f"fold of {todo.num_rows} logs")
                if version is None:
                    return 0  # another folder created it first: the next fold goes on from there
            else:
                writes.append(loc, rows, f"fold of {todo.num_rows} logs", read_version=version)
    if version is None:  # nothing to write into a table that does not exist yet
        return 0
    if writes.update_config(loc, {journal.FOLDED: str(upto), CLAIM: ""}, version) is None:
        logger.warning("fold of %s lost its claim (older than %.0f s)", loc.redact(loc.uri), LEASE_S)
        return 0
    return todo.num_rows


def _not_yet_in(loc: Location, todo: pa.Table) -> pa.Table:
    """The logs of `todo` none of whose rows are in the table at `loc` yet."""
    ids = todo["write_id"].to_pylist()
    where = "write_id IN (" + ", ".join("'" + i + "'" for i in ids) + ")"
    present = scans.scan(loc, columns=["write_id"], filter=where)
    if present is None or present.num_rows == 0:
        return todo
    return todo.filter(pc.invert(pc.is_in(todo["write_id"], value_set=pc.unique(present["write_id"]))))


def stats(run: Location) -> dict[str, Any]:
    """{table: FOLDED} of the run's data tables (-1: nothing folded): for tests and benchmarks."""
    return {t: journal.folded_seq(datasets.open_dataset(run.child(f"{t}.lance"))) for t in GATED}


_CLEAN: dict[str, set[tuple[int, str]]] = {}  # journal uri -> fragments known to hold no payload (id, file)


def drop_payloads(run: Location) -> int:
    """Rewrite the journal's fragments whose logs are all folded into every data table but still
    hold payloads, into one fragment without them (`drop_folded_payloads`): the journal then
    keeps only its logs' records and metric values, whatever the compaction tiers would wait
    for. Returns the fragments rewritten (0: none, or another compaction won the race)."""
    logs_loc = run.child("logs.lance")
    ds = datasets.open_dataset(logs_loc)
    if ds is None or not journal.is_journal(ds.schema):
        return 0
    upto = min(journal.folded_seq(datasets.open_dataset(run.child(f"{t}.lance"))) for t in GATED)
    clean = _CLEAN.setdefault(logs_loc.uri, set())
    todo, current = [], set()
    with failures.storage_errors(logs_loc, "read"):
        for f in ds.get_fragments():
            key = (f.fragment_id, f.data_files()[0].path if f.data_files() else "")
            current.add(key)
            if key in clean:
                continue
            seq = pc.max(pc.fill_null(f.to_table(columns=[keys.SEQ])[keys.SEQ], f.fragment_id)).as_py()
            if seq is None or seq > upto:
                continue  # holds a log not folded everywhere yet
            # (not LanceFragment.count_rows(filter): beside other scans of the process it hung in Lance)
            payloads = f.to_table(columns=list(journal.IPC_COLUMN.values()))
            if any(c.null_count < c.length() for c in payloads.columns):
                todo.append(f)
            else:
                clean.add(key)
    clean &= current
    if not todo:
        return 0
    try:
        compaction.rewrite_fragments(logs_loc, ds, todo, drop_folded_payloads(run))
    except StorageError as e:  # another compaction rewrote them first: the next fold tries again
        logger.info("dropping the folded payloads of %s skipped: %s", logs_loc.redact(logs_loc.uri), e)
        return 0
    return len(todo)


def drop_folded_payloads(run: Location) -> Any:
    """For a compaction of the run's journal (`compaction.maintain(rewrite=...)`): a function that
    nulls the IPC payloads of the rows folded into every data table (their rows are read from the
    tables from then on; metric values stay, `history()` reads them). FOLDED is read when the
    compaction first calls it. A reader that took such a log for unfolded finds its payload null
    and reads its rows from the table (`journal.read_rows`)."""
    upto: list[int] = []

    def rewrite(rows: pa.Table) -> pa.Table:
        if not upto:
            upto.append(min(journal.folded_seq(datasets.open_dataset(run.child(f"{t}.lance"))) for t in GATED))
        folded = pc.less_equal(rows[keys.SEQ], upto[0])
        for name in journal.IPC_COLUMN.values():
            if name not in rows.column_names:  # a logs table from before the journal
                continue
            i = rows.schema.get_field_index(name)
            rows = rows.set_column(i, rows.schema.field(name), pc.if_else(folded, pa.scalar(None, rows.schema.field(name).type), rows[name]))
        return rows

    return rewrite
