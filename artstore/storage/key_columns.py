"""Rows by the value of a key column, read by offset: each fragment's key column is read once per
process (a data file never changes, and its name is unique: compaction writes new ones), so a
look-up of a few values costs the same however many other rows the table holds. Used for rows
whose key (e.g. `write_id`) says where they went, such as the journal's folded logs.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
from lance import LanceDataset

from artstore.storage.data_files import first_file
from artstore.storage.failures import storage_errors
from artstore.storage.location import Location

_LOCK = threading.Lock()
# (dataset uri, key column) -> {data file path: (the key values its fragment holds, its key column)}
_KEY_COLUMNS: dict[tuple[str, str], dict[str, tuple[frozenset[str], pa.Array]]] = {}


def _key_column(loc: Location, fragment: Any, key: str) -> tuple[frozenset[str], pa.Array]:
    """The distinct values and the column `key` of a fragment of the dataset at `loc`, read once
    per process (a data file never changes, and its name is unique). At most 4,096 files are
    kept per dataset and column (compaction leaves fewer: the oldest go first)."""
    path = first_file(fragment)
    with _LOCK:
        found = _KEY_COLUMNS.get((loc.uri, key), {}).get(path)
    if found is None:
        column = fragment.to_table(columns=[key])[key].combine_chunks()
        found = (frozenset(pc.unique(column).to_pylist()), column)
        with _LOCK:
            known = _KEY_COLUMNS.setdefault((loc.uri, key), {})
            known[path] = found
            while len(known) > 4096:
                del known[next(iter(known))]
    return found


def rows_with(loc: Location, ds: LanceDataset, key: str, values: list[str], columns: list[str] | None = None) -> pa.Table:
    """The rows of `ds` (at `loc`, one version) whose `key` is one of `values`, in storage order:
    taken by offset from the fragments holding them (each fragment's key column is read once per
    process: `_key_column`), so the read costs the same however many other rows the table holds.
    A fragment with deleted rows is scanned instead (its offsets no longer match positions)."""
    wanted = pa.array(values, pa.string())
    parts = []
    with storage_errors(loc, "read"):
        for fragment in ds.get_fragments():
            held, column = _key_column(loc, fragment, key)
            if held.isdisjoint(values):
                continue
            if fragment.deletion_file() is not None:
                parts.append(ds.scanner(columns=columns, fragments=[fragment], filter=pads.field(key).isin(wanted))
                             .to_table())
                continue
            offsets = np.flatnonzero(pc.is_in(column, value_set=wanted).to_numpy(zero_copy_only=False))
            parts.append(fragment.take(offsets.tolist(), columns=columns))
    if not parts:
        empty = ds.schema.empty_table()
        return empty if columns is None else empty.select(columns)
    return pa.concat_tables(parts) if len(parts) > 1 else parts[0]
