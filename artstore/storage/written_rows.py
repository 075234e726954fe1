"""Rows this process wrote into a dataset's data files, kept in memory by data file, so that a
compaction of those fragments (`compaction._rewrite_sequenced`), and a fold's reads of them
(`keys.firsts_after`, `fragment_rows.rows_at`), need not read them back.

A journal takes one small data file per group commit (or per sync log), and its compaction,
seconds later in the same process, read each of them back: on a bucket about 1.2 GETs per file. A data file never changes
and its name is unique (compaction writes new ones), so rows kept by its path stay exact; they
are used only for a fragment without a deletion file, and only when their schema is the
dataset's (a column added since: read instead). Kept within KEPT_BYTES per process, the least
recently written first to go (and before them the files a compaction rewrote: `retire`); a file
never committed is simply never asked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from artstore.storage.byte_lru import ByteLRU
from artstore.storage.data_files import first_file
from artstore.storage.location import Location

KEPT_BYTES = 64 * 2**20  # rows kept in all, in bytes of Arrow buffers (a small log's row: ~10-40 KiB)

# (dataset uri, data file path) -> its rows, by `nbytes`; KEPT_BYTES read at each put (tests patch
# it). Its own lock: writers (`pending`), the upkeep thread's compactions and folds share it.
# Only `note` makes an entry recent (`rows_of` peeks): the least recently written go first.
_ROWS: ByteLRU[tuple[str, str]] = ByteLRU(lambda: KEPT_BYTES)


def note(loc: Location, fragments: Sequence[Any], rows: Sequence[pa.Table]) -> None:
    """Keep `rows[i]`, every row of `fragments[i]` (just written at `loc`, in storage order, with
    every column of the file), by its data file."""
    for fragment, table in zip(fragments, rows, strict=True):
        path = first_file(fragment)
        if path and table.nbytes <= KEPT_BYTES // 4:  # a larger one would push out many small ones
            _ROWS.put((loc.uri, path), table)
    _ROWS.trim()  # the bound holds after every note, one that kept nothing too (KEPT_BYTES lowered)


def rows_of(loc: Location, fragment: Any, schema: pa.Schema) -> pa.Table | None:
    """Every row of `fragment` (a LanceFragment of the dataset at `loc`, whose schema is
    `schema`) in storage order, as this process wrote it; None when not kept, when the fragment
    has a deletion file, or when its schema is no longer the dataset's."""
    if fragment.deletion_file() is not None:
        return None
    found = _ROWS.peek((loc.uri, first_file(fragment)))
    if found is None or found.num_rows != fragment.physical_rows or not found.schema.equals(schema):
        return None
    return found


def retire(loc: Location, fragments: Sequence[Any]) -> None:
    """Make the rows of `fragments` (rewritten by a compaction) the first to go when the bound is
    passed, not gone at once: a fold planned on a version before the compaction (the journal's
    compaction and a fold fall due at the same log) still takes them, rather than a GET each."""
    for fragment in fragments:
        _ROWS.demote((loc.uri, first_file(fragment)))
