"""ScanPart: one unit of a distributed read, picklable, readable on any worker.

A part names a run's table at a pinned version, a range of its fragments, the columns, and the
Lance filter that keeps exactly the committed rows (plus the caller's filter); or it holds the
rows of a journal run's logs not folded into the table yet. Its storage
options travel with it (a worker needs them) but are never shown: `repr` names the URI only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa

from artstore.storage import Location
from artstore.storage import secrets as secret_registry
from artstore.storage.fragments import read_fragments


@dataclass(frozen=True)
class ScanPart:
    """Rows of `fragment_ids` of the run `project/model`'s `table`, as of `version`, that pass
    `filter` (a Lance SQL predicate, or None: every row). `read()` gives them as a pyarrow Table
    whose first columns are `project` and `model` (constants), then `columns`.

    `rows` is the fragments' row count before filtering (an upper bound, for sizing tasks)."""

    project: str
    model: str
    table: str
    location: Location = field(repr=False)
    version: int
    fragment_ids: tuple[int, ...]
    columns: tuple[str, ...]
    filter: str | None = field(repr=False)
    rows: int
    # rows held in the part itself: a journal run's logs not folded into the table yet (read from
    # the journal's payloads when planned; `columns` of them, the caller's filter applied)
    inline: pa.Table | None = field(default=None, repr=False, compare=False)

    @property
    def uri(self) -> str:
        return self.location.uri

    @property
    def storage_options(self) -> dict[str, str] | None:
        """What Lance needs to open `uri` (secrets included: never log this)."""
        return self.location.lance_options()

    def read(self) -> pa.Table:
        if self.inline is not None:
            data = self.inline.select(list(self.columns))
        else:
            data = read_fragments(self.location, self.version, self.fragment_ids, list(self.columns), self.filter)
        n = data.num_rows
        data = data.add_column(0, "model", pa.array([self.model] * n, pa.string()))
        return data.add_column(0, "project", pa.array([self.project] * n, pa.string()))

    def schema(self, stored: pa.Schema) -> pa.Schema:
        """The schema `read()` returns, given the table's stored schema."""
        return pa.schema([pa.field("project", pa.string()), pa.field("model", pa.string()),
                          *[stored.field(c) for c in self.columns]])

    def __repr__(self) -> str:
        frags = f"{self.fragment_ids[0]}..{self.fragment_ids[-1]}" if len(self.fragment_ids) > 2 else \
            ",".join(map(str, self.fragment_ids)) if self.inline is None else "none (journal rows held inline)"
        shape = "none" if self.filter is None else f"{len(self.filter)} chars"
        return secret_registry.redact(
            f"ScanPart({self.project}/{self.model} {self.table} @v{self.version} fragments {frags}, "
            f"{self.rows} rows, filter {shape}, uri={self.uri!r})")

    __str__ = __repr__
