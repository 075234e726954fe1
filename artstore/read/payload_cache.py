"""Payload cache: journal rows this process read by row address, kept in memory per write_id.

A step read at the latest version (`artstore.read.groups`) takes its logs' journal rows (the
payload columns) from the journal's fragments: one Lance take each time, which under a busy
process (the background fold and compaction share its cores and Lance's threads) is the part of
the read that waits longest. A write_id names one attempt's row, written once and never changed:
a compaction moves it, a payload drop writes it again with its payload null, but what the log
wrote stays what it was. So a row read once answers every later read of that log as it is, and
repeated reads of a step read nothing from storage (the freshness check of the logs remains).

Keyed by (journal uri, write_id): a run deleted and logged again has new write_ids. Bounded by
`MAX_BYTES` of Arrow buffers, least recently used first out.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import pyarrow as pa

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
        for w, row in zip(ids, apart, strict=True):
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


def clear() -> None:
    """Forget every kept row (tests, and a process that wants its memory back)."""
    with _LOCK:
        _KEPT.clear()
        _BYTES[0] = 0
