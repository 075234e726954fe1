"""Tool calls in a model's text, as the chat templates write them, -> OpenAI `tool_calls`.

Two formats are recognised, both inside `<tool_call>...</tool_call>` blocks:

- Hermes/Qwen: one JSON object per block, `{"name": ..., "arguments": {...}}`.
- SmolLM2: a JSON list of such objects in one block, `[{"name": ..., "arguments": {...}}]`.

A reply counts as tool calls only when every block parses and names a function: a half-written
call stays plain text (vLLM's hermes parser does the same), so no call is invented.
"""

from __future__ import annotations

import json
import re
from typing import Any

BLOCK = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)


def parse_tool_calls(text: str, choice_index: int = 0) -> tuple[str | None, list[dict[str, Any]]]:
    """(the text before the first block, or None when empty; the calls) of `text`. `([text],
    [])` when it holds no valid call. Call ids are `call_{choice_index}_{k}`: deterministic, so a
    rollout sampled again with the same seed logs the same content."""
    blocks = BLOCK.findall(text)
    calls: list[dict[str, Any]] = []
    for block in blocks:
        try:
            parsed = json.loads(block)
        except json.JSONDecodeError:
            return text, []
        for call in parsed if isinstance(parsed, list) else [parsed]:
            if not isinstance(call, dict) or not isinstance(call.get("name"), str):
                return text, []
            arguments = call.get("arguments", {})
            calls.append({
                "id": f"call_{choice_index}_{len(calls)}", "type": "function",
                "function": {"name": call["name"],
                             "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments)},
            })  # fmt: skip
    if not calls:
        return text, []
    head = text[: text.find("<tool_call>")].strip()
    return head or None, calls
