"""LoRA adapter checkpoints through the store: save at a step, load the latest to resume.

A checkpoint is a peft adapter folder, `adapter_config.json` + `adapter_model.safetensors` (what
`PeftModel.from_pretrained` and vLLM's LoRA support load), plus `optimizer.pt`, the AdamW state,
so that a resumed run continues where it stopped (vLLM ignores the extra file). It is written to
a local temporary folder, then handed to `Run.save_checkpoint_files`, which records the row as
`saving`, copies the files into `{run}/checkpoints/{step:04d}/` (local or bucket) and marks the
row `ready` with the table versions the adapter was trained on. A save killed half-way leaves a
`saving` row, which is never loaded and is replaced by the next save of that step.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from pathlib import Path

import torch
from peft import PeftModel, set_peft_model_state_dict
from safetensors.torch import load_file

import artstore as art

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
OPTIMIZER_STATE = "optimizer.pt"


def save_checkpoint(
    run: art.Run,
    model: PeftModel,
    step: int,
    *,
    base_model: str | None = None,
    table_versions: Mapping[str, int] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
) -> art.Checkpoint:
    """Save `model`'s adapter (and `optimizer`'s state) as the ready checkpoint of `step`.

    `table_versions` are the store versions the adapter was trained on (default: the run's
    current ones).
    """
    with tempfile.TemporaryDirectory(prefix="artstore-adapter-") as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        if optimizer is not None:
            torch.save(optimizer.state_dict(), Path(tmp) / OPTIMIZER_STATE)
        return run.save_checkpoint_files(
            step, tmp, base_model=base_model, table_versions=table_versions
        )


def load_adapter(
    model: PeftModel, path: str | Path, optimizer: torch.optim.Optimizer | None = None
) -> None:
    """Load the adapter weights in folder `path` into `model` (and the optimizer state if both
    are there). The adapter must have the rank and target modules `model` was built with."""
    path = Path(path)
    saved = json.loads((path / ADAPTER_CONFIG).read_text())
    config = model.peft_config["default"]
    if saved.get("r") != config.r or set(saved.get("target_modules") or []) != set(
        config.target_modules
    ):
        raise art.CheckpointError(
            f"adapter in {path} has r={saved.get('r')} on {saved.get('target_modules')}, "
            f"the model's has r={config.r} on {sorted(config.target_modules)}"
        )
    device = next(model.parameters()).device
    result = set_peft_model_state_dict(model, load_file(path / ADAPTER_WEIGHTS, device=str(device)))
    if result.unexpected_keys:
        raise art.CheckpointError(f"adapter in {path} has unknown weights: {result.unexpected_keys[:3]}")
    if optimizer is not None and (path / OPTIMIZER_STATE).exists():
        optimizer.load_state_dict(
            torch.load(path / OPTIMIZER_STATE, map_location=device, weights_only=True)
        )


def load_latest_checkpoint(
    run: art.Run, model: PeftModel, optimizer: torch.optim.Optimizer | None = None
) -> int | None:
    """Load the run's latest ready checkpoint into `model` (and `optimizer`); return its step,
    or None (nothing loaded) when the run has none. Files in a bucket are downloaded once."""
    if run.latest_checkpoint_step() is None:
        return None
    checkpoint, path = run.checkpoint("latest")
    load_adapter(model, path, optimizer)
    return checkpoint.step
