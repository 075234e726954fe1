"""One LocalBackend training step on every rank; run by test_distributed.py under torchrun.

    python -m torch.distributed.run --nproc_per_node 2 -m tests.trainer.dist_worker STORE OUT \
        --sizes 4 3 --batch-size 1

Rank 0 logs `--sizes` groups (trajectories with distinct rewards) and trains them with
`model.train`; the other ranks call `backend.train_shard`. Each rank then writes OUT/rank{r}.pt:
its adapter weights (before and after), the sequence ids its loader shard holds for step 0, and the model's step.
Run with plain `python` (no torchrun) it is the one-process reference (rank 0 of 1).
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import torch

import artstore as art
from tests.trainer.test_tokenize_step import trajectory
from trainer import distributed
from trainer.backend import LocalBackend
from trainer.loop import step_batches
from trainer.lora import trainable_parameters


def groups(tokenizer, sizes: list[int]) -> list[art.TrajectoryGroup]:
    out, i = [], 0
    for size in sizes:
        out.append(art.TrajectoryGroup([trajectory(tokenizer, i + k, float(k)) for k in range(size)]))
        i += size
    return out


async def main(args: argparse.Namespace) -> None:
    distributed.init_from_env("cpu")
    torch.set_num_threads(1)
    rank, _ = distributed.rank_world()
    model = art.TrainableModel(name="dist", project="p", base_model="tiny", base_path=args.store, report_metrics=[])
    backend = LocalBackend("tiny", device="cpu", lora_r=4, lora_alpha=8, seed=0, row_length=512,
                           batch_size=args.batch_size)
    await model.register(backend)
    policy, tokenizer = backend.model_and_tokenizer(model)
    with torch.no_grad():  # the same non-zero adapter on every rank: both LoRA factors get gradients
        gen = torch.Generator().manual_seed(1)
        for p in trainable_parameters(policy):
            p.copy_(0.05 * torch.randn(p.shape, generator=gen))
    before = {n: p.detach().clone() for n, p in policy.named_parameters() if p.requires_grad}
    if distributed.is_main():
        await model.train(groups(tokenizer, args.sizes), config=art.TrainConfig(learning_rate=1e-3))
    else:
        await backend.train_shard(model)
    shard = step_batches(model.run, 0, device="cpu", pad_token_id=0, batch_size=args.batch_size)
    ids = [s for batch in shard.batches() for s in batch.column("sequence_id").to_pylist()]
    adapter = {n: p.detach().clone() for n, p in policy.named_parameters() if p.requires_grad}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    torch.save({"adapter": adapter, "sequence_ids": ids, "step": await model.get_step(),
                "batches": len(shard), "before": before}, Path(args.out) / f"rank{rank}.pt")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("store")
    p.add_argument("out")
    p.add_argument("--sizes", type=int, nargs="+", default=[4, 3], help="trajectories per group")
    p.add_argument("--batch-size", type=int, default=1)
    return p.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
