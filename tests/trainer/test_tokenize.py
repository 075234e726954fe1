"""tokenize_trajectory: the mask covers exactly the generated text of trainable assistant turns."""

import copy
import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from trainer.tokenize import tokenize_trajectory

TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
]
CALL = {
    "id": "c1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
}


def conversation():
    return [
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [CALL], "trainable": True},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny, 21 degrees"},
        {"role": "assistant", "content": "It is sunny.", "trainable": True},
        {"role": "user", "content": "Thanks!"},
        {"role": "assistant", "content": "You are welcome.", "trainable": False},
    ]


def masked_runs(tokenizer, out):
    """Decoded text of each maximal run of masked tokens."""
    runs, current = [], []
    for token, m in zip(out.input_ids, out.assistant_mask, strict=True):
        if m:
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return [tokenizer.decode(r) for r in runs]


def test_mask_is_exactly_the_generated_text(tokenizer):
    out = tokenize_trajectory(tokenizer, conversation(), TOOLS)
    assert masked_runs(tokenizer, out) == [
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
        "<|im_end|>",
        "It is sunny.<|im_end|>",
    ]
    rendered = tokenizer.apply_chat_template(
        [{k: v for k, v in m.items() if k != "trainable"} for m in conversation()],
        tools=TOOLS,
        tokenize=False,
    )
    assert tokenizer.decode(out.input_ids) == rendered
    assert len(out.input_ids) == len(out.assistant_mask) == len(out.logprobs)
    assert all(math.isnan(v) for v in out.logprobs)


def test_role_header_and_separator_are_not_masked(tokenizer):
    out = tokenize_trajectory(tokenizer, conversation()[:5], TOOLS)
    first = out.assistant_mask.index(1)
    assert tokenizer.decode(out.input_ids[:first]).endswith("<|im_start|>assistant\n")
    assert out.assistant_mask[-1] == 0  # the "\n" after <|im_end|> is template, not generated
    assert tokenizer.decode(out.input_ids[-1:]) == "\n"


def test_tool_arguments_kept_as_text_when_not_parsed(tokenizer):
    messages = conversation()[:3]
    messages[2]["tool_calls"] = [copy.deepcopy(CALL)]
    messages[2]["tool_calls"][0]["function"]["arguments"] = '{"city":"Paris"}'
    raw = tokenize_trajectory(tokenizer, messages, TOOLS, parse_tool_arguments=False)
    parsed = tokenize_trajectory(tokenizer, messages, TOOLS)
    assert '"arguments": {"city":"Paris"}}' in masked_runs(tokenizer, raw)[0]
    assert '"arguments": {"city": "Paris"}}' in masked_runs(tokenizer, parsed)[0]


def test_logprobs_are_aligned_or_left_unknown(tokenizer):
    messages = conversation()[:5]
    turn_tokens = len(tokenizer.encode("It is sunny.<|im_end|>", add_special_tokens=False))
    messages[4]["logprobs"] = [-0.5] * turn_tokens
    out = tokenize_trajectory(tokenizer, messages, TOOLS)
    masked_lp = [lp for lp, m in zip(out.logprobs, out.assistant_mask, strict=True) if m]
    assert masked_lp[-turn_tokens:] == [-0.5] * turn_tokens
    assert all(math.isnan(v) for v in masked_lp[:-turn_tokens])  # the tool-call turn had none

    messages[4]["logprobs"] = [-0.5] * (turn_tokens - 1)  # sampler omitted the stop token
    out = tokenize_trajectory(tokenizer, messages, TOOLS)
    tail = [lp for lp, m in zip(out.logprobs, out.assistant_mask, strict=True) if m][-turn_tokens:]
    assert tail[:-1] == [-0.5] * (turn_tokens - 1) and math.isnan(tail[-1])

    messages[4]["logprobs"] = [-0.5] * (turn_tokens + 3)  # cannot be matched: unknown
    out = tokenize_trajectory(tokenizer, messages, TOOLS)
    assert all(math.isnan(v) for v in out.logprobs)


def test_untrainable_and_invalid_flags(tokenizer):
    messages = [{k: v for k, v in m.items() if k != "trainable"} for m in conversation()]
    assert sum(tokenize_trajectory(tokenizer, messages, TOOLS).assistant_mask) == 0
    messages[1]["trainable"] = True
    with pytest.raises(ValueError, match=r"messages\[1\]"):
        tokenize_trajectory(tokenizer, messages, TOOLS)
    with pytest.raises(ValueError, match=r"messages\[0\]"):
        tokenize_trajectory(tokenizer, [{"role": "assistant", "content": "x", "trainable": True}])


LLAMA3_STYLE = (
    "{{ bos_token }}{% for m in messages %}"
    "<|start_header_id|>{{ m.role }}<|end_header_id|>\n\n{{ m.content }}<|eot_id|>"
    "{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>"
    "\n\n{% endif %}"
)


def test_other_template_and_end_marker(tokenizer):
    tok = copy.deepcopy(tokenizer)
    tok.add_special_tokens(
        {
            "bos_token": "<|bos|>",
            "additional_special_tokens": ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
        }
    )
    tok.chat_template = LLAMA3_STYLE
    messages = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello there", "trainable": True},
    ]
    out = tokenize_trajectory(tok, messages, end_of_turn="<|eot_id|>")
    assert masked_runs(tok, out) == ["Hello there<|eot_id|>"]
    assert out.input_ids[0] == tok.bos_token_id


def test_template_that_rewrites_earlier_turns_is_refused(tokenizer):
    tok = copy.deepcopy(tokenizer)
    # Marks the last message: a prefix no longer renders the same as the full conversation.
    tok.chat_template = (
        "{% for m in messages %}[{{ m.role }}]{{ m.content }}{% if loop.last %}[end]{% endif %}"
        "{% endfor %}{% if add_generation_prompt %}[assistant]{% endif %}"
    )
    messages = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Yo", "trainable": True},
    ]
    with pytest.raises(ValueError, match="messages\\[1\\]"):
        tokenize_trajectory(tok, messages)


def sentencepiece_style_tokenizer():
    """A Metaspace (SentencePiece-like) tokenizer: each encode call prepends a space marker."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="always")
    tok.decoder = decoders.Metaspace(prepend_scheme="always")
    tok.train_from_iterator(
        ["hello there how are you I am fine It is sunny today " + "abcdefghijklmnopqrstuvwxyz."]
        * 4,
        trainers.BpeTrainer(
            vocab_size=120,
            show_progress=False,
            special_tokens=["<unk>", "</s>", "[INST]", "[/INST]"],
        ),
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", unk_token="<unk>")
    fast.chat_template = (
        "{% for m in messages %}{% if m.role == 'user' %}[INST] {{ m.content }} [/INST]"
        "{% else %} {{ m.content }}</s>{% endif %}{% endfor %}"
    )
    return fast


def test_dummy_prefix_tokenizer_uses_offsets():
    tok = sentencepiece_style_tokenizer()
    messages = [
        {"role": "user", "content": "hello there"},
        {"role": "assistant", "content": "It is sunny.", "trainable": True},
    ]
    out = tokenize_trajectory(tok, messages)
    assert out.input_ids == tok.encode(
        tok.apply_chat_template(messages, tokenize=False), add_special_tokens=False
    )
    assert masked_runs(tok, out) == ["It is sunny.</s>"]


def expected_turn(message):
    """The tiny template's rendering of an assistant turn, written out independently."""
    parts = [message["content"]] if message["content"] else []
    for call in message.get("tool_calls") or []:
        fn = call["function"]
        arguments = json.dumps(json.loads(fn["arguments"]), ensure_ascii=False)
        parts.append(
            f'<tool_call>\n{{"name": "{fn["name"]}", "arguments": {arguments}}}\n</tool_call>'
        )
    return "\n".join(parts) + "<|im_end|>"


text = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=30)
calls = st.lists(
    st.builds(
        lambda name, v: {
            "id": "x",
            "type": "function",
            "function": {"name": name, "arguments": json.dumps({"q": v})},
        },
        st.sampled_from(["a", "search"]),
        text,
    ),
    max_size=2,
)


@st.composite
def conversations(draw):
    messages = [{"role": "user", "content": draw(text)}]
    for _ in range(draw(st.integers(1, 4))):
        content = draw(st.one_of(st.none(), text))
        tool_calls = draw(calls)
        if content is None and not tool_calls:
            content = "ok"
        messages.append(
            {
                "role": "assistant",
                "content": content,
                "tool_calls": tool_calls or None,
                "trainable": draw(st.booleans()),
            }
        )
        messages.append({"role": draw(st.sampled_from(["user", "tool"])), "content": draw(text)})
    return messages


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(conversations())
def test_property_masked_text_is_each_trainable_turn(tokenizer, messages):
    out = tokenize_trajectory(tokenizer, messages)
    want = [expected_turn(m) for m in messages if m.get("trainable")]
    # Adjacent trainable turns are always separated by an unmasked header, so runs map 1:1.
    assert masked_runs(tokenizer, out) == want
