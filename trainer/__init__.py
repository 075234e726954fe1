"""The thin trainer: GRPO + LoRA (torch, peft) from an artstore store, behind ART's backend API.

    await model.register(trainer.LocalBackend())

It uses artstore's public API only (`import artstore`); trainer/backend.py serves ART's backend API,
trainer/policy.py holds a model's LoRA and its one training step.
`LocalBackend` is imported on first use, so `import trainer.tokenize` stays light.
"""

from __future__ import annotations

from typing import Any

__all__ = ["LocalBackend"]


def __getattr__(name: str) -> Any:
    if name == "LocalBackend":
        from trainer.backend import LocalBackend

        return LocalBackend
    raise AttributeError(f"module 'trainer' has no attribute {name!r}")
