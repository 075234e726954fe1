"""What a look-up by key read is not read again: `keys.keep_rows` hands the rows a look-up read
to the next `rows_after`, and `rows_after` leaves out fragments holding only keys already
counted (a writer's own commits)."""

from __future__ import annotations

import threading

import lance
import pyarrow as pa

from artstore.storage import Location, data_files, datasets, keys, writes

KEYED = pa.schema([pa.field("key", pa.string(), nullable=False), pa.field("note", pa.string()),
                   pa.field(keys.SEQ, pa.int64())])
EVERY_KEY = [f"k{i}{b}" for i in range(5) for b in ("", "b")]


def _five_fragments(tmp_path) -> Location:
    """A table of 5 fragments (2 keys each) this process holds no note of, as if another process
    had appended them."""
    loc = Location.parse(tmp_path / "keys.lance")
    for i in range(5):
        writes.append(loc, pa.table({"key": [f"k{i}", f"k{i}b"], "note": [f"n{i}", None], keys.SEQ: [None, None]},
                                    schema=KEYED))
    keys._KEYS.clear()
    keys._ROWS.pop(loc.uri, None)
    return loc


def _reads(monkeypatch) -> list[int]:
    """The fragment ids Lance reads rows of on this thread from now on (scans, takes by address,
    fragment takes)."""
    # This thread's only: a stats refresh or fold on the upkeep thread, due from an earlier test's
    # logs in this process, read other tables' fragments into the count under load.
    me, read = threading.get_ident(), []
    for owner, name, ids in (
            (lance.LanceDataset, "scanner", lambda ds, *a, fragments=None, **k: [f.fragment_id for f in fragments or
                                                                                  ds.get_fragments()]),
            (lance.LanceDataset, "_take_rows", lambda ds, addresses, *a, **k: sorted({x >> 32 for x in addresses})),
            (lance.fragment.LanceFragment, "take", lambda f, *a, **k: [f.fragment_id]),
            (lance.fragment.LanceFragment, "to_table", lambda f, *a, **k: [f.fragment_id])):
        real = getattr(owner, name)
        monkeypatch.setattr(owner, name, lambda self, *a, _real=real, _ids=ids, **k: (
            threading.get_ident() == me and read.extend(_ids(self, *a, **k)), _real(self, *a, **k))[1])
    return read


def test_rows_a_look_up_read_are_handed_to_the_next_rows_after_once(tmp_path, monkeypatch):
    loc = _five_fragments(tmp_path)
    keys.keep_rows(loc, ["key", "note"])
    ds = datasets.open_latest(loc)
    read = _reads(monkeypatch)
    assert not keys.may_hold(loc, ds, "key", "k9")  # reads the 5 fragments, with the kept columns
    assert sorted(read) == [0, 1, 2, 3, 4]
    read.clear()
    rows = keys.rows_after(loc, ds, -1, ["key", "note"], note_key="key")
    assert read == []  # all from the look-up's read
    assert rows["key"].to_pylist() == EVERY_KEY
    assert rows["note"].to_pylist() == [n for i in range(5) for n in (f"n{i}", None)]
    assert rows[keys.SEQ].to_pylist() == [i for i in range(5) for _ in range(2)]  # filled in: commit order
    again = keys.rows_after(loc, ds, 2, ["key", "note"])  # handed out once: read this time
    assert sorted(set(read)) == [3, 4] and again["key"].to_pylist() == EVERY_KEY[6:]


def test_rows_kept_beyond_the_bound_are_read_again(tmp_path, monkeypatch):
    monkeypatch.setattr(keys, "KEPT_ROWS", 4)
    loc = _five_fragments(tmp_path)
    keys.keep_rows(loc, ["key"])
    ds = datasets.open_latest(loc)
    assert keys.key_files(loc, ds, "key", "k3") == {data_files.first_file(ds.get_fragments()[3])}
    read = _reads(monkeypatch)
    assert keys.rows_after(loc, ds, -1, ["key"])["key"].to_pylist() == EVERY_KEY
    assert sorted(set(read)) == [0, 1, 2]  # the oldest went; the newest 4 rows were kept


def test_rows_after_leaves_out_fragments_holding_only_keys_already_counted(tmp_path, monkeypatch):
    loc = _five_fragments(tmp_path)
    ds = datasets.open_latest(loc)
    keys.key_files(loc, ds, "key", "k0")  # notes each fragment's keys
    read = _reads(monkeypatch)
    counted = {"k0", "k0b", "k1", "k2", "k2b", "k4", "k4b"}  # all of fragments 0, 2 and 4; half of 1
    rows = keys.rows_after(loc, ds, -1, ["key"], note_key="key", known=counted)
    assert rows["key"].to_pylist() == ["k1", "k1b", "k3", "k3b"]
    assert sorted(set(read)) == [1, 3]
