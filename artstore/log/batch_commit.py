"""One group commit (`artstore.log.group_commit`): the journal rows of a batch of logs appended to
a run's `logs.lance` in ONE Lance commit, then the upkeep a sync log asks for, once for the batch.

The batch's rows are one data file and one fragment (`pending.write_batch_fragment`): the commit
adds one fragment however many logs it holds, so the journal's fragment count, and what another
writer's id look-up reads, grow per commit, not per log. The rows share one sequence (the
fragment's id) and keep their log order by row address (`artstore.log.journal`): commit order and
first-commit-wins read as in sync mode. On a local disk the writers of one host commit one at a
time (`run_lock`): a race costs Lance a retry and a backoff sleep (tens of ms), the lock a few ms
of waiting.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import pyarrow as pa

from artstore.errors import ArtstoreError, StorageError
from artstore.log import fold, idle_fold, inline_upkeep, journal, pending_deletes, upkeep
from artstore.storage import Location, datasets, fragments, handles, keys, pending, run_lock, writes
from artstore.storage.data_files import first_file

logger = logging.getLogger(__name__)

# (the run's journal, the version made, [(each log's record, its row address: fragment id << 32 |
# offset)]: the record None for a row that lost to an earlier committed row of its log_id, stored
# and never read)
Listener = Callable[[Location, int, list[tuple[Any, int]]], None]


@dataclasses.dataclass
class Item:
    """One log's row in a batch."""

    run: Location
    row: pa.Table  # the log's journal row
    record: Any  # the LogRecord its log() returned
    name: str  # its pending file ("": none)
    retention: timedelta
    window: timedelta
    ticket: int  # its place in its queue (0: recovered, no queue)


def commit(run: Location, items: list[Item], listeners: Sequence[Listener] | None = None,
           in_flight: Callable[[dict[str, list[Any]]], None] | None = None) -> tuple[int, int | None]:
    """Append the rows of `items` to the run's journal in one commit. Returns (the version made,
    the physical rows of that version: None without `listeners`). `listeners` (the committer's:
    `group_commit.on_commit`) are told each row's address. `in_flight` is given {data file: [the
    record of each of its rows, in row order]} while their commit is under way (a reader finding
    them committed first takes them from there), then {}."""
    logs = run.child("logs.lance")
    rows = pa.concat_tables([i.row for i in items])
    try:
        written, places = pending.write_batch_fragment(logs, rows)
    except StorageError:
        if not journal.add_delta_column(logs):  # a journal from before state_delta
            raise
        written, places = pending.write_batch_fragment(logs, rows)
    before = handles.held(logs)
    held: list[list[Any]] = [[] for _ in written]  # the records of each fragment's rows, in row order
    for item, (n, _) in zip(items, places, strict=True):
        held[n].append(item.record)
    if in_flight is not None:
        in_flight({first_file(f): records for f, records in zip(written, held, strict=True)})
    try:
        with run_lock.held(run, "logs.commit"):  # one at a time among this host's writers (module doc)
            # on the held version (the id look-ups keep it recent): no open of the latest (a LIST and a
            # GET on a bucket); Lance checks the commits made since, as for any append
            version = writes.commit_files(logs, written, rows.schema, f"group commit of {len(items)} logs",
                                          read_version=before.version if before is not None else None)
        for fragment, records in zip(written, held, strict=True):  # no later look-up reads them back
            keys.note_keys(logs, "log_id", [fragment], [r.log_id for r in records])
        if listeners is None:
            return version, None
        committed = handles.held(logs, version)
        if committed is None:  # the commit that created the journal holds no handle
            committed = datasets.open_dataset(logs, version=version)
        if committed is None:
            return version, None
        physical = committed.count_rows()
        _tell(listeners, logs, version, committed, written, places, items)
        return version, physical
    finally:
        if in_flight is not None:
            in_flight({})


def _tell(listeners: Sequence[Listener], logs: Location, version: int, committed: Any, written: list[Any],
          places: list[tuple[int, int]], items: list[Item]) -> None:
    """Tell `listeners` the address in `committed` (the version made) of each item's row (its
    fragment, found by its data file, and its offset there, `places`); nothing when a fragment
    is not found there."""
    if not listeners:
        return
    try:
        by_file = {paths[0]: i for i, (paths, _, _) in fragments.fragment_identities(logs, committed).items() if paths}
        ids = [by_file.get(first_file(f)) for f in written]
        losers = None if any(i is None for i in ids) else _losers(logs, committed, items, [ids[n] for n, _ in places],
                                                                   by_file)
    except ArtstoreError as e:
        logger.debug("group commit of %s: rows not told (%s)", logs.redact(logs.uri), e)
        return
    if losers is None:
        return
    told = [(None if n in losers else item.record, fragments.row_address(ids[k], offset))
            for n, (item, (k, offset)) in enumerate(zip(items, places, strict=True))]
    for listener in listeners:
        try:
            listener(logs, version, told)
        except Exception as e:  # noqa: BLE001 - committed: a listener's failure must not make it retried
            logger.warning("after the group commit of %s: %s", logs.redact(logs.uri), e)


def _losers(logs: Location, committed: Any, items: list[Item], ids: list[int], by_file: dict[str, int]) -> set[int] | None:
    """The indexes of the `items` (whose rows sit in the fragments `ids`) whose row lost to an
    earlier committed row of its log_id (an attempt whose look-up missed a copy committed before
    it: first committed wins, for every reader), told from the key sets of `committed` (each
    fragment read once per process; the look-ups read those before them already). Any earlier
    row sits in a fragment of a lower id: Lance gives a commit's new fragments ids above every
    fragment before them. A batch never holds one log_id twice (`group_commit.submit` and the
    recovery keep one attempt each). None when a holder is not a fragment of `committed` as its
    identities tell (then nothing is told)."""
    holders = keys.files_holding(logs, committed, "log_id", [i.record.log_id for i in items])
    if any(path not in by_file for paths in holders.values() for path in paths):
        return None
    return {n for n, (item, i) in enumerate(zip(items, ids, strict=True))
            if any(by_file[path] < i for path in holders[item.record.log_id])}


def after(run: Location, items: list[Item], version: int, physical: int | None = None) -> None:
    """After the group commit of `items` at `version` (`physical`: the journal's rows at that
    version, None when not known): delete their pending files, then ask for what `write_log`
    asks for after a sync commit, once for the batch. The committer never waits here for a
    compaction (its next commit would wait too)."""
    pending_deletes.done(run, [i.name for i in items if i.name])  # a bucket's wait for a batch
    logs = run.child("logs.lance")
    window, retention = min(i.window for i in items), min(i.retention for i in items)
    try:  # the batch added one fragment, as a sync log does: due by the version as for it
        inline_upkeep.maintain(run, {"logs": version}, window, background=True, crowded_wait_s=0.0)
    except ArtstoreError as e:
        logger.warning("maintenance of %s skipped: %s", logs.redact(logs.uri), e)
    # a fold per FOLD_EVERY journal rows, as sync logs ask one per FOLD_EVERY versions: the commit
    # that crosses a multiple asks (without the count, every commit of a recovered batch asks)
    if physical is None or physical // fold.FOLD_EVERY > (physical - len(items)) // fold.FOLD_EVERY:
        upkeep.request_fold(run, window)
    idle_fold.note(run, window)
    upkeep.request_stats(run, retention)


def commit_recovered(run: Location, rows: pa.Table) -> None:
    """Group-commit `rows` (journal rows of abandoned pending files: `pending_recovery`) as a
    committer would, with the default windows for their upkeep."""
    items = [Item(run, rows.slice(i, 1), _Recovered(rows["log_id"][i].as_py(), rows["write_id"][i].as_py()),
                  "", upkeep.DEFAULT_RETENTION, upkeep.DEFAULT_READER_WINDOW, 0) for i in range(rows.num_rows)]
    after(run, items, commit(run, items)[0])


@dataclasses.dataclass(frozen=True)
class _Recovered:
    """The record of a recovered row (its log() was made by a process that is gone)."""

    log_id: str
    write_id: str
