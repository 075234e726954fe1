"""Rows by key, in commit order: how a key made unique by "first commit wins" is read
(`first_per_key`, `rows_after`), and the per-process key caches that let a look-up by key
(`key_files`, `may_hold`) skip the fragments already read or just committed (`note_keys`), and
let `rows_after` skip the fragments a look-up just read (`keep_rows`). Rows by key value, read
by offset: `artstore.storage.key_columns`; rows by row address: `artstore.storage.fragment_rows`.

Plain appends (`writes.append`, `writes.commit_files`) don't enforce uniqueness; the first
committed row of each key wins, ordered by the SEQ column (`SEQ`) and fragment ids. Lance
errors leave as `StorageError` (`failures.storage_errors`).
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
from lance import LanceDataset
from lance.fragment import FragmentMetadata

from artstore.storage import fragment_rows, written_rows
from artstore.storage.data_files import first_file
from artstore.storage.failures import storage_errors
from artstore.storage.fragments import fragment_ids
from artstore.storage.location import Location

SEQ = "commit_seq"  # see `first_per_key`

# A table of at most this many rows is read whole by `first_per_key` with one take, not a scan
# (whose set-up, ~1-2 ms of CPU, is most of reading a small run's logs).
SMALL_ROWS = 2048


def first_per_key(loc: Location, ds: pads.Dataset, key: str, columns: list[str] | None = None,
                  filter: str | None = None, upto: int | None = None, fragment_ids: list[int] | None = None,
                  with_address: bool = False) -> pa.Table:
    """The rows of `ds` (the dataset at `loc`, opened here) matching `filter`, in commit order,
    keeping only the first committed row of each `key` value: how a key made unique by "first
    commit wins" is read (plain appends don't enforce uniqueness, and cost far less than a
    merge_insert).

    Commit order: Lance gives each appended fragment the next fragment id when its commit lands
    (after any retry), but compaction moves rows into new fragments placed after the others. So a
    dataset with a SEQ column (int64, null when appended) is compacted by `maintain` with
    `_rewrite_sequenced`, which stores each row's original fragment id in SEQ; a row's commit order
    is (SEQ, or else its fragment id; then its position). A dataset without SEQ never held a key
    twice (it was written with `insert_unique`): storage order serves there. The SEQ column read
    back holds that commit-order number of each row (never null). `upto`: only rows whose
    sequence is at most it (an older version of an append-only table: `version_map`).

    `fragment_ids`: read only these fragments (e.g. those appended since an earlier read).
    `with_address`: a last column `_rowaddr` holds each row's address at this version (SEQ only)."""
    cols = None if columns is None else list(dict.fromkeys([*columns, key]))
    with storage_errors(loc, "read"):
        if SEQ in ds.schema.names:
            read = None if cols is None else list(dict.fromkeys([*cols, SEQ]))
            fragments = None if fragment_ids is None else [ds.get_fragment(i) for i in fragment_ids]
            whole = fragments is None and filter is None and ds.count_rows() <= SMALL_ROWS
            if upto is not None and fragments is None and filter is None and not whole:
                # An older version read from a later one (time travel): only rows at most `upto`
                # and rows appended since the last compaction (SEQ null: their fragment id is their
                # sequence, filtered below), not the whole run's rows: a read of step 50's history
                # at step 10,000 read 20,000 rows for 100.
                filter = f"{SEQ} <= {int(upto)} OR {SEQ} IS NULL"
            if whole:  # a small table: every row
                fragments = ds.get_fragments()
            if fragments is not None and filter is None and all(f.deletion_file() is None for f in fragments):
                # whole fragments: a take costs less than setting up a scan (~0.5 ms vs ~2)
                address = pa.array([(f.fragment_id << 32) | i for f in fragments for i in range(f.physical_rows)],
                                   pa.uint64())
                if any(written_rows.rows_of(loc, f, ds.schema) is not None for f in fragments):
                    # rows this process wrote from memory, the others read (`fragment_rows.whole`)
                    found = fragment_rows.whole(loc, ds, fragments, read or ds.schema.names).drop_columns(["_rowaddr"])
                elif whole and len(address):  # one take of every row (positions: the rows' offsets)
                    found = ds.take(list(range(len(address))), columns=read)
                else:
                    parts = [f.take(list(range(f.physical_rows)), columns=read) for f in fragments if f.physical_rows]
                    found = pa.concat_tables(parts) if parts else \
                        ds.schema.empty_table().select(read or ds.schema.names)
                found = found.append_column("_rowaddr", address)
            else:
                found = ds.scanner(columns=read, filter=filter, with_row_address=True, scan_in_order=True,
                                   fragments=fragments).to_table()
            fragment = pc.cast(pc.shift_right(found["_rowaddr"], 32), pa.int64())
            seq = pc.coalesce(found[SEQ], fragment)
            order = pa.table({"seq": seq, "at": found["_rowaddr"]})
            # Read back with each row's sequence filled in (its fragment id where SEQ is null).
            found = found.set_column(found.schema.get_field_index(SEQ), found.schema.field(SEQ), seq)
            found = found.take(pc.sort_indices(order, [("seq", "ascending"), ("at", "ascending")]))
            address = found["_rowaddr"]
            found = found.drop_columns(["_rowaddr"])
            if upto is not None:
                found = found.filter(pc.less_equal(found[SEQ], upto))
        else:
            if fragment_ids is not None or with_address:
                raise ValueError("first_per_key reads fragments or row addresses of a dataset with SEQ only")
            found = ds.to_table(columns=cols, filter=filter)
    keys = found[key].combine_chunks()
    first = pc.index_in(pc.unique(keys), value_set=keys)  # index of each value's first row, ascending
    if len(first) < found.num_rows:
        found = found.take(first)
        if with_address:
            address = address.take(first)
    found = found if columns is None else found.select(columns)
    return found.append_column("_rowaddr", address) if with_address else found


def rows_after(loc: Location, ds: LanceDataset, seq: int, columns: list[str], note_key: str | None = None,
               known: set[str] | None = None) -> pa.Table:
    """`columns` of the rows of `ds` (the dataset at `loc`, with a SEQ column) whose sequence (see
    `first_per_key`) is above `seq`, in commit order, with SEQ (filled in) appended. Reads only
    the fragments whose id is above `seq`: a row committed after sequence `seq` was appended in
    a fragment numbered above it, and compaction places its outputs after every fragment it read.
    Fragments a key look-up read with these columns (`keep_rows`) are taken from what it kept,
    not read again. With `note_key` (one of `columns`), the values of it each fragment read
    holds are noted for `key_files`, so a look-up by that key need not read those fragments
    again; `known`: values of `note_key` the caller counted already: a fragment this process
    knows to hold only such values (`note_keys`, e.g. its own commit) is left out, unread."""
    cols = list(dict.fromkeys([*columns, SEQ]))
    fragments = [f for f in ds.get_fragments() if f.fragment_id > seq]
    if known and note_key is not None and fragments:
        with _KEYS_LOCK:
            held = _KEYS.get((loc.uri, note_key), {})
            fragments = [f for f in fragments if not ((values := held.get(first_file(f))) is not None and values <= known)]
    if not fragments:
        return pa.table({c: pa.array([], ds.schema.field(c).type) for c in cols})
    kept = _kept_rows(loc, fragments, cols)
    parts = list(kept.values())
    missing = [f for f in fragments if f.fragment_id not in kept]
    if missing:
        with storage_errors(loc, "read"):
            parts.append(fragment_rows.whole(loc, ds, missing, cols))
        if note_key is not None:
            _note_read(loc, note_key, missing, parts[-1])
    found = pa.concat_tables([t.select([*cols, "_rowaddr"]) for t in parts])
    filled = pc.coalesce(found[SEQ], pc.cast(pc.shift_right(found["_rowaddr"], 32), pa.int64()))
    found = found.set_column(found.schema.get_field_index(SEQ), found.schema.field(SEQ), filled)
    found = found.filter(pc.greater(filled, seq))
    order = pc.sort_indices(found, [(SEQ, "ascending"), ("_rowaddr", "ascending")])
    return found.take(order).select(cols)


def last_fragment_id(ds: LanceDataset) -> int:
    """The highest fragment id of `ds` (-1: none): every row it holds has a sequence at most this,
    and every row committed after it a sequence above it (Lance never reuses a fragment id)."""
    return max(fragment_ids(ds), default=-1)


# (dataset uri, key column) -> {data file path: the key values its fragment holds}
_KEYS: dict[tuple[str, str], dict[str, frozenset[str]]] = {}
_KEYS_LOCK = threading.Lock()


def key_files(loc: Location, ds: LanceDataset, key: str, value: str) -> set[str]:
    """The data files of the fragments of `ds` (the dataset at `loc`) holding a row whose `key`
    is `value`. Reads the key column of only the fragments this process has neither read nor
    committed (`note_keys`) before: a fragment never changes, and its data file's name is unique
    (compaction writes new ones), so a look-up costs the same at any length of the run. Where a
    reader asked for them (`keep_rows`), the fragments read are read with its columns too, and
    their rows kept for its `rows_after`."""
    return {path for path, ids in _key_sets(loc, ds, key, ds.get_fragments()).items() if value in ids}


def files_holding(loc: Location, ds: LanceDataset, key: str, values: list[str]) -> dict[str, set[str]]:
    """{value: the data files of the fragments of `ds` holding a row whose `key` is it} for each
    of `values`: `key_files` of many values, one look at the fragments."""
    wanted = set(values)
    found: dict[str, set[str]] = {v: set() for v in values}
    for path, ids in _key_sets(loc, ds, key, ds.get_fragments()).items():
        for value in ids & wanted:
            found[value].add(path)
    return found


def _key_sets(loc: Location, ds: LanceDataset, key: str, fragments: list) -> dict[str, frozenset[str]]:
    """{data file path: the values of `key` its fragment holds} for `fragments` (of `ds`, at
    `loc`), reading in one read only those this process has neither read nor committed before."""
    fragments = [(f, first_file(f)) for f in fragments]
    cache_key = (loc.uri, key)
    with _KEYS_LOCK:
        known = _KEYS.get(cache_key, {})
        current = {path: known[path] for _, path in fragments if path in known}
    missing = [(f, path) for f, path in fragments if path not in current]
    if missing:  # one read, not one per fragment (each read costs ~5 ms on a busy machine)
        with _KEYS_LOCK:
            keep = _KEEP.get(loc.uri, ())
        if keep:
            names = set(ds.schema.names)  # (the schema is built anew at each access)
            keep = [c for c in dict.fromkeys([key, *keep]) if c in names]
        else:
            keep = [key]
        read = [f for f, _ in missing]
        with storage_errors(loc, "read"):
            found = fragment_rows.whole(loc, ds, read, keep)
        current.update(_by_file(read, found, key))
        if len(keep) > 1:
            _keep_read(loc, read, found)
    with _KEYS_LOCK:
        # keep what other threads noted meanwhile (fragments newer than `ds`), within a bound:
        # files compacted away go when it is passed
        merged = {**_KEYS.get(cache_key, {}), **current}
        if len(merged) > 2 * len(current) + 64:
            live = {first_file(f) for f in ds.get_fragments()}
            merged = {path: ids for path, ids in merged.items() if path in live}
        _KEYS[cache_key] = merged
    return current


# dataset uri -> the columns a reader of `rows_after` asked key look-ups to read too (`keep_rows`)
_KEEP: dict[str, tuple[str, ...]] = {}
# dataset uri -> {data file path: its fragment's rows, those columns and `_rowaddr`, as a look-up
# read them} (by path, as `_KEYS`: a dataset made again reuses fragment ids)
_ROWS: OrderedDict[str, OrderedDict[str, pa.Table]] = OrderedDict()
KEPT_ROWS = 4096  # rows kept per dataset at most (the oldest fragments go first)
KEPT_DATASETS = 64  # datasets whose rows are kept at most (the least recently read go first)


def keep_rows(loc: Location, columns: list[str]) -> None:
    """Ask `key_files` to read `columns` (a SEQ table's) of the fragments it reads at `loc` and keep
    their rows, so that the next `rows_after` there reads none of them again (a Model's running
    sums, `artstore.log.sums`, catch up on the very fragments its log's id look-ups just read)."""
    with _KEYS_LOCK:
        _KEEP[loc.uri] = tuple(dict.fromkeys([*_KEEP.get(loc.uri, ()), *columns, SEQ]))


def _keep_read(loc: Location, fragments: list, found: pa.Table) -> None:
    """Keep the rows of each of `fragments` (`found`: all their rows, with `_rowaddr`) for
    `rows_after`, within KEPT_ROWS."""
    fragment = pc.shift_right(found["_rowaddr"], 32)
    with _KEYS_LOCK:
        kept = _ROWS.setdefault(loc.uri, OrderedDict())
        _ROWS.move_to_end(loc.uri)
        while len(_ROWS) > KEPT_DATASETS:
            _ROWS.popitem(last=False)
        for f in fragments:
            kept[first_file(f)] = found.filter(pc.equal(fragment, f.fragment_id)) if len(fragments) > 1 else found
        while sum(t.num_rows for t in kept.values()) > KEPT_ROWS and len(kept) > 1:
            kept.popitem(last=False)


def _kept_rows(loc: Location, fragments: list, columns: list[str]) -> dict[int, pa.Table]:
    """{fragment id: its kept rows} of those of `fragments` whose rows a look-up kept with every
    one of `columns` (`keep_rows`); each is handed out once."""
    with _KEYS_LOCK:
        kept = _ROWS.get(loc.uri)
        if not kept:
            return {}
        found = {f.fragment_id: kept.pop(path) for f in fragments if (path := first_file(f)) in kept}
    return {i: t for i, t in found.items() if all(c in t.column_names for c in columns)}


def _note_read(loc: Location, key: str, fragments: list, found: pa.Table) -> None:
    """Note (for `key_files`) the values of `key` each of `fragments` holds: `found` is every
    row of them, with `_rowaddr`."""
    held = _by_file(fragments, found, key)
    with _KEYS_LOCK:
        _KEYS.setdefault((loc.uri, key), {}).update(held)


def _by_file(fragments: list, found: pa.Table, key: str) -> dict[str, frozenset[str]]:
    """{data file path: the values of `key` its fragment holds}, from `found`: every row of
    `fragments`, with `_rowaddr` (whose upper 32 bits are the row's fragment id)."""
    held: dict[int, set[str]] = {f.fragment_id: set() for f in fragments}
    for fid, value in zip(pc.shift_right(found["_rowaddr"], 32).to_pylist(), found[key].to_pylist(), strict=True):
        held[fid].add(value)
    return {first_file(f): frozenset(held[f.fragment_id]) for f in fragments}


def may_hold(loc: Location, ds: LanceDataset, key: str, value: str) -> bool:
    """Whether the dataset `ds` (at `loc`) may hold a row whose `key` is `value`: False only when
    no fragment of it does (see `key_files`)."""
    return bool(key_files(loc, ds, key, value))


def note_keys(loc: Location, key: str, fragments: list[FragmentMetadata], values: list[str]) -> None:
    """Record that the fragments this process just committed (from `write_files`) hold these
    values of `key`, so `key_files` need not read them back."""
    with _KEYS_LOCK:
        known = _KEYS.setdefault((loc.uri, key), {})
        for f in fragments:
            if f.data_files():
                known[first_file(f)] = frozenset(values)


# dataset uri -> {data file path: the highest sequence its rows hold}, of the fragments this
# process's compactions wrote (`note_seq_hi`)
_SEQ_HI: dict[str, dict[str, int]] = {}


def note_seq_hi(loc: Location, fragments: list[FragmentMetadata], highest: int) -> None:
    """Record that the fragments this process just wrote (a compaction's, of the dataset at `loc`
    with a SEQ column) hold no row whose sequence is above `highest`, so `firsts_after` need not
    read them for rows above it. At most 4,096 files are kept per dataset (the oldest go first)."""
    with _KEYS_LOCK:
        known = _SEQ_HI.setdefault(loc.uri, {})
        for f in fragments:
            if f.data_files():
                known[first_file(f)] = highest
        while len(known) > 4096:
            del known[next(iter(known))]


def firsts_after(loc: Location, ds: LanceDataset, key: str, seq: int, columns: list[str]) -> tuple[pa.Table, int]:
    """The rows of `ds` (the dataset at `loc`, with a SEQ column) that are the first committed
    row of their `key` value and whose sequence is above `seq` (see `first_per_key`): `columns`
    of them, SEQ (filled in) and `_rowaddr` (each row's address in `ds`, for `fragment_rows.rows_at`) last, in
    commit order; and how many rows were read to find them.

    Reads only the fragments numbered above `seq` (every row committed after `seq` is in one: see
    `rows_after`), so the read does not grow with the rows at or below `seq`. A key found there
    may have a first row at or below `seq` (a retry that raced past the writer's look-up, folded
    since): such keys are looked for in the older fragments through the per-process key cache
    (`key_files`; a fragment's key column is read once per process, and the writer's look-ups
    keep the cache filled), and are left out."""
    fragments = ds.get_fragments()
    with _KEYS_LOCK:
        highest = dict(_SEQ_HI.get(loc.uri, {}))
    # (a compaction's output is numbered above every fragment it read, but this process may know
    # that all its rows are at or below `seq`: it is then one of the older fragments)
    new = [f for f in fragments if f.fragment_id > seq and highest.get(first_file(f), seq + 1) > seq]
    cols = list(dict.fromkeys([*columns, key, SEQ]))
    if not new:
        empty = pa.table({c: pa.array([], ds.schema.field(c).type) for c in cols})
        return empty.append_column("_rowaddr", pa.array([], pa.uint64())), 0
    with storage_errors(loc, "read"):
        found = fragment_rows.whole(loc, ds, new, cols)
    _note_read(loc, key, new, found)
    read = found.num_rows
    filled = pc.coalesce(found[SEQ], pc.cast(pc.shift_right(found["_rowaddr"], 32), pa.int64()))
    found = found.set_column(found.schema.get_field_index(SEQ), found.schema.field(SEQ), filled)
    found = found.take(pc.sort_indices(found, [(SEQ, "ascending"), ("_rowaddr", "ascending")]))
    values = found[key].combine_chunks()
    first = pc.index_in(pc.unique(values), value_set=values)  # ascending: each value's first row
    if len(first) < found.num_rows:
        found = found.take(first)
    found = found.filter(pc.greater(found[SEQ], seq))
    read_ids = {f.fragment_id for f in new}
    old = [f for f in fragments if f.fragment_id not in read_ids]
    if found.num_rows and old:
        wanted, seen = set(found[key].to_pylist()), set()
        for held in _key_sets(loc, ds, key, old).values():
            seen |= wanted & held
        if seen:
            found = found.filter(pc.invert(pc.is_in(found[key], value_set=pa.array(sorted(seen), found.schema.field(key).type))))
    return found.select([*dict.fromkeys([*columns, SEQ]), "_rowaddr"]), read
