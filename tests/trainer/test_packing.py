"""Packing: the plan, the tensors, and packed logits equal to per-sequence logits."""

import math

import pytest
import torch

from trainer.attention import (
    VARLEN,
    segment_attention,
    segments_from_position_ids,
    use_varlen_attention,
)
from trainer.packing import dense_attention_mask, pack_sequences, plan_rows
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
    # segments of the flattened stream: seq 2, seq 1 | seq 0, padding
    assert batch.cu_seq_lens.tolist() == [0, 4, 6, 9, 12] and batch.max_length == 4
    assert batch.cu_seq_lens.dtype == torch.int32
    assert torch.equal(segments_from_position_ids(batch.position_ids), batch.cu_seq_lens)


def test_a_full_row_has_no_padding_segment():
    batch = pack_sequences([seq([1, 2]), seq([3, 4])], [0.0, 0.0], row_length=4)
    assert batch.cu_seq_lens.tolist() == [0, 2, 4] and batch.max_length == 2


def test_attention_mask_is_block_diagonal_causal():
    seq_ids = torch.tensor([[0, 0, 1, 1, 1, -1]])
    allowed = dense_attention_mask(seq_ids) == 0
    assert allowed.shape == (1, 1, 6, 6)
    assert allowed[0, 0].int().tolist() == [
        [1, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0],
        [0, 0, 1, 0, 0, 0],
        [0, 0, 1, 1, 0, 0],
        [0, 0, 1, 1, 1, 0],
        [0, 0, 0, 0, 0, 1],
    ]
    blocked = dense_attention_mask(seq_ids, torch.bfloat16)[0, 0, 0, 1]
    assert blocked == torch.finfo(torch.bfloat16).min


def random_packed_batch(vocab, lengths=(7, 19, 3, 12, 25, 5, 9, 1), row_length=32):
    gen = torch.Generator().manual_seed(0)
    seqs = [seq(torch.randint(3, vocab, (n,), generator=gen).tolist()) for n in lengths]
    return seqs, pack_sequences(seqs, [0.0] * len(seqs), row_length=row_length, pad_token_id=0)


@pytest.mark.parametrize("base", ["sdpa", "eager"])
def test_packed_varlen_logits_equal_unpacked_logits(base):
    """Unpacked logits from the model's own attention (sdpa or eager, no packing), packed ones
    through varlen attention with no mask: equal to float32 rounding (logits reach ~20: 1e-5 is
    a few ulps)."""
    model, tokenizer = build_tiny_model_and_tokenizer(seed=3, attn_implementation=base)
    seqs, batch = random_packed_batch(len(tokenizer))
    assert batch.input_ids.shape[0] == 3  # 81 tokens in 3 rows of 32
    with torch.no_grad():
        alone = [model(input_ids=torch.tensor([s.input_ids])).logits[0] for s in seqs]
        assert use_varlen_attention(model) == VARLEN
        packed = model(**batch.model_inputs()).logits
        # segments found from position_ids alone, without cu_seq_lens: the same logits
        found = model(input_ids=batch.input_ids, position_ids=batch.position_ids).logits
    torch.testing.assert_close(found, packed, rtol=0, atol=0)
    for i, one in enumerate(alone):
        torch.testing.assert_close(packed[batch.seq_ids == i], one, rtol=0, atol=1e-5)


def test_varlen_equals_the_dense_mask_in_values_and_gradients():
    model, tokenizer = build_tiny_model_and_tokenizer(seed=4)
    _, batch = random_packed_batch(len(tokenizer), lengths=(30, 2, 17, 9, 14), row_length=40)
    weight = model.model.layers[0].self_attn.q_proj.weight
    real = batch.seq_ids >= 0

    def loss(logits):  # mean log-probability over the real tokens
        return torch.log_softmax(logits[real], dim=-1).mean()

    dense = model(input_ids=batch.input_ids, position_ids=batch.position_ids,
                  attention_mask=batch.attention_mask()).logits
    (grad_dense,) = torch.autograd.grad(loss(dense), weight)
    use_varlen_attention(model)
    varlen = model(**batch.model_inputs()).logits
    (grad_varlen,) = torch.autograd.grad(loss(varlen), weight)
    torch.testing.assert_close(varlen[real], dense[real], rtol=0, atol=1e-5)
    assert grad_dense.abs().max() > 1e-3  # a gradient worth comparing
    torch.testing.assert_close(grad_varlen, grad_dense, rtol=1e-4, atol=1e-7)


def test_a_varlen_model_still_generates_as_before():
    """Generation (KV cache, left padding) goes through plain SDPA: the same tokens."""
    model, tokenizer = build_tiny_model_and_tokenizer(seed=5)
    tokenizer.padding_side = "left"
    prompts = tokenizer(["the quick brown fox", "What is"], return_tensors="pt", padding=True)
    kwargs = dict(max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    before = model.generate(**prompts, **kwargs)
    use_varlen_attention(model)
    torch.testing.assert_close(model.generate(**prompts, **kwargs), before, rtol=0, atol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_half_precision_varlen_equals_float32_segments():
    """On CUDA in bfloat16 the segments go to torch's flash varlen kernel (GQA included)."""
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(96, h, 64, generator=gen) for h in (4, 2, 2))
    cu = torch.tensor([0, 5, 37, 38, 90, 96], dtype=torch.int32)
    want = segment_attention(q, k, v, cu, 52)
    got = segment_attention(*(x.cuda().bfloat16() for x in (q, k, v)), cu.cuda(), 52)
    torch.testing.assert_close(got.float().cpu(), want, rtol=0, atol=3e-2)
