"""Reading a store with Daft (`pip install 'artstore[daft]'`): a Daft DataSource, one task per part.

    df = artstore.engines.daft.read(store, "trajectories")
    df.groupby("model", "step").agg(daft.col("reward").mean())

Daft pushes the columns a query uses down to each task, which asks Lance for only those.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from artstore.engines.parts import ScanPart
from artstore.engines.plan import ROWS_PER_PART, plan

if TYPE_CHECKING:
    import daft

    from artstore.read.store import Store


def read(store: Store, table: str, *, projects: Sequence[str] | None = None, runs: Sequence[str] | None = None,
         as_of: Any = None, columns: Sequence[str] | None = None, filter: str | None = None,
         rows_per_part: int = ROWS_PER_PART) -> daft.DataFrame:
    """`table` of every run (or of `projects` / `runs`), exactly the committed rows at one point
    (`as_of` as in `Store.sql`), as a lazy Daft DataFrame with project and model columns first.
    `columns` and `filter` (a Lance SQL predicate) are applied inside each part's read."""
    import daft
    from daft.expressions import ExpressionsProjection
    from daft.io.source import DataSource, DataSourceTask
    from daft.recordbatch import RecordBatch

    parts, schema = plan(store, table, projects=projects, runs=runs, as_of=as_of, columns=columns,
                         filter=filter, rows_per_part=rows_per_part)

    class PartTask(DataSourceTask):
        def __init__(self, part: ScanPart | None, arrow: pa.Schema, where: Any = None):
            self._part, self._arrow, self._where = part, arrow, where

        @property
        def schema(self) -> daft.Schema:
            return daft.Schema.from_pyarrow_schema(self._arrow)

        async def read(self) -> AsyncIterator[RecordBatch]:
            data = self._arrow.empty_table() if self._part is None else self._part.read()
            batch = RecordBatch.from_arrow_table(data)
            if self._where is not None:  # fewer rows leave the task
                batch = batch.filter(ExpressionsProjection([self._where]))
            yield RecordBatch.from_arrow_table(batch.to_arrow_table().select(self._arrow.names))

    class PartsSource(DataSource):
        @property
        def name(self) -> str:
            return f"artstore {table}"

        @property
        def schema(self) -> daft.Schema:
            return daft.Schema.from_pyarrow_schema(schema)

        async def get_tasks(self, pushdowns: Any) -> AsyncIterator[DataSourceTask]:
            # The columns asked for and those the filter needs (Daft applies it again after the
            # task), in the source's column order: Daft matches a task's columns by position.
            needed = set(schema.names if pushdowns.columns is None else pushdowns.columns) | \
                pushdowns.filter_required_column_names()
            arrow = pa.schema([f for f in schema if f.name in needed])
            stored = tuple(c for c in arrow.names if c not in ("project", "model"))
            for part in parts:
                yield PartTask(replace(part, columns=stored), arrow, pushdowns.filters)

    return PartsSource().read()

