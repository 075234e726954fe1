"""The serving path on a device: ART-style requests against `LocalBackend`'s endpoint, one train step.

    python -m benchmarks.serve_check --device cuda --model tiny        # HF generate on CUDA
    python -m benchmarks.serve_check --device cuda --model /path/to/hf-model --serve vllm

Registers a model (vLLM's server when `--serve vllm`, or `auto` with vllm installed and a real
model; else FastAPI + HF generate in process), then through `model.openai_client()`: a request
with n=8, logprobs and top_logprobs (timed, completion tokens/s), one with tools, one with a stop
string, then `backend.train` on the sampled groups and a request to `get_inference_name()` (the
new step) and to `@0`, whose logprobs must differ. Prints one line per check and exits non-zero
on a failed check. Used by benchmarks/gpu_check.sh.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time

import artstore as art
from trainer.backend import LocalBackend
from trainer.demo_tasks import CODE_LOOKUP, lookup_messages, rollout_group


async def main(args: argparse.Namespace) -> int:
    failures = 0

    def check(name: str, ok: bool, detail: str) -> None:
        nonlocal failures
        failures += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}", flush=True)

    with tempfile.TemporaryDirectory() as store:
        model = art.TrainableModel(name="serve-check", project="gpu", base_model=args.model, base_path=store,
                                   report_metrics=[])  # fmt: skip
        backend = LocalBackend(args.model, device=args.device, serve=args.serve, row_length=2048)
        t0 = time.perf_counter()
        await model.register(backend)
        mode = "vllm" if backend._vllm is not None else "hf"
        check("register", True, f"{args.model} on {backend.device}, serving with {mode} at {backend.base_url} "
                                f"in {time.perf_counter() - t0:.1f} s")  # fmt: skip
        client = model.openai_client()
        messages = lookup_messages(123)
        try:
            t0 = time.perf_counter()
            reply = await client.chat.completions.create(model=model.get_inference_name(), messages=messages,
                                                         n=8, max_tokens=64, logprobs=True, top_logprobs=2)
            seconds = time.perf_counter() - t0
            tokens = reply.usage.completion_tokens
            check("n=8 + logprobs", len(reply.choices) == 8 and all(c.logprobs.content for c in reply.choices),
                  f"{tokens} tokens in {seconds:.2f} s = {tokens / seconds:.0f} tokens/s")
            tools = await client.chat.completions.create(model=model.get_inference_name(), messages=messages[:2],
                                                         tools=CODE_LOOKUP.tools, max_tokens=64)
            check("tools", tools.choices[0].finish_reason in ("stop", "length", "tool_calls"),
                  f"finish {tools.choices[0].finish_reason}, tool_calls {tools.choices[0].message.tool_calls}")
            stop = await client.chat.completions.create(model=model.get_inference_name(), messages=messages,
                                                        max_tokens=32, stop=["\n"], temperature=0)
            check("stop", "\n" not in (stop.choices[0].message.content or ""), repr(stop.choices[0].message.content))
            before = [e.logprob for e in (await _greedy(client, model.get_inference_name(0), messages))]
            groups = [await rollout_group(model, CODE_LOOKUP, box, n=8, seed=box) for box in (111, 222, 333, 444)]
            for g in groups:  # give every group signal, whatever the base model answered
                for i, t in enumerate(g.trajectories):
                    t.reward = float(i % 2)
            t0 = time.perf_counter()
            result = await backend.train(model, groups, learning_rate=1e-3)
            check("train", result.step == 1, f"step {result.step} in {time.perf_counter() - t0:.1f} s, "
                                             f"loss {result.metrics['loss/train']:.4f}")  # fmt: skip
            after = [e.logprob for e in (await _greedy(client, model.get_inference_name(), messages))]
            again = [e.logprob for e in (await _greedy(client, model.get_inference_name(0), messages))]
            check("adapter swap", model.get_inference_name() == "serve-check@1" and after != before,
                  f"{model.get_inference_name()} first logprobs {after[:3]} vs @0 {before[:3]}")
            check("@0 still served", again == before or max(abs(a - b) for a, b in zip(again, before, strict=False)) < 1e-3,
                  f"@0 again {again[:3]}")
        finally:
            await backend.close()
    return 1 if failures else 0


async def _greedy(client, name, messages):  # type: ignore[no-untyped-def]
    reply = await client.chat.completions.create(model=name, messages=messages, max_tokens=8, temperature=0,
                                                 logprobs=True)
    return reply.choices[0].logprobs.content


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny")
    p.add_argument("--device", default="cuda")
    p.add_argument("--serve", choices=("auto", "hf", "vllm"), default="auto")
    sys.exit(asyncio.run(main(p.parse_args())))
