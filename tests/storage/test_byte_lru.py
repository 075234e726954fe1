"""ByteLRU (`artstore.storage.byte_lru`): a least-recently-used map of Arrow tables bounded by bytes."""

from __future__ import annotations

import threading

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from artstore.storage.byte_lru import ByteLRU


def _table(n: int) -> pa.Table:
    """A table of n int64 values: n * 8 bytes."""
    return pa.table({"v": pa.array(range(n), pa.int64())})


def test_put_past_the_bound_drops_the_least_recently_used_first():
    lru: ByteLRU[str] = ByteLRU(lambda: 100)
    for key in "abc":
        lru.put(key, _table(4))  # 32 bytes each
    assert lru.keys() == ["a", "b", "c"] and lru.nbytes == 96
    lru.put("d", _table(2))  # 112 bytes: a goes
    assert lru.keys() == ["b", "c", "d"] and lru.nbytes == 80
    lru.put("e", _table(8))  # 144 bytes: b, then c go
    assert lru.keys() == ["d", "e"] and lru.nbytes == 80
    assert lru.peek("a") is None and lru.peek("e").num_rows == 8


def test_get_makes_an_entry_the_most_recently_used_and_peek_does_not():
    lru: ByteLRU[str] = ByteLRU(lambda: 100)
    for key in "abc":
        lru.put(key, _table(4))
    assert lru.get("a").num_rows == 4
    assert lru.peek("b").num_rows == 4
    assert lru.keys() == ["b", "c", "a"]
    lru.put("d", _table(4))  # b, least recently used (peek left it there), goes
    assert lru.keys() == ["c", "a", "d"]
    assert lru.get("b") is None


def test_an_entry_larger_than_the_bound_is_not_kept_nor_anything_older():
    lru: ByteLRU[str] = ByteLRU(lambda: 100)
    lru.put("a", _table(4))
    lru.put("big", _table(20))  # 160 bytes: a goes first, then big itself
    assert lru.keys() == [] and lru.nbytes == 0 and lru.get("big") is None
    lru.put("b", _table(4))
    assert lru.keys() == ["b"] and lru.nbytes == 32


def test_replacing_a_key_counts_only_the_new_tables_bytes():
    lru: ByteLRU[str] = ByteLRU(lambda: 100)
    lru.put("a", _table(4))
    lru.put("b", _table(4))
    lru.put("a", _table(8))  # 32 -> 64 bytes, and now the most recently used
    assert lru.keys() == ["b", "a"] and lru.nbytes == 96 and lru.get("a").num_rows == 8
    lru.put("a", _table(1))
    assert lru.nbytes == 40 and len(lru) == 2


def test_a_size_given_with_the_table_is_the_one_counted():
    lru: ByteLRU[str] = ByteLRU(lambda: 100)
    lru.put("a", _table(1), 60)
    lru.put("b", _table(1), 50)  # 110 given bytes: a goes, though the tables hold 16
    assert lru.keys() == ["b"] and lru.nbytes == 50


def test_demote_makes_an_entry_the_first_to_go():
    lru: ByteLRU[str] = ByteLRU(lambda: 100)
    for key in "abc":
        lru.put(key, _table(4))
    lru.demote("c")
    lru.demote("absent")  # nothing
    assert lru.keys() == ["c", "a", "b"]
    lru.put("d", _table(4))
    assert lru.keys() == ["a", "b", "d"]


def test_the_bound_is_read_at_each_put_and_trim():
    bound = [100]
    lru: ByteLRU[str] = ByteLRU(lambda: bound[0])
    lru.put("a", _table(4))
    lru.put("b", _table(4))
    bound[0] = 40
    assert lru.keys() == ["a", "b"]  # nothing goes until the next put
    lru.put("c", _table(1))
    assert lru.keys() == ["b", "c"] and lru.nbytes == 40
    bound[0] = 10
    lru.trim()  # nothing to put: the lowered bound holds all the same
    assert lru.keys() == ["c"] and lru.nbytes == 8


def test_pop_and_clear_give_back_their_bytes():
    lru: ByteLRU[str] = ByteLRU(lambda: 100)
    lru.put("a", _table(4))
    lru.put("b", _table(2))
    assert lru.pop("a").num_rows == 4 and lru.pop("a") is None
    assert lru.keys() == ["b"] and lru.nbytes == 16 and "a" not in lru and "b" in lru
    lru.clear()
    assert lru.keys() == [] and lru.nbytes == 0


def test_the_table_kept_is_the_one_put_not_a_copy():
    lru: ByteLRU[str] = ByteLRU(lambda: 100)
    t = _table(3)
    lru.put("a", t)
    assert lru.get("a") is t and lru.peek("a") is t and lru.pop("a") is t


def test_threads_putting_and_getting_keep_the_byte_count_exact():
    lru: ByteLRU[int] = ByteLRU(lambda: 8 * 50)
    tables = [_table(n) for n in range(1, 6)]

    def work(seed: int) -> None:
        for i in range(2000):
            key = (seed * 7 + i) % 40
            if i % 3 == 0:
                lru.get(key)
            elif i % 11 == 0:
                lru.demote(key)
            else:
                lru.put(key, tables[i % 5])

    threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert lru.nbytes == sum(lru.peek(k).nbytes for k in lru.keys()) <= 8 * 50


_OPS = st.lists(st.tuples(st.sampled_from(["put", "put", "get", "peek", "demote", "pop"]),
                          st.sampled_from("abcd"), st.integers(0, 40)), max_size=60)


@settings(max_examples=300, deadline=None)
@given(ops=_OPS, bound=st.integers(10, 200))
def test_a_sequence_of_operations_matches_a_list_model(ops, bound):
    """The model: a list of (key, size), least recently used first, cut from the front after a put
    until its sizes sum to at most the bound."""
    lru: ByteLRU[str] = ByteLRU(lambda: bound)
    model: list[tuple[str, int]] = []
    tables: dict[str, pa.Table] = {}
    for op, key, size in ops:
        kept = dict(model)
        if op == "put":
            tables[key] = t = _table(1)  # its size as given
            lru.put(key, t, size)
            model = [e for e in model if e[0] != key] + [(key, size)]
            while sum(s for _, s in model) > bound:
                model.pop(0)
        elif op == "get":
            got = lru.get(key)
            assert (got is tables[key]) if key in kept else got is None
            if key in kept:
                model = [e for e in model if e[0] != key] + [(key, kept[key])]
        elif op == "peek":
            got = lru.peek(key)
            assert (got is tables[key]) if key in kept else got is None
        elif op == "demote":
            lru.demote(key)
            if key in kept:
                model = [(key, kept[key])] + [e for e in model if e[0] != key]
        else:
            got = lru.pop(key)
            assert (got is tables[key]) if key in kept else got is None
            model = [e for e in model if e[0] != key]
        assert lru.keys() == [k for k, _ in model]
        assert lru.nbytes == sum(s for _, s in model) <= bound
        assert len(lru) == len(model)
