"""Adapter checkpoints through the store: peft format, saving -> ready, load the latest to resume."""

import json

import pytest
import torch
from peft import PeftModel

import artstore as art
from trainer.checkpoint import load_latest_checkpoint, save_checkpoint
from trainer.loop import make_optimizer
from trainer.lora import add_lora, trainable_parameters
from trainer.tiny import build_tiny_model_and_tokenizer


def lora_model(r=4, seed=0):
    model, _ = build_tiny_model_and_tokenizer(seed=0)
    torch.manual_seed(seed)
    model = add_lora(model, r=r, alpha=2 * r)
    with torch.no_grad():  # a non-zero adapter, so that loading it changes the output
        for p in trainable_parameters(model):
            p.normal_(0, 0.05)
    return model


@pytest.fixture
def run(tmp_path):
    model = art.TrainableModel(name="ckpt", project="p", base_model="tiny", base_path=tmp_path, report_metrics=[])
    model.log_sync(None, split="train", metrics={"loss": 1.0}, step=0)
    return model.run


# peft's own loader (the test's, as vLLM's) reads a property transformers 5 deprecated: not ours.
@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")
def test_save_then_load_latest_restores_adapter_and_optimizer(run):
    model = lora_model(seed=1)
    optimizer = make_optimizer(model, 1e-3)
    model(torch.tensor([[1, 2, 3]])).logits.sum().backward()
    optimizer.step()
    c = save_checkpoint(run, model, 1, base_model="tiny", optimizer=optimizer)
    assert c.status == "ready" and c.step == 1 and c.base_model == "tiny"
    assert c.table_versions == run.table_versions() and c.size_bytes > 0
    _, path = run.checkpoint("latest")
    assert {"adapter_config.json", "adapter_model.safetensors", "optimizer.pt"} <= {p.name for p in path.iterdir()}
    config = json.loads((path / "adapter_config.json").read_text())
    assert config["r"] == 4 and config["peft_type"] == "LORA"

    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        expected = model(ids).logits
        # peft's own loader reads the folder (as vLLM's LoRA loader does).
        base, _ = build_tiny_model_and_tokenizer(seed=0)
        torch.testing.assert_close(PeftModel.from_pretrained(base, path)(ids).logits, expected)

    fresh = lora_model(seed=2)
    fresh_optimizer = make_optimizer(fresh)
    assert load_latest_checkpoint(run, fresh, fresh_optimizer) == 1
    with torch.no_grad():
        torch.testing.assert_close(fresh(ids).logits, expected)
    state, restored = optimizer.state_dict(), fresh_optimizer.state_dict()
    assert restored["state"].keys() == state["state"].keys()
    torch.testing.assert_close(restored["state"][0]["exp_avg"], state["state"][0]["exp_avg"])


def test_no_checkpoint_and_mismatched_rank(run):
    assert load_latest_checkpoint(run, lora_model()) is None
    save_checkpoint(run, lora_model(r=4), 1)
    with pytest.raises(art.CheckpointError, match="r=4"):
        load_latest_checkpoint(run, lora_model(r=8))


def test_a_save_that_never_finished_is_not_loaded(run):
    save_checkpoint(run, lora_model(), 1)
    run.checkpoints_table().begin(2)  # killed while saving step 2
    assert run.latest_checkpoint_step() == 1
    assert load_latest_checkpoint(run, lora_model()) == 1
