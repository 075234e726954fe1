"""A kept history extended by more logs (`artstore.read.history.extended`, made in Python for a
few journal rows, and `_with_records` for logs not committed yet) equals the history made of all
the logs at once (`history.table`): the same columns in the same order, the same values, nulls
and NaNs, 0.5.9's metric names read as 0.5.23's."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from artstore.log import journal
from artstore.log.commit import LogRecord
from artstore.read import history
from artstore.schema import arrow_schema
from artstore.storage import Location

_COLUMNS = ["log_id", "write_id", "split", "step", "recorded_at", "metric_names", "metric_values"]
_SCHEMA = pa.schema([arrow_schema("logs").field(c) for c in _COLUMNS])
_NOWHERE = Location.parse("/nonexistent-run")  # journal rows hold their metrics: never read
# new and 0.5.9 spellings (train/group_metric_x is train/group/x), and two names of one metric
_NAMES = ["train/reward", "val/reward", "train/group_metric_x", "train/group/x", "train/data/step_num_scenarios",
          "data/step_num_scenarios", "time/step_wall_s", "loss"]
_VALUES = st.one_of(st.floats(allow_nan=False, allow_infinity=False, width=64), st.just(math.nan))
_LOG = st.tuples(st.integers(0, 50), st.dictionaries(st.sampled_from(_NAMES), _VALUES, max_size=5))


def _rows(logs: list[tuple[int, dict[str, float]]], start: int = 0) -> pa.Table:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    rows = [{"log_id": f"id{start + i:04d}", "write_id": f"w{start + i:04d}", "split": "train", "step": step,
             "recorded_at": t0 + timedelta(seconds=start + i), "metric_names": list(values),
             "metric_values": list(values.values())} for i, (step, values) in enumerate(logs)]
    return journal.mark(pa.Table.from_pylist(rows, schema=_SCHEMA))


def _make(logs: pa.Table) -> pa.Table:
    return history.table(logs, history.metrics(_NOWHERE, logs))


def _same(a: pa.Table, b: pa.Table) -> bool:
    """Equal tables, NaN equal to NaN (Arrow's `equals` holds NaN unequal to itself)."""
    if a.schema != b.schema:
        return False
    return all(str(x) == str(y) for x, y in zip(a.to_pylist(), b.to_pylist(), strict=True))


@settings(max_examples=60, deadline=None)
@given(st.lists(_LOG, max_size=6), st.lists(_LOG, min_size=1, max_size=6))
def test_a_history_extended_by_journal_rows_equals_one_made_of_all(first, more):
    before, after = _rows(first), _rows(more, start=len(first))
    extended = history.extended(_make)(_make(before), after)
    assert extended is not None
    assert _same(extended.combine_chunks(), _make(pa.concat_tables([before, after])))


@settings(max_examples=60, deadline=None)
@given(st.lists(_LOG, max_size=6), st.lists(_LOG, min_size=1, max_size=6))
def test_a_history_extended_by_records_of_queued_logs_equals_one_made_of_all(first, more):
    before, after = _rows(first), _rows(more, start=len(first))
    records = [LogRecord(log_id=r["log_id"], split=r["split"], step=r["step"], num_groups=0, num_trajectories=0,
                         num_exceptions=0, recorded_at=r["recorded_at"],
                         metrics=dict(zip(r["metric_names"], r["metric_values"], strict=True)), write_id=r["write_id"])
               for r in after.to_pylist()]
    extended = history._with_records(_make(before), records)
    assert extended is not None
    assert _same(extended.combine_chunks(), _make(pa.concat_tables([before, after])))


def test_a_metric_named_like_a_history_column_is_made_again_not_extended():
    before, after = _rows([(1, {"loss": 1.0})]), _rows([(2, {"step": 5.0})], start=1)
    assert history.extended(_make)(_make(before), after) is None  # (the caller makes it of all rows)


def test_records_of_queued_logs_read_as_committed_rows_when_the_history_is_made_again():
    from artstore.read import log_snapshot

    schema = arrow_schema("logs")
    committed = _rows([(1, {"loss": 1.0})])
    full = pa.Table.from_pylist(committed.to_pylist(), schema=pa.schema(
        [schema.field(c) for c in log_snapshot.columns(schema)]))
    more = _rows([(2, {"loss": 2.0, "train/group_metric_x": 3.0})], start=1).to_pylist()[0]
    record = LogRecord(log_id=more["log_id"], split="train", step=2, num_groups=1, num_trajectories=2,
                       num_exceptions=0, recorded_at=more["recorded_at"],
                       metrics={"loss": 2.0, "train/group_metric_x": 3.0}, write_id=more["write_id"])
    rows = history._records_table(full, [record])
    assert rows.schema == full.schema and rows["num_trajectories"].to_pylist() == [2]
    assert _same(_make(journal.mark(pa.concat_tables([full, rows]))),
                 _make(pa.concat_tables([committed, _rows([(2, {"loss": 2.0, "train/group_metric_x": 3.0})], 1)])))
