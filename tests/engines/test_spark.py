"""Spark (local[2], one session for the module) reads exactly Store.sql's rows, table by table,
through the Python data source over the scan plan."""

from __future__ import annotations

import os
import shutil
import sys

import pytest

import artstore as art
from tests.engines.store import TABLES, TAG, tally, truth

pytest.importorskip("pyspark", reason="PySpark is not installed (pip install 'artstore[spark]')")
if shutil.which("java") is None:
    pytest.skip("no JRE: `make java` installs one", allow_module_level=True)

from artstore.engines import spark as adapter  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def spark():
    from pyspark.sql import SparkSession

    os.environ["PYSPARK_PYTHON"] = sys.executable  # workers need this interpreter's packages
    session = (SparkSession.builder.master("local[2]").appName("artstore-tests")
               .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false").config("spark.sql.shuffle.partitions", "2")
               .getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def test_spark_counts_and_sums_equal_sql_table_by_table(spark, engine_store):
    store = art.open_store(engine_store)
    for table in TABLES:
        assert tally(table, adapter.read(spark, store, table).toArrow()) == truth(store, table), table


def test_spark_as_of_a_tag_with_pushed_columns_and_filter(spark, engine_store):
    store = art.open_store(engine_store)
    as_of = {"q/c": TAG}
    df = adapter.read(spark, store, "trajectories", as_of=as_of, columns=["reward"], filter="step >= 1")
    assert df.columns == ["project", "model", "reward"]
    want = store.sql("SELECT project || '/' || model AS run, count(*) AS n, sum(reward) AS s FROM trajectories "
                     "WHERE step >= 1 GROUP BY ALL", as_of=as_of).to_pylist()
    assert tally("trajectories", df.toArrow()) == {r["run"]: (r["n"], round(r["s"], 6)) for r in want}
