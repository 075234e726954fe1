"""HF rollouts: Choices with the policy's own logprobs, which the store keeps and training reuses."""

import math

import pytest
import torch

import artstore as art
from trainer.rollout.hf import _tool_calls, prompt_ids, sample
from trainer.tokenize_step import tokenize_step

MESSAGES = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Pick a number."}]


def test_sampled_choices_carry_the_models_logprobs(tiny_pair):
    model, tokenizer = tiny_pair
    torch.manual_seed(0)
    trajectories = sample(model, tokenizer, MESSAGES, n=16, max_new_tokens=3)
    prompt = prompt_ids(tokenizer, MESSAGES)
    assert len(trajectories) == 16
    checked = 0
    for t in trajectories:
        *given, choice = t.messages_and_choices
        assert given == MESSAGES and isinstance(choice, art.Choice)
        entries = choice.logprobs.content
        stop = choice.finish_reason == "stop"
        assert 1 <= len(entries) <= 3 and (stop or choice.finish_reason == "length")
        assert (entries[-1].token == tokenizer.eos_token) == stop  # the stop token is reported last
        ids = tokenizer.encode(choice.message.content or "", add_special_tokens=False)
        ids += [tokenizer.eos_token_id] if stop else []
        if len(ids) != len(entries):  # e.g. a lone byte of a UTF-8 character decodes to U+FFFD
            continue
        # Teacher-forced on the sampled tokens, the model gives the same logprobs (temperature 1).
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([prompt + ids])).logits[0].float(), -1)
        expected = [float(logp[len(prompt) + k - 1, ids[k]]) for k in range(len(ids))]
        assert [e.logprob for e in entries] == pytest.approx(expected, abs=1e-4)
        checked += 1
    assert checked >= 3


def test_sampling_is_reproducible_with_a_seed(tiny_pair):
    model, tokenizer = tiny_pair
    runs = []
    for _ in range(2):
        torch.manual_seed(3)
        runs.append([t.model_dump() for t in sample(model, tokenizer, MESSAGES, n=3, max_new_tokens=4)])
    assert runs[0] == runs[1]


def test_the_store_keeps_the_logprobs_and_training_uses_them(tiny_pair, tmp_path):
    model, tokenizer = tiny_pair
    torch.manual_seed(1)
    trajectories = sample(model, tokenizer, MESSAGES, n=8, max_new_tokens=2)
    for i, t in enumerate(trajectories):
        t.reward = float(i % 2)
    m = art.TrainableModel(name="r", project="p", base_model="tiny", base_path=tmp_path, report_metrics=[])
    m.log_sync([art.TrajectoryGroup(trajectories)], split="train", step=0)
    back = m.run.groups(split="train", step=0)[0].trajectories
    assert [t.messages_and_choices for t in back] == [t.messages_and_choices for t in trajectories]
    tokenize_step(m.run, tokenizer, step=0)
    rows = m.run.tokens(step=0).to_pylist()
    known = sum(not math.isnan(v) for r in rows for v in r["logprobs"])
    trainable = sum(r["num_trainable"] for r in rows)
    # Sampled turns whose text re-tokenizes to the sampled tokens keep the sampler's logprobs (a
    # random model samples many lone UTF-8 bytes, which do not: those are left unknown, NaN).
    assert 0 < known < trainable


def test_hermes_tool_calls_are_parsed():
    text = 'Let me look.<tool_call>\n{"name": "lookup", "arguments": {"box": 3}}\n</tool_call>'
    assert _tool_calls(text, 2) == [{"id": "call_2_0", "type": "function",
                                     "function": {"name": "lookup", "arguments": '{"box": 3}'}}]
    assert _tool_calls("<tool_call>{not json}</tool_call>", 0) == []
    assert _tool_calls("no call", 0) == []
