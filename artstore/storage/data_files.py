"""The data files of a Lance dataset's fragments: their paths, read without pylance's
`DataFile.path` property (which builds a class on each access), and their bytes.

Paths are relative to the dataset's `data/` folder.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from artstore.storage import datasets, files
from artstore.storage.failures import storage_errors
from artstore.storage.location import Location


def first_file(fragment: Any) -> str:
    """The path of the first data file of `fragment` (a LanceFragment or FragmentMetadata), ""
    when it has none. Reads DataFile's stored path: its `path` property builds a str subclass on
    each call (~12 us; a look-up by key reads one per fragment)."""
    found = fragment.data_files()
    return data_file_path(found[0]) if found else ""


def data_file_path(data_file: Any) -> str:
    """The path of a Lance `DataFile`. pylance 14's `path` property defines a class on each access
    (~20 us idle, ~250 us under load): its field, where present."""
    found = getattr(data_file, "_path", None)
    return found if isinstance(found, str) else str(data_file.path)


def data_bytes(loc: Location, opener: Callable[[Location], Any] | None = None) -> int:
    """Bytes of the data files the latest version of the dataset at `loc` names, from its manifest
    (no listing); 0 when it does not exist. Old versions' files and deletion files are not counted.
    `opener(loc)` opens it at its latest (default `datasets.open_dataset`; a writer's upkeep passes
    `datasets.open_latest`: through its handle, a probe and no manifest read when unchanged)."""
    ds = (opener or datasets.open_dataset)(loc)
    if ds is None:
        return 0
    with storage_errors(loc, "read the manifest of"):
        total = 0
        for fragment in ds.get_fragments():
            for f in fragment.metadata.files:
                size = f.file_size_bytes
                total += size if size is not None else files.size(loc.child("data", f.path))
        return total
