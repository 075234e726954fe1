"""Peak memory of one packed training row, dense [T, T] mask (before) vs varlen attention (after).

    python -m benchmarks.packing_memory [--tokens 4096 16384 32768] [--device cpu|cuda]
                                        [--results benchmarks/RESULTS.md | -]

For each row length T and each way of keeping packed sequences apart, a fresh subprocess builds
the tiny Qwen2 (trainer.tiny, hidden 64, 2 layers, 4 heads, max positions T) with a rank-8 LoRA
adapter, packs one row of T tokens (sequences of T/2, T/4, ... down to 512 tokens, then 512-token
sequences to fill the row: the long agent rollouts are in it), and runs what `trainer.loop` runs
per micro-batch: forward, token logprobs, a masked loss, backward.

- `dense mask`: what training did before: `PackedBatch.attention_mask()` ([1, 1, T, T] float32,
  built inside the measured region) passed to the model's SDPA attention;
- `varlen`: what it does now: `PackedBatch.model_inputs()` (cu_seq_lens, no mask) on
  `trainer.attention.VARLEN`.

Method. CPU: the child's resident-set high-water mark (`ru_maxrss`) minus its resident set just
before the forward (model, inputs and imports already in memory): the memory the forward +
backward of that row added. CUDA: `torch.cuda.max_memory_allocated` minus the allocation before
the forward, every case in one process (the peak counter is reset per case). A case that dies
(e.g. out of memory) is reported as such. On the CPU one case per process, so no case inherits
another's high-water mark.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
CASES = ("dense mask", "varlen")
TITLE = "Packed-row memory, dense mask vs varlen attention"
NOTES = """What it shows: the dense mask's memory grows with T^2 (a [T, T] float32 mask plus its boolean
intermediates while it is built), the varlen path's with T (activations and logits; attention runs
per sequence in SDPA's fused causal kernel, which keeps no [n, n] scores even for the 16k-token
sequence). The varlen rows also skip the attention work across sequences, hence the shorter times
(timings on a shared, loaded machine: compare within a run). Before = `PackedBatch.attention_mask()`
into the model's SDPA, as `trainer.loop` did before issue 14; after = `PackedBatch.model_inputs()`
on `trainer.attention.VARLEN`, as it does now."""


def row_lengths(tokens: int, shortest: int = 512) -> list[int]:
    """Sequence lengths filling a row of `tokens`: T/2, T/4, ... >= `shortest`, then `shortest`s
    and a remainder."""
    lengths, n = [], tokens // 2
    while n >= shortest:
        lengths.append(n)
        n //= 2
    left = tokens - sum(lengths)
    lengths += [shortest] * (left // shortest) + ([left % shortest] if left % shortest else [])
    return lengths


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def run_case(case: str, tokens: int, device: str, dtype: str = "float32") -> dict[str, float]:
    """One forward + backward of a packed row of `tokens` tokens; memory it added (bytes)."""
    from trainer.attention import use_varlen_attention
    from trainer.lora import add_lora
    from trainer.loss import token_logprobs
    from trainer.packing import pack_sequences
    from trainer.tiny import build_tiny_model_and_tokenizer
    from trainer.tokenize import TokenizedTrajectory

    torch.manual_seed(0)
    model, tokenizer = build_tiny_model_and_tokenizer(max_positions=tokens)
    model = add_lora(model, r=8, alpha=16).to(device, getattr(torch, dtype))
    model.train()
    seqs = [TokenizedTrajectory(torch.randint(3, len(tokenizer), (n,)).tolist(), [1] * n, [float("nan")] * n)
            for n in row_lengths(tokens)]
    batch = pack_sequences(seqs, [1.0] * len(seqs), row_length=tokens).to(device)
    if case == "varlen":
        use_varlen_attention(model)
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = rss_bytes()
    start = time.perf_counter()
    if case == "varlen":
        logits = model(**batch.model_inputs()).logits
    else:
        logits = model(input_ids=batch.input_ids, position_ids=batch.position_ids,
                       attention_mask=batch.attention_mask(getattr(torch, dtype))).logits
    logprobs = token_logprobs(logits, batch.input_ids)
    loss = -(logprobs * batch.assistant_mask).sum() / batch.assistant_mask.sum()
    loss.backward()
    if cuda:
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    return {"added_bytes": peak - base, "peak_bytes": peak, "seconds": time.perf_counter() - start,
            "segments": len(seqs), "longest": max(len(s.input_ids) for s in seqs), "loss": float(loss)}


def measure(case: str, tokens: int, device: str, dtype: str, timeout: float) -> dict[str, object]:
    """`run_case` in a fresh subprocess on the CPU (its own high-water mark), in this process on
    CUDA (the peak counter is reset per case, and CUDA starts once); an error becomes `failed`."""
    if device.startswith("cuda"):
        try:
            return run_case(case, tokens, device, dtype)
        except torch.cuda.OutOfMemoryError:
            return {"failed": "CUDA out of memory"}
        finally:
            torch.cuda.empty_cache()
    command = [sys.executable, "-m", "benchmarks.packing_memory", "--child", case, "--tokens", str(tokens),
               "--device", device, "--dtype", dtype]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"failed": f"over {timeout:.0f} s"}
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        killed = done.returncode in (-9, 137)
        return {"failed": "killed (out of memory?)" if killed else tail[:120]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def render(results: dict[tuple[str, int], dict], tokens: list[int], device: str, dtype: str,
           argv: list[str]) -> str:
    gib = 2**30
    out = [
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {machine(device)}.",
        f"Command: `{' '.join(['python -m benchmarks.packing_memory', *argv])}`",
        f"One packed row of T tokens, tiny Qwen2 + LoRA r=8 in {dtype}, forward + token logprobs + loss + backward, "
        f"one subprocess per case. Memory added = {'max_memory_allocated' if device != 'cpu' else 'ru_maxrss'} "
        "minus the memory just before the forward.",
        "",
        "| T tokens | segments (longest) | dense mask: added MiB | s | varlen: added MiB | s | dense / varlen "
        "| varlen MiB per 1k tokens |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for t in tokens:
        d, v = results[("dense mask", t)], results[("varlen", t)]

        def mib(r: dict) -> str:
            return r["failed"] if "failed" in r else f"{r['added_bytes'] / 2**20:,.0f}"

        def sec(r: dict) -> str:
            return "" if "failed" in r else f"{r['seconds']:.1f}"

        ok = "failed" not in d and "failed" not in v
        ratio = f"{d['added_bytes'] / v['added_bytes']:.1f}x" if ok else ""
        per_k = "" if "failed" in v else f"{v['added_bytes'] / 2**20 / (t / 1024):.1f}"
        shape = "" if "failed" in v else f"{v['segments']} ({v['longest']})"
        out.append(f"| {t:,} | {shape} | {mib(d)} | {sec(d)} | {mib(v)} | {sec(v)} | {ratio} | {per_k} |")
    growth = []
    for case in CASES:
        small, large = results[(case, tokens[0])], results[(case, tokens[-1])]
        if "failed" not in small and "failed" not in large:
            growth.append(f"{case}: {large['added_bytes'] / small['added_bytes']:.1f}x")
    out += ["", f"Growth from T={tokens[0]:,} to T={tokens[-1]:,} ({tokens[-1] / tokens[0]:.0f}x the tokens): "
            + "; ".join(growth) + f" (linear: {tokens[-1] / tokens[0]:.0f}x, quadratic: "
            f"{(tokens[-1] / tokens[0]) ** 2:.0f}x). A [T, T] float32 mask alone is "
            f"{tokens[-1] ** 2 * 4 / gib:.0f} GiB at T={tokens[-1]:,}."]
    return "\n".join(out)


def machine(device: str) -> str:
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    text = (f"{os.cpu_count()} CPUs (load average {load} at the end), Python {platform.python_version()}, "
            f"torch {torch.__version__}")
    if device.startswith("cuda"):
        text += f", GPU {torch.cuda.get_device_name(0)}"
    return text


def write_section(path: Path, device: str, report: str) -> None:
    """Replace (or append) this device's section of `path` between its BEGIN/END markers."""
    name = "packing_memory" if device == "cpu" else f"packing_memory_{device.split(':')[0]}"
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    section = f"{begin}\n## {TITLE}, {device}: `benchmarks/packing_memory.py`\n\n{report}\n\n{NOTES}\n{end}\n"
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + section + rest.split(end, 1)[1].lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, nargs="+", default=[4096, 16384, 32768])
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default=None,
                   help="model dtype (default: bfloat16 on CUDA, where varlen uses flash varlen; else float32)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads per case")
    p.add_argument("--timeout", type=float, default=900, help="seconds per case")
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "RESULTS.md"), help="'-': print only")
    p.add_argument("--child", choices=CASES, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    dtype = args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32")
    if args.child:
        print(json.dumps(run_case(args.child, args.tokens[0], args.device, dtype)))
        return
    results = {}
    for t in args.tokens:
        for case in CASES:
            results[(case, t)] = r = measure(case, t, args.device, dtype, args.timeout)
            print(f"T={t:>6} {case:<10} {r}", file=sys.stderr, flush=True)
    report = render(results, args.tokens, args.device, dtype, argv)
    print(report)
    if args.results != "-":
        write_section(Path(args.results), args.device, report)


if __name__ == "__main__":
    main()
