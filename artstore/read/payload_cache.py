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

import pyarrow as pa

from artstore.log import group_commit, journal
from artstore.storage import Location
from artstore.storage.byte_lru import ByteLRU

MAX_BYTES = 32 * 1024 * 1024  # of kept rows' Arrow buffers, per process

# (journal uri, write_id) -> its row; MAX_BYTES read at each put (tests patch it). Its own lock:
# callers' reads and the group-commit thread (`keep_committed`) share it.
_KEPT: ByteLRU[tuple[str, str]] = ByteLRU(lambda: MAX_BYTES)


def get(uri: str, write_ids: list[str], columns: list[str]) -> dict[str, pa.Table]:
    """{write_id: its kept journal row, `columns` of it} of those of `write_ids` kept for the
    journal at `uri` with every one of `columns`."""
    found = {}
    for w in write_ids:
        row = _KEPT.peek((uri, w))
        if row is None or not set(columns) <= set(row.schema.names):
            continue
        _KEPT.get((uri, w))  # a row that answers is now the most recently used
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
    _add(uri, list(zip(ids, apart, strict=True)))


def _add(uri: str, rows: list[tuple[str | None, pa.Table]]) -> None:
    """Keep each (write_id, its row), measured by its whole Arrow buffers, past MAX_BYTES the
    least recently used first out."""
    for w, row in rows:
        if w is not None:
            _KEPT.put((uri, w), row, row.get_total_buffer_size())
    _KEPT.trim()  # the bound holds after every add, one that kept nothing too (MAX_BYTES lowered)


def keep_committed(logs: Location, rows: list[pa.Table]) -> None:
    """Keep the journal rows this process's group commit just committed (`group_commit.on_rows`;
    each a one-row table of its own: kept as it is, no copy), so the first read of those logs
    takes nothing back (their payload columns only)."""
    kept = [(r["write_id"][0].as_py(), r.select(journal.PAYLOAD_READ_COLUMNS)) for r in rows if r.num_rows == 1]
    _add(logs.uri, kept)


def clear() -> None:
    """Forget every kept row (tests, and a process that wants its memory back)."""
    _KEPT.clear()


group_commit.on_rows(keep_committed)
