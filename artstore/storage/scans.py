"""Reading rows of a Lance dataset: a whole scan into one Arrow table (`scan`), a stream of
fixed-size batches over a row range (`scan_batches`, the trainer's loader), counts and positions
of the rows a Lance SQL filter matches, and filtering rows held in memory.

Each read opens one version and reads only it; a dataset that does not exist reads as nothing
(None, 0, no batches), never an error.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator

import lance
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from artstore.storage import datasets
from artstore.storage.failures import storage_errors
from artstore.storage.location import Location


def scan(
    loc: Location,
    columns: list[str] | None = None,
    filter: str | None = None,
    version: int | str | None = None,
) -> pa.Table | None:
    """Read `columns` of rows matching the Lance SQL `filter`, or None if the dataset is missing."""
    with storage_errors(loc, "read"):
        ds = datasets.open_dataset(loc, version=version)
        if ds is None:
            return None
        return ds.to_table(columns=columns, filter=filter)


def filter_rows(table: pa.Table, filter: str) -> pa.Table:
    """The rows of the in-memory `table` matching the Lance SQL `filter` (through a scratch
    dataset in a temporary folder: Lance filters datasets only)."""
    with tempfile.TemporaryDirectory(prefix="artstore-filter-") as scratch, \
            storage_errors(Location.parse(scratch), "filter"):
        return lance.write_dataset(table, f"{scratch}/rows.lance").to_table(filter=filter)


def count_rows(loc: Location, filter: str | None = None, version: int | str | None = None) -> int:
    """How many rows match the Lance SQL `filter` (0 when the dataset does not exist)."""
    ds = datasets.open_dataset(loc, version=version)
    if ds is None:
        return 0
    with storage_errors(loc, "count rows of"):
        return ds.count_rows(filter=filter)


def match_positions(loc: Location, filter: str | None = None, version: int | str | None = None) -> np.ndarray:
    """Positions (0-based, in storage order: the order `scan_batches` reads) of the rows matching
    the Lance SQL `filter`, as int64; empty when the dataset does not exist. Reads only the
    columns the filter names."""
    ds = datasets.open_dataset(loc, version=version)
    if ds is None:
        return np.zeros(0, np.int64)
    with storage_errors(loc, "read"):
        if filter is None:
            return np.arange(ds.count_rows(), dtype=np.int64)
        flags = ds.to_table(columns={"match": filter})["match"]
        return np.flatnonzero(pc.fill_null(flags, False).to_numpy(zero_copy_only=False)).astype(np.int64)


def scan_batches(
    loc: Location,
    *,
    batch_size: int,
    columns: list[str] | None = None,
    filter: str | None = None,
    offset: int = 0,
    limit: int | None = None,
    version: int | str | None = None,
) -> Iterator[pa.RecordBatch]:
    """Stream rows `offset` to `offset + limit` of those matching `filter` (all rows when None), in
    storage order (stable for one version), as record batches of exactly `batch_size` rows (the
    last may be short). Without a filter Lance reads the row range directly, which is much faster
    than filtering (no late materialisation).
    Nothing is yielded when the dataset does not exist."""
    ds = datasets.open_dataset(loc, version=version)
    if ds is None:
        return
    with storage_errors(loc, "read"):
        scanner = ds.scanner(columns=columns, filter=filter, offset=offset, limit=limit,
                             batch_size=batch_size, strict_batch_size=True)
        yield from scanner.to_batches()
