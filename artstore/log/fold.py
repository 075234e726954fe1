"""The fold: moves the rows of journaled logs (`artstore.log.journal`) into the data tables, many
logs per commit, off the log() caller's path (`artstore.log.upkeep` runs it).

For each data table T (trajectories, groups, metrics), the logs to fold are the committed logs
(first row of each log_id) whose sequence is above FOLDED (T's Lance config), in commit order.
A fold reads only the journal rows above the lowest FOLDED (`keys.firsts_after`: the fragments
numbered above it; a log_id seen there whose first row is older, a retry that raced past the
writer's look-up and whose first copy was folded already, is left out), so its cost does not grow
with the run. One fold, at most 7 commits:

1. claim (1 commit): an UpdateConfig setting CLAIM (a token and the time) on the first data table
   that exists (the lock table), committed on the version the folder read with no retry: Lance
   fails it when any other config change landed since, so of two folders that read the same
   version one goes on. A folder that finds a fresh claim (younger than LEASE_S) on any data table
   leaves the run alone. No table exists yet: each is created by one commit that fails when
   another folder created it first, which serves as the claim;
2. append (1 commit per table with rows): the rows of those logs. An append is compatible with
   any config change, so it cannot be the claim;
3. release (1 commit per table): an UpdateConfig setting FOLDED to the last sequence folded and
   ROWS to the table's row count then (the lock table's last, clearing CLAIM), on the version
   read in 1, so a folder that took over a stale claim meanwhile (or, for a new run's tables,
   one that found a table made and claimed it) makes it fail. Readers read FOLDED from each
   table's own manifest, so each table needs its own; Lance commits an append and a config
   change only as two versions (pylance 14's `commit_batch` takes appends only).

A SIGKILL at any point loses nothing and doubles nothing for readers: before 3, FOLDED still
names the old point, so readers take those logs' rows from the journal and read T only for the
logs up to FOLDED (filtering T's rows by write_id when T holds more rows than those logs wrote:
`journal` readers check the counts). The next fold after the claim's lease finds T's row count
different from ROWS (a fold killed after 2), checks which of its logs T already holds and appends
only the others.
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
from artstore.log.visibility import GATED, ROW_COUNTS
from artstore.storage import (
    Location,
    compaction,
    datasets,
    failures,
    fragment_rows,
    handles,
    keys,
    scans,
    writes,
    written_rows,
)

logger = logging.getLogger(__name__)

CLAIM = "artstore.fold_claim"
ROWS = "artstore.folded_rows"  # config key of a data table: its row count when FOLDED was set
LEASE_S = 120.0  # a claim older than this is taken over (its folder is presumed dead)
# log() asks for a fold when its journal version is a multiple of this. A fold costs a few
# commits and opens whatever its size, so that is the upkeep's largest cost per log: 64 made the
# background CPU per small log ~20% less than 32 (benchmarks/RESULTS.md, bgcpu), while the
# journal holds at most ~64 unfolded logs' payloads (~8 KB each for 8 trajectories; a reader
# decodes only the ones it reads).
FOLD_EVERY = 64
# Logs folded per commit at most, rounded up to a whole sequence (a group commit's logs share one);
# a run never folded before is folded in rounds.
MAX_LOGS = 1024
# What the fold reads of each journal row above FOLDED, then of the logs it folds
_LOG_COLUMNS = ["log_id", "write_id", "split", "step", "recorded_at", *ROW_COUNTS.values()]
_PAYLOADS = ["metric_names", "metric_values", *journal.IPC_COLUMN.values()]
_READ: dict[str, int] = {}  # run uri -> journal rows its last fold here read (`rows_read`)


def fold(run: Location, *, max_logs: int | None = None) -> dict[str, int]:
    """Fold the unfolded committed logs of the run at `run` into its data tables; {table: logs
    folded}. A run whose `logs` is not a journal has nothing to fold. Safe beside writers,
    readers and other folders (see the module doc); an error is logged and left to the next fold."""
    logs_loc = run.child("logs.lance")
    ds = datasets.open_latest(logs_loc)
    if ds is None or not journal.is_journal(ds.schema):
        return {}
    try:
        return _fold(run, logs_loc, ds, max_logs)
    except Exception as e:  # noqa: BLE001 - a failed fold is retried by the next one
        _forget_tables(run)
        logger.warning("fold of %s skipped: %s", logs_loc.redact(run.uri), e)
        return dict.fromkeys(GATED, 0)


def _forget_tables(run: Location) -> None:
    """Let the next fold open the run's data tables afresh, not on the handles held (a fold that
    found them claimed, or whose claim or commit failed: another process may have folded)."""
    for t in GATED:
        handles.forget(run.child(f"{t}.lance"))


def rows_read(run: Location) -> int | None:
    """How many journal rows the last fold of the run at `run` in this process read (None: no
    fold yet): for tests and benchmarks."""
    return _READ.get(run.uri)


def _claimed(ds: Any, now: float) -> bool:
    claim = ds.config().get(CLAIM, "")
    return bool(claim) and now - float(claim.split()[1]) < LEASE_S


def _fold(run: Location, logs_loc: Location, logs: Any, max_logs: int | None) -> dict[str, int]:
    done = dict.fromkeys(GATED, 0)
    locs = {t: run.child(f"{t}.lance") for t in GATED}
    # On a bucket, as this process's commits left them (no LIST each): a fold of another process
    # since made config changes on the lock table, so the claim below fails on this version.
    data = {t: datasets.open_held(locs[t]) for t in GATED}
    now = time.time()
    if any(d is not None and _claimed(d, now) for d in data.values()):
        _forget_tables(run)
        return done  # another folder is at it
    folded = {t: journal.folded_seq(d) for t, d in data.items() if d is not None}
    # A table that does not exist yet had no rows in the logs up to the others' FOLDED: a fold
    # creates each table its logs write to before it sets any FOLDED.
    lo = min(folded.values(), default=-1)
    todo, read = keys.firsts_after(logs_loc, logs, "log_id", lo, _LOG_COLUMNS)
    _READ[run.uri] = read
    if max_logs is not None and todo.num_rows > max_logs:
        # Cut after a whole sequence: FOLDED names a sequence, and logs committed in one fragment
        # share one. A cut inside one would mark its later logs folded with their rows unwritten.
        cut = todo[keys.SEQ][max_logs - 1]
        todo = todo.filter(pc.less_equal(todo[keys.SEQ], cut))
    if todo.num_rows == 0:
        return done
    upto = pc.max(todo[keys.SEQ]).as_py()
    lock = next((t for t in GATED if data[t] is not None), None)
    claimed = None
    if lock is not None:
        claimed = writes.update_config(locs[lock], {CLAIM: f"{uuid.uuid4().hex} {time.time():.3f}"},
                                       data[lock].version)
        if claimed is None:
            _forget_tables(run)
            return done  # another folder claimed it first (or folded since the version held)
    try:
        todo = _with_payloads(logs_loc, logs, todo)
        release: dict[str, tuple[int, int]] = {}  # table -> (version to commit FOLDED on, rows then)
        for t in GATED:
            loc, d = locs[t], data[t]
            mine = todo if d is None or folded[t] <= lo else todo.filter(pc.greater(todo[keys.SEQ], folded[t]))
            if d is not None:
                count = d.count_rows()
                if d.config().get(ROWS) != str(count):  # a fold killed after its append (or a store from before ROWS)
                    mine = _not_yet_in(loc, mine)
                rows = _rows(t, mine)
                if rows.num_rows:
                    writes.append(loc, rows, f"fold of {mine.num_rows} logs", read_version=d.version)
                release[t] = (claimed if t == lock else d.version, count + rows.num_rows)
            else:
                if lo > -1 and pc.any(pc.greater(mine[ROW_COUNTS[t]], 0)).as_py():
                    mine = pa.concat_tables([_earlier(logs_loc, logs, t, lo), mine])
                rows = _rows(t, mine)
                if not rows.num_rows:
                    continue  # nothing to write into a table that does not exist yet
                version = writes.create(loc, rows, f"fold of {mine.num_rows} logs")
                if version is None:
                    continue  # another folder created it first: the next fold goes on from there
                release[t] = (version, rows.num_rows)
            done[t] = mine.num_rows
        for t in sorted(release, key=lambda t: t == lock):  # the lock table's last: it clears the claim
            version, count = release[t]
            updates = {journal.FOLDED: str(upto), ROWS: str(count), **({CLAIM: ""} if t == lock else {})}
            if writes.update_config(locs[t], updates, version) is None:
                # Another folder set this table's fold point first: it took over our claim after
                # LEASE_S, or two folders of a new run created its tables at once (the one that
                # found a table made claimed it, the other's creation was its claim). Our rows
                # past FOLDED are found by the next fold (ROWS), as a killed fold's are: nothing
                # to tell the user.
                logger.debug("fold of %s: another folder set its fold point first", locs[t].redact(locs[t].uri))
                done[t] = 0
    except Exception:
        if claimed is not None:  # failed midway: free the run for the next fold (it checks ROWS)
            try:
                writes.update_config(locs[lock], {CLAIM: ""}, claimed)
            except StorageError:
                pass  # the claim's lease frees it
        raise
    return done


def _rows(table: str, todo: pa.Table) -> pa.Table:
    """The rows of `table` the `todo` logs wrote, in one chunk: Lance writes a table of one small
    chunk per log ~2x slower (512 trajectories in 64 chunks: 33 ms of CPU, 17 ms + 4.5 ms to
    combine them; 64 groups: 7.3 ms, 2.0 ms)."""
    return journal.payload_rows(table, todo).combine_chunks()


def _with_payloads(logs_loc: Location, logs: Any, todo: pa.Table) -> pa.Table:
    """`todo` (journal rows from `keys.firsts_after`, with `_rowaddr`) with the payload columns."""
    payloads = fragment_rows.rows_at(logs_loc, logs, todo["_rowaddr"], _PAYLOADS)
    for name in _PAYLOADS:
        todo = todo.append_column(payloads.schema.field(name), payloads[name])
    return todo


def _earlier(logs_loc: Location, logs: Any, table: str, lo: int) -> pa.Table:
    """The committed logs up to sequence `lo` with rows of `table`, which does not exist yet, as
    `_with_payloads` gives them (a store whose fold once created the other tables only; one
    whole read of the journal, once per table)."""
    found = keys.first_per_key(logs_loc, logs, "log_id", columns=[*_LOG_COLUMNS, keys.SEQ], with_address=True)
    found = found.filter(pc.and_(pc.less_equal(found[keys.SEQ], lo), pc.greater(found[ROW_COUNTS[table]], 0)))
    return _with_payloads(logs_loc, logs, found)


def _not_yet_in(loc: Location, todo: pa.Table) -> pa.Table:
    """The logs of `todo` none of whose rows are in the table at `loc` yet."""
    if todo.num_rows == 0:
        return todo
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
    # As this process holds them (on a bucket: no request): a FOLDED older than the latest drops
    # fewer payloads, never one not folded; a rewrite of a stale journal fails in Lance's commit.
    ds = datasets.open_held(logs_loc)
    if ds is None or not journal.is_journal(ds.schema):
        return 0
    upto = min(journal.folded_seq(datasets.open_held(run.child(f"{t}.lance"))) for t in GATED)
    clean = _CLEAN.setdefault(logs_loc.uri, set())
    todo, current = [], set()
    with failures.storage_errors(logs_loc, "read"):
        for f in ds.get_fragments():
            key = (f.fragment_id, f.data_files()[0].path if f.data_files() else "")
            current.add(key)
            if key in clean:
                continue
            kept = written_rows.rows_of(logs_loc, f, ds.schema)  # rows this process wrote: no GET
            seqs = (kept if kept is not None else f.to_table(columns=[keys.SEQ]))[keys.SEQ]
            seq = pc.max(pc.fill_null(seqs, f.fragment_id)).as_py()
            if seq is None or seq > upto:
                continue  # holds a log not folded everywhere yet
            # (not LanceFragment.count_rows(filter): beside other scans of the process it hung in Lance)
            ipc = list(journal.IPC_COLUMN.values())
            payloads = kept.select(ipc) if kept is not None else f.to_table(columns=ipc)
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
            # as the fold's commits left them (on a bucket no request; a FOLDED behind the latest
            # drops fewer payloads, never one not folded)
            upto.append(min(journal.folded_seq(datasets.open_held(run.child(f"{t}.lance"))) for t in GATED))
        folded = pc.less_equal(rows[keys.SEQ], upto[0])
        for name in journal.IPC_COLUMN.values():
            if name not in rows.column_names:  # a logs table from before the journal
                continue
            i = rows.schema.get_field_index(name)
            rows = rows.set_column(i, rows.schema.field(name), pc.if_else(folded, pa.scalar(None, rows.schema.field(name).type), rows[name]))
        return rows

    return rewrite
