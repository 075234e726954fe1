"""tokenize_step: trajectories logged to the store -> tokens.lance, masks checked on known chats."""

import math

import pytest
from openai.types.chat.chat_completion import ChoiceLogprobs
from openai.types.chat.chat_completion_token_logprob import ChatCompletionTokenLogprob

import artstore as art
from trainer.tokenize_step import chat_message, tokenize_step, tokenizer_name

TOOLS = [{"type": "function", "function": {"name": "search_inbox", "parameters": {"type": "object"}}}]


def logprobs(tokenizer, text, eot=True):
    """What a sampler reports for `text`: one entry per token, the end-of-turn token last."""
    ids = tokenizer.encode(text, add_special_tokens=False) + ([tokenizer.eos_token_id] if eot else [])
    return ChoiceLogprobs(content=[
        ChatCompletionTokenLogprob(token=tokenizer.decode([i]), logprob=-0.01 * (k + 1), bytes=[], top_logprobs=[])
        for k, i in enumerate(ids)
    ])  # fmt: skip


def trajectory(tokenizer, i, reward):
    call_text = f'<tool_call>\n{{"name": "search_inbox", "arguments": {{"query": "report {i}"}}}}\n</tool_call>'
    return art.Trajectory(
        messages_and_choices=[
            {"role": "system", "content": "You search email."},
            {"role": "user", "content": f"Find report {i}."},
            art.Choice(index=0, finish_reason="tool_calls", logprobs=logprobs(tokenizer, call_text), message={
                "role": "assistant", "content": None, "tool_calls": [{
                    "id": f"c{i}", "type": "function",
                    "function": {"name": "search_inbox", "arguments": f'{{"query": "report {i}"}}'}}]}),
            {"role": "tool", "tool_call_id": f"c{i}", "content": f"found {i}"},
            art.Choice(index=0, finish_reason="stop", logprobs=logprobs(tokenizer, f"Day {i}."),
                       message={"role": "assistant", "content": f"Day {i}."}),
            {"role": "user", "content": "Thanks"},
            {"role": "assistant", "content": "Not sampled: no mask."},  # a plain dict is not trainable
        ],
        tools=TOOLS,
        reward=reward,
    )  # fmt: skip


def masked_runs(tokenizer, ids, mask):
    runs, current = [], []
    for t, m in zip(ids, mask, strict=True):
        if m:
            current.append(t)
        elif current:
            runs.append(current)
            current = []
    return [tokenizer.decode(r) for r in runs + ([current] if current else [])]


@pytest.fixture
def model(tmp_path):
    return art.TrainableModel(name="tok", project="p", base_model="tiny", base_path=tmp_path, report_metrics=[])


def test_masks_logprobs_and_advantages_read_back_from_the_store(model, tokenizer):
    groups = [
        art.TrajectoryGroup([trajectory(tokenizer, i, r) for i, r in enumerate([1.0, 0.0, 0.5])]),
        art.TrajectoryGroup([trajectory(tokenizer, 7, 1.0), trajectory(tokenizer, 8, 1.0)]),  # no signal
    ]
    model.log_sync(groups, split="train", step=0)
    result = tokenize_step(model.run, tokenizer, step=0)
    assert (result.num_sequences, result.skipped_groups) == (3, 1)

    tokens = model.run.tokens(step=0, split="train").sort_by("sequence_id").to_pylist()
    stored = model.run.trajectories(split="train", step=0).to_pylist()
    by_id = {t["trajectory_id"]: t for t in stored}
    for i, row in enumerate(tokens):
        source = by_id[row["trajectory_id"]]
        assert row["sequence_id"] == row["trajectory_id"] and row["group_id"] == source["group_id"]
        assert row["log_id"] == source["log_id"] and row["reward"] == source["reward"]
        assert row["tokenizer"] == tokenizer_name(tokenizer)
        assert masked_runs(tokenizer, row["input_ids"], row["assistant_mask"]) == [
            f'<tool_call>\n{{"name": "search_inbox", "arguments": {{"query": "report {i}"}}}}\n</tool_call><|im_end|>',
            f"Day {i}.<|im_end|>",
        ]
        # The sampler's logprobs land on exactly the sampled tokens; everything else is unknown.
        known = [lp for lp in row["logprobs"] if not math.isnan(lp)]
        masked = sum(row["assistant_mask"])
        assert len(known) == masked == row["num_trainable"]
        assert known[0] == pytest.approx(-0.01)
        assert row["num_tokens"] == len(row["input_ids"])
    # reward - mean, / std: rewards 1, 0, 0.5 -> +1.22, -1.22, 0
    advantages = {by_id[r["trajectory_id"]]["reward"]: r["advantage"] for r in tokens}
    assert advantages[1.0] == pytest.approx(1.2247, abs=1e-3)
    assert advantages[0.0] == pytest.approx(-1.2247, abs=1e-3)
    assert advantages[0.5] == pytest.approx(0.0, abs=1e-6)

    again = tokenize_step(model.run, tokenizer, step=0)  # e.g. after a crash: upserted, not added
    assert again.version > result.version and model.run.tokens(step=0).num_rows == 3


def test_options_and_what_is_left_out(model, tokenizer):
    plain = art.Trajectory(messages_and_choices=[{"role": "user", "content": "hi"},
                                                 {"role": "assistant", "content": "hello"}], reward=1.0)
    group = art.TrajectoryGroup([trajectory(tokenizer, 1, 1.0), trajectory(tokenizer, 2, 0.0), plain])
    model.log_sync([group], split="train", step=3)
    out = tokenize_step(model.run, tokenizer, step=3, scale_by_std=False)
    assert out.num_sequences == 2  # the trajectory without a sampled turn has nothing to train
    rows = {r["reward"]: r["advantage"] for r in model.run.tokens(step=3).to_pylist()}
    assert rows == {1.0: pytest.approx(1 / 3), 0.0: pytest.approx(-2 / 3)}  # reward - mean only
    assert tokenize_step(model.run, tokenizer, step=3, max_length=10).skipped_too_long == 2
    assert tokenize_step(model.run, tokenizer, step=99).num_sequences == 0  # an empty step is fine


def test_chat_message_from_a_stored_row():
    row = {"role": "assistant", "content": None, "name": None, "tool_call_id": None, "trainable": True,
           "logprobs": [-0.5], "tool_calls": [{"id": "c", "type": None, "name": "f", "arguments": "{}"}]}
    assert chat_message(row) == {
        "role": "assistant", "content": None, "trainable": True, "logprobs": [-0.5],
        "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
    }  # fmt: skip
