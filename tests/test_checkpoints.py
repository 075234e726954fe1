"""The checkpoints table through the public API: register, list, latest, pins, Run.checkpoint()."""

from __future__ import annotations

import os
import uuid

import fsspec
import pytest

import artstore as art


def write_files(path: str, nbytes: int = 100) -> None:
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "adapter_model.safetensors"), "wb") as f:
        f.write(b"w" * nbytes)
    with open(os.path.join(path, "adapter_config.json"), "w") as f:
        f.write('{"r": 8}')


@pytest.fixture
def model(base_path):
    return art.TrainableModel(name="agent-001", project="email-search", base_model="Qwen/Qwen2.5-0.5B-Instruct",
                              base_path=base_path, report_metrics=[])


def test_saving_then_ready_with_table_versions_and_base_model(model):
    model.log_sync(None, split="val", metrics={"reward": 0.5}, step=0)
    table = model.run.checkpoints_table()
    c = table.begin(1, base_model=model.base_model, table_versions=model.run.table_versions())
    assert c.status == "saving" and c.size_bytes is None
    assert model.get_step_sync() == 0 and table.latest() is None
    write_files(model.run.checkpoint_uri(1), 100)
    ready = table.mark_ready(1)
    assert ready.status == "ready" and ready.size_bytes == 108 and ready.ready_at is not None
    assert ready.base_model == "Qwen/Qwen2.5-0.5B-Instruct"
    # the logs (the journal) hold the metrics logged so far and the builder's sums (state_delta)
    assert set(ready.table_versions) == {"logs"}
    assert model.get_step_sync() == 1
    with pytest.raises(art.CheckpointError, match="already ready"):
        table.begin(1)


def test_register_list_latest(model):
    model.log_sync(None, split="val", metrics={"reward": 0.5}, step=0)
    for s in (0, 1, 2):
        write_files(model.run.checkpoint_uri(s), 10 * (s + 1))
        c = model.register_checkpoint(s)
        assert c.status == "ready" and c.base_model == model.base_model
    assert c.uri.endswith(os.path.join("checkpoints", "0002"))
    rows = model.run.checkpoints()
    assert rows["step"].to_pylist() == [0, 1, 2]
    assert {"step", "uri", "status", "created_at", "deleted_at", "deleted_reason", "size_bytes"} <= set(rows.column_names)
    assert model.run.checkpoints_table().latest().step == 2
    assert [c.step for c in model.run.checkpoints_table().live()] == [0, 1, 2]


def _history(model, values):
    for step, v in values.items():
        model.log_sync(None, split="val", metrics={"reward": v}, step=step)
        model.log_sync(None, split="train", metrics={"loss": 1.0 / (step + 1)}, step=step)


def test_run_checkpoint_best_latest_and_step(model):
    _history(model, {0: 0.1, 1: 0.9, 2: 0.5, 3: 0.4})
    for s in range(4):
        write_files(model.run.checkpoint_uri(s))
        model.register_checkpoint(s)
    c, path = model.run.checkpoint("best")
    assert c.step == 1 and str(path) == model.run.location.child("checkpoints", "0001").uri
    assert sorted(os.listdir(path)) == ["adapter_config.json", "adapter_model.safetensors"]
    assert model.run.checkpoint("latest")[0].step == 3
    assert model.run.checkpoint(2)[0].step == 2
    assert model.run.checkpoint("best", metric="train/loss", mode="min")[0].step == 3
    with pytest.raises(art.RetentionError, match="no values of 'val/nope'"):
        model.run.checkpoint("best", metric="val/nope")
    with pytest.raises(art.CheckpointError, match="no ready checkpoint"):
        model.run.checkpoint(9)
    with pytest.raises(art.ValidationError):
        model.run.checkpoint("worst")
    model.run.apply_retention(art.Policy(rules=(art.KeepLast(n=1),)))
    with pytest.raises(art.CheckpointError, match="is deleted"):
        model.run.checkpoint(1)
    assert model.run.checkpoint("best")[0].step == 3  # best among the checkpoints that still have files


def test_remote_checkpoint_is_downloaded_once_to_the_cache(model, tmp_path):
    model.log_sync(None, split="val", metrics={"reward": 1.0}, step=5)
    uri = f"memory://ckpts-{uuid.uuid4().hex}/agent-001/0005"
    fs = fsspec.filesystem("memory")
    fs.pipe(f"{uri}/adapter_model.safetensors", b"w" * 64)
    fs.pipe(f"{uri}/nested/tokenizer.json", b"{}")
    model.register_checkpoint(5, uri=uri, linked=True)
    assert model.run.checkpoints_table().get(5).size_bytes == 66
    cache = tmp_path / "cache"
    c, path = model.run.checkpoint("best", cache_dir=cache)
    assert c.step == 5 and path.is_relative_to(cache) and path.name == "0005"
    assert (path / "adapter_model.safetensors").read_bytes() == b"w" * 64
    assert (path / "nested" / "tokenizer.json").read_bytes() == b"{}"
    fs.pipe(f"{uri}/adapter_model.safetensors", b"changed")  # a cached copy is reused as is
    assert model.run.checkpoint(5, cache_dir=cache)[1] == path
    assert (path / "adapter_model.safetensors").read_bytes() == b"w" * 64
    assert [p.name for p in path.parent.iterdir()] == ["0005"]  # no temporary folder left behind


def test_pins(model):
    model.log_sync(None, split="val", metrics={"reward": 1.0}, step=0)
    for s in range(3):
        write_files(model.run.checkpoint_uri(s))
        model.register_checkpoint(s)
    model.run.pin_checkpoint(0, "the paper's checkpoint")
    model.run.pin_checkpoint(1)
    assert model.run.pinned_checkpoints() == {0: "the paper's checkpoint", 1: None}
    model.run.unpin_checkpoint(1)
    assert model.run.pinned_checkpoints() == {0: "the paper's checkpoint"}
    plan = model.run.apply_retention(art.Policy(rules=(art.KeepLast(n=1),)))
    assert plan.keep == [0, 2] and plan.delete == [1]
    assert plan.decision(0).reason == "pinned: the paper's checkpoint"
    with pytest.raises(art.CheckpointError, match="no live checkpoint 1"):
        model.run.pin_checkpoint(1)


def test_save_checkpoint_files_copies_a_local_folder_then_marks_ready(model, tmp_path):
    model.log_sync(None, split="val", metrics={"reward": 0.5}, step=0)
    src = tmp_path / "adapter"
    write_files(str(src), 50)
    (src / "sub").mkdir()
    (src / "sub" / "extra.bin").write_bytes(b"x" * 7)
    # What an interrupted save of this step left behind is cleared first.
    write_files(model.run.checkpoint_uri(3), 10)
    model.run.checkpoints_table().begin(3)
    with fsspec.open(os.path.join(model.run.checkpoint_uri(3), "stale.tmp"), "wb") as f:
        f.write(b"?")
    c = model.run.save_checkpoint_files(3, src, base_model="tiny", table_versions={"trajectories": 4})
    assert (c.status, c.size_bytes, c.base_model, c.table_versions) == ("ready", 65, "tiny", {"trajectories": 4})
    _, path = model.run.checkpoint("latest")
    assert sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()) == [
        "adapter_config.json", "adapter_model.safetensors", "sub/extra.bin"]
    with pytest.raises(art.CheckpointError, match="not a local folder"):
        model.run.save_checkpoint_files(4, tmp_path / "missing")


def test_delete_checkpoint_files_leaves_the_row(model, tmp_path):
    model.log_sync(None, split="val", metrics={"reward": 0.5}, step=0)
    write_files(str(tmp_path / "a"))
    model.run.save_checkpoint_files(1, tmp_path / "a")
    model.run.delete_checkpoint_files(1)
    model.run.delete_checkpoint_files(1)  # already gone: fine
    model.run.delete_checkpoint_files(9)  # no such checkpoint: fine
    assert not os.path.exists(model.run.checkpoint_uri(1))
    assert model.run.checkpoints_table().get(1).status == "ready"  # retention marks rows, not this
