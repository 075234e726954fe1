"""Payload cache: journal rows this process read by row address, kept in memory per write_id.

A step read at the latest version (`artstore.read.groups`) takes its logs' journal rows (the
payload columns) from the journal's fragments: one Lance take each time, which under a busy
process (the background fold and compaction share its cores and Lance's threads) is the part of
the read that waits longest. A write_id names one attempt's row, written once and never changed:
a compaction moves it, a payload drop writes it again with its payload null, but what the log
wrote stays what it was. So a row read once answers every later read of that log as it is, and
repeated reads of a step read nothing from storage (the freshness check of the logs remains).
The rows this process's own group commits committed are kept the same way as they land
(`group_commit.on_rows`): a writer's first read of a step it logged takes nothing back either.

Keyed by (journal uri, write_id): a run deleted and logged again has new write_ids. Bounded by
`MAX_BYTES` of Arrow buffers, least recently used first out.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import pyarrow as pa

from artstore.log import group_commit, journal
from artstore.storage import Location

MAX_BYTES = 32 * 1024 * 1024  # of kept rows' Arrow buffers, per process

_LOCK = threading.Lock()
_KEPT: OrderedDict[tuple[str, str], pa.Table] = OrderedDict()  # (journal uri, write_id) -> its row
_BYTES = [0]


def _size(row: pa.Table) -> int:
    return row.get_total_buffer_size()


def get(uri: str, write_ids: list[str], columns: list[str]) -> dict[str, pa.Table]:
    """{write_id: its kept journal row, `columns` of it} of those of `write_ids` kept for the
    journal at `uri` with every one of `columns`."""
    found = {}
    with _LOCK:
        for w in write_ids:
            row = _KEPT.get((uri, w))
            if row is None or not set(columns) <= set(row.schema.names):
                continue
            _KEPT.move_to_end((uri, w))
            found[w] = row.select(columns)
    return found


def keep(uri: str, rows: pa.Table) -> None:
    """Keep `rows` (journal rows of the journal at `uri`, with a `write_id` column) for `get`.
    Each row is copied apart (a slice would hold the whole read's buffers)."""
    if rows.num_rows == 0 or "write_id" not in rows.schema.names:
        return
    ids = rows["write_id"].to_pylist()
    apart = [rows] if rows.num_rows == 1 else \
        [rows.take(pa.array([i], pa.int64())) for i in range(rows.num_rows)]  # take copies
    with _LOCK:
        _add(uri, list(zip(ids, apart, strict=True)))


def _add(uri: str, rows: list[tuple[str | None, pa.Table]]) -> None:
    """(Under _LOCK) keep each (write_id, its row), then drop the least recently used past MAX_BYTES."""
    for w, row in rows:
        if w is None:
            continue
        old = _KEPT.pop((uri, w), None)
        if old is not None:
            _BYTES[0] -= _size(old)
        _KEPT[(uri, w)] = row
        _BYTES[0] += _size(row)
    while _BYTES[0] > MAX_BYTES and _KEPT:
        _, gone = _KEPT.popitem(last=False)
        _BYTES[0] -= _size(gone)


def keep_committed(logs: Location, rows: list[pa.Table]) -> None:
    """Keep the journal rows this process's group commit just committed (`group_commit.on_rows`;
    each a one-row table of its own: kept as it is, no copy), so the first read of those logs
    takes nothing back (their payload columns only)."""
    kept = [(r["write_id"][0].as_py(), r.select(journal.PAYLOAD_READ_COLUMNS)) for r in rows if r.num_rows == 1]
    with _LOCK:
        _add(logs.uri, kept)


def clear() -> None:
    """Forget every kept row (tests, and a process that wants its memory back)."""
    with _LOCK:
        _KEPT.clear()
        _BYTES[0] = 0


group_commit.on_rows(keep_committed)
