"""scan and views: the Arrow datasets behind the SQL views (the views themselves are tested in test_sql)."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.dataset as pads
import pytest

from artstore.read import view_datasets as views


@pytest.mark.parametrize(("expr", "kept"), [
    ((pads.field("project") == "p1") & (pads.field("step") == 1), ["p1/a", "p1/b"]),
    (pads.field("model").isin(["b"]), ["p1/b"]),
    (~(pads.field("project") == "p1"), ["p2/a"]),
    ((pads.field("project") == "p1") | (pads.field("step") == 2), ["p1/a", "p1/b", "p2/a"]),
    (pads.field("step").is_valid(), ["p1/a", "p1/b", "p2/a"]),
    ((pads.field("project") == "p2") & (pads.field("model") == "b"), []),
])
def test_runs_are_pruned_only_when_the_filter_rules_them_out(expr, kept):
    schema = views.with_run_columns(pa.schema([("step", pa.int64())]))
    assert views.pruned(["p1/a", "p1/b", "p2/a"], expr, schema) == kept


def test_names_are_made_unique_ignoring_case_as_duckdb_does():
    assert views.unique_names(["project", "model", "step", "recorded_at", "Model", "val/Loss", "val/loss", "Step",
                               "val/loss_1"]) == \
        ["project", "model", "step", "recorded_at", "Model_1", "val/Loss", "val/loss_1", "Step_1", "val/loss_1_1"]
