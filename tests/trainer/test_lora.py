"""LoRA wrapping of the tiny model."""

import torch

from trainer.lora import add_lora, find_target_modules, trainable_parameters, with_adapter_disabled
from trainer.tiny import build_tiny_model_and_tokenizer


def test_targets_every_projection_of_qwen2(tiny_pair):
    model, _ = tiny_pair
    assert find_target_modules(model) == [
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    ]


def test_only_adapter_trains_and_disabling_gives_base_logits():
    model, _ = build_tiny_model_and_tokenizer(seed=0)
    x = torch.tensor([[1, 5, 9, 30, 2]])
    with torch.no_grad():
        base = model(x).logits.clone()
    torch.manual_seed(0)
    peft_model = add_lora(model, r=4, alpha=8)
    params = trainable_parameters(peft_model)
    assert params and all("lora_" in n for n, p in peft_model.named_parameters() if p.requires_grad)
    with torch.no_grad():
        for p in params:  # make the adapter non-zero (lora_B starts at 0)
            p.add_(0.1)
        adapted = peft_model(x).logits
        with with_adapter_disabled(peft_model):
            reference = peft_model(x).logits
        again = peft_model(x).logits
    torch.testing.assert_close(reference, base)
    assert not torch.allclose(adapted, base)
    torch.testing.assert_close(again, adapted)  # the adapter is back on after the block
