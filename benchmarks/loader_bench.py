"""Loader throughput: tokens.lance -> tensors, against the raw Lance scan and ART-style parquet.

    python -m benchmarks.loader_bench [--sequences 60000] [--min-tokens 1024] [--max-tokens 4096]
                                      [--steps 10] [--batch-size 32] [--device cpu|cuda] [--repeat 3]

Writes a tokens table of `--sequences` sequences (uniform lengths in [min, max] tokens, random ids)
over `--steps` steps through `Run.write_tokens`, and the same rows as ART-style parquet files (one
per step, token columns as list columns). Then, per step and `--batch-size` rows at a time, it reads
every token and reports tokens/s (best and median of `--repeat` passes, page cache warm):

- `lance scan`: Lance's scanner, nothing converted: over the whole table at once (the ceiling: one
  scan, no per-step restart), per step with a `step = s` filter (the naive way to read a step), and
  per step as the row range the loader reads (offset/limit, strict batches: the loader minus its
  own work);
- `loader`: `trainer.loader.TokenLoader` (sharding, exact batches, zero-copy tensors; on CUDA:
  prefetch thread, pinned copy + non_blocking transfer on a side stream, synchronised at the end);
- on CPU, `loader, prefetch thread forced`: the same through the prefetch thread (a no-op `pack`),
  to show what the thread's handoff costs when there is nothing to overlap;
- `parquet`: `pyarrow.parquet.ParquetFile.iter_batches` over the step files (what ART's files give);
- `loader+pack`: the loader with `pack_rows` (trainer.packing, rows of `--max-tokens`);
- on CUDA, `pinned copy`: the same bytes copied from one pinned buffer to the GPU, batch by batch.

Each for `input_ids` alone (the apples-to-apples ratio) and for the training columns. Prints a
side-by-side table and replaces this device's section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import lance
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

import artstore as art
from trainer.loader import TRAIN_COLUMNS, TokenBatch, TokenLoader, pack_rows, to_tensors

ROOT = Path(__file__).resolve().parent.parent
TITLE = "Loader (tokens.lance -> tensors)"
IDS = ["input_ids"]
NOTES = """What the rows are: `lance scan` rows are Lance's own scanner with nothing converted; the
loader rows are `trainer.loader.TokenLoader` (one per step, as a training loop makes them): even
shard, exact batches, Arrow buffers -> numpy -> torch without a copy; on CUDA also the pinned copy
and the non_blocking transfer on a side stream. The loader reads a step as a row range (no filter)
when the step's rows are contiguous in storage, which is why it beats the `step = s` filter; the
gap to the whole-table scan is a scanner start per step (a few ms) plus the loader's own work (tens
of microseconds a batch). `loader+pack_rows` includes trainer.packing's per-sequence Python
packing. Timings on a shared machine move by 2x between runs: compare ratios within one run."""
VOCAB = 151_000


def make_step(rng: np.random.Generator, step: int, n: int, lo: int, hi: int) -> pa.Table:
    lengths = rng.integers(lo, hi + 1, n)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    total = int(offsets[-1])
    prompt = (lengths // 3)[:, None]
    pos = np.arange(total) - np.repeat(offsets[:-1], lengths)
    mask = (pos >= np.repeat(prompt[:, 0], lengths)).astype(np.int8)
    logprobs = np.where(mask == 1, -rng.random(total, dtype=np.float32), np.float32("nan")).astype(np.float32)
    ids = [f"s{step}-{i}" for i in range(n)]
    rewards = rng.random(n)

    def lst(values: np.ndarray) -> pa.Array:
        return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values))

    return pa.table({
        "sequence_id": ids, "trajectory_id": ids, "group_id": [f"g{step}-{i // 8}" for i in range(n)],
        "log_id": [f"log-{step}"] * n, "step": pa.array(np.full(n, step), pa.int64()), "split": ["train"] * n,
        "input_ids": lst(rng.integers(0, VOCAB, total, dtype=np.int32)), "assistant_mask": lst(mask),
        "logprobs": lst(logprobs), "reward": rewards, "advantage": (rewards - 0.5).astype(np.float32),
        "tokenizer": ["bench"] * n,
    })


def build(root: Path, args: argparse.Namespace) -> tuple[art.Run, Path, int]:
    run = art.open_store(root / "store").run("bench", "loader")
    parquet_dir = root / "art" / "bench" / "models" / "loader" / "tokens"
    parquet_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    per_step = [args.sequences // args.steps + (s < args.sequences % args.steps) for s in range(args.steps)]
    total = 0
    for step, n in enumerate(per_step):
        table = make_step(rng, step, n, args.min_tokens, args.max_tokens)
        total += int(pa.compute.sum(pa.compute.list_value_length(table["input_ids"])).as_py())
        run.write_tokens(table)
        pq.write_table(table, parquet_dir / f"{step:04d}.parquet")
    return run, parquet_dir, total


def measure(cases: list[tuple[str, str, Callable[[], int], bool]], repeat: int,
            expected: int) -> list[tuple[float, float]]:
    """(best, median) tokens/s of each case's function (which returns the tokens it read, checked
    against `expected`). Passes are interleaved (case 1, case 2, ..., case 1, ...) so that a busy
    machine slows every case alike; one warm-up pass each first (page cache, CUDA context, pools).
    The best pass is the figure to compare on a shared machine; the median shows the spread."""
    rates: list[list[float]] = [[] for _ in cases]
    for r in range(repeat + 1):
        for i, (_, _, fn, cuda) in enumerate(cases):
            if cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            got = fn()
            if cuda:
                torch.cuda.synchronize()
            if got != expected:
                raise AssertionError(f"{cases[i][:2]}: read {got} tokens, expected {expected}")
            if r:
                rates[i].append(got / (time.perf_counter() - t0))
    return [(max(r), statistics.median(r)) for r in rates]


def same(batch: TokenBatch) -> TokenBatch:
    """A `pack` that packs nothing: makes the CPU loader use its prefetch thread."""
    return batch


def count_tokens(batch: pa.RecordBatch) -> int:
    off = batch.column("input_ids").offsets
    return off[len(off) - 1].as_py() - off[0].as_py()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sequences", type=int, default=60_000)
    p.add_argument("--min-tokens", type=int, default=1024)
    p.add_argument("--max-tokens", type=int, default=4096)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--dir", type=Path, default=ROOT / ".bench" / "loader")
    p.add_argument("--keep", action="store_true", help="keep the data folder afterwards")
    p.add_argument("--no-pack", action="store_true", help="skip the loader+pack row (slow on CPU)")
    p.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "RESULTS.md",
                   help="markdown file whose section for this device is replaced ('-' for none)")
    p.add_argument("--torch-threads", type=int, default=1,
                   help="torch intra-op threads (small packing ops on a busy 2-core box: 1 is fastest)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.torch_threads)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    shutil.rmtree(args.dir, ignore_errors=True)
    t0 = time.perf_counter()
    run, parquet_dir, total = build(args.dir, args)
    build_s = time.perf_counter() - t0
    steps, bs = range(args.steps), args.batch_size
    uri = run.tokens_table().location.uri
    files = sorted(parquet_dir.glob("*.parquet"))

    def lance_scan(columns: list[str], by_step: bool) -> Callable[[], int]:
        def go() -> int:
            ds = lance.dataset(uri)
            filters = [f"step = {s}" for s in steps] if by_step else [None]
            return sum(count_tokens(b) for f in filters
                       for b in ds.scanner(columns=columns, filter=f, batch_size=bs).to_batches())
        return go

    def lance_ranges(columns: list[str]) -> Callable[[], int]:
        step_of = lance.dataset(uri).to_table(columns=["step"])["step"].to_numpy()
        ranges = [(int(np.argmax(step_of == s)), int((step_of == s).sum())) for s in steps]

        def go() -> int:
            ds = lance.dataset(uri)
            return sum(count_tokens(b) for offset, limit in ranges
                       for b in ds.scanner(columns=columns, offset=offset, limit=limit, batch_size=bs,
                                           strict_batch_size=True).to_batches())
        return go

    def parquet(columns: list[str]) -> Callable[[], int]:
        def go() -> int:
            return sum(count_tokens(b) for f in files
                       for b in pq.ParquetFile(f).iter_batches(batch_size=bs, columns=columns))
        return go

    def loader(columns: list[str], pack: Callable | None = None) -> Callable[[], int]:
        def go() -> int:
            n = 0
            for s in steps:
                for item in TokenLoader(run, s, bs, device, rank=0, world_size=1, columns=columns, pack=pack):
                    n += count_tokens(item.source) if isinstance(item, TokenBatch) else 0
            return n if pack is None or pack is same else total
        return go

    def pinned_copy(columns: list[str]) -> Callable[[], int]:
        sizes = [sum(t.nbytes for t in (b.offsets, *b.tokens.values(), *b.rows.values()))
                 for s in steps for b in map(to_tensors, run.token_batches(s, columns=columns, batch_size=bs))]
        buf = torch.empty(max(sizes), dtype=torch.uint8).pin_memory()

        def go() -> int:
            for n in sizes:
                buf[:n].to(device, non_blocking=True)
            return total
        return go

    cases: list[tuple[str, str, Callable[[], int], bool]] = []
    for label, cols in (("input_ids", IDS), ("training columns", list(TRAIN_COLUMNS))):
        cases += [
            (label, "lance scan, whole table (ceiling)", lance_scan(cols, by_step=False), False),
            (label, "lance scan, step filter", lance_scan(cols, by_step=True), False),
            (label, "lance scan, step row range (what the loader reads)", lance_ranges(cols), False),
            (label, f"loader ({device.type})", loader(cols), cuda),
            *([(label, "loader, prefetch thread forced (cpu)", loader(cols, same), False)] if not cuda else []),
            (label, "ART-style parquet (pyarrow)", parquet(cols), False),
        ]
        if cuda:
            cases.append((label, "pinned copy of the same bytes", pinned_copy(cols), True))
    rates = measure(cases, args.repeat, total)
    rows = [(label, name, *rate) for (label, name, _, _), rate in zip(cases, rates, strict=True)]
    if not args.no_pack:
        pack_case = ("training columns", f"loader+pack_rows({args.max_tokens}) ({device.type})",
                     loader(list(TRAIN_COLUMNS), pack_rows(args.max_tokens)), cuda)
        rows.append((*pack_case[:2], *measure([pack_case], 1, total)[0]))
    report = render(rows, args, device, total, build_s)
    print(report)
    if str(args.results) != "-":
        write_section(args.results, device.type, report)
    if not args.keep:
        shutil.rmtree(args.dir, ignore_errors=True)


def machine(device: torch.device) -> str:
    cpu = platform.processor() or platform.machine()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    text = f"{os.cpu_count()} CPUs ({cpu}, load average {load} at the end), Python {platform.python_version()}, torch {torch.__version__}, " \
           f"pylance {lance.__version__}, pyarrow {pa.__version__}"
    if device.type == "cuda":
        text += f", GPU {torch.cuda.get_device_name(device)}"
    return text


def render(rows: list[tuple[str, str, float, float]], args: argparse.Namespace, device: torch.device,
           total: int, build_s: float) -> str:
    ceilings = {label: best for label, name, best, _ in rows if name.endswith("(ceiling)")}
    copies = {label: best for label, name, best, _ in rows if name.startswith("pinned copy")}
    out = [
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {machine(device)}.",
        f"Command: `{' '.join(['python -m benchmarks.loader_bench', *sys.argv[1:]])}`",
        f"Data: {args.sequences:,} sequences of {args.min_tokens}-{args.max_tokens} tokens "
        f"({total / 1e6:.0f}M tokens) over {args.steps} steps, batches of {args.batch_size} sequences; "
        f"written in {build_s:.0f} s (tokens.lance + parquet). Best and median of {args.repeat} warm "
        f"passes, interleaved; loader+pack: one pass. Ratios compare best passes.",
        "",
        "| columns | reader | M tokens/s, best | median | vs lance scan |" + (" vs pinned copy |" if copies else ""),
        "| --- | --- | ---: | ---: | ---: |" + (" ---: |" if copies else ""),
    ]
    for label, name, best, median in rows:
        line = f"| {label} | {name} | {best / 1e6:.1f} | {median / 1e6:.1f} | {best / ceilings[label]:.0%} |"
        if copies:
            line += f" {best / copies[label]:.0%} |" if label in copies else " |"
        out.append(line)
    return "\n".join(out)


def write_section(path: Path, device: str, report: str) -> None:
    """Replace (or append) this device's section of `path`, between its BEGIN/END markers (the
    convention of benchmarks/RESULTS.md: each section is owned by the benchmark it names)."""
    name = "loader_bench" if device == "cpu" else f"loader_bench_{device}"
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    section = (f"{begin}\n## {TITLE}, {device}: `benchmarks/loader_bench.py`\n\n{report}\n\n{NOTES}\n{end}\n")
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + section + rest.split(end, 1)[1].lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


if __name__ == "__main__":
    main()
