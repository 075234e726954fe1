"""Applying retention: delete_checkpoints (ART's rule), backends, fsspec, stale plans, crash repair."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections import defaultdict
from pathlib import Path

import fsspec
import pytest

import artstore as art
from artstore.checkpoints.pruning import RetentionLog

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path("/work/shared/fixtures/art")
if not FIXTURES.exists():
    FIXTURES = REPO / "shared" / "fixtures" / "art"


def new_model(base_path, name="agent-001"):
    return art.TrainableModel(name=name, project="fixture-proj", base_model="Qwen/Qwen2.5-0.5B-Instruct",
                              base_path=base_path, report_metrics=[])


def add_checkpoint(model, step, nbytes=64):
    d = Path(model.run.checkpoint_uri(step))
    d.mkdir(parents=True, exist_ok=True)
    (d / "adapter_model.safetensors").write_bytes(b"w" * nbytes)
    (d / "adapter_config.json").write_text("{}")
    return model.register_checkpoint(step)


def folders(model):
    root = Path(model.run.location.child("checkpoints").uri)
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def statuses(model):
    return {c.step: c.status for c in model.run.checkpoints_table().list()}


def log_values(model, values, metric="reward", split="val"):
    for step, v in values.items():
        model.log_sync(None, split=split, metrics={metric: v}, step=step)


# -- ART's own run ---------------------------------------------------------------------------------
@pytest.mark.parametrize("version", ["art-0.5.9", "art-0.5.23"])
async def test_art_fixture_keeps_what_art_kept(base_path, version):
    run_dir = FIXTURES / version / "fixture-proj" / "models" / "agent-001"
    rows = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines() if line.strip()]
    model = new_model(base_path)
    for row in rows:
        step = row.pop("step")
        row.pop("recorded_at")
        split = "val" if any(k.startswith("val/") for k in row) else "train"
        model.log_sync(None, split=split, metrics=row, step=step)
    for s in range(4):  # ART had a checkpoint per step; its delete_checkpoints left 0002 and 0003
        add_checkpoint(model, s)

    await model.delete_checkpoints()  # best_checkpoint_metric="val/reward"

    # ART's rule, computed plainly from its history.jsonl: the latest and the best per-step mean
    per_step = defaultdict(list)
    for row in (json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()):
        if "val/reward" in row:
            per_step[row["step"]].append(row["val/reward"])
    best = max(per_step, key=lambda s: sum(per_step[s]) / len(per_step[s]))
    art_kept = sorted({best, 3})
    survived = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert survived == [f"{s:04d}" for s in art_kept] == ["0002", "0003"]
    assert folders(model) == survived
    assert statuses(model) == {0: "deleted", 1: "deleted", 2: "ready", 3: "ready"}
    c0 = model.run.checkpoints_table().get(0)
    assert c0.deleted_at is not None and "not best 1: val/reward" in c0.deleted_reason
    assert art.Policy.from_json(c0.deleted_by_policy) == art.Policy.art("val/reward")


async def test_metric_first_seen_after_100_history_rows_keeps_the_true_best(base_path):
    model = new_model(base_path)
    for step in range(100):
        model.log_sync(None, split="train", metrics={"loss": 1.0 / (step + 1)}, step=step)
    late = {100: 0.2, 101: 0.3, 102: 0.9, 103: 0.4, 104: 0.5}
    for step, v in late.items():
        model.log_sync(None, split="train", metrics={"loss": 0.01}, step=step)
        model.log_sync(None, split="val", metrics={"accuracy": v}, step=step)
    assert model.history().num_rows == 110
    for s in (100, 101, 102, 103, 104):
        add_checkpoint(model, s)
    plan = await model.delete_checkpoints("val/accuracy")
    assert plan.keep == [102, 104] and folders(model) == ["0102", "0104"]


async def test_missing_metric_or_history_is_an_error_that_deletes_nothing(base_path):
    model = new_model(base_path)
    for s in range(3):
        add_checkpoint(model, s)
    with pytest.raises(art.RetentionError, match="metrics logged: none"):
        await model.delete_checkpoints()  # no history at all
    log_values(model, {0: 1.0, 1: 2.0, 2: 0.5}, metric="loss", split="train")
    with pytest.raises(art.RetentionError, match="no values of 'val/reward'"):
        await model.delete_checkpoints()
    with pytest.raises(art.RetentionError):
        model.run.apply_retention(art.Policy(rules=(art.KeepLast(n=1), art.KeepBest(metric="val/reward"))))
    assert folders(model) == ["0000", "0001", "0002"]
    assert set(statuses(model).values()) == {"ready"}
    assert RetentionLog(model.run.location).open_intents() == []


async def test_val_every_4_steps_keeps_exactly_best_and_latest(base_path):
    """The ordinary loop: a checkpoint every step, val every 4 steps. Checkpoints with no
    val/reward at their own step are deleted too, as ART deletes them: 20 steps leave 2."""
    model = new_model(base_path)
    val = {s: 0.9 - abs(s - 12) * 0.05 for s in range(0, 21, 4)}  # best at 12
    for step in range(1, 21):
        add_checkpoint(model, step)
        model.log_sync(None, split="train", metrics={"reward": 0.1 * step}, step=step)
        if step in val:
            model.log_sync(None, split="val", metrics={"reward": val[step]}, step=step)
    plan = await model.delete_checkpoints()
    assert plan.keep == [12, 20] and folders(model) == ["0012", "0020"]
    assert plan.delete == [s for s in range(1, 21) if s not in (12, 20)]
    assert "no val/reward at step 5" in plan.decision(5).reason
    assert "not best 1" in plan.decision(8).reason
    assert [s for s, st in statuses(model).items() if st == "ready"] == [12, 20]


async def test_best_step_without_a_checkpoint_leaves_only_the_latest(base_path):
    """ART ranks every step of the history: when the best has no checkpoint (step 0, the base
    model), only the latest is kept."""
    model = new_model(base_path)
    log_values(model, {0: 0.9, 1: 0.2, 2: 0.5, 3: 0.3})
    for s in (1, 2, 3):
        add_checkpoint(model, s)
    plan = await model.delete_checkpoints()
    assert plan.keep == [3] and plan.delete == [1, 2] and folders(model) == ["0003"]


class FolderBackend:
    """A user's backend that writes checkpoint folders itself and never tells the store (as a
    custom ART backend does): its step is its newest folder, and it deletes folders itself."""

    def __init__(self):
        self.calls = []

    async def register(self, model):
        pass

    async def _get_step(self, model):
        return max([int(n) for n in folders(model)], default=0)

    async def _delete_checkpoint_files(self, model, steps_to_keep):
        self.calls.append(sorted(steps_to_keep))
        root = Path(model.run.location.child("checkpoints").uri)
        for d in root.iterdir():
            if int(d.name) not in steps_to_keep:
                for f in d.iterdir():
                    f.unlink()
                d.rmdir()


def write_folder(model, step):
    d = Path(model.run.checkpoint_uri(step))
    d.mkdir(parents=True)
    (d / "adapter_config.json").write_text('{"r": 8}')


async def test_folders_without_rows_are_deleted_through_the_backend_and_get_rows(base_path):
    model = new_model(base_path)
    backend = FolderBackend()
    await model.register(backend)
    log_values(model, {0: 0.1, 2: 0.8, 4: 0.3})
    for s in range(1, 6):
        write_folder(model, s)
    assert statuses(model) == {}
    plan = model.retention_plan(art.Policy.art())  # a dry run sees them, and writes nothing
    assert plan.keep == [2, 5] and statuses(model) == {}
    plan = await model.delete_checkpoints()
    assert backend.calls == [[2, 5]]
    assert plan.delete == [1, 3, 4] and folders(model) == ["0002", "0005"]
    assert statuses(model) == {1: "deleted", 2: "ready", 3: "deleted", 4: "deleted", 5: "ready"}
    assert model.run.checkpoints_table().get(2).size_bytes == len('{"r": 8}')
    assert await model.get_step() == 5


async def test_folders_without_rows_and_without_a_backend_are_deleted_through_fsspec(base_path):
    model = new_model(base_path)
    log_values(model, {1: 0.9, 2: 0.1, 3: 0.2})
    for s in (1, 2, 3):
        write_folder(model, s)
    plan = await model.delete_checkpoints()
    assert plan.keep == [1, 3] and folders(model) == ["0001", "0003"]
    assert statuses(model) == {1: "ready", 2: "deleted", 3: "ready"}


async def test_a_keep_best_policy_still_keeps_unscored_checkpoints_by_default(base_path):
    model = new_model(base_path)
    log_values(model, {0: 0.1, 2: 0.8, 4: 0.3})
    for s in range(5):
        add_checkpoint(model, s)
    policy = art.Policy(rules=(art.KeepLast(n=1), art.KeepBest(metric="val/reward")))
    assert model.retention_plan(policy).delete == [0]  # 1 and 3 are unranked: kept
    delete = art.Policy(rules=(art.KeepLast(n=1), art.KeepBest(metric="val/reward", unscored="delete")))
    assert model.retention_plan(delete).delete == [0, 1, 3]


class FakeBackend:
    """ART's backend interface; deletes every checkpoint folder not kept, as ART's LocalBackend."""

    def __init__(self):
        self.calls = []

    async def register(self, model):
        pass

    async def _get_step(self, model):
        return model.get_step_sync()

    async def _train_model(self, model, groups, config, dev_config, verbose=False):
        yield {"loss": 0.0}

    async def _delete_checkpoint_files(self, model, steps_to_keep):
        self.calls.append(list(steps_to_keep))
        root = Path(model.run.location.child("checkpoints").uri)
        for d in root.iterdir():
            if int(d.name) not in steps_to_keep:
                for f in d.iterdir():
                    f.unlink()
                d.rmdir()


async def test_with_a_backend_files_are_deleted_through_it(base_path):
    model = new_model(base_path)
    backend = FakeBackend()
    await model.register(backend)
    log_values(model, {0: 0.1, 1: 0.8, 2: 0.3, 3: 0.2, 4: 0.5})
    for s in range(5):
        add_checkpoint(model, s)
    model.run.pin_checkpoint(0)
    plan = await model.delete_checkpoints()
    assert backend.calls == [[0, 1, 4]]
    assert plan.delete == [2, 3] and folders(model) == ["0000", "0001", "0004"]
    assert statuses(model) == {0: "ready", 1: "ready", 2: "deleted", 3: "deleted", 4: "ready"}
    assert await model.get_step() == 4


async def test_nothing_is_deleted_while_the_newest_checkpoint_is_saving(base_path):
    model = new_model(base_path)
    log_values(model, {0: 0.1, 1: 0.8, 2: 0.3})
    for s in range(2):
        add_checkpoint(model, s)
    model.run.checkpoints_table().begin(2)
    plan = await model.delete_checkpoints()
    assert plan.delete == [] and "still saving" in plan.blocked
    assert set(statuses(model).values()) == {"ready", "saving"} and folders(model) == ["0000", "0001"]
    add_checkpoint(model, 2)
    assert (await model.delete_checkpoints()).delete == [0]


async def test_a_stale_plan_is_refused(base_path):
    model = new_model(base_path)
    log_values(model, {0: 0.1, 1: 0.8, 2: 0.3})
    for s in range(3):
        add_checkpoint(model, s)
    plan = model.retention_plan(art.Policy(rules=(art.KeepLast(n=1),)))
    assert plan.delete == [0, 1]
    model.run.pin_checkpoint(1)
    with pytest.raises(art.RetentionError, match="stale.*1 is now pinned"):
        await model.apply_retention(plan)
    assert folders(model) == ["0000", "0001", "0002"]
    fresh = model.retention_plan(art.Policy(rules=(art.KeepLast(n=1),)))
    assert (await model.apply_retention(fresh)).delete == [0] and folders(model) == ["0001", "0002"]


def test_fsspec_deletion_of_files_in_a_bucket(base_path):
    model = new_model(base_path)
    log_values(model, {1: 0.5, 2: 0.9, 3: 0.1})
    fs = fsspec.filesystem("memory")
    bucket = f"memory://prune-{uuid.uuid4().hex}"
    for s in (1, 2, 3):
        fs.pipe(f"{bucket}/{s:04d}/adapter_model.safetensors", b"w" * 10)
        model.register_checkpoint(s, uri=f"{bucket}/{s:04d}", linked=True)
    plan = model.run.apply_retention(art.Policy.art())
    assert plan.delete == [1]
    assert not fs.exists(f"{bucket}/0001") and fs.exists(f"{bucket}/0002") and fs.exists(f"{bucket}/0003")


def test_sql_rule_over_the_metrics_view(base_path):
    model = new_model(base_path)
    log_values(model, {0: 0.1, 1: 0.8, 2: 0.3, 3: 0.9, 4: 0.2})
    log_values(model, {0: 5.0, 1: 4.0, 2: 1.0, 3: 3.0, 4: 2.0}, metric="loss", split="train")
    for s in range(5):
        add_checkpoint(model, s)
    query = ("SELECT step FROM metrics WHERE model = 'agent-001' AND name = 'train/loss' "
             "AND value < 2.5 AND step IN (SELECT step FROM checkpoints WHERE status = 'ready')")
    plan = model.run.apply_retention(art.Policy(rules=(art.KeepSql(query=query),)))
    assert plan.keep == [2, 4] and plan.decision(2).reason == "returned by the SQL rule"
    with pytest.raises(art.SqlError):
        model.retention_plan(art.Policy(rules=(art.KeepSql(query="DELETE FROM metrics"),)))


def test_stored_policy_is_the_default(base_path):
    model = new_model(base_path)
    log_values(model, {0: 0.1, 1: 0.8, 2: 0.3})
    for s in range(3):
        add_checkpoint(model, s)
    with pytest.raises(art.RetentionError, match="no stored retention policy"):
        model.retention_plan()
    # window of 2: 0.1, 0.45, 0.55 -> the best two are 2 and 1
    policy = art.Policy(rules=(art.KeepBest(metric="val/reward", k=2, smooth=art.Window(size=2)),))
    model.run.set_retention_policy(policy)
    assert model.run.retention_policy() == policy
    assert model.run.apply_retention().delete == [0]


def test_a_half_deleted_checkpoint_is_finished_by_the_next_prune(base_path):
    model = new_model(base_path)
    log_values(model, {0: 0.1, 1: 0.8, 2: 0.3})
    for s in range(3):
        add_checkpoint(model, s)
    plan = model.retention_plan(art.Policy.art())
    assert plan.delete == [0]
    RetentionLog(model.run.location).record_intent(plan)  # a prune that died mid-way through 0000
    (Path(model.run.checkpoint_uri(0)) / "adapter_model.safetensors").unlink()
    after = model.run.apply_retention(art.Policy(rules=(art.KeepLast(n=3),)))  # keeps everything
    assert after.delete == []
    assert folders(model) == ["0001", "0002"] and statuses(model)[0] == "deleted"
    assert "(completed after an interrupted prune)" in model.run.checkpoints_table().get(0).deleted_reason
    assert RetentionLog(model.run.location).open_intents() == []


def test_a_save_abandoned_past_its_lease_is_deleted_by_the_next_prune(base_path, monkeypatch):
    from datetime import timedelta

    from artstore.checkpoints import pruning
    from artstore.storage import writes

    model = new_model(base_path)
    log_values(model, {0: 0.1, 1: 0.8, 2: 0.3, 3: 0.5})
    for s in (0, 1):
        add_checkpoint(model, s)
    table = model.run.checkpoints_table()
    # Begun and written ten minutes ago against a one-minute lease (was: a 1.2 s sleep past a 1 s
    # lease, so on a loaded machine the prune began over 1 s after save 3's write and save 4's
    # begin, and took them for abandoned too).
    real_now, ago = writes.now_utc, timedelta(minutes=10)
    with monkeypatch.context() as m:
        m.setattr(writes, "now_utc", lambda: real_now() - ago)
        for s in (2, 3):  # saves killed after writing part of their files
            table.begin(s)
    for s in (2, 3):
        d = Path(model.run.checkpoint_uri(s))
        d.mkdir(parents=True)
        (d / "adapter_model.safetensors").write_bytes(b"w" * 10)
    then = time.time() - ago.total_seconds()
    os.utime(Path(model.run.checkpoint_uri(2)) / "adapter_model.safetensors", (then, then))
    (Path(model.run.checkpoint_uri(3)) / "adapter_model.safetensors").write_bytes(b"w" * 20)  # still written
    table.begin(4)  # a save that just began
    keep_all = art.Policy(rules=(art.KeepLast(n=10),))
    pruning.apply(model.run, keep_all, pruning.store_deleter(model.run), save_lease=timedelta(minutes=1))
    assert statuses(model) == {0: "ready", 1: "ready", 2: "deleted", 3: "saving", 4: "saving"}
    assert folders(model) == ["0000", "0001", "0003"]
    assert "abandoned save" in table.get(2).deleted_reason
    model.run.apply_retention(keep_all)  # the default lease (an hour): nothing more is abandoned
    assert statuses(model)[3] == "saving"


# -- a prune killed with SIGKILL ---------------------------------------------------------------------
PRUNE_SCRIPT = textwrap.dedent("""
    import asyncio, sys
    import artstore as art
    model = art.TrainableModel(name="agent-001", project="fixture-proj", base_model="b",
                               base_path=sys.argv[1], report_metrics=[])
    asyncio.run(model.delete_checkpoints())
    print("finished")
""")


def run_and_kill_at(base_path, tmp_path, point):
    signal_file = tmp_path / f"paused-{point}"
    env = {**os.environ, "PYTHONPATH": str(REPO), "LANCE_LOG": "error", "ARTSTORE_PAUSE_AT": point,
           "ARTSTORE_PAUSE_SIGNAL": str(signal_file)}
    proc = subprocess.Popen([sys.executable, "-c", PRUNE_SCRIPT, base_path], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not signal_file.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the prune never reached its pause point"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL


def prepared(base_path):
    model = new_model(base_path)
    log_values(model, {0: 0.1, 1: 0.9, 2: 0.3, 3: 0.2})
    for s in range(4):
        add_checkpoint(model, s)
    return model


async def test_prune_killed_after_deleting_files_is_repaired_by_the_next_prune(base_path, tmp_path):
    model = prepared(base_path)
    run_and_kill_at(base_path, tmp_path, "files-deleted")
    # the crash window: files 0000 and 0002 are gone, their rows still say ready
    assert folders(model) == ["0001", "0003"]
    assert set(statuses(model).values()) == {"ready"}
    assert len(RetentionLog(model.run.location).open_intents()) == 1

    plan = await model.apply_retention(art.Policy(rules=(art.KeepLast(n=4),)))  # any next prune repairs
    assert plan.delete == []
    assert statuses(model) == {0: "deleted", 1: "ready", 2: "deleted", 3: "ready"}
    c2 = model.run.checkpoints_table().get(2)
    assert c2.deleted_reason.startswith("kept by no rule") and c2.deleted_reason.endswith(
        "(completed after an interrupted prune)")
    assert art.Policy.from_json(c2.deleted_by_policy) == art.Policy.art()
    assert RetentionLog(model.run.location).open_intents() == []
    done = RetentionLog(model.run.location).events("done")
    assert [(e["steps"], e["note"]) for e in done] == [([0, 2], "repaired")]


async def test_prune_killed_before_deleting_files_deletes_nothing(base_path, tmp_path):
    model = prepared(base_path)
    run_and_kill_at(base_path, tmp_path, "intent-recorded")
    assert folders(model) == ["0000", "0001", "0002", "0003"]
    plan = await model.apply_retention(art.Policy(rules=(art.KeepLast(n=4),)))
    assert plan.delete == [] and folders(model) == ["0000", "0001", "0002", "0003"]
    assert set(statuses(model).values()) == {"ready"}
    assert RetentionLog(model.run.location).open_intents() == []
    assert (await model.delete_checkpoints()).delete == [0, 2]  # and it can still be pruned
    assert folders(model) == ["0001", "0003"]


# -- a store in a bucket (moto_server on 127.0.0.1) ----------------------------------------------------
@pytest.fixture
def s3_options(tmp_path):
    moto = Path(sys.executable).with_name("moto_server")
    if not moto.exists():
        pytest.skip("moto_server is not installed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([str(moto), "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        endpoint = f"http://127.0.0.1:{port}"
        fs = fsspec.filesystem("s3", key="k", secret="s", endpoint_url=endpoint)
        deadline = time.monotonic() + 120  # a loaded machine can take tens of seconds to start it
        while True:
            try:
                fs.mkdir("runs")
                break
            except OSError:
                assert time.monotonic() < deadline, "moto_server did not start"
                time.sleep(0.2)
        yield {"aws_endpoint": endpoint, "aws_access_key_id": "k", "aws_secret_access_key": "s",
               "aws_region": "us-east-1", "allow_http": "true", "client_max_retries": "2"}
    finally:
        proc.kill()
        proc.wait(10)


@pytest.mark.s3
async def test_bucket_store_download_and_prune(s3_options, tmp_path):
    from artstore.storage import Location, files

    model = art.TrainableModel(name="a", project="p", base_model="b", base_path="s3://runs/art",
                               storage_options=s3_options, report_metrics=[])
    log_values(model, {0: 0.1, 1: 0.9, 2: 0.3})
    for s in range(3):
        files.put_bytes(Location.parse(model.run.checkpoint_uri(s) + "/adapter_model.safetensors", s3_options),
                        b"w" * 50)
        model.register_checkpoint(s)
    c, path = model.run.checkpoint("best", cache_dir=tmp_path / "cache")
    assert c.step == 1 and (path / "adapter_model.safetensors").read_bytes() == b"w" * 50
    assert (await model.delete_checkpoints()).delete == [0]
    fs = fsspec.filesystem("s3", key="k", secret="s", endpoint_url=s3_options["aws_endpoint"])
    assert sorted(p.rsplit("/", 1)[-1] for p in fs.ls("runs/art/p/models/a/checkpoints", refresh=True)) == [
        "0001", "0002"]
    assert statuses(model) == {0: "deleted", 1: "ready", 2: "ready"}
