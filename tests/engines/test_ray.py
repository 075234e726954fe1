"""Ray Data (in-process local cluster, one for the module): it reads exactly Store.sql's rows,
table by table, and its map_batches workers log into one run through the commit protocol."""

from __future__ import annotations

import os

import pyarrow as pa
import pytest

import artstore as art
from tests.engines.store import TABLES, TAG, tally, truth

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'artstore[ray]')")
from artstore.engines import ray as adapter  # noqa: E402

# ray.init starts its processes by fork+exec, which Lance's fork hook warns about needlessly
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:lance is not fork-safe")]


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    yield
    ray.shutdown()


def _arrow(ds) -> pa.Table:
    return pa.concat_tables([pa.Table.from_batches([b]) if isinstance(b, pa.RecordBatch) else b
                             for b in ds.iter_batches(batch_format="pyarrow", batch_size=None)])


def test_ray_counts_and_sums_equal_sql_table_by_table(cluster, engine_store):
    store = art.open_store(engine_store)
    for table in TABLES:
        ds = adapter.read(store, table)
        assert tally(table, _arrow(ds)) == truth(store, table), table


def test_ray_reads_one_block_per_part_and_honours_a_tag(cluster, engine_store):
    store = art.open_store(engine_store)
    as_of = {"q/c": TAG}
    parts = store.snapshot(as_of=as_of).scan_parts("trajectories")
    ds = adapter.read(store, "trajectories", as_of=as_of, columns=["reward"]).materialize()
    assert ds.num_blocks() == len(parts)
    assert tally("trajectories", _arrow(ds)) == truth(store, "trajectories", as_of=as_of)


def test_map_batches_workers_log_into_one_run_nothing_lost_or_doubled(cluster, tmp_path):
    """Two workers log 8 batches into one run, in parallel; batch 3 is delivered twice and batch 5's
    first attempt fails after its log committed (Ray retries it): each log id is stored once."""
    uri, marker = str(tmp_path / "store"), str(tmp_path / "failed-once")

    def log_batch(batch: dict) -> dict:
        import os

        import artstore as art

        model = art.Model(name="workers", project="ray", base_path=uri, report_metrics=[])
        for i in batch["i"]:
            trajectories = [art.Trajectory(messages_and_choices=[{"role": "user", "content": f"b{i} t{t}"}],
                                           reward=float(i) + t / 10) for t in range(3)]
            model.log_sync([art.TrajectoryGroup(trajectories)], split="train", step=int(i), log_id=f"batch-{i}")
            model.flush()  # the driver reads next, in another process: it sees committed logs only (README)
            if i == 5 and not os.path.exists(marker):
                open(marker, "w").close()
                raise RuntimeError("worker died after its log committed")
        return batch

    items = [{"i": i} for i in [*range(8), 3]]
    done = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
        log_batch, batch_size=1, concurrency=2, max_retries=3, retry_exceptions=True).take_all()
    assert sorted(r["i"] for r in done) == sorted(r["i"] for r in items)
    assert os.path.exists(marker)  # batch 5 did fail once after logging, and was retried
    run = art.open_store(uri).run("ray", "workers")
    assert sorted(run.logs()["log_id"].to_pylist()) == [f"batch-{i}" for i in range(8)]
    got = art.open_store(uri).sql("SELECT step, count(*) AS n, sum(reward) AS s FROM trajectories "
                                  "GROUP BY step ORDER BY step").to_pylist()
    assert [(r["step"], r["n"], round(r["s"], 6)) for r in got] == [(i, 3, round(3 * i + 0.3, 6)) for i in range(8)]
