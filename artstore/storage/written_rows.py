"""Rows this process wrote into a dataset's data files, kept in memory by data file, so that a
compaction of those fragments (`compaction._rewrite_sequenced`), and a fold's reads of them
(`keys.firsts_after`, `fragment_rows.rows_at`), need not read them back.

A journal takes one one-row data file per log, and its compaction, seconds later in the same
process, read each of them back: on a bucket about 1.2 GETs per log. A data file never changes
and its name is unique (compaction writes new ones), so rows kept by its path stay exact; they
are used only for a fragment without a deletion file, and only when their schema is the
dataset's (a column added since: read instead). Kept within KEPT_BYTES per process, the least
recently written first to go (and before them the files a compaction rewrote: `retire`); a file
never committed is simply never asked for.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from artstore.storage.data_files import first_file
from artstore.storage.location import Location

KEPT_BYTES = 64 * 2**20  # rows kept in all, in bytes of Arrow buffers (a small log's row: ~10-40 KiB)

_ROWS: OrderedDict[tuple[str, str], pa.Table] = OrderedDict()  # (dataset uri, data file path) -> its rows
_BYTES = [0]
_LOCK = threading.Lock()


def note(loc: Location, fragments: Sequence[Any], rows: Sequence[pa.Table]) -> None:
    """Keep `rows[i]`, every row of `fragments[i]` (just written at `loc`, in storage order, with
    every column of the file), by its data file."""
    with _LOCK:
        for fragment, table in zip(fragments, rows, strict=True):
            path = first_file(fragment)
            if not path or table.nbytes > KEPT_BYTES // 4:
                continue
            old = _ROWS.pop((loc.uri, path), None)
            _BYTES[0] += table.nbytes - (old.nbytes if old is not None else 0)
            _ROWS[(loc.uri, path)] = table
        while _BYTES[0] > KEPT_BYTES and _ROWS:
            _BYTES[0] -= _ROWS.popitem(last=False)[1].nbytes


def note_each_row(loc: Location, fragments: Sequence[Any], rows: pa.Table) -> None:
    """`note` of one-row fragments: `fragments[i]` holds row i of `rows`."""
    note(loc, fragments, [rows.slice(i, 1) for i in range(len(fragments))])


def rows_of(loc: Location, fragment: Any, schema: pa.Schema) -> pa.Table | None:
    """Every row of `fragment` (a LanceFragment of the dataset at `loc`, whose schema is
    `schema`) in storage order, as this process wrote it; None when not kept, when the fragment
    has a deletion file, or when its schema is no longer the dataset's."""
    if fragment.deletion_file() is not None:
        return None
    with _LOCK:
        found = _ROWS.get((loc.uri, first_file(fragment)))
    if found is None or found.num_rows != fragment.physical_rows or not found.schema.equals(schema):
        return None
    return found


def retire(loc: Location, fragments: Sequence[Any]) -> None:
    """Make the rows of `fragments` (rewritten by a compaction) the first to go when the bound is
    passed, not gone at once: a fold planned on a version before the compaction (the journal's
    compaction and a fold fall due at the same log) still takes them, rather than a GET each."""
    with _LOCK:
        for fragment in fragments:
            key = (loc.uri, first_file(fragment))
            if key in _ROWS:
                _ROWS.move_to_end(key, last=False)
