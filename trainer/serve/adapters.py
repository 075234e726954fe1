"""Which weights a served model name means, and putting them on the live model for one request.

A registered model `agent` is served under these names (ART's LocalBackend naming):

- `agent@{step}`: the adapter of checkpoint `step`. The live step (what training just produced)
  is the model as it is; an older step's adapter is read from the store's checkpoint files
  (cached, a few at a time) and swapped in for the request, then the live weights go back.
  `agent@0` before any checkpoint is the fresh adapter: LoRA's B starts at zero, so it is the
  base model exactly.
- `agent`: the live step.
- the base model's name (`model.base_model`): the adapter disabled.

Serving and training share one model, so both hold the model's lock: a request waits for a
training step to finish, and a step waits for the requests in flight.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from peft import get_peft_model_state_dict, set_peft_model_state_dict
from safetensors.torch import load_file

import artstore as art
from trainer.checkpoint import ADAPTER_WEIGHTS
from trainer.lora import with_adapter_disabled

CACHED_ADAPTERS = 4


class UnknownModelError(art.BackendError):
    """A request named a model (or a checkpoint step) that this backend does not serve."""


@dataclass
class Served:
    """One registered model as the server sees it. `step` is the live adapter's step."""

    name: str
    base_model: str
    model: Any  # peft.PeftModel
    tokenizer: Any
    run: art.Run
    step: int = 0
    lock: threading.RLock = field(default_factory=threading.RLock)
    _cache: OrderedDict[int, dict[str, torch.Tensor]] = field(default_factory=OrderedDict)

    def names(self) -> list[str]:
        """Every name this model answers to: the bare name, `name@step` per servable step, the base."""
        return [self.name, *(f"{self.name}@{s}" for s in self.steps()), self.base_model]

    def steps(self) -> list[int]:
        """Steps whose adapter can be served: ready checkpoints with files, the live step, and 0."""
        rows = self.run.checkpoints().select(["step", "status"]).to_pylist() if self.run.exists() else []
        return sorted({0, self.step, *(r["step"] for r in rows if r["status"] == "ready")})

    @contextmanager
    def weights(self, step: int | None) -> Iterator[None]:
        """Hold the lock with the adapter of `step` on the model (None: the adapter disabled)."""
        with self.lock:
            if step is None:
                with with_adapter_disabled(self.model):
                    yield
                return
            if step == self.step:
                yield
                return
            if step == 0 and not self._has_checkpoint(0):
                with with_adapter_disabled(self.model):  # the fresh adapter is the base model
                    yield
                return
            live = {k: v.detach().clone() for k, v in get_peft_model_state_dict(self.model).items()}
            set_peft_model_state_dict(self.model, self._adapter(step))
            try:
                yield
            finally:
                set_peft_model_state_dict(self.model, live)

    def _has_checkpoint(self, step: int) -> bool:
        rows = self.run.checkpoints().select(["step", "status"]).to_pylist() if self.run.exists() else []
        return any(r["step"] == step and r["status"] == "ready" for r in rows)

    def _adapter(self, step: int) -> dict[str, torch.Tensor]:
        if step in self._cache:
            self._cache.move_to_end(step)
            return self._cache[step]
        try:
            _, path = self.run.checkpoint(step)
        except art.ArtstoreError as e:
            raise UnknownModelError(f"{self.name}@{step}: no ready checkpoint of step {step} ({e})") from None
        device = next(self.model.parameters()).device
        weights = load_file(Path(path) / ADAPTER_WEIGHTS, device=str(device))
        self._cache[step] = weights
        while len(self._cache) > CACHED_ADAPTERS:
            self._cache.popitem(last=False)
        return weights


class ServedModels:
    """The models a backend serves, found by the name a request gives."""

    def __init__(self) -> None:
        self._by_name: dict[str, Served] = {}

    def add(self, served: Served) -> None:
        self._by_name[served.name] = served

    def all(self) -> list[Served]:
        return list(self._by_name.values())

    def resolve(self, name: str) -> tuple[Served, int | None]:
        """(the served model, the adapter step: None for the base model) that `name` means."""
        base, sep, suffix = name.partition("@")
        if base in self._by_name:
            served = self._by_name[base]
            if not sep:
                return served, served.step
            if not suffix.isdigit():
                raise UnknownModelError(f"model {name!r}: the part after '@' must be a step number")
            step = int(suffix)
            if step not in served.steps():
                raise UnknownModelError(f"model {name!r}: step {step} is not served; "
                                        f"steps with an adapter: {served.steps()}")
            return served, step
        for served in self._by_name.values():
            if name == served.base_model:
                return served, None
        known = [n for s in self._by_name.values() for n in (s.name, f"{s.name}@STEP", s.base_model)]
        raise UnknownModelError(f"model {name!r} is not served here; known: {known}")
