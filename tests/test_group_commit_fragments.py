"""One group commit, one journal fragment (`artstore.log.batch_commit`): the rows of every log of a
batch are written as ONE fragment of the run's `logs.lance`, in log order, sharing one commit
sequence (the fragment's id; readers order by (commit_seq, row address)). What that must keep:
each log of the batch reads back as itself (history, logs, its step's groups and trajectories)
in the writing process, a fresh read and another process; a retry of any of them stores
nothing; the writer's first reads after its own batch read no journal fragment back; and a row
that lost to an earlier committed copy of its log_id inside such a batch is read once, as the
first committed copy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from collections import Counter

import artstore as art
from artstore.log import batch_commit, run_committer
from artstore.read import latest_logs
from artstore.storage import datasets, fragments, key_columns, keys, scans
from tests.conftest import count_calls, tool_call_trajectory

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # this file's checkout (its tests package)
ART_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(art.__file__)))  # the artstore this process runs
BATCH = range(1, 6)  # the steps of the five logs committed together (step 0 is committed before)


def _model(base: str, **kw) -> art.Model:
    return art.Model(name="m", project="p", base_path=base, report_metrics=[], commit="group", **kw)


def _groups(step: int, reward: float | None = None) -> list[art.TrajectoryGroup]:
    """Step `step`'s groups: told apart from every other step's by their sizes (1 + step % 3
    trajectories, then 2), rewards and prompts, so a log read with another's payload shows."""
    base = step if reward is None else reward
    sizes = (1 + step % 3, 2)
    return [art.TrajectoryGroup([tool_call_trajectory(base + 0.01 * (10 * g + j), step * 100 + 10 * g + j)
                                 for j in range(n)]) for g, n in enumerate(sizes)]


def _log(model: art.Model, step: int, **kw) -> art.LogRecord:
    return model.log_sync(_groups(step), split="train" if step % 2 else "val", step=step,
                          metrics={"x": float(step)}, log_id=f"log-{step}", **kw)


def _batched(base: str, monkeypatch) -> tuple[art.Model, list[art.LogRecord]]:
    """A run of one committed log (step 0, its history read once: kept), then the five logs of
    BATCH gathered into one group commit (nothing commits until the flush)."""
    model = _model(base)
    _log(model, 0)
    model.flush()
    assert model.history()["step"].to_pylist() == [0]
    monkeypatch.setattr(run_committer, "GATHER_S", 60.0)
    records = [_log(model, step) for step in BATCH]
    assert all(r.created and r.logs_version is None for r in records)  # queued, all five
    model.flush()
    return model, records


def _dumped(groups: list[art.TrajectoryGroup]) -> list[dict]:
    return [g.model_dump(mode="json") for g in groups]


def _answers(run: art.Run, as_of: int | None = None) -> dict:
    """What a reader of `run` is answered: logs, history, and each step's groups and rewards."""
    return {
        "logs": run.logs(as_of=as_of)["log_id"].to_pylist(),
        "history": [[r["step"], r.get("train/x"), r.get("val/x")] for r in run.history(as_of=as_of).to_pylist()],
        "groups": {str(s): _dumped(run.groups(step=s, as_of=as_of)) for s in (0, *BATCH)},
        "rewards": {str(s): run.trajectories(step=s, as_of=as_of)["reward"].to_pylist() for s in (0, *BATCH)},
    }


def _expected(steps=(0, *BATCH)) -> dict:
    """`_answers` of a run holding the logs of `steps` as `_log` logged them (no others)."""
    return {
        "logs": [f"log-{s}" for s in steps],
        "history": [[s, float(s) if s % 2 else None, None if s % 2 else float(s)] for s in steps],
        "groups": {str(s): _dumped(_groups(s)) if s in steps else [] for s in (0, *BATCH)},
        "rewards": {str(s): [t.reward for g in _groups(s) for t in g.trajectories] if s in steps else []
                    for s in (0, *BATCH)},
    }


READER = textwrap.dedent("""
    import json, sys
    import artstore as art
    from tests.test_group_commit_fragments import _answers
    print(json.dumps(_answers(art.open_store(sys.argv[1]).run("p", "m"))))
""")


def _in_another_process(code: str, base: str) -> str:
    """Run `code` (its sys.argv[1]: `base`) in a fresh Python process on the artstore this process
    imported, with this file's tests package (they may be two checkouts); its stdout."""
    prelude = ("import sys\nimport artstore\nassert artstore.__file__ == sys.argv.pop(3), artstore.__file__\n"
               "sys.path.insert(0, sys.argv.pop(1))\n")
    env = {**os.environ, "PYTHONPATH": ART_ROOT, "LANCE_LOG": "error"}
    out = subprocess.run([sys.executable, "-c", prelude + code, ROOT, base, art.__file__], capture_output=True,
                         text=True, env=env, cwd=base, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def _journal_rows(model: art.Model, version: int):
    """(fragment id, rows) of each fragment of the journal at `version`, and its rows in commit
    order (log_id, step, commit sequence) as `keys.first_per_key` reads them."""
    loc = model.run.table_location("logs")
    ds = datasets.open_dataset(loc, version=version)
    return fragments.fragment_rows(loc, ds), keys.first_per_key(loc, ds, "log_id", columns=["log_id", "step", keys.SEQ])


def test_a_group_commit_of_several_logs_writes_them_as_one_fragment_in_log_order(tmp_path, monkeypatch):
    model, records = _batched(str(tmp_path), monkeypatch)
    versions = {r.logs_version for r in records}
    assert len(versions) == 1 and None not in versions  # one commit
    (version,) = versions
    before, _ = _journal_rows(model, version - 1)
    after, rows = _journal_rows(model, version)
    new = [f for f in after if f not in before]
    assert len(new) == 1 and new[0][1] == len(BATCH), after  # ONE fragment of five rows
    assert new[0] == after[-1]  # the newest
    batch = rows.to_pylist()[1:]
    assert [r["log_id"] for r in batch] == [r.log_id for r in records]  # in log order
    assert [r["step"] for r in batch] == list(BATCH)
    assert {r[keys.SEQ] for r in batch} == {new[0][0]}  # one sequence: the fragment's id
    assert rows[keys.SEQ][0].as_py() < new[0][0]  # after the log committed before it

    expected = _expected()
    assert _answers(model.run) == expected  # the writing process (kept reads, notes)
    assert _answers(model.run, as_of=version) == expected  # a read of that version, no kept snapshot
    assert _answers(art.open_store(str(tmp_path)).run("p", "m")) == expected
    assert json.loads(_in_another_process(READER, str(tmp_path))) == expected
    assert _answers(model.run, as_of=version - 1) == _expected((0,))  # the version before: none of the five


RETRIER = textwrap.dedent("""
    import json, sys
    import artstore as art
    from tests.test_group_commit_fragments import BATCH, _log, _model
    model = _model(sys.argv[1])
    print(json.dumps([_log(model, step).created for step in BATCH]))
    model.flush()
""")


def test_a_retry_of_each_log_of_a_one_fragment_batch_stores_nothing(tmp_path, monkeypatch):
    model, records = _batched(str(tmp_path), monkeypatch)
    loc = model.run.table_location("logs")
    history = model.history()
    again = [_log(model, step) for step in BATCH]  # the same Model object
    other = _model(str(tmp_path))  # a new Model object of the same run, this process
    fresh = [_log(other, step) for step in BATCH]
    other.flush()
    model.flush()
    assert [r.created for r in again] == [r.created for r in fresh] == [False] * len(BATCH)
    assert [r.log_id for r in fresh] == [r.log_id for r in records]
    assert json.loads(_in_another_process(RETRIER, str(tmp_path))) == [False] * len(BATCH)
    per_id = Counter(scans.scan(loc, columns=["log_id"])["log_id"].to_pylist())
    assert per_id == Counter({f"log-{s}": 1 for s in (0, *BATCH)})  # one row each: nothing stored again
    assert model.history().equals(history)
    assert _answers(model.run) == _answers(art.open_store(str(tmp_path)).run("p", "m")) == _expected()


def test_a_step_read_of_each_log_of_one_fragment_returns_its_own_groups(tmp_path, monkeypatch):
    model, _ = _batched(str(tmp_path), monkeypatch)
    # right after the flush: the committer's notes and kept rows answer (no log's payload for another's)
    for step in BATCH:
        assert _dumped(model.run.groups(step=step)) == _dumped(_groups(step)), step
        split = "train" if step % 2 else "val"
        assert _dumped(model.run.groups(split=split, step=step)) == _dumped(_groups(step)), step
        assert model.run.groups(split="val" if step % 2 else "train", step=step) == []
        assert model.run.trajectories(step=step)["reward"].to_pylist() == \
            [t.reward for g in _groups(step) for t in g.trajectories], step
    store_run = art.open_store(str(tmp_path)).run("p", "m")
    for step in BATCH:
        assert _dumped(store_run.groups(step=step)) == _dumped(_groups(step)), step
    assert json.loads(_in_another_process(READER, str(tmp_path)))["groups"] == _expected()["groups"]


def test_reads_between_a_one_fragment_commit_and_its_notes_return_each_logs_own_rows(tmp_path, monkeypatch):
    """A read that finds the batch committed before the committer told its notes makes the rows
    from the batch's records (`group_commit.in_flight`), reading nothing back: each row its own
    log's."""
    base, seen, reads = str(tmp_path), [], []
    real_tell, real_read = batch_commit._tell, latest_logs._read
    reader: set[int] = set()

    def read_then_tell(*args):  # in the committer thread: the commit landed, nothing told yet
        if len(args[-1]) == len(BATCH):  # the batch (not step 0's commit)
            reader.add(threading.get_ident())
            run = art.open_store(base).run("p", "m")
            seen.append((run.history()["step"].to_pylist(), run.logs()["log_id"].to_pylist(),
                         {s: _dumped(run.groups(step=s)) for s in BATCH}))
            reader.clear()
        real_tell(*args)

    monkeypatch.setattr(batch_commit, "_tell", read_then_tell)
    monkeypatch.setattr(latest_logs, "_read", lambda *a, **k: (threading.get_ident() in reader and reads.append(1))
                        or real_read(*a, **k))
    model, _ = _batched(base, monkeypatch)
    assert len(seen) == 1
    steps, ids, groups = seen[0]
    assert steps == [0, *BATCH] and ids == [f"log-{s}" for s in (0, *BATCH)]
    assert groups == {s: _dumped(_groups(s)) for s in BATCH}
    assert reads == []  # the landed rows were made from the batch's records
    assert _answers(model.run) == _expected()


def test_the_first_reads_after_own_one_fragment_batch_read_no_journal_fragment(tmp_path, monkeypatch):
    model, records = _batched(str(tmp_path), monkeypatch)
    reads = count_calls(monkeypatch, (latest_logs, "_read"), (fragments, "take_rows"), (key_columns, "rows_with"),
                   (fragments, "read_fragments"))
    history = model.history()
    assert reads == dict.fromkeys(reads, 0)  # the kept history extended by the noted rows
    for step in BATCH:
        assert _dumped(model.run.groups(step=step)) == _dumped(_groups(step)), step
    assert reads == dict.fromkeys(reads, 0)  # the payloads the committer kept of its commit
    assert history["step"].to_pylist() == [0, *BATCH]
    assert model.run.logs()["log_id"].to_pylist() == [f"log-{s}" for s in (0, *BATCH)]
    assert reads == dict.fromkeys(reads, 0)
    assert _answers(model.run) == _answers(model.run, as_of=records[0].logs_version) == _expected()


SYNC_WRITER = textwrap.dedent("""
    import sys
    import artstore as art
    from tests.test_group_commit_fragments import _groups
    model = art.Model(name="m", project="p", base_path=sys.argv[1], report_metrics=[], commit="sync")
    record = model.log_sync(_groups(2, reward=9.0), split="train", step=2, metrics={"x": 9.0}, log_id="log-2")
    assert record.created
""")


def test_a_row_that_lost_to_an_earlier_committed_copy_inside_a_one_fragment_batch_is_read_once(tmp_path,
                                                                                               monkeypatch):
    """Steps 1-3 are queued here (their look-ups find no log-2 yet), another process commits its
    own log-2 first, then this process's batch lands as one fragment whose middle row lost: every
    reader reads log-2 once, as the other process logged it, this process's too, also between the
    batch's commit and its notes (`group_commit.in_flight` holds the loser's record then)."""
    base = str(tmp_path)
    winner = _dumped(_groups(2, reward=9.0))

    def check(run: art.Run) -> None:
        assert Counter(run.logs()["log_id"].to_pylist()) == Counter(f"log-{s}" for s in range(4))
        history = run.history()
        assert sorted(history["step"].to_pylist()) == [0, 1, 2, 3]
        assert {r["step"]: r["train/x"] for r in history.to_pylist() if r["step"]} == {1: 1.0, 2: 9.0, 3: 3.0}
        assert _dumped(run.groups(step=2)) == winner
        assert run.trajectories(step=2)["reward"].to_pylist() == [t["reward"] for g in winner for t in g["trajectories"]]
        for step in (1, 3):
            assert _dumped(run.groups(step=step)) == _dumped(_groups(step)), step

    between: list[str] = []
    real_tell = batch_commit._tell

    def check_then_tell(*args):  # in the committer thread: the batch landed, nothing told yet
        if len(args[-1]) == 3:
            try:
                check(art.open_store(base).run("p", "m"))
                between.append("ok")
            except AssertionError as e:  # (raised here it would fail the committed round)
                between.append(repr(e))
        real_tell(*args)

    model = _model(base)
    _log(model, 0)
    model.flush()
    assert model.history()["step"].to_pylist() == [0]  # kept: the committer's notes would extend it
    monkeypatch.setattr(run_committer, "GATHER_S", 60.0)
    monkeypatch.setattr(batch_commit, "_tell", check_then_tell)
    records = [_log(model, step) for step in (1, 2, 3)]
    assert all(r.created for r in records)  # told created: the other copy is not committed yet
    _in_another_process(SYNC_WRITER, base)  # commits log-2 first
    model.flush()
    loc = model.run.table_location("logs")
    (version,) = {r.logs_version for r in records}
    frags, rows = _journal_rows(model, version)
    assert frags[-1][1] == 3  # this process's batch: one fragment, the loser's row stored in it
    assert Counter(scans.scan(loc, columns=["log_id"])["log_id"].to_pylist())["log-2"] == 2
    assert [r["log_id"] for r in rows.to_pylist()] == ["log-0", "log-2", "log-1", "log-3"]  # first committed wins

    assert between == ["ok"]
    check(model.run)  # the writer: its notes told the loser apart
    check(art.open_store(base).run("p", "m"))
    other = json.loads(_in_another_process(READER, base))
    assert other["groups"]["2"] == winner
    assert Counter(other["logs"]) == Counter(f"log-{s}" for s in range(4))
