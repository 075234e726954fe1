"""`make demo`: an agent learns a small tool-use task with GRPO + LoRA, every step in the store.

The task ("code lookup"): a user asks for the code of a box; the agent has called its
`lookup_code` tool, which answered with a digit; the agent must now answer with the code. The
reward is 1 for an answer that starts with a digit, else 0 (the metric `correct` records whether
it is the right one). The tiny model (random weights, a tokenizer built in code) starts out
answering with byte soup (val/reward about 0.04) and answers with a digit almost always (about
0.98) after about 10 steps, in a minute or two on 2 CPU cores. With `--model NAME_OR_PATH` a
Hugging Face model found locally is trained instead.

Each step, top to bottom:

    rollouts (HF generate on the live adapter)   -> model.log(val groups)      every --val-every
    rollouts                                      -> model.train(train groups)  log, tokenize from
                                                     the store, train, checkpoint step + 1
    model.apply_retention(best val/reward + last 2)  prune checkpoints by a query over metrics

and at the end a summary of the run from the store. Kill it at any moment and run it again: it
resumes at the store's latest ready checkpoint, and rollouts are seeded by step, so a step done
again logs the same content (a log with the same content is stored once: no duplicate steps).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from collections.abc import Callable
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

import artstore as art
from trainer import distributed
from trainer.backend import LocalBackend
from trainer.rollout import hf, vllm

SYSTEM = "You are a helpful assistant. Look codes up with the tool, then answer with the code."
TOOLS = [{
    "type": "function",
    "function": {"name": "lookup_code", "description": "The code of a box (one digit).",
                 "parameters": {"type": "object", "properties": {"box": {"type": "integer"}}}},
}]  # fmt: skip
VAL_BOXES = [101, 202, 303, 404, 505, 606]
MAX_NEW_TOKENS = 4
RETENTION = art.Policy(rules=(art.KeepBest(metric="val/reward", unscored="delete"), art.KeepLast(n=2)))
# The summary, once `Store.sql` is in: per step, the val reward and the training loss.
SUMMARY_SQL = """
SELECT step,
       avg(value) FILTER (WHERE name = 'val/reward')  AS val_reward,
       avg(value) FILTER (WHERE name = 'train/reward') AS train_reward,
       avg(value) FILTER (WHERE name = 'loss/train')   AS loss
FROM metrics WHERE project = ? AND model = ?
GROUP BY step ORDER BY step
"""


def scenario(box: int, code: int) -> list[dict[str, Any]]:
    """The conversation up to the agent's answer: question, tool call, tool result."""
    call = {"id": f"call_{box}", "type": "function",
            "function": {"name": "lookup_code", "arguments": f'{{"box": {box}}}'}}  # fmt: skip
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": f"What is the code of box {box}?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": f"call_{box}", "content": f"The code is {code}."},
    ]


def score(trajectory: art.Trajectory, code: int) -> None:
    """Reward 1 for an answer that starts with a digit, else 0. Metrics: `correct` (the right
    code: the tiny model does not learn to copy it in a demo's time; a real model does),
    `stopped` (the turn ended before the token limit)."""
    choice = trajectory.messages_and_choices[-1]
    answer = (choice.message.content or "").strip()
    trajectory.reward = float(answer[:1].isascii() and answer[:1].isdigit())
    trajectory.metrics = {"correct": answer[:1] == str(code), "stopped": choice.finish_reason == "stop"}


Sampler = Callable[[list[dict[str, Any]], int, int], list[art.Trajectory]]


def hf_sampler(policy: Any, tokenizer: Any) -> Sampler:
    """Sample with Hugging Face `generate` on the live adapter (CPU or GPU)."""
    def sample_with(messages: list[dict[str, Any]], n: int, seed: int) -> list[art.Trajectory]:
        torch.manual_seed(seed)
        return hf.sample(policy, tokenizer, messages, tools=TOOLS, n=n, max_new_tokens=MAX_NEW_TOKENS)
    return sample_with


def make_sampler(args: argparse.Namespace, backend: LocalBackend,
                 model: art.TrainableModel) -> tuple[Sampler, Callable[[], Any]]:
    """HF generate on the live adapter; or, for a real model with vllm and a GPU, vLLM on the
    latest checkpoint's files. Also returns what to call after each step (vLLM loads the new
    checkpoint; HF already samples from the updated adapter)."""
    if not (args.sampler == "vllm" or (args.sampler == "auto" and args.model != "tiny" and vllm.available())):
        return hf_sampler(*backend.model_and_tokenizer(model)), lambda: None
    engine = vllm.VLLMSampler(args.model, max_lora_rank=backend.lora_r, seed=args.seed)
    engine.load_latest_adapter(model.run)

    def sample_with(messages: list[dict[str, Any]], n: int, seed: int) -> list[art.Trajectory]:
        return engine.sample(messages, tools=TOOLS, n=n, max_new_tokens=MAX_NEW_TOKENS, seed=seed)
    return sample_with, lambda: engine.load_latest_adapter(model.run)


def rollouts(sampler: Sampler, boxes: list[int], n: int, seed: int) -> list[art.TrajectoryGroup]:
    """One group of `n` sampled answers per box; the same seed samples the same answers."""
    groups = []
    for k, box in enumerate(boxes):
        code = box % 10
        trajectories = sampler(scenario(box, code), n, seed * 1000 + k)
        for t in trajectories:
            score(t, code)
            t.metadata = {"box": box}
        groups.append(art.TrajectoryGroup(trajectories))
    return groups


def summary(model: art.TrainableModel) -> Table:
    """Per step: val reward, train reward and loss, from the store."""
    rows = model.store.sql(SUMMARY_SQL, params=[model.project, model.name]).to_pylist()
    table = Table(title=f"{model.project}/{model.name}")
    for column in ("step", "val_reward", "train_reward", "loss"):
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(*(_fmt(r.get(c)) for c in ("step", "val_reward", "train_reward", "loss")))
    return table


def _fmt(v: Any) -> str:
    return "" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)


async def main(args: argparse.Namespace) -> None:
    console = Console()
    distributed.init_from_env(args.device)  # under torchrun: join the other ranks (else a no-op)
    if args.device in (None, "cpu") and not torch.cuda.is_available():
        torch.set_num_threads(args.threads)
    model = art.TrainableModel(name=args.name, project=args.project, base_model=args.model,
                               base_path=args.base_path, report_metrics=[], config=vars(args))  # fmt: skip
    backend = LocalBackend(args.model, device=args.device, lora_r=8, lora_alpha=16, seed=args.seed,
                           row_length=1024, batch_size=64)  # fmt: skip
    await model.register(backend)
    step_here = await model.get_step()
    start = distributed.on_main(lambda: step_here)  # under torchrun every rank starts at rank 0's step
    if not distributed.is_main():  # torchrun: rank 0 samples, logs and saves; every rank trains its shard
        for _ in range(start, args.steps):
            await backend.train_shard(model)
        return
    sampler, reload_adapter = make_sampler(args, backend, model)
    learning_rate = args.learning_rate or (1e-2 if args.model == "tiny" else 1e-5)
    config = art.TrainConfig(learning_rate=learning_rate, beta=args.beta)
    if start:
        console.print(f"resuming {model.project}/{model.name} at step {start} (its latest ready checkpoint)")
    began = time.perf_counter()
    columns = (TextColumn("[bold]step {task.completed}/{task.total}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("{task.fields[info]}"))  # fmt: skip
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("train", total=args.steps, completed=start, info="")
        for step in range(start, args.steps):
            if step % args.val_every == 0:
                val = rollouts(sampler, VAL_BOXES, args.group_size, seed=args.seed * 100_003 + 2 * step)
                await model.log(val, split="val", step=step)
            rng = random.Random(args.seed * 100_003 + step)
            boxes = [rng.randrange(100, 1000) for _ in range(args.groups)]
            train = rollouts(sampler, boxes, args.group_size, seed=args.seed * 100_003 + 2 * step + 1)
            await model.train(train, config=config)
            reload_adapter()
            await model.apply_retention(RETENTION)
            reward = sum(t.reward for g in train for t in g.trajectories) / sum(len(g.trajectories) for g in train)
            progress.update(task, completed=step + 1, info=f"train/reward {reward:.2f}")
        final = await model.get_step()
        if final == args.steps:  # the final policy's val score (a repeat run logs the same, once)
            val = rollouts(sampler, VAL_BOXES, args.group_size, seed=args.seed * 100_003 + 2 * final)
            await model.log(val, split="val", step=final)
            await model.apply_retention(RETENTION)
    console.print(summary(model))
    live = [c["step"] for c in model.run.checkpoints().to_pylist() if c["status"] == "ready"]
    console.print(f"{time.perf_counter() - began:.0f} s; checkpoints kept: {live}; "
                  f"stored in {model.run.location.uri}")  # fmt: skip
    console.print(f"try: artstore runs --store {args.base_path}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny", help="'tiny' (built in code) or a local HF model folder/name")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--steps", type=int, default=20, help="train until this step")
    p.add_argument("--base-path", default=".art", help="the store: a folder, s3:// or gs://")
    p.add_argument("--project", default="code-lookup")
    p.add_argument("--name", default="demo-agent")
    p.add_argument("--groups", type=int, default=4, help="training groups (boxes) per step")
    p.add_argument("--group-size", type=int, default=8, help="samples per group")
    p.add_argument("--val-every", type=int, default=4)
    p.add_argument("--learning-rate", type=float, default=None, help="default: 1e-2 for tiny, else 1e-5")
    p.add_argument("--beta", type=float, default=0.0, help="KL coefficient against the base model")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sampler", choices=("auto", "hf", "vllm"), default="auto",
                   help="auto: vLLM for a real model when vllm and a GPU are there, else HF generate")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest for tiny)")
    return p.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
