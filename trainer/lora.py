"""LoRA adapters with peft: pick the projection layers a model has, wrap it, switch it off.

Only the adapter weights train; the base model stays frozen, so the base model with the adapter
disabled is the reference policy for the KL term, at no extra memory.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn

# Attention and MLP projection names across common architectures (Llama/Qwen/Mistral, GPT-2,
# GPT-NeoX, Phi, Falcon, ...). Only those present in the model are used.
PROJECTION_NAMES = (
    "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
    "qkv_proj", "gate_up_proj", "c_attn", "c_proj", "c_fc", "query_key_value", "dense",
    "dense_h_to_4h", "dense_4h_to_h", "fc1", "fc2", "Wqkv", "out_proj", "wq", "wk", "wv", "wo",
    "w1", "w2", "w3",
)  # fmt: skip


def find_target_modules(
    model: nn.Module, candidates: Sequence[str] = PROJECTION_NAMES
) -> list[str]:
    """Names from `candidates` that end a linear layer's path in `model`, in `candidates` order.

    The output head (`lm_head`) and embeddings are never targets. A linear layer is an
    `nn.Linear` or GPT-2's `Conv1D` (anything with a 2D `weight` that is not an embedding).
    """
    present = set()
    for path, module in model.named_modules():
        leaf = path.rsplit(".", 1)[-1]
        weight = getattr(module, "weight", None)
        if leaf in candidates and weight is not None and weight.ndim == 2:
            if not isinstance(module, nn.Embedding):
                present.add(leaf)
    found = [name for name in candidates if name in present]
    if not found:
        raise ValueError("no known projection layer in the model; pass target_modules")
    return found


def add_lora(
    model: nn.Module,
    r: int = 8,
    alpha: int = 16,
    dropout: float = 0.0,
    target_modules: Sequence[str] | None = None,
) -> PeftModel:
    """Wrap `model` with a fresh LoRA adapter (rank `r`, scale `alpha / r`); only it trains.

    `target_modules` defaults to every attention and MLP projection the model has.
    """
    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=list(target_modules or find_target_modules(model)),
        bias="none",
        task_type="CAUSAL_LM",
    )
    with warnings.catch_warnings():  # peft reads a property transformers 5 deprecated: not ours to fix
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return get_peft_model(model, config)


@contextmanager
def with_adapter_disabled(model: PeftModel) -> Iterator[PeftModel]:
    """Inside the block `model` computes as its base model (the reference policy).

    Gradients are not switched off here: reference logprobs should be computed under
    `torch.no_grad()` by the caller.
    """
    with model.disable_adapter():
        yield model


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters an optimizer should update (the adapter's, for a LoRA model)."""
    return [p for p in model.parameters() if p.requires_grad]
