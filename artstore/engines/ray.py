"""Reading a store with Ray Data (`pip install 'artstore[ray]'`): one read task per scan part.

    ds = artstore.engines.ray.read(store, "trajectories", columns=["step", "reward"])
    ds.groupby("step").mean("reward")

Not `ray.data.read_lance` over the raw tables: that reads the rows of crashed writers and of the
losers of racing retries, and its defaults make a task per few hundred rows of a store of many
small logs. Here each task reads one `ScanPart` (a fragment range, with the visibility filter).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from artstore.engines.plan import ROWS_PER_PART, plan

if TYPE_CHECKING:
    import ray.data

    from artstore.read.store import Store


def read(store: Store, table: str, *, projects: Sequence[str] | None = None, runs: Sequence[str] | None = None,
         as_of: Any = None, columns: Sequence[str] | None = None, filter: str | None = None,
         rows_per_part: int = ROWS_PER_PART) -> ray.data.Dataset:
    """`table` of every run (or of `projects` / `runs`), exactly the committed rows at one point
    (`as_of` as in `Store.sql`), as a Ray Dataset with project and model columns first.
    `columns` and `filter` (a Lance SQL predicate) are applied inside each part's read."""
    import ray.data
    from ray.data.block import BlockMetadata
    from ray.data.datasource import Datasource, ReadTask

    parts, schema = plan(store, table, projects=projects, runs=runs, as_of=as_of, columns=columns,
                         filter=filter, rows_per_part=rows_per_part)

    class PartsDatasource(Datasource):
        def estimate_inmemory_data_size(self) -> int | None:
            return None

        def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                           data_context: Any = None) -> list[ReadTask]:
            tasks = [ReadTask(lambda p=p: [p.read()], BlockMetadata(num_rows=None, size_bytes=None,
                                                                     exec_stats=None, input_files=None),
                              schema=schema) for p in parts]
            return tasks or [ReadTask(lambda: [schema.empty_table()],
                                      BlockMetadata(num_rows=0, size_bytes=0, exec_stats=None, input_files=None),
                                      schema=schema)]

    return ray.data.read_datasource(PartsDatasource(), override_num_blocks=max(1, len(parts)))
