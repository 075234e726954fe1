"""scan: the lazy Arrow datasets behind the SQL views (the views themselves are tested in test_sql)."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.dataset as pads

from artstore.read import scan


def _lazy(committed=("a",)):
    table = pa.table({"x": [1, 2, 3], "write_id": ["a", "b", "a"]})
    return scan.LazyDataset(pa.schema([("x", pa.int64())]), lambda: pads.dataset(table),
                            gate=None if committed is None else lambda: pa.array(list(committed)))


def test_only_rows_of_committed_writes_pass():
    assert _lazy().scanner(columns=["x"]).to_table()["x"].to_pylist() == [1, 3]
    assert _lazy().scanner(columns=["x"], filter=pads.field("x") > 1).to_table()["x"].to_pylist() == [3]
    assert _lazy(committed=None).scanner(columns=["x"]).to_table()["x"].to_pylist() == [1, 2, 3]
    assert _lazy(committed=("a", "b")).scanner(columns=["x"]).to_table()["x"].to_pylist() == [1, 2, 3]


def test_scans_without_columns_keep_their_row_count():
    assert _lazy().scanner(columns=[]).to_table().num_rows == 2


def test_a_missing_table_scans_as_empty():
    lazy = scan.LazyDataset(pa.schema([("x", pa.int64())]), lambda: None)
    assert lazy.scanner(columns=["x"]).to_table().num_rows == 0
