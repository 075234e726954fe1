"""Shared fixtures: the tiny tokenizer and model are built once per test session."""

import pytest

from trainer.tiny import build_tiny_model_and_tokenizer, build_tiny_tokenizer


@pytest.fixture(scope="session")
def tokenizer():
    return build_tiny_tokenizer()


@pytest.fixture(scope="session")
def tiny_pair():
    return build_tiny_model_and_tokenizer(seed=0)
