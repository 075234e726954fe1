"""What the docs' quickstart needs to run in a test, without a GPU: a backend at ART's backend seam
standing in for `trainer.LocalBackend`, and a local OpenAI-compatible server standing in for vLLM.

`LocalBackend` trains nothing: `train()` writes the checkpoint folder a real backend writes
(`{base}/{project}/models/{run_name}/checkpoints/{step:04d}/`) and returns loss metrics computed from
the groups; `_delete_checkpoint_files` deletes folders. The server answers `"5"` (right for 2+3,
wrong for 7+6, so rewards vary within a group's step) except for requests 17 to 20, which it
answers right: in the quickstart those are the first val rollouts (6 steps of 8 train rollouts, 4
val rollouts every 2 steps), so the best val step is 2 and no two val steps tie.
"""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import uvicorn
from fastapi import FastAPI

import artstore as art


class LocalBackend:
    """ART's backend seam; serves through `LocalBackend.base_url` (set by `openai_server`)."""

    base_url = "http://127.0.0.1:9/v1"

    def __init__(self, path: str = ".art"):
        self.path = path

    def _dir(self, model) -> Path:
        return Path(self.path, model.project, "models", model.run_name, "checkpoints")

    async def register(self, model) -> None:
        self._dir(model).mkdir(parents=True, exist_ok=True)

    async def _prepare_backend_for_training(self, model, config=None):
        return self.base_url, "no-key"

    async def _get_step(self, model) -> int:
        return max((int(p.name) for p in self._dir(model).iterdir() if p.name.isdigit()), default=0)

    async def train(self, model, groups, *, learning_rate: float = 5e-6) -> art.TrainResult:
        step = await self._get_step(model) + 1
        folder = self._dir(model) / f"{step:04d}"
        folder.mkdir(parents=True)
        (folder / "adapter_config.json").write_text(json.dumps({"r": 8}))
        rewards = [t.reward for g in groups for t in g.trajectories]
        return art.TrainResult(step=step, metrics={"loss/train": 1.0 - sum(rewards) / len(rewards),
                                                   "loss/learning_rate": learning_rate})

    async def _delete_checkpoint_files(self, model, steps_to_keep) -> None:
        for p in self._dir(model).iterdir():
            if p.name.isdigit() and int(p.name) not in steps_to_keep:
                shutil.rmtree(p)


def _app() -> FastAPI:
    app = FastAPI()
    served = [0]

    @app.post("/v1/chat/completions")
    async def chat(body: dict) -> dict:
        served[0] += 1
        a, b = body["messages"][-1]["content"].split("+")
        answer = str(int(a) + int(b)) if 17 <= served[0] <= 20 else "5"
        return {"id": "chatcmpl-1", "object": "chat.completion", "created": int(time.time()),
                "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                             "message": {"role": "assistant", "content": answer}}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11}}
    return app


@contextmanager
def openai_server() -> Iterator[str]:
    """A chat-completions server on 127.0.0.1 for the duration; yields its base URL and points
    `LocalBackend.base_url` at it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(_app(), host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the test's OpenAI-compatible server did not start")
        time.sleep(0.02)
    LocalBackend.base_url = f"http://127.0.0.1:{port}/v1"
    try:
        yield LocalBackend.base_url
    finally:
        server.should_exit = True
        thread.join(10)
