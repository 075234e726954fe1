"""Invariant 6: the store is the record, wandb mirrors it. With the real wandb package, offline
(no API key): each history row reaches wandb after its store commit, on the `training_step` axis,
in a run whose id comes from project and model; a wandb failure is a warning and loses nothing;
secrets in storage_options never reach wandb."""

from __future__ import annotations

import struct
import time
from pathlib import Path

import pytest
import wandb
from wandb.proto import wandb_internal_pb2 as pb
from wandb.sdk.wandb_run import Run as WandbRun

import artstore as art
from artstore.wandb_mirror import run_id

SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """wandb offline, writing under tmp_path; no API key."""
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    return tmp_path / "wandb"


def wandb_records(path: Path):
    """The protobuf records of an offline run file (.wandb: wandb's header, then LevelDB's log
    format: 32 KiB blocks of chunks, each with crc32, length and type FULL/FIRST/MIDDLE/LAST)."""
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, pending = 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a chunk header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind in (1, 2):
            pending = chunk
        elif kind in (3, 4):
            pending += chunk
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending)
            yield record


def offline_run(wandb_dir: Path, timeout_s: float = 60) -> dict:
    """The run record, config, metric definitions and history rows of the one offline run (once
    wandb's service has written its exit record: it writes the file after `finish()` returns)."""
    (path,) = wandb_dir.glob("offline-run-*/run-*.wandb")
    deadline = time.monotonic() + timeout_s
    while not any(r.WhichOneof("record_type") == "exit" for r in wandb_records(path)):
        assert time.monotonic() < deadline, "wandb never finished the offline run"
        time.sleep(0.1)
    out: dict = {"history": [], "metrics": [], "config": {}}
    for r in wandb_records(path):
        kind = r.WhichOneof("record_type")
        if kind == "run":
            out["run"] = r.run
            out["config"].update({i.key: i.value_json for i in r.run.config.update})
        elif kind == "config":
            out["config"].update({i.key: i.value_json for i in r.config.update})
        elif kind == "metric":
            out["metrics"].append((r.metric.name or r.metric.glob_name, r.metric.step_metric))
        elif kind == "history":
            items = {i.key or "/".join(i.nested_key): i.value_json for i in r.history.item}
            row = {k: float(v) for k, v in items.items() if not k.startswith("_")}
            out["history"].append(row)
    return out


def test_each_history_row_is_mirrored_after_its_commit_on_training_step(offline, base_path, make_trajectory,
                                                                         monkeypatch):
    model = art.Model(name="agent-001", project="email-search", base_path=base_path, report_metrics=["wandb"],
                      storage_options={"aws_access_key_id": "AKIDEXAMPLE", "aws_secret_access_key": SECRET})
    rows_at_mirror = []
    real_log = WandbRun.log

    def log_after_commit(run, data, *args, **kwargs):
        rows_at_mirror.append(model.history().num_rows)  # the store already holds this row
        return real_log(run, data, *args, **kwargs)

    monkeypatch.setattr(WandbRun, "log", log_after_commit)
    model.log_sync([art.TrajectoryGroup([make_trajectory(0.8, 0), make_trajectory(0.6, 1)])], split="val", step=3)
    model.log_sync(None, split="train", metrics={"loss": 1.5, "loss/train": 0.25}, step=4)
    model.log_sync(None, split="train", metrics={"loss": 1.5, "loss/train": 0.25}, step=4)  # a retry: not mirrored
    model._mirror.close()  # flush the offline run (a process exit does the same)

    assert rows_at_mirror == [1, 2]
    mirrored = offline_run(offline)
    assert mirrored["run"].run_id == run_id("email-search", "agent-001")
    assert mirrored["run"].project == "email-search" and mirrored["run"].display_name == "agent-001"
    assert ("*", "training_step") in mirrored["metrics"]
    history = model.history().to_pylist()
    assert len(mirrored["history"]) == len(history) == 2
    for store_row, wandb_row in zip(history, mirrored["history"], strict=True):
        assert wandb_row == {"training_step": store_row["step"],
                             **{k: v for k, v in store_row.items() if k not in ("step", "recorded_at") and v is not None}}
    assert "storage_options" not in mirrored["config"]
    assert not [p for p in offline.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]


def test_wandb_failing_to_start_is_a_warning_and_the_store_keeps_the_data(offline, base_path, make_trajectory,
                                                                          monkeypatch):
    def init(*args, **kwargs):
        raise ConnectionError("wandb is down")

    monkeypatch.setattr(wandb, "init", init)
    model = art.Model(name="m", project="p", base_path=base_path, report_metrics=["wandb"])
    with pytest.warns(UserWarning, match="wandb mirror failed.*wandb is down"):
        record = model.log_sync(art.TrajectoryGroup([make_trajectory(0.5)]), split="val")
    assert record.created
    model.log_sync(art.TrajectoryGroup([make_trajectory(0.7)]), split="val", step=1)  # no second warning needed
    assert model.history()["val/reward"].to_pylist() == [0.5, 0.7]
    assert len(model.run.groups()) == 2


def test_wandb_failing_mid_run_is_a_warning_and_the_store_keeps_the_data(offline, base_path, make_trajectory,
                                                                         monkeypatch):
    def log(run, *args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(WandbRun, "log", log)
    model = art.Model(name="m", project="p", base_path=base_path, report_metrics=["wandb"])
    with pytest.warns(UserWarning, match="disk full"):
        model.log_sync(art.TrajectoryGroup([make_trajectory(0.25)]), split="train")
    model._mirror.close()
    assert model.history()["train/reward"].to_pylist() == [0.25]
