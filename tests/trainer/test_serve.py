"""The backend's OpenAI-compatible endpoint, through real HTTP with the `openai` client, as ART
rollout code uses it: `model.openai_client()` and `model.get_inference_name()`."""

import openai
import pytest
import torch

import artstore as art
from trainer import LocalBackend
from trainer.demo_tasks import CODE_LOOKUP, lookup_messages, rollout_group
from trainer.loss import token_logprobs
from trainer.serve.generate import prompt_ids
from trainer.serve.tool_calls import parse_tool_calls

MESSAGES = [{"role": "user", "content": "What is the weather in Paris?"}]
WEATHER_TOOL = {"type": "function", "function": {"name": "get_weather", "description": "The weather of a city.",
                                                 "parameters": {"type": "object",
                                                                "properties": {"city": {"type": "string"}}}}}
TOOL_REPLY = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'


@pytest.fixture
async def served(tmp_path):
    model = art.TrainableModel(name="agent", project="p", base_model="tiny", base_path=tmp_path, report_metrics=[])
    backend = LocalBackend("tiny", device="cpu", row_length=512)
    await model.register(backend)
    yield model, backend
    await backend.close()


async def ask(art_model, **kw):
    kw.setdefault("model", art_model.get_inference_name())
    kw.setdefault("messages", MESSAGES)
    kw.setdefault("max_tokens", 6)
    return await art_model.openai_client().chat.completions.create(**kw)


async def test_register_gives_the_model_an_endpoint_and_art_names(served):
    model, backend = served
    assert model.inference_base_url == backend.base_url and backend.base_url.startswith("http://127.0.0.1:")
    assert model.get_inference_name() == "agent@0" and model.get_inference_name(0) == "agent@0"
    names = [m.id for m in (await model.openai_client().models.list()).data]
    assert names == ["agent", "agent@0", "tiny"]


async def test_n_choices_carry_the_models_own_logprobs_and_top_logprobs(served):
    model, backend = served
    reply = await ask(model, n=3, logprobs=True, top_logprobs=3, seed=7)
    policy, tokenizer = backend.model_and_tokenizer(model)
    prompt = prompt_ids(tokenizer, MESSAGES, None)
    assert len(reply.choices) == 3 and [c.index for c in reply.choices] == [0, 1, 2]
    assert reply.usage.prompt_tokens == len(prompt)
    sampled = (await ask(model, n=3, logprobs=True, seed=7, extra_body={"return_token_ids": True})).choices
    assert reply.usage.completion_tokens == sum(len(c.token_ids) for c in sampled)
    for choice, again in zip(reply.choices, sampled, strict=True):
        entries = choice.logprobs.content
        assert [e.logprob for e in entries] == [e.logprob for e in again.logprobs.content]  # seed: same
        with torch.no_grad():  # teacher-forced on the sampled ids, the policy gives the same numbers
            ids = torch.tensor([prompt + again.token_ids])
            expected = token_logprobs(policy(ids).logits, ids)[0, len(prompt):].tolist()
        assert [e.logprob for e in entries] == pytest.approx(expected, abs=1e-4)
        for e in entries:
            tops = [t.logprob for t in e.top_logprobs]
            assert len(tops) == 3 and tops == sorted(tops, reverse=True) and e.logprob <= tops[0] + 1e-6


async def test_temperature_zero_is_greedy_and_stop_cuts_the_content(served):
    model, _ = served
    full = (await ask(model, n=2, temperature=0, max_tokens=12)).choices
    assert full[0].message.content == full[1].message.content
    text = full[0].message.content
    stop = text[4:6]
    cut = (await ask(model, temperature=0, max_tokens=12, stop=[stop], logprobs=True)).choices[0]
    assert cut.message.content == text[: text.find(stop)] and cut.finish_reason == "stop"
    pieces = "".join(e.token for e in cut.logprobs.content)
    assert pieces.startswith(cut.message.content) and stop in pieces  # tokens through the stop string


async def test_a_reply_in_tool_call_format_comes_back_as_tool_calls(served):
    """The adapter is first taught (supervised, a few hundred steps) to answer with a Hermes tool call."""
    model, backend = served
    policy, tokenizer = backend.model_and_tokenizer(model)
    prompt = prompt_ids(tokenizer, MESSAGES, [WEATHER_TOOL])
    target = tokenizer.encode(TOOL_REPLY, add_special_tokens=False) + [tokenizer.eos_token_id]
    ids = torch.tensor([prompt + target])
    optimizer = torch.optim.Adam([p for p in policy.parameters() if p.requires_grad], lr=5e-3)
    policy.train()
    for _ in range(300):
        loss = -token_logprobs(policy(ids).logits, ids)[0, len(prompt):].mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if loss.item() < 0.05:
            break
    policy.eval()
    reply = (await ask(model, tools=[WEATHER_TOOL], temperature=0, max_tokens=40)).choices[0]
    assert reply.finish_reason == "tool_calls" and reply.message.content is None
    [call] = reply.message.tool_calls
    assert call.function.name == "get_weather" and call.function.arguments == '{"city": "Paris"}'
    assert call.id == "call_0_0" and call.type == "function"
    plain = (await ask(model, temperature=0, max_tokens=40)).choices[0]  # no tools offered: plain text
    assert plain.message.tool_calls is None


async def test_requests_it_cannot_honour_are_refused_naming_the_field(served):
    model, backend = served
    with pytest.raises(openai.BadRequestError, match="frequency_penalty"):
        await ask(model, frequency_penalty=0.5)
    with pytest.raises(openai.BadRequestError, match="tool_choice"):
        await ask(model, tools=[WEATHER_TOOL], tool_choice="required")
    with pytest.raises(openai.BadRequestError, match="guided_json"):
        await ask(model, extra_body={"guided_json": {}})
    with pytest.raises(openai.BadRequestError, match="top_logprobs"):
        await ask(model, top_logprobs=2)
    with pytest.raises(openai.NotFoundError, match="step 5 is not served"):
        await ask(model, model="agent@5")
    with pytest.raises(openai.NotFoundError, match="not served here"):
        await ask(model, model="someone-else")
    wrong_key = openai.AsyncOpenAI(base_url=backend.base_url, api_key="wrong")
    with pytest.raises(openai.AuthenticationError):
        await wrong_key.chat.completions.create(model="agent", messages=MESSAGES)


async def test_after_a_train_step_the_new_adapter_is_served_and_at_step_selects_the_old(served):
    model, _ = served
    greedy = {"temperature": 0, "max_tokens": 4, "logprobs": True, "messages": lookup_messages(123),
              "tools": CODE_LOOKUP.tools}
    before = (await ask(model, model="agent@0", **greedy)).choices[0]
    groups = [await rollout_group(model, CODE_LOOKUP, box, n=8, seed=box) for box in (111, 222, 333, 444)]
    assert any(len({t.reward for t in g.trajectories}) > 1 for g in groups)
    result = await model.backend().train(model, groups, learning_rate=1e-2)
    assert result.step == 1 and model.get_inference_name() == "agent@1"
    after = (await ask(model, **greedy)).choices[0]
    again = (await ask(model, model="agent@0", **greedy)).choices[0]
    latest = (await ask(model, model="agent", **greedy)).choices[0]
    base = (await ask(model, model="tiny", **greedy)).choices[0]

    def logprobs(choice):
        return [e.logprob for e in choice.logprobs.content]

    assert logprobs(after) != pytest.approx(logprobs(before), abs=1e-3)  # the trained adapter
    assert logprobs(again) == pytest.approx(logprobs(before), abs=1e-5)  # @0: the step-0 weights
    assert logprobs(latest) == pytest.approx(logprobs(after), abs=1e-5)
    assert logprobs(base) == pytest.approx(logprobs(before), abs=1e-5)  # a fresh adapter is the base
    assert [m.id for m in (await model.openai_client().models.list()).data] == ["agent", "agent@0", "agent@1", "tiny"]


@pytest.mark.parametrize("text,head,calls", [
    (TOOL_REPLY, None, [("get_weather", '{"city": "Paris"}')]),  # Hermes/Qwen: one object per block
    ('Let me check.<tool_call>[{"name": "a", "arguments": {"x": 1}}, {"name": "b", "arguments": "{}"}]</tool_call>',
     "Let me check.", [("a", '{"x": 1}'), ("b", "{}")]),  # SmolLM2: a JSON list in one block
    ('<tool_call>{"name": "a"}</tool_call><tool_call>{"name": "b", "arguments": {}}</tool_call>', None,
     [("a", "{}"), ("b", "{}")]),
])  # fmt: skip
def test_tool_calls_are_read_in_hermes_and_smollm2_formats(text, head, calls):
    got_head, got = parse_tool_calls(text, choice_index=2)
    assert got_head == head
    assert [(c["function"]["name"], c["function"]["arguments"]) for c in got] == calls
    assert [c["id"] for c in got] == [f"call_2_{k}" for k in range(len(calls))]


@pytest.mark.parametrize("text", ["no call here", '<tool_call>{"name": "a", "arguments": {</tool_call>',
                                  '<tool_call>{"arguments": {}}</tool_call>', "<tool_call>[1, 2]</tool_call>",
                                  '<tool_call>{"name": "a"}</tool_call><tool_call>oops</tool_call>'])
def test_text_that_is_not_a_whole_valid_call_stays_text(text):
    assert parse_tool_calls(text) == (text, [])
