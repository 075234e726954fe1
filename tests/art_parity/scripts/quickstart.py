"""Parity script: an ART 0.5.23 quickstart-style run, written for `import art`.

The parity suite runs this file twice: as is, under the real openpipe-art 0.5.23, and with that one
import line changed to `import artstore as art`, under artstore. Nothing else differs.

    python quickstart.py BASE_PATH    -> JSON on stdout: what the user API returned

20 training steps, a checkpoint every step, val every 4 steps (and at 0 and 20); rollouts with tool
calls and OpenAI `Choice` objects, trajectory and group metadata and metrics, rollouts that raise
(kept as group exceptions through `max_exceptions`), costs, state; the run stops after step 10 and
resumes with a fresh model and backend object; `delete_checkpoints()` runs at the end.

Training needs a GPU in ART, so the backend here is a user backend at ART's backend seam (the
methods `Model` calls: `register`, `_prepare_backend_for_training`, `_get_step`,
`_delete_checkpoint_files`, plus a `train()` returning `art.TrainResult`), as ART's own unit tests
use: its `train()` writes the checkpoint folder ART's LocalBackend writes
(`{base}/{project}/models/{run_name}/checkpoints/{step:04d}/`) and returns loss metrics computed
from the groups; it neither logs nor reads history, so every metric, history row and checkpoint
decision is the library's own.
"""

import asyncio
import json
import shutil
import sys
import warnings
from pathlib import Path

import art
from openai.types.chat.chat_completion import Choice

warnings.simplefilter("ignore", DeprecationWarning)  # TrajectoryGroup(<awaitables>) is deprecated in 0.5.23
BASE = sys.argv[1]
PROJECT, RUN = "parity", "agent-001"
STEPS, STOP_AT, VAL_EVERY = 20, 10, 4


class FolderBackend:
    """A user backend: checkpoints are folders, as ART's LocalBackend lays them out."""

    def __init__(self, path: str):
        self.path = path

    def _dir(self, model) -> Path:
        return Path(self.path, model.project, "models", model.run_name, "checkpoints")

    async def register(self, model) -> None:
        self._dir(model).mkdir(parents=True, exist_ok=True)

    async def _prepare_backend_for_training(self, model, config=None):
        return "http://127.0.0.1:9/v1", "no-key"

    async def _get_step(self, model) -> int:
        steps = [int(p.name) for p in self._dir(model).iterdir() if p.name.isdigit()] if self._dir(model).exists() else []
        return max(steps, default=0)

    async def train(self, model, groups, *, learning_rate: float = 5e-6):
        step = await self._get_step(model) + 1
        folder = self._dir(model) / f"{step:04d}"
        folder.mkdir(parents=True)
        (folder / "adapter_config.json").write_text(json.dumps({"r": 8, "step": step}))
        rewards = [t.reward for g in groups for t in g.trajectories]
        loss = 1.0 - sum(rewards) / len(rewards)
        return art.TrainResult(step=step, metrics={"loss/train": loss, "loss/grad_norm": 2 * loss,
                                                   "loss/learning_rate": learning_rate})

    async def _delete_checkpoint_files(self, model, steps_to_keep) -> None:
        for p in self._dir(model).iterdir():
            if p.name.isdigit() and int(p.name) not in steps_to_keep:
                shutil.rmtree(p)


def reward_of(step: int, scenario: int, k: int, split: str) -> float:
    """Deterministic rewards that climb with the step, and peak for val at step 12."""
    base = 0.1 + 0.03 * step if split == "train" else 0.9 - abs(step - 12) * 0.05
    return round(min(1.0, base + 0.05 * ((scenario * 7 + k * 3) % 5) - 0.1), 6)


async def rollout(step: int, scenario: int, k: int, split: str) -> art.Trajectory:
    if split == "train" and scenario == 2 and k == 3 and step % 3 == 0:
        raise RuntimeError(f"tool server timed out (step {step})")
    await asyncio.sleep(0)
    reward = reward_of(step, scenario, k, split)
    call_id = f"call_{step}_{scenario}_{k}"
    return art.Trajectory(
        messages_and_choices=[
            {"role": "system", "content": "You are an email assistant. Use the tools."},
            {"role": "user", "content": f"When is the offsite for project {scenario}?"},
            Choice(finish_reason="tool_calls", index=0, message={
                "role": "assistant", "content": None,
                "tool_calls": [{"id": call_id, "type": "function", "function": {
                    "name": "search_inbox", "arguments": json.dumps({"query": f"offsite {scenario}"})}}]}),
            {"role": "tool", "tool_call_id": call_id, "content": json.dumps([{"email_id": f"e{scenario}"}])},
            Choice(finish_reason="stop", index=0, message={"role": "assistant", "content": f"Day {k}."}),
        ],
        tools=[{"type": "function", "function": {"name": "search_inbox", "description": "Search the inbox",
                                                 "parameters": {"type": "object", "properties": {
                                                     "query": {"type": "string"}}}}}],
        reward=reward,
        metrics={"correct": reward > 0.5, "num_tool_calls": 1, "answer_chars": 4 + k},
        metadata={"scenario_id": f"s-{scenario:03d}", "attempt": k},
        logs=[f"rollout {step}/{scenario}/{k}"],
    )


def groups_for(step: int, split: str):
    n_scenarios, n_rollouts = (3, 4) if split == "train" else (2, 3)
    return [art.TrajectoryGroup((rollout(step, s, k, split) for k in range(n_rollouts)),
                                metadata={"scenario": f"s-{s:03d}"},
                                metrics={"judge_score": round(0.2 * s + 0.01 * step, 6)})
            for s in range(n_scenarios)]


async def validate(model, step: int, out: dict) -> None:
    val = await art.gather_trajectory_groups(groups_for(step, "val"), pbar_desc="val")
    await model.log(val, split="val")
    out["val_steps"].append(await model.get_step())


async def train_until(model, backend, last_step: int, out: dict) -> None:
    step = await model.get_step()
    while step < last_step:
        groups = await art.gather_trajectory_groups(groups_for(step, "train"), pbar_desc="gather",
                                                    max_exceptions=10)
        result = await backend.train(model, groups, learning_rate=1e-5)
        await model.log(groups, metrics={**result.metrics, "costs/train/sample": 0.01 * result.step},
                        step=result.step, split="train")
        step = await model.get_step()
        out["steps"].append(step)
        if step % VAL_EVERY == 0:
            await validate(model, step, out)
        model.merge_state({"last_trained": step, "history": {"n": step}})


def make_model():
    return art.TrainableModel(name="agent-001-serving", project=PROJECT, run_name=RUN,
                              base_model="Qwen/Qwen2.5-0.5B-Instruct", base_path=BASE, report_metrics=[])


async def main() -> None:
    out: dict = {"steps": [], "val_steps": []}
    model, backend = make_model(), FolderBackend(BASE)
    await model.register(backend)
    out["first_step"] = await model.get_step()
    await validate(model, 0, out)
    model.write_state({"dataset": "emails-v1", "last_trained": 0})
    await train_until(model, backend, STOP_AT, out)
    out["state_before_resume"] = model.read_state()

    # resume: a new process would build the model and backend again
    model, backend = make_model(), FolderBackend(BASE)
    await model.register(backend)
    out["resumed_at"] = await model.get_step()
    out["state_after_resume"] = model.read_state()
    await train_until(model, backend, STEPS, out)
    out["final_step"] = await model.get_step()
    await model.delete_checkpoints(best_checkpoint_metric="val/reward")
    out["step_after_delete"] = await model.get_step()
    out["state"] = model.read_state()
    print(json.dumps(out))


asyncio.run(main())
