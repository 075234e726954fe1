"""A retry that raced across processes in group mode (`artstore.log.batch_commit._losers`): a
queued log whose log_id another process committed first is still committed (its journal row is
stored), but it loses to the first commit for every reader: the writer's own kept reads
(history, logs, trajectories, the step summary, its SQL) and a fresh process's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pyarrow.compute as pc
import pytest

import artstore as art
from artstore.storage import scans

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A group writer of log "raced", held at each stdin line. "late" first logs "before" and reads the
# run (its reads are kept from there on); both hold "raced" queued (a 600 s gather) until told.
WRITER = textwrap.dedent("""
    import json, sys
    import artstore as art
    from artstore.log import group_commit
    from tests.conftest import tool_call_trajectory
    base, role = sys.argv[1], sys.argv[2]
    model = art.Model(name="m", project="p", base_path=base, report_metrics=[], commit="group")
    group = lambda step, reward: art.TrajectoryGroup([tool_call_trajectory(reward, step * 10 + j) for j in range(3)])
    if role == "late":
        model.log_sync([group(0, 0.1)], split="train", step=0, metrics={"x": 5.0}, log_id="before")
        model.flush()
        assert model.history().num_rows == 1 and model.run.logs().num_rows == 1
        print("ready", flush=True)
        sys.stdin.readline()
    group_commit.GATHER_S = 600.0  # "raced" waits in the queue until the flush below
    x, reward = (9.0, 0.9) if role == "late" else (2.0, 0.5)
    record = model.log_sync([group(1, reward)], split="train", step=1, metrics={"x": x}, log_id="raced")
    print(json.dumps({"created": record.created, "queued": len(group_commit.queued(model.run.table_location("logs")))}),
          flush=True)
    sys.stdin.readline()
    seen = {}
    if role == "late":  # the other's "raced" is committed by now: this read keeps it, its own queued beside
        seen["while_queued"] = model.history()["train/x"].to_pylist()
    model.flush()
    if role == "late":
        run = model.run
        sql = lambda q: art.open_store(base).sql(q).to_pylist()
        seen.update({
            "logs": run.logs()["log_id"].to_pylist(),
            "history": run.history()["train/x"].to_pylist(),
            "rewards": sorted(run.trajectories()["reward"].to_pylist()),
            "best": run.best_step("train/x"),
            "sql_logs": sql("SELECT log_id FROM logs ORDER BY log_id"),
            "sql_rewards": sql("SELECT reward FROM trajectories ORDER BY reward"),
            "sql_history": sql("SELECT step, \\"train/x\\" AS x FROM history ORDER BY step"),
        })
    print(json.dumps(seen), flush=True)
""")


def _writer(base: str, role: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": ROOT, "LANCE_LOG": "error", "ARTSTORE_COMMIT": "group"}
    return subprocess.Popen([sys.executable, "-c", WRITER, base, role], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def _next(proc: subprocess.Popen, say: str | None = None) -> str:
    """Tell `proc` to go on (a line on its stdin) and return the next line it prints."""
    if say is not None:
        proc.stdin.write(say + "\n")
        proc.stdin.flush()
    line = proc.stdout.readline()
    if not line:
        proc.kill()
        raise AssertionError(proc.stderr.read())
    return line


@pytest.mark.slow
def test_a_queued_log_another_process_committed_first_is_stored_but_read_once_with_the_first_content(tmp_path):
    """The loser logged after the winner (so its row sorts after the winner's in a kept read) and
    read the run once the winner was committed, with its own copy still queued: the committer's
    notes of the loser's commit then extend that kept read, unless the loser is told apart."""
    base = str(tmp_path)
    late, first = _writer(base, "late"), None
    try:
        assert _next(late) == "ready\n"
        first = _writer(base, "first")
        assert json.loads(_next(first)) == {"created": True, "queued": 1}
        # logged after the first's, which is not committed yet: the look-up misses it, so its
        # caller is told created as well (README: group vs sync)
        assert json.loads(_next(late, "go")) == {"created": True, "queued": 1}
        assert json.loads(_next(first, "go")) == {}  # committed: "raced" as the first process logged it
        assert first.wait(timeout=120) == 0
        seen = json.loads(_next(late, "go"))
        assert late.wait(timeout=120) == 0
    finally:
        for proc in (late, first):
            if proc is not None:
                proc.kill()

    run = art.open_store(base).run("p", "m")
    journal = scans.scan(run.table_location("logs"), columns=["log_id"])
    assert pc.sum(pc.equal(journal["log_id"], "raced")).as_py() == 2  # the late copy was committed too

    winner_rewards, winner_history = [0.1] * 3 + [0.5] * 3, [5.0, 2.0]
    assert seen["while_queued"] == winner_history  # the queued copy is not shown beside the committed one
    assert seen["logs"] == ["before", "raced"]
    assert seen["history"] == winner_history
    assert seen["rewards"] == winner_rewards
    assert seen["best"] == 0  # step 1's mean of train/x is 2.0 (5.5 with both copies, 9.0 the loser's)
    assert [r["log_id"] for r in seen["sql_logs"]] == ["before", "raced"]
    assert [r["reward"] for r in seen["sql_rewards"]] == winner_rewards
    assert seen["sql_history"] == [{"step": 0, "x": 5.0}, {"step": 1, "x": 2.0}]

    # a fresh process reads the same
    assert run.logs()["log_id"].to_pylist() == ["before", "raced"]
    assert run.history()["train/x"].to_pylist() == winner_history
    assert sorted(run.trajectories()["reward"].to_pylist()) == winner_rewards
    store = art.open_store(base)
    assert store.sql("SELECT count(*) AS n FROM logs WHERE log_id = 'raced'")["n"].to_pylist() == [1]
    assert store.sql("SELECT count(*) AS n FROM trajectories")["n"].to_pylist() == [6]
