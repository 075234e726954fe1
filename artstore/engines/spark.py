"""Reading a store with Spark 4 (`pip install 'artstore[spark]'`): a Python data source whose
partitions are the scan parts (one Spark partition per part; Arrow batches, no row conversion).

    df = artstore.engines.spark.read(spark, store, "trajectories", columns=["step", "reward"])

No Lance connector for Spark is on PyPI (Lance's Spark jar is on Maven, and reads the raw tables:
it would count the rows of crashed writers). The parts travel inside the data source class,
which Spark pickles to its Python workers; they hold the storage options, so nothing prints them.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from artstore.engines.plan import ROWS_PER_PART, plan

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from artstore.read.store import Store

_names = itertools.count()


def read(spark: SparkSession, store: Store, table: str, *, projects: Sequence[str] | None = None,
         runs: Sequence[str] | None = None, as_of: Any = None, columns: Sequence[str] | None = None,
         filter: str | None = None, rows_per_part: int = ROWS_PER_PART) -> DataFrame:
    """`table` of every run (or of `projects` / `runs`), exactly the committed rows at one point
    (`as_of` as in `Store.sql`), as a Spark DataFrame with project and model columns first.
    `columns` and `filter` (a Lance SQL predicate) are applied inside each part's read."""
    from pyspark.sql.datasource import DataSource, DataSourceReader, InputPartition
    from pyspark.sql.pandas.types import from_arrow_schema

    parts, schema = plan(store, table, projects=projects, runs=runs, as_of=as_of, columns=columns,
                         filter=filter, rows_per_part=rows_per_part)
    name = f"artstore_{table}_{next(_names)}"  # a name per read: each holds its own parts
    spark_schema = from_arrow_schema(schema, prefer_timestamp_ntz=False)

    class Part(InputPartition):
        def __init__(self, index: int):
            super().__init__(index)

    class Reader(DataSourceReader):
        def partitions(self) -> list[InputPartition]:
            return [Part(i) for i in range(len(parts))]

        def read(self, partition: InputPartition) -> Iterator[Any]:
            yield from parts[partition.value].read().select(schema.names).to_batches()

    class PartsSource(DataSource):
        @classmethod
        def name(cls) -> str:
            return name

        def schema(self) -> Any:
            return spark_schema

        def reader(self, schema: Any) -> DataSourceReader:
            return Reader()

    spark.dataSource.register(PartsSource)
    return spark.read.format(name).load()
