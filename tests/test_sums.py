"""The running sums of a run's metrics builder (artstore.log.sums): a Model log carries what it
added to them in its own journal row, so each small log after a model's first is exactly one
Lance commit and reads no state; the sums read back are exact with one writer (the builder's own
numbers) and with many (totals, a retried log counted once); runs from before the column or
before the journal keep working."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from datetime import timedelta
from pathlib import Path

import lance
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import artstore as art
from artstore.log import journal, sums, upkeep
from artstore.records.metrics_builder import STATE_KEY
from artstore.schema import arrow_schema
from artstore.storage import compaction, datasets, scans, transactions, writes
from tests.conftest import tool_call_trajectory


def _model(base: str, name: str = "m", **kw) -> art.Model:
    return art.Model(name=name, project="p", base_path=base, report_metrics=[], **kw)


def _group(step: int, n: int = 8) -> art.TrajectoryGroup:
    return art.TrajectoryGroup([tool_call_trajectory(j / n, step * 100 + j) for j in range(n)])


def _versions(run_dir: Path) -> dict[str, int]:
    """{table: its latest Lance version} of every table under the run folder."""
    return {p.name: datasets.latest_version(art.open_store(str(run_dir)).location.child(p.name))
            for p in sorted(run_dir.glob("*.lance"))}


def _sums(model: art.Model) -> dict:
    return (model.read_state() or {}).get(STATE_KEY)


@pytest.mark.parametrize("commit", ["group", "sync"])
def test_each_small_log_after_the_first_is_one_commit_of_logs_and_reads_no_state(tmp_path, commit):
    model = _model(str(tmp_path), config={"lr": 0.1}, commit=commit)
    model.merge_state({"dataset": "emails"})  # a state.lance to (not) read
    model.metrics_builder("train").add_cost("train/judge", 0.5)
    model.log_sync([_group(0)], split="train", step=0)
    model.flush()
    run_dir = Path(model.run.location.uri)
    # Moved away: a log that read it would find no sums and start them again from zero.
    os.rename(run_dir / "state.lance", tmp_path / "state.lance")
    for step in range(1, 9):
        for split in ("train", "val"):
            upkeep.wait()  # the previous log's background upkeep (fold, compaction) is done
            before = _versions(run_dir)
            scope = "train" if split == "train" else "eval"  # the builder scope each split flushes
            model.metrics_builder(scope).add_cost(f"{scope}/judge", 0.5)
            record = model.log_sync([_group(step)], split=split, step=step)
            model.flush()  # group: its commit (of this one log) lands; sync: nothing to wait for
            after = _versions(run_dir)
            made = {t: after[t] - before.get(t, 0) for t in after if after[t] != before.get(t, 0)}
            logs = art.open_store(str(tmp_path)).location.child(*run_dir.relative_to(tmp_path).parts, "logs.lance")
            messages = transactions.commit_messages(logs, list(range(before["logs.lance"] + 1, after["logs.lance"] + 1)))
            ours = [v for v, m in messages.items() if (m or "").startswith(("log ", "group commit of 1 logs"))]
            assert ours == [record.logs_version], (step, split, messages)
            # anything else is the upkeep this log asked for, in the background: never state or configs
            assert "state.lance" not in made and "configs.lance" not in made, made
    os.rename(tmp_path / "state.lance", run_dir / "state.lance")
    state = model.read_state()
    assert state["dataset"] == "emails"
    assert state[STATE_KEY]["cum_state"]["costs/cum/all"] == pytest.approx(0.5 * 17)
    assert state[STATE_KEY] == model.metrics_builder().state_dict()  # the builder's own numbers, exactly


def test_sums_continue_exactly_across_model_recreation(tmp_path):
    expected = art.MetricsBuilder("train")
    for step in range(6):
        m = _model(str(tmp_path))
        for cost in (0.1, 0.7 / (step + 3)):
            m.metrics_builder("train").add_cost("train/judge", cost)
            expected.add_cost("train/judge", cost)
        record = m.log_sync([_group(step, n=3)], split="train", step=step)
        row = expected.flush_now()
        assert record.metrics["costs/cum/all"] == row["costs/cum/all"]  # equal floats, not approx
    assert _sums(_model(str(tmp_path)))["cum_state"]["costs/cum/all"] == expected.state_dict()["cum_state"]["costs/cum/all"]
    assert len(_sums(m)["unique_scenario_ids"]) == 6  # one scenario per group


def test_a_sync_model_catches_up_with_another_writers_logs_after_its_own_commit(tmp_path):
    # sync: each log commits before it returns (group mode counts another Model object's queued log
    # once it is committed: tests/test_group_commit.py, README)
    a, b = _model(str(tmp_path), commit="sync"), _model(str(tmp_path), commit="sync")
    for step, m in enumerate((a, b, a, b)):
        m.metrics_builder("train").add_cost("train/judge", 1.0)
        m.log_sync(None, split="train", step=step, metrics={"loss": float(step)})
    # a's second log committed after b's first: a read b's delta right after that commit, so
    # its next log counts b's first; b's second was committed after a's last: read after this one
    for expected in (4.0, 6.0):
        a.metrics_builder("train").add_cost("train/judge", 1.0)
        assert a.log_sync(None, split="train", step=9, metrics={"loss": expected}).metrics["costs/cum/all"] == expected
    assert _sums(b)["cum_state"]["costs/cum/all"] == 6.0


OTHER_WRITER = """
import sys
import artstore as art
from artstore.log import idle_fold
model = art.Model(name="m", project="p", base_path=sys.argv[1], report_metrics=[])
for step in range(10, 13):
    model.metrics_builder("train").add_cost("train/judge", 10.0)
    model.log_sync(None, split="train", step=step, metrics={"loss": 1.0})
idle_fold.drop_waiting()  # no fold at exit: the journal rows stay where they were committed
"""


def _fragments_read(monkeypatch) -> list[int]:
    """The fragment ids of the rows Lance reads on this thread from now on (one entry per read of
    a fragment: scans, takes by address, a fragment's take or scan)."""
    me, reads = threading.get_ident(), []

    def spy(owner, name, fragments_of):
        real = getattr(owner, name)

        def wrapper(self, *a, **k):
            if threading.get_ident() == me:
                reads.extend(fragments_of(self, *a, **k))
            return real(self, *a, **k)
        monkeypatch.setattr(owner, name, wrapper)

    whole = lambda ds: [f.fragment_id for f in ds.get_fragments()]  # noqa: E731
    spy(lance.LanceDataset, "scanner", lambda ds, *a, fragments=None, **k: (
        [f.fragment_id for f in fragments] if fragments is not None else whole(ds)))
    spy(lance.LanceDataset, "_take_rows", lambda ds, addresses, *a, **k: sorted({x >> 32 for x in addresses}))
    spy(lance.LanceDataset, "take", lambda ds, *a, **k: whole(ds))
    for name in ("take", "to_table", "scanner"):
        spy(lance.fragment.LanceFragment, name, lambda f, *a, **k: [f.fragment_id])
    return reads


def test_a_sync_log_after_another_processs_logs_reads_each_of_their_journal_rows_once(tmp_path, monkeypatch):
    # sync: the catch-up runs right after the log's own commit, inside log_sync (a group log
    # catches up at the next log after its group commit)
    a = _model(str(tmp_path), commit="sync")
    a.metrics_builder("train").add_cost("train/judge", 1.0)
    a.log_sync(None, split="train", step=0, metrics={"loss": 1.0})
    upkeep.wait()
    logs = a.run.location.child("logs.lance")
    ours = {f.fragment_id for f in datasets.open_dataset(logs).get_fragments()}
    subprocess.run([sys.executable, "-c", OTHER_WRITER, str(tmp_path)], check=True, timeout=120,
                   env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    # its 3 logs: one fragment per group commit (1 to 3 of them)
    theirs = [f.fragment_id for f in datasets.open_dataset(logs).get_fragments() if f.fragment_id not in ours]
    reads = _fragments_read(monkeypatch)
    a.metrics_builder("train").add_cost("train/judge", 1.0)
    record = a.log_sync(None, split="train", step=1, metrics={"loss": 1.0})
    monkeypatch.undo()
    # the id look-up read the other process's rows, and the sums' catch-up after the commit took
    # its deltas from that read: no fragment read twice
    assert set(theirs) <= set(reads), (theirs, reads)
    assert len(reads) == len(set(reads)), reads
    assert record.metrics["costs/cum/all"] == 2.0  # computed before the commit
    assert a.metrics_builder().state_dict()["cum_state"]["costs/cum/all"] == 32.0  # caught up after it
    a.metrics_builder("train").add_cost("train/judge", 1.0)
    assert a.log_sync(None, split="train", step=2, metrics={"loss": 1.0}).metrics["costs/cum/all"] == 33.0
    assert _sums(_model(str(tmp_path)))["cum_state"]["costs/cum/all"] == 33.0


def _compact_journal(model: art.Model) -> None:
    upkeep.wait()  # the background upkeep of the last log is done: this compaction makes a version
    logs = model.run.location.child("logs.lance")
    before = datasets.latest_version(logs)
    compaction.maintain(logs, "logs", timedelta(days=1), force=True, cleanup=False)
    assert datasets.latest_version(logs) > before  # a compaction commit between two logs


def test_a_log_after_compactions_of_the_journal_reads_no_rows_and_keeps_exact_sums(tmp_path, monkeypatch):
    m = _model(str(tmp_path))
    for step in range(3):
        m.metrics_builder("train").add_cost("train/judge", 1.0)
        m.log_sync(None, split="train", step=step, metrics={"loss": 1.0})
    reads = []
    monkeypatch.setattr(sums.keys, "rows_after", lambda *a, **k: reads.append(a) or pytest.fail("read rows"))
    for step in range(3, 6):
        _compact_journal(m)  # moves the rows into a new fragment: no row added, none to count
        m.metrics_builder("train").add_cost("train/judge", 1.0)
        assert m.log_sync(None, split="train", step=step, metrics={"loss": 1.0}).metrics["costs/cum/all"] == step + 1.0
    assert not reads
    monkeypatch.undo()
    assert _sums(_model(str(tmp_path)))["cum_state"]["costs/cum/all"] == 6.0


def test_a_log_after_a_compaction_and_another_writers_log_counts_that_log(tmp_path):
    a, b = _model(str(tmp_path)), _model(str(tmp_path))
    a.metrics_builder("train").add_cost("train/judge", 1.0)
    a.log_sync(None, split="train", step=0, metrics={"loss": 1.0})
    for step in range(1, 4):
        b.metrics_builder("train").add_cost("train/judge", 10.0)
        b.log_sync(None, split="train", step=step, metrics={"loss": 1.0})
        _compact_journal(a)
        a.metrics_builder("train").add_cost("train/judge", 1.0)
        a.log_sync(None, split="train", step=step, metrics={"loss": 1.0})
        # after its own commit a holds b's logs too, though a compaction came between
        assert a.metrics_builder().state_dict()["cum_state"]["costs/cum/all"] == 11.0 * step + 1.0
    assert _sums(_model(str(tmp_path)))["cum_state"]["costs/cum/all"] == 34.0


def test_many_writers_and_a_racing_retry_end_with_exact_sums(tmp_path):
    barrier = threading.Barrier(4)

    def writer(i: int) -> None:
        m = _model(str(tmp_path))
        barrier.wait()
        for s in range(5):
            m.metrics_builder("train").add_cost("train/judge", 0.25)
            m.log_sync([_group(10 * i + s, n=2)], split="train", step=10 * i + s)
        m.metrics_builder("train").add_cost("train/judge", 100.0)
        m.log_sync(None, split="train", step=99, metrics={"loss": 1.0}, log_id="same-everywhere")

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    state = _sums(_model(str(tmp_path)))["cum_state"]
    assert state["data/cum/num_trajectories"] == 4 * 5 * 2
    assert state["costs/cum/all"] == pytest.approx(4 * 5 * 0.25 + 100.0)  # the retried log once
    assert len(_sums(_model(str(tmp_path)))["unique_scenario_ids"]) == 4 * 5  # one scenario per group
    fresh = _model(str(tmp_path))
    fresh.metrics_builder("train").add_cost("train/judge", 1.0)
    record = fresh.log_sync(None, split="train", step=100, metrics={"loss": 2.0})
    assert record.metrics["costs/cum/all"] == pytest.approx(4 * 5 * 0.25 + 101.0)


async def test_concurrent_logs_of_one_model_count_each_delta_once(tmp_path):
    m = _model(str(tmp_path))

    async def one(step: int) -> None:
        m.metrics_builder("train").add_cost("train/judge", 1.0)
        await m.log(None, split="train", step=step, metrics={"loss": float(step)})

    await asyncio.gather(*(one(s) for s in range(12)))
    assert _sums(m)["cum_state"]["costs/cum/all"] == 12.0
    assert m.metrics_builder().state_dict()["cum_state"]["costs/cum/all"] == 12.0


def test_overwrite_and_merge_state_set_the_sums_as_art_stores_them(tmp_path):
    m = _model(str(tmp_path))
    m.metrics_builder("train").add_cost("train/judge", 2.0)
    m.log_sync(None, split="train", step=1, metrics={"loss": 1.0})
    assert m.merge_state({"k": 1})[STATE_KEY]["cum_state"]["costs/cum/all"] == 2.0  # kept by a merge
    m.overwrite_state({"k": 2})
    assert m.read_state() == {"k": 2}  # replaced, sums too
    m.metrics_builder("train").add_cost("train/judge", 1.0)
    assert m.log_sync(None, split="train", step=2, metrics={"loss": 1.0}).metrics["costs/cum/all"] == 1.0
    m.merge_state({STATE_KEY: {"cum_state": {"costs/cum/all": 10.0}, "unique_scenario_ids": ["x"]}})
    m.metrics_builder("train").add_cost("train/judge", 1.0)
    assert m.log_sync(None, split="train", step=3, metrics={"loss": 1.0}).metrics["costs/cum/all"] == 11.0
    assert m.read_state() == {"k": 2, STATE_KEY: {"cum_state": {"costs/cum/all": 11.0, "costs/cum/train": 2.0,
                                                                  "costs/cum/train/judge": 2.0},
                                                  "unique_scenario_ids": ["x"]}}


def test_a_journal_from_before_the_delta_column_gains_it_and_keeps_its_stored_sums(tmp_path):
    m = _model(str(tmp_path))
    logs = m.run.table_location("logs")
    v2 = pa.schema([f for f in arrow_schema("logs") if f.name != journal.DELTA_COLUMN])
    writes.create(logs, v2.empty_table())  # as artstore made a journal before this column
    sums.store_delta(m.run.location, {"add": {"costs/cum/all": [0.0, 3.0]}})  # its sums, in state.lance
    old_state = datasets.latest_version(m.run.table_location("state"))
    m.metrics_builder("train").add_cost("train/judge", 1.0)
    record = m.log_sync([_group(1)], split="train", step=1)
    assert record.metrics["costs/cum/all"] == 4.0 and record.state_delta_stored
    assert journal.DELTA_COLUMN in datasets.open_dataset(logs).schema.names
    assert datasets.latest_version(m.run.table_location("state")) == old_state  # the delta went into the row
    assert _sums(_model(str(tmp_path)))["cum_state"]["costs/cum/all"] == 4.0
    # an older artstore appending a row without the column still can: its delta goes to state.lance
    row = m.run.logs().slice(0, 1).to_pylist()[0]
    old_row = {**{f.name: None for f in v2}, **{k: v for k, v in row.items() if k in v2.names},
               "log_id": "old-writer", "write_id": "w-old"}
    writes.append(logs, pa.Table.from_pylist([old_row], schema=v2))
    sums.store_delta(m.run.location, {"add": {"costs/cum/all": [3.0, 5.0]}})
    assert _sums(_model(str(tmp_path)))["cum_state"]["costs/cum/all"] == 6.0
    assert m.run.logs().num_rows == 2


def test_a_run_from_before_the_journal_keeps_its_sums_in_state(tmp_path):
    m = _model(str(tmp_path))
    old = pa.schema([f for f in arrow_schema("logs") if f.name not in journal.PAYLOAD_COLUMNS])
    writes.create(m.run.table_location("logs"), old.empty_table())
    for step in range(3):
        m.metrics_builder("train").add_cost("train/judge", 1.0)
        record = m.log_sync([_group(step, n=2)], split="train", step=step)
        assert not record.state_delta_stored and record.metrics["costs/cum/all"] == step + 1
    stored = json.loads(scans.scan(m.run.table_location("state"), columns=["state"])["state"][-1].as_py())
    assert stored[STATE_KEY]["cum_state"]["costs/cum/all"] == 3.0
    assert _sums(_model(str(tmp_path)))["cum_state"]["costs/cum/all"] == 3.0


@settings(max_examples=40, deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from(["costs/train/judge", "data/step_num_scenarios", "time/step_wall_s",
                                                 "data/step_unused_and_dummy_ratio",
                                                 "data/step_nominal_schedule_capacity_tokens"]),
                                st.floats(0, 1e6, allow_nan=False), max_size=4), min_size=1, max_size=6),
       st.lists(st.sets(st.sampled_from("abcdef"), max_size=3), min_size=6, max_size=6))
def test_deltas_of_one_writer_replay_to_its_exact_sums(steps, ids):
    builder = art.MetricsBuilder("train")
    stored = sums.empty()
    for values, new_ids in zip(steps, ids, strict=False):
        before = builder.state_dict()
        for key, value in values.items():
            builder.add_metric(key, value)
        builder.add_data(scenario_ids=sorted(new_ids))
        builder.flush_now()
        stored = sums.apply(stored, json.loads(json.dumps(sums.delta(before, builder.state_dict()))))
        assert stored == builder.state_dict()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=4)), st.lists(st.text(max_size=4)))
def test_applying_a_delta_gives_the_sorted_union_of_scenario_ids(known, new):
    # inserted one by one into the sorted ids: the same as sorting the union of both
    applied = sums.apply(sums.apply(sums.empty(), {"ids": known}), {"ids": new})
    assert applied["unique_scenario_ids"] == sorted({*known, *new})
    before, after = {"cum_state": {}, "unique_scenario_ids": set(known)}, {"cum_state": {}, "unique_scenario_ids": {*known, *new}}
    assert sums.delta(before, after).get("ids", []) == sorted(set(new) - set(known))
