"""Parity script: `delete_checkpoints()` at its edges, written for `import art` (the parity suite
also runs it with `import artstore as art`).

    python delete_checkpoints_edges.py BASE_PATH    -> JSON on stdout, one entry per case

Each case is a run with a checkpoint after every one of 4 training steps (the backend is a user
backend at ART's seam that writes ART's checkpoint folders, as in quickstart.py) and val rewards at
the steps given, then `delete_checkpoints("val/reward")`:
- best_between: the best val step has a checkpoint;
- best_before_training: the best val step is 0, which has no checkpoint;
- no_val: no val/reward was ever logged.
"""

import asyncio
import json
import shutil
import sys
from pathlib import Path

import art

BASE = sys.argv[1]
CASES = {"best_between": {0: 0.1, 2: 0.8, 4: 0.5}, "best_before_training": {0: 0.9, 2: 0.3, 4: 0.5}, "no_val": {}}


class FolderBackend:
    def __init__(self, path: str):
        self.path = path

    def _dir(self, model) -> Path:
        return Path(self.path, model.project, "models", model.run_name, "checkpoints")

    async def register(self, model) -> None:
        self._dir(model).mkdir(parents=True, exist_ok=True)

    async def _prepare_backend_for_training(self, model, config=None):
        return "http://127.0.0.1:9/v1", "no-key"

    async def _get_step(self, model) -> int:
        return max((int(p.name) for p in self._dir(model).iterdir() if p.name.isdigit()), default=0)

    async def train(self, model, groups, *, learning_rate: float = 5e-6):
        step = await self._get_step(model) + 1
        (self._dir(model) / f"{step:04d}").mkdir(parents=True)
        (self._dir(model) / f"{step:04d}" / "adapter_config.json").write_text("{}")
        return art.TrainResult(step=step, metrics={"loss/train": 1.0 / step})

    async def _delete_checkpoint_files(self, model, steps_to_keep) -> None:
        for p in self._dir(model).iterdir():
            if p.name.isdigit() and int(p.name) not in steps_to_keep:
                shutil.rmtree(p)


def group(*rewards: float):
    return art.TrajectoryGroup([art.Trajectory(messages_and_choices=[
        {"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}], reward=r) for r in rewards])


async def case(run_name: str, val: dict) -> dict:
    model = art.TrainableModel(name=run_name, project="edges", run_name=run_name,
                               base_model="Qwen/Qwen2.5-0.5B-Instruct", base_path=BASE, report_metrics=[])
    backend = FolderBackend(BASE)
    await model.register(backend)
    for step in range(5):
        if step:
            groups = [group(0.2, 0.6)]
            result = await backend.train(model, groups)
            await model.log(groups, metrics=result.metrics, step=result.step, split="train")
        if step in val:
            await model.log([group(val[step], val[step])], split="val")
    error = None
    try:
        await model.delete_checkpoints(best_checkpoint_metric="val/reward")
    except Exception as e:  # artstore refuses; ART prints and goes on
        error = type(e).__name__
    return {"error": error, "step": await model.get_step()}


async def main() -> None:
    print(json.dumps({name: await case(name, val) for name, val in CASES.items()}))


asyncio.run(main())
