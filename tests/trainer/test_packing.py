"""Packing: the plan, the tensors, and packed logits equal to per-sequence logits."""

import math

import pytest
import torch

from trainer.packing import pack_sequences, packed_attention_mask, plan_rows
from trainer.tiny import build_tiny_model_and_tokenizer
from trainer.tokenize import TokenizedTrajectory


def seq(ids, mask=None, logprobs=None):
    n = len(ids)
    return TokenizedTrajectory(list(ids), mask or [1] * n, logprobs or [math.nan] * n)


def test_first_fit_decreasing_plan():
    assert plan_rows([5, 3, 8, 2, 2], 8) == [[2], [0, 1], [3, 4]]
    assert plan_rows([4, 4, 4, 4], 8) == [[0, 1], [2, 3]]
    assert plan_rows([], 8) == []
    with pytest.raises(ValueError, match="sequence 1 has 9 tokens"):
        plan_rows([3, 9], 8)


def test_pack_sequences_fills_every_field():
    seqs = [
        seq([11, 12, 13], [0, 1, 1], [math.nan, -0.5, -0.25]),
        seq([21, 22], [1, 1]),
        seq([31, 32, 33, 34]),
    ]
    batch = pack_sequences(seqs, advantages=[1.0, -2.0, 0.5], row_length=6, pad_token_id=99)
    # FFD: row 0 = seq 2 (4 tokens) + seq 1 (2); row 1 = seq 0 (3) + 3 padding.
    assert batch.input_ids.tolist() == [[31, 32, 33, 34, 21, 22], [11, 12, 13, 99, 99, 99]]
    assert batch.position_ids.tolist() == [[0, 1, 2, 3, 0, 1], [0, 1, 2, 0, 1, 2]]
    assert batch.seq_ids.tolist() == [[2, 2, 2, 2, 1, 1], [0, 0, 0, -1, -1, -1]]
    # the first token of every sequence leaves the mask: nothing of its own predicts it
    assert batch.assistant_mask.int().tolist() == [[0, 1, 1, 1, 0, 1], [0, 1, 1, 0, 0, 0]]
    assert batch.advantages.tolist() == [[0.5] * 4 + [-2.0] * 2, [1.0] * 3 + [0.0] * 3]
    assert batch.old_logprobs[1, 1:3].tolist() == [-0.5, -0.25]
    assert torch.isnan(batch.old_logprobs[0]).all() and torch.isnan(batch.old_logprobs[1, 3:]).all()
    assert batch.num_tokens == 9


def test_attention_mask_is_block_diagonal_causal():
    seq_ids = torch.tensor([[0, 0, 1, 1, 1, -1]])
    allowed = packed_attention_mask(seq_ids) == 0
    assert allowed.shape == (1, 1, 6, 6)
    assert allowed[0, 0].int().tolist() == [
        [1, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0],
        [0, 0, 1, 0, 0, 0],
        [0, 0, 1, 1, 0, 0],
        [0, 0, 1, 1, 1, 0],
        [0, 0, 0, 0, 0, 1],
    ]
    blocked = packed_attention_mask(seq_ids, torch.bfloat16)[0, 0, 0, 1]
    assert blocked == torch.finfo(torch.bfloat16).min


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_logits_equal_unpacked_logits(attn):
    model, tokenizer = build_tiny_model_and_tokenizer(seed=3, attn_implementation=attn)
    gen = torch.Generator().manual_seed(0)
    lengths = [7, 19, 3, 12, 25, 5, 9]
    seqs = [seq(torch.randint(3, len(tokenizer), (n,), generator=gen).tolist()) for n in lengths]
    batch = pack_sequences(seqs, [0.0] * len(seqs), row_length=32, pad_token_id=0)
    assert batch.input_ids.shape[0] == 3  # 80 tokens in 3 rows of 32
    with torch.no_grad():
        packed = model(
            input_ids=batch.input_ids,
            position_ids=batch.position_ids,
            attention_mask=batch.attention_mask(),
        ).logits
        for i, s in enumerate(seqs):
            alone = model(input_ids=torch.tensor([s.input_ids])).logits[0]
            where = batch.seq_ids == i
            torch.testing.assert_close(packed[where], alone, rtol=0, atol=1e-5)
