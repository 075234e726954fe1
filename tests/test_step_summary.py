"""The step summary behind Run.best_step, checkpoint("best") and retention's ranking: right
values, never stale (other writers, other processes, as_of), extended by this process's logs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

import artstore as art
from artstore.log.commit import write_log
from artstore.read import step_summary
from artstore.read.run import Run
from artstore.storage import writes

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def model(tmp_path):
    m = art.Model(name="m", project="p", base_path=str(tmp_path), report_metrics=[])
    for step, values in enumerate([[0.2, 0.4], [0.9], [0.5, 0.1, 0.0], [0.6]]):
        for v in values:  # several log calls at one step: the step's mean counts
            m.log_sync(None, split="val", step=step, metrics={"reward": v, "loss": -v})
    return m


def _means_by_hand(run: Run, metric: str) -> dict[int, float]:
    rows = [r for r in run.metrics().to_pylist() if r["name"] == metric]
    steps = sorted({r["step"] for r in rows})
    return {s: sum(r["value"] for r in rows if r["step"] == s) / sum(1 for r in rows if r["step"] == s)
            for s in steps}


@pytest.fixture
def reads(monkeypatch):
    """How many times the metrics table was read from storage."""
    calls = []
    real = Run._metrics

    def spy(self, *args, **kwargs):
        calls.append("metrics")  # a journal's metric values, or the metrics table
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Run, "_metrics", spy)
    return calls


def test_best_step_and_means_match_the_metrics(model):
    run = model.run
    assert run.step_summary().means("val/reward") == pytest.approx(_means_by_hand(run, "val/reward"))
    assert run.best_step("val/reward") == 1
    assert run.best_step("val/loss", mode="min") == 1
    assert run.best_step("val/loss") == 2  # -0.2 at step 2 is the highest mean loss
    with pytest.raises(art.RetentionError, match="no values of 'val/nope'"):
        run.best_step("val/nope")


def test_ties_go_to_the_later_step(tmp_path):
    m = art.Model(name="m", project="p", base_path=str(tmp_path), report_metrics=[])
    for step in (3, 5, 4):
        m.log_sync(None, split="val", step=step, metrics={"reward": 1.0})
    assert m.run.best_step() == 5


def test_warm_calls_read_no_metrics_and_own_logs_extend_the_summary(model, reads):
    run = model.run
    run.best_step()
    assert reads == ["metrics"]  # the first call after opening builds it
    for _ in range(3):
        assert run.best_step() == 1
    model.log_sync(None, split="val", step=7, metrics={"reward": 5.0})
    assert run.best_step() == 7
    assert reads == ["metrics"]  # this process's log extended it: nothing read again
    model.log_sync(None, split="val", step=8, metrics={"reward": 1.0})
    before = run.versions()[-1]["version"]
    run.compact()
    assert run.versions()[-1]["version"] > before  # the logs were compacted: a new version
    assert run.best_step() == 7
    assert reads == ["metrics"]  # a compaction keeps the same committed logs
    assert run.step_summary().means("val/reward") == pytest.approx(_means_by_hand(run, "val/reward"))


def test_own_logs_are_noted_and_extend_the_summary_once_at_the_next_ranking(model, reads, monkeypatch):
    run = model.run
    assert run.best_step() == 1
    extensions = []
    real = step_summary.StepSummary.extended
    monkeypatch.setattr(step_summary.StepSummary, "extended",
                        lambda self, logs: extensions.append(list(logs)) or real(self, extensions[-1]))
    for step, reward in ((7, 5.0), (8, 1.0), (8, 3.0), (9, 0.5)):
        model.log_sync(None, split="val", step=step, metrics={"reward": reward, "loss": -reward})
        run.wait_for_upkeep()  # (a compaction between two logs would end the noted run of versions)
    assert extensions == []  # the logs only noted themselves
    assert run.best_step() == 7
    assert len(extensions) == 1 and [step for step, _ in extensions[0]] == [7, 8, 8, 9]  # all at once
    assert reads == ["metrics"]  # and nothing read again
    assert run.step_summary().means("val/reward") == pytest.approx(_means_by_hand(run, "val/reward"))
    assert run.step_summary().means("val/loss") == pytest.approx(_means_by_hand(run, "val/loss"))


def test_notes_past_the_bound_extend_the_summary_on_the_log_path(model, reads, monkeypatch):
    monkeypatch.setattr(step_summary, "_MAX_NOTES", 2)
    run = model.run
    assert run.best_step() == 1
    uri = run.table_location("logs").uri
    for step in range(10, 16):
        model.log_sync(None, split="val", step=step, metrics={"reward": float(step)})
        run.wait_for_upkeep()
        assert len(step_summary._NOTES.get(uri, (None, []))[1]) <= 2
    assert run.best_step() == 15
    assert reads == ["metrics"]
    assert run.step_summary().means("val/reward") == pytest.approx(_means_by_hand(run, "val/reward"))


@pytest.mark.parametrize("commit", ["group", "sync"])
def test_another_writers_log_is_seen(model, reads, commit):
    run = model.run
    assert run.best_step() == 1
    write_log(run.location, [], split="val", step=9, metrics={"reward": 2.0}, commit_mode=commit)  # not through this model
    assert run.best_step() == 9
    # group: this process's committer noted the row (whichever writer queued it): nothing read again;
    # sync: a write_log outside a Model notes nothing, so the summary reads what is new
    assert reads == (["metrics"] if commit == "group" else ["metrics", "metrics"])


def test_another_process_log_is_seen(model):
    run = model.run
    assert run.best_step() == 1
    code = ("import sys, artstore as art; art.Model(name='m', project='p', base_path=sys.argv[1], "
            "report_metrics=[]).log_sync(None, split='val', step=11, metrics={'reward': 3.0})")
    subprocess.run([sys.executable, "-c", code, run.store.uri], check=True, cwd=ROOT)
    assert run.best_step() == 11


def test_as_of_ranks_the_run_as_it_was(model):
    run = model.run
    model.flush()  # group mode: the step-8 log below is alone in its group commit
    record = model.log_sync(None, split="val", step=8, metrics={"reward": 9.0})
    model.flush()  # its logs_version is set once its commit lands
    before = record.logs_version - 1
    assert run.best_step(as_of=before) == 1
    assert run.best_step() == 8
    assert run.best_step(as_of=before) == 1


def test_values_of_uncommitted_writes_do_not_count(model):
    run = model.run
    orphan = run.read_table("metrics").slice(0, 1)
    orphan = orphan.set_column(orphan.schema.get_field_index("write_id"), "write_id", pa.array(["crashed"]))
    orphan = orphan.set_column(orphan.schema.get_field_index("value"), "value", pa.array([100.0]))
    writes.append(run.table_location("metrics"), orphan)  # a writer died before its logs row
    step_summary._CACHE.clear()
    assert run.best_step() == 1


def test_retention_ranks_with_the_summary_and_a_missing_metric_is_an_error(model, tmp_path):
    run = model.run
    for step in range(4):
        src = tmp_path / f"ck{step}"
        src.mkdir()
        (src / "w.bin").write_bytes(b"x")
        run.save_checkpoint_files(step, src)
    assert run.checkpoint("best", metric="val/reward")[0].step == 1
    plan = run.retention_plan(art.Policy.art("val/reward"))
    assert plan.keep == [1, 3] and plan.delete == [0, 2]
    with pytest.raises(art.RetentionError, match="no values of 'val/nope'.*Nothing was deleted"):
        run.retention_plan(art.Policy.art("val/nope"))


def test_a_run_keeps_a_few_summaries_however_many_versions(model):
    run = model.run
    run.best_step()
    for step in range(10, 20):
        model.log_sync(None, split="val", step=step, metrics={"reward": 0.0})
        run.best_step()
    uri = run.table_location("logs").uri
    assert sum(1 for k in step_summary._CACHE if k[0] == uri) <= step_summary._PER_RUN
    assert run.best_step() == 1
