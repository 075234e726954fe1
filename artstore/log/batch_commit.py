"""One group commit (`artstore.log.group_commit`): the journal rows of a batch of logs appended to
a run's `logs.lance` in ONE Lance commit, then the upkeep a sync log asks for, once for the batch.

Each row gets its own data file and fragment (`pending.write_row_fragments`), so it keeps its own
sequence (`artstore.log.journal`) and commit order and first-commit-wins read as in sync mode. On
a local disk the writers of one host commit one at a time (`run_lock`): a race costs Lance a retry
and a backoff sleep (tens of ms), the lock a few ms of waiting.
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

# (the run's journal, the version made, [(each log's record, its fragment id)]: the record None for
# a row that lost to an earlier committed row of its log_id, stored and never read)
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
           in_flight: Callable[[dict[str, Any]], None] | None = None) -> tuple[int, int, int | None]:
    """Append the rows of `items` to the run's journal in one commit. Returns (the version made,
    the largest fragment id held before it, the physical rows of that version: None without
    `listeners`). `listeners` (the committer's: `group_commit.on_commit`) are told which
    fragment holds each row. `in_flight` is given {data file: record} of the batch's rows while
    their commit is under way (a reader finding them committed first takes them from there), then {}."""
    logs = run.child("logs.lance")
    rows = pa.concat_tables([i.row for i in items])
    try:
        written = pending.write_row_fragments(logs, rows)
    except StorageError:
        if not journal.add_delta_column(logs):  # a journal from before state_delta
            raise
        written = pending.write_row_fragments(logs, rows)
    before = handles.held(logs)
    top_before = max(fragments.fragment_ids(before), default=0) if before is not None else 0
    if in_flight is not None:
        in_flight({first_file(f): i.record for f, i in zip(written, items, strict=True)})
    try:
        with run_lock.held(run, "logs.commit"):  # one at a time among this host's writers (module doc)
            # on the held version (the id look-ups keep it recent): no open of the latest (a LIST and a
            # GET on a bucket); Lance checks the commits made since, as for any append
            version = writes.commit_files(logs, written, rows.schema, f"group commit of {len(items)} logs",
                                          read_version=before.version if before is not None else None)
        for fragment, item in zip(written, items, strict=True):  # no later look-up reads them back
            keys.note_keys(logs, "log_id", [fragment], [item.record.log_id])
        if listeners is None:
            return version, top_before, None
        committed = handles.held(logs, version)
        if committed is None:  # the commit that created the journal holds no handle
            committed = datasets.open_dataset(logs, version=version)
        if committed is None:
            return version, top_before, None
        physical = committed.count_rows()
        _tell(listeners, logs, version, committed, written, items)
        return version, top_before, physical
    finally:
        if in_flight is not None:
            in_flight({})


def _tell(listeners: Sequence[Listener], logs: Location, version: int, committed: Any, written: list[Any],
          items: list[Item]) -> None:
    """Tell `listeners` which fragment of `committed` (the version made) holds each item's row,
    found by its data file; nothing when one is not found there."""
    if not listeners:
        return
    try:
        by_file = {paths[0]: i for i, (paths, _, _) in fragments.fragment_identities(logs, committed).items() if paths}
        ids = [by_file.get(first_file(f)) for f in written]
        losers = None if any(i is None for i in ids) else _losers(logs, committed, items, ids, by_file)
    except ArtstoreError as e:
        logger.debug("group commit of %s: fragments not told (%s)", logs.redact(logs.uri), e)
        return
    if losers is None:
        return
    told = [(None if n in losers else item.record, i) for n, (item, i) in enumerate(zip(items, ids, strict=True))]
    for listener in listeners:
        try:
            listener(logs, version, told)
        except Exception as e:  # noqa: BLE001 - committed: a listener's failure must not make it retried
            logger.warning("after the group commit of %s: %s", logs.redact(logs.uri), e)


def _losers(logs: Location, committed: Any, items: list[Item], ids: list[int], by_file: dict[str, int]) -> set[int] | None:
    """The indexes of the `items` whose row lost to an earlier committed row of its log_id (an
    attempt whose look-up missed a copy committed before it: first committed wins, for every
    reader), told from the key sets of `committed` (each fragment read once per process; the
    look-ups read those before them already). Any earlier row sits in a fragment of a lower id:
    Lance gives a commit's new fragments ids above every fragment before them. None when a
    holder is not a fragment of `committed` as its identities tell (then nothing is told)."""
    holders = keys.files_holding(logs, committed, "log_id", [i.record.log_id for i in items])
    if any(path not in by_file for paths in holders.values() for path in paths):
        return None
    return {n for n, (item, i) in enumerate(zip(items, ids, strict=True))
            if any(by_file[path] < i for path in holders[item.record.log_id])}


def after(run: Location, items: list[Item], version: int, top_before: int) -> None:
    """After the group commit of `items` at `version`: delete their pending files, then ask for
    what `write_log` asks for after a sync commit, once for the batch. The committer never waits
    here for a compaction (its next commit would wait too)."""
    pending_deletes.done(run, [i.name for i in items if i.name])  # a bucket's wait for a batch
    logs = run.child("logs.lance")
    window, retention = min(i.window for i in items), min(i.retention for i in items)
    top = writes.committed_seq_hi(logs, version)
    try:  # due per MAINTAIN_EVERY logs (fragments), not per MAINTAIN_EVERY commits of a batch each
        due = inline_upkeep.due_after(top[1] if top is not None else top_before + len(items), len(items))
        inline_upkeep.maintain(run, {"logs": version}, window, background=True, crowded_wait_s=0.0, due=due)
    except ArtstoreError as e:
        logger.warning("maintenance of %s skipped: %s", logs.redact(logs.uri), e)
    if top is not None and top[1] // fold.FOLD_EVERY > top_before // fold.FOLD_EVERY:
        upkeep.request_fold(run, window)
    idle_fold.note(run, window)
    upkeep.request_stats(run, retention)


def commit_recovered(run: Location, rows: pa.Table) -> None:
    """Group-commit `rows` (journal rows of abandoned pending files: `pending_recovery`) as a
    committer would, with the default windows for their upkeep."""
    items = [Item(run, rows.slice(i, 1), _Recovered(rows["log_id"][i].as_py(), rows["write_id"][i].as_py()),
                  "", upkeep.DEFAULT_RETENTION, upkeep.DEFAULT_READER_WINDOW, 0) for i in range(rows.num_rows)]
    after(run, items, *commit(run, items)[:2])


@dataclasses.dataclass(frozen=True)
class _Recovered:
    """The record of a recovered row (its log() was made by a process that is gone)."""

    log_id: str
    write_id: str
