"""trainer.loader: the stored tokens come back exactly, sharded evenly, without copies."""

from __future__ import annotations

import math
import tempfile
import threading

import pyarrow as pa
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import artstore as art
from tests.token_rows import token_rows
from trainer.loader import (
    TRAIN_COLUMNS,
    TokenBatch,
    TokenLoader,
    dist_rank_world,
    pack_rows,
    to_tensors,
)
from trainer.packing import pack_sequences

CUDA = torch.cuda.is_available()


@pytest.fixture
def run(base_path):
    return art.open_store(base_path).run("email-search", "agent-001")


def stored(run, step) -> dict[str, tuple[list, list, list, float]]:
    t = run.tokens(step=step)
    return {r["sequence_id"]: (r["input_ids"], r["assistant_mask"], r["logprobs"], r["advantage"])
            for r in t.to_pylist()}


def unpack(batch: TokenBatch) -> dict[str, tuple[list, list, list, float]]:
    batch = batch if batch.offsets.device.type == "cpu" else _to_cpu(batch)
    out = {}
    for sid, seq, adv in zip(batch.sequence_ids, batch.sequences(), batch.advantages.tolist(), strict=True):
        out[sid] = (seq.input_ids.tolist(), seq.assistant_mask.tolist(), seq.logprobs.tolist(), adv)
    return out


def _to_cpu(batch: TokenBatch) -> TokenBatch:
    from trainer.loader import map_tensors
    return map_tensors(batch, lambda t: t.cpu())


def same(a: dict, b: dict) -> bool:
    """Equal, with NaN logprobs equal to each other."""
    def norm(d):
        return {k: (ids, mask, [None if math.isnan(x) else x for x in lp], adv) for k, (ids, mask, lp, adv) in d.items()}
    return norm(a) == norm(b)


def identity(batch):
    return batch


lengths = st.lists(st.one_of(st.integers(0, 3), st.integers(0, 300), st.just(5000)), min_size=0, max_size=30)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lens=lengths, other=st.lists(st.integers(0, 50), max_size=5), batch_size=st.integers(1, 12),
       world=st.integers(1, 5), prefetch=st.integers(0, 2), threaded=st.booleans())
def test_loader_returns_exactly_the_stored_tokens(lens, other, batch_size, world, prefetch, threaded):
    with tempfile.TemporaryDirectory() as d:
        run = art.open_store(d).run("p", "m")
        run.write_tokens(token_rows(other, step=0, prefix="o"))
        run.write_tokens(token_rows(lens, step=1))
        run.write_tokens(token_rows(other, step=2, prefix="o"))
        want = stored(run, 1)
        seen: dict = {}
        sizes = []
        for rank in range(world):
            loader = TokenLoader(run, 1, batch_size, "cpu", rank=rank, world_size=world, prefetch=prefetch,
                                 pack=identity if threaded else None)
            got = list(loader)
            assert len(got) == len(loader)
            assert all(b.num_sequences == batch_size for b in got[:-1])
            sizes.append(sum(b.num_sequences for b in got))
            for b in got:
                assert b.input_ids.dtype == torch.int32 and b.assistant_mask.dtype == torch.int8
                assert b.logprobs.dtype == torch.float32 and b.advantages.dtype == torch.float32
                assert b.num_tokens == int(b.lengths().sum()) == len(b.input_ids)
                part = unpack(b)
                assert not set(part) & set(seen)  # every row exactly once over the ranks
                seen.update(part)
        assert same(seen, want)
        assert max(sizes) - min(sizes) <= 1 and sum(sizes) == len(lens)


def test_to_tensors_shares_arrow_memory(run):
    run.write_tokens(token_rows([5, 0, 300, 7], step=0))
    for batch in run.token_batches(step=0, columns=list(TRAIN_COLUMNS), batch_size=3):
        tb = to_tensors(batch)
        for name, tensor in [*tb.tokens.items(), ("advantage", tb.rows["advantage"]), ("offsets", tb.offsets)]:
            column = batch.column("input_ids" if name == "offsets" else name)
            buf = column.buffers()[1]  # offsets buffer of a list, data buffer of a scalar column
            if name in tb.tokens:
                buf = column.values.buffers()[1]
            assert buf.address <= tensor.data_ptr() < buf.address + max(buf.size, 1), name
            assert tensor.data_ptr() + tensor.nbytes <= buf.address + buf.size, name


def test_to_tensors_of_a_sliced_batch(run):
    run.write_tokens(token_rows([2, 3, 4, 5], step=0))
    batch = next(run.token_batches(step=0, batch_size=4)).slice(1, 2)
    tb = to_tensors(batch)
    assert tb.offsets.tolist() == [0, 3, 7]
    assert [s.input_ids.tolist() for s in tb.sequences()] == batch.column("input_ids").to_pylist()
    values = batch.column("input_ids").values.buffers()[1]
    assert values.address <= tb.input_ids.data_ptr() < values.address + values.size


def test_cpu_items_are_views_of_the_arrow_batch(run):
    run.write_tokens(token_rows([4, 9], step=0))
    (item,) = list(TokenLoader(run, 0, 8, "cpu", prefetch=2))
    values = item.source.column("input_ids").values.buffers()[1]
    assert values.address <= item.input_ids.data_ptr() < values.address + values.size


def test_pack_rows_gives_what_packing_gives(run):
    run.write_tokens(token_rows([5, 0, 12, 3, 7], step=0))
    items = list(TokenLoader(run, 0, 5, "cpu", pack=pack_rows(16, pad_token_id=7)))
    assert len(items) == 1
    rows = run.tokens(step=0).to_pylist()

    class Seq:
        def __init__(self, r):
            self.input_ids, self.assistant_mask, self.logprobs = r["input_ids"], r["assistant_mask"], r["logprobs"]

    want = pack_sequences([Seq(r) for r in rows], [r["advantage"] for r in rows], 16, pad_token_id=7)
    got = items[0]
    for name in ("input_ids", "position_ids", "seq_ids", "assistant_mask", "advantages"):
        assert torch.equal(getattr(got, name), getattr(want, name)), name
    assert torch.equal(got.old_logprobs.nan_to_num(9.0), want.old_logprobs.nan_to_num(9.0))
    assert got.num_tokens == 27


def test_errors_in_the_thread_reach_the_caller_and_the_thread_stops(run):
    run.write_tokens(token_rows([3] * 10, step=0))

    def loader_threads() -> int:  # the loader's own: artstore's background threads come and go meanwhile
        return sum(t.name.startswith("token-loader") for t in threading.enumerate())

    def boom(batch):
        if batch.sequence_ids[0] != "t0-0":
            raise RuntimeError("packing failed")
        return batch

    with pytest.raises(RuntimeError, match="packing failed"):
        list(TokenLoader(run, 0, 2, "cpu", pack=boom))
    assert loader_threads() == 0
    it = iter(TokenLoader(run, 0, 1, "cpu", pack=identity, prefetch=1))
    next(it)
    assert loader_threads() == 1
    it.close()  # the caller stops early: the thread ends
    assert loader_threads() == 0


def test_rank_and_world_size_default_from_torchrun_env(run, monkeypatch):
    run.write_tokens(token_rows([1] * 7, step=0))
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert dist_rank_world() == (2, 3)
    loader = TokenLoader(run, 0, 10, "cpu")
    assert (loader.rank, loader.world_size) == (2, 3)
    assert [b.sequence_ids for b in loader] == [["t0-4", "t0-5", "t0-6"]]
    with pytest.raises(art.ValidationError, match="^rank:"):
        TokenLoader(run, 0, 10, "cpu", rank=3)
    with pytest.raises(art.ValidationError, match="^batch_size:"):
        TokenLoader(run, 0, 0, "cpu")
    with pytest.raises(art.ValidationError, match="^prefetch:"):
        TokenLoader(run, 0, 1, "cpu", prefetch=-1)


def test_columns_and_empty_step(run):
    run.write_tokens(token_rows([2, 3], step=0))
    (item,) = list(TokenLoader(run, 0, 4, "cpu", columns=["input_ids", "reward", "step"]))
    assert set(item.tokens) == {"input_ids"} and set(item.rows) == {"reward", "step"}
    assert item.rows["reward"].dtype == torch.float64 and item.offsets.tolist() == [0, 2, 5]
    assert list(TokenLoader(run, 5, 4, "cpu")) == [] and len(TokenLoader(run, 5, 4, "cpu")) == 0


@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
@pytest.mark.parametrize("pack", [None, "rows"])
def test_cuda_batches_arrive_pinned_and_equal(run, pack):
    run.write_tokens(token_rows([5, 300, 0, 77, 1000], step=0))
    want = stored(run, 0)
    loader = TokenLoader(run, 0, 2, "cuda", pack=pack_rows(1024) if pack else None)
    assert loader.threaded and loader.pin_memory
    items = list(loader)
    if pack:
        assert all(i.input_ids.is_cuda for i in items)
        assert sum(i.num_tokens for i in items) == sum(len(v[0]) for v in want.values())
        return
    seen = {}
    for i in items:
        assert i.input_ids.is_cuda and i.offsets.is_cuda and i.advantages.is_cuda
        seen.update(unpack(i))
    assert same(seen, want)


@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_cuda_copy_is_staged_in_pinned_memory(run, monkeypatch):
    run.write_tokens(token_rows([50] * 4, step=0))
    staged = []
    real = torch.Tensor.pin_memory

    def spy(t, *a, **k):
        p = real(t, *a, **k)
        staged.append(p.is_pinned())
        return p

    monkeypatch.setattr(torch.Tensor, "pin_memory", spy)
    assert len(list(TokenLoader(run, 0, 2, "cuda"))) == 2
    assert staged and all(staged)


def test_arrow_types_stay_narrow(run):
    """What crosses to the device is what is stored: int32 ids, int8 mask (no widening on host)."""
    run.write_tokens(token_rows([3], step=0))
    (item,) = list(TokenLoader(run, 0, 1, "cpu"))
    assert item.input_ids.dtype == torch.int32 and item.offsets.dtype == torch.int32
    assert isinstance(item.source, pa.RecordBatch)
