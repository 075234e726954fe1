"""Two ranks under torchrun (gloo, CPU, 127.0.0.1) train one step as one process does."""

import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import artstore as art
from tests.trainer import dist_worker

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(nproc: int, store: Path, out: Path, *args: str, timeout: float = 240) -> None:
    """`python -m torch.distributed.run` the worker; a hang fails the test (timeout), not CI."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", str(nproc),
               "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
               "-m", "tests.trainer.dist_worker", str(store), str(out), *args]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LANCE_LOG": "error", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-4000:]


def one_process(store: Path, out: Path, *args: str) -> dict:
    asyncio.run(dist_worker.main(dist_worker.parse_args([str(store), str(out), *args])))
    return torch.load(out / "rank0.pt")


@pytest.mark.slow
def test_two_ranks_on_uneven_shards_make_the_one_process_update(tmp_path):
    # 7 sequences at one per micro-batch: one rank runs 4 backward passes, the other 3.
    args = ("--sizes", "4", "3", "--batch-size", "1")
    torchrun(2, tmp_path / "store2", tmp_path / "out2", *args)
    ranks = [torch.load(tmp_path / "out2" / f"rank{r}.pt") for r in (0, 1)]
    single = one_process(tmp_path / "store1", tmp_path / "out1", *args)

    # disjoint shards covering the step, uneven
    shards = [set(r["sequence_ids"]) for r in ranks]
    assert not shards[0] & shards[1] and shards[0] | shards[1] == set(single["sequence_ids"])
    assert sorted(r["batches"] for r in ranks) == [3, 4] and single["batches"] == 7

    # every rank holds the adapter one process trains
    for r in ranks:
        assert r["step"] == 1
        for name, weight in single["adapter"].items():
            torch.testing.assert_close(r["adapter"][name], weight, rtol=0, atol=1e-6)
    moved = max(float((single["before"][n] - w).abs().max()) for n, w in single["adapter"].items())
    assert moved > 1e-4  # the step did change the adapter

    # rank 0 alone logged and saved: one train log, one metrics log, one ready checkpoint
    model = art.TrainableModel(name="dist", project="p", base_model="tiny", base_path=tmp_path / "store2")
    checkpoints = model.run.checkpoints().to_pylist()
    assert [(c["step"], c["status"]) for c in checkpoints] == [(1, "ready")]
    logs = model.run.logs().to_pylist()
    assert sorted((row["split"], row["step"]) for row in logs) == [("train", 0), ("train", 1)]


@pytest.mark.slow
def test_a_rank_with_no_sequences_does_not_hang(tmp_path):
    # 2 sequences over 3 ranks: one shard is empty; that rank still joins the step's collectives.
    torchrun(3, tmp_path / "store", tmp_path / "out", "--sizes", "2", "--batch-size", "1")
    ranks = [torch.load(tmp_path / "out" / f"rank{r}.pt") for r in (0, 1, 2)]
    assert sorted(r["batches"] for r in ranks) == [0, 1, 1]
    for r in ranks[1:]:
        for name, weight in ranks[0]["adapter"].items():
            assert torch.equal(r["adapter"][name], weight)
