"""vLLM's own OpenAI server, as a subprocess on the GPU, serving the run's LoRA adapters.

    server = VLLMServer("Qwen/Qwen2.5-0.5B-Instruct", max_lora_rank=8, api_key=key).start()
    server.load_adapter("agent@3", "/path/to/checkpoints/0003")     # after each train step

The adapters are added at run time (`POST /v1/load_lora_adapter`, which needs
VLLM_ALLOW_RUNTIME_LORA_UPDATING=True, set here) under ART's names, `{model.name}@{step}`; the base
model is served under its own name. Tool calls are parsed by vLLM's hermes parser.

UNTESTED HERE: the development machines have no GPU and vllm cannot be installed, so this module
has never run in this repository's tests; benchmarks/gpu_check.sh runs it where vllm is present.
It follows vLLM's documented CLI (`vllm serve MODEL --enable-lora --max-lora-rank R --api-key K
--enable-auto-tool-choice --tool-call-parser hermes`) and its runtime LoRA endpoint. The bare
`{model.name}` (the live step) is not served by vLLM: ART's `get_inference_name()` always names a
step, so ART-style rollout code does not need it.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time

import httpx
import torch

import artstore as art

START_TIMEOUT_S = 600.0


def available() -> bool:
    """True when vllm is importable and a CUDA GPU is present."""
    return importlib.util.find_spec("vllm") is not None and torch.cuda.is_available()


class VLLMServer:
    """One `vllm serve` process on 127.0.0.1 with LoRA enabled."""

    def __init__(self, base_model: str, *, max_lora_rank: int, api_key: str, gpu_memory_utilization: float = 0.4,
                 max_loras: int = 4):
        self.base_model, self.api_key = base_model, api_key
        self.max_lora_rank, self.max_loras = max_lora_rank, max_loras
        self.gpu_memory_utilization = gpu_memory_utilization
        self.port = _free_port()
        self._process: subprocess.Popen[bytes] | None = None
        self._loaded: set[str] = set()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> VLLMServer:
        """Start vLLM and wait until its /health answers (a model load takes minutes)."""
        command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", self.base_model,
                   "--host", "127.0.0.1", "--port", str(self.port), "--api-key", self.api_key,
                   "--enable-lora", "--max-lora-rank", str(self.max_lora_rank), "--max-loras", str(self.max_loras),
                   "--gpu-memory-utilization", str(self.gpu_memory_utilization),
                   "--enable-auto-tool-choice", "--tool-call-parser", "hermes"]  # fmt: skip
        env = {**os.environ, "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"}
        self._process = subprocess.Popen(command, env=env)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise art.BackendError(f"vLLM exited with code {self._process.returncode} while starting "
                                       f"{self.base_model}; its log is above")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(1)
        self.stop()
        raise art.BackendError(f"vLLM did not answer on port {self.port} within {START_TIMEOUT_S:.0f} s")

    def load_adapter(self, name: str, path: str) -> None:
        """Serve the adapter in folder `path` under `name` (a name already loaded is kept as is:
        a step's checkpoint never changes)."""
        if name in self._loaded:
            return
        response = httpx.post(f"http://127.0.0.1:{self.port}/v1/load_lora_adapter",
                              json={"lora_name": name, "lora_path": path},
                              headers={"Authorization": f"Bearer {self.api_key}"}, timeout=120)
        if response.status_code != 200:
            raise art.BackendError(f"vLLM refused adapter {name} from {path}: {response.text[:500]}")
        self._loaded.add(name)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._process.kill()
        self._process = None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
