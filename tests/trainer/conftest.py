"""Shared fixtures: the tiny tokenizer and model are built once per test session."""

import pytest
import torch

from trainer.tiny import build_tiny_model_and_tokenizer, build_tiny_tokenizer


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny tensors gain nothing from threads, and on a busy 2-core machine two spinning
    intra-op threads made the training test about 10x slower than one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tokenizer():
    return build_tiny_tokenizer()


@pytest.fixture(scope="session")
def tiny_pair():
    return build_tiny_model_and_tokenizer(seed=0)
