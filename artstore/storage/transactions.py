"""What each version of a Lance dataset did, from its transaction file: the commit message its
writer gave or the kind of operation (`commit_messages`), and whether the versions since an
earlier one only moved rows (`same_rows_since`).

A version whose transaction is gone (cleaned up, or written before transactions were kept) is
left out or answers "unsure", never an error.
"""

from __future__ import annotations

from lance import LanceDataset

from artstore.storage import datasets
from artstore.storage.location import Location


def commit_messages(loc: Location, versions: list[int]) -> dict[int, str]:
    """{version: the commit message its writer gave (e.g. "log <log_id>"), or the kind of
    operation (e.g. "Rewrite" for compaction)} for each of `versions` still readable."""
    ds = datasets.open_dataset(loc)
    out: dict[int, str] = {}
    if ds is None:
        return out
    for v in versions:
        try:
            t = ds.read_transaction(v)
        except (OSError, ValueError):  # cleaned up, or written before transactions were kept
            continue
        if t is not None:
            props = t.transaction_properties or {}
            out[v] = props.get("__lance_commit_message") or type(t.operation).__name__
    return out


def same_rows_since(ds: LanceDataset, version: int, limit: int = 8) -> bool:
    """Whether `ds` holds exactly the rows it held at its earlier `version`: each of the (at most
    `limit`) versions after it only compacted files (a Rewrite) or kept the fragments as they were
    (e.g. reserving fragment ids). False when unsure; the caller then reads the table."""
    if not 0 < ds.version - version <= limit:
        return False
    try:
        fragments = [f.fragment_id for f in ds.checkout_version(version).get_fragments()]
        for v in range(version + 1, ds.version + 1):
            tx = ds.read_transaction(v)
            now = [f.fragment_id for f in ds.checkout_version(v).get_fragments()]
            if tx is None or (type(tx.operation).__name__ != "Rewrite" and now != fragments):
                return False
            fragments = now
    except (OSError, ValueError, RuntimeError):
        return False  # e.g. a version cleaned up meanwhile
    return True


def appended_since(ds: LanceDataset, version: int, limit: int = 8) -> set[int] | None:
    """The ids of the fragments that the (at most `limit`) versions of `ds` after its earlier
    `version` appended (an Append's new fragments; some may be gone again by `ds`'s version),
    when every other version among them only compacted files (a Rewrite: rows moved, none added)
    or kept the fragments as they were. None when unsure (another operation, a transaction gone,
    too many versions); the caller then reads every fragment it does not know."""
    if not 0 < ds.version - version <= limit:
        return None
    appended: set[int] = set()
    try:
        before = {f.fragment_id for f in ds.checkout_version(version).get_fragments()}
        for v in range(version + 1, ds.version + 1):
            tx = ds.read_transaction(v)
            now = {f.fragment_id for f in (ds if v == ds.version else ds.checkout_version(v)).get_fragments()}
            kind = None if tx is None else type(tx.operation).__name__
            if kind == "Append" and before <= now:
                appended |= now - before
            elif kind != "Rewrite" and now != before:
                return None
            before = now
    except (OSError, ValueError, RuntimeError):
        return None  # e.g. a version cleaned up meanwhile
    return appended
