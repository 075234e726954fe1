"""Compaction and cleanup of Lance datasets: the tiered policy, Lance's planner as a model, and the
order-keeping rewrite of tables whose rows must keep their commit order (`keys.SEQ`).

Small appends would leave one fragment per log call; compaction keeps the fragment count (and so
the manifest size and the cost of every scan) bounded without anyone calling it by hand.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import tenacity
from lance import LanceDataset, LanceOperation
from lance.fragment import write_fragments

from artstore.storage import barrier, handles, keys, version_cleanup, version_map, written_rows
from artstore.storage.datasets import open_dataset, open_latest
from artstore.storage.failures import storage_errors, vanished
from artstore.storage.keys import SEQ
from artstore.storage.location import Location
from artstore.storage.tags import CLEANUP_LOCK
from artstore.storage.writes import COMMIT_RETRIES, note_commit

logger = logging.getLogger(__name__)

# Compaction: the largest fragment it makes, in rows, per table (tens of MB of its rows); full
# fragments are never rewritten again. Smaller fragments are merged in tiers, the smallest
# TIER_FACTOR times the smallest fragment (one append), each next TIER_FACTOR times larger, so a row
# is rewritten about once per tier and the cost of one compaction does not grow with the run.
TARGET_ROWS = {"trajectories": 16_384, "tokens": 16_384, "groups": 65_536, "logs": 65_536}
DEFAULT_TARGET_ROWS = 262_144  # metrics, checkpoints
TIER_FACTOR = 16
# Compact once this many fragments are below the target size (not counting full ones), down to
# COMPACT_TO_FRAGMENTS. Chosen with benchmarks/compaction_policy.py (a simulation of this policy
# over Lance's planner, `after_compaction`, that reproduced a real 2,000-log run exactly).
COMPACT_AFTER_FRAGMENTS = 8
COMPACT_TO_FRAGMENTS = 5
# A run's journal (`logs`) takes one small fragment per sync log or group commit, and each of its
# compactions costs a commit, a data file and a cleanup check whatever its size: compacting it from
# 16 down to 6 makes 2.7x fewer compactions than 8 -> 5 and rewrites each row 5.5 times instead of
# 9.9 (2,000 one-row appends in the planner model), for ~11 fragments on average instead of ~6.
JOURNAL_COMPACT_AFTER_FRAGMENTS = 16
JOURNAL_COMPACT_TO_FRAGMENTS = 6
# Tries of one compaction that loses a race with another (Lance: "retryable commit conflict").
COMPACT_ATTEMPTS = 8
_last_cleanup: dict[str, float] = {}  # dataset uri -> time.monotonic() of this process's last cleanup
_cleaned_at: dict[str, int] = {}  # dataset uri -> its latest version at this process's last cleanup
# A cleanup also falls due, without a compaction, once a table made this many versions since the
# last one: a journal whose compactions its writer did (or lost to a rival) keeps no more manifests
# than this beyond its window.
CLEANUP_AFTER_VERSIONS = 16
# Cleanup reads every manifest in the retention window, so its cost grows with the window: it
# runs after a compaction (which leaves old files behind), and one process runs it on a table at
# most once per this fraction of the window.
CLEANUP_EVERY_FRACTION_OF_RETENTION = 1 / 8


def tiers(top: int, smallest: int) -> list[int]:
    """Compaction targets in rows, smallest first: TIER_FACTOR x `smallest`, times TIER_FACTOR
    each, ending at `top`."""
    out = [max(1, smallest) * TIER_FACTOR]
    while out[-1] < top:
        out.append(out[-1] * TIER_FACTOR)
    return [t for t in out if t < top] + [top]


def compaction_bins(rows: list[int], target: int) -> list[list[int]]:
    """The groups of fragments (their positions in `rows`) that Lance's compaction to `target`
    rewrites, each into one fragment (pylance 14's planner, checked against Lance by
    tests/test_small_appends.py): every run of two or more adjacent fragments under `target` rows
    is cut, oldest first, into bins of at least `target` rows (the last bin takes what is left)."""
    bins, run = [], []
    for i, r in enumerate([*rows, None]):
        if r is not None and r < target:
            run.append(i)
            continue
        if len(run) > 1:
            acc, left, current = 0, sum(rows[k] for k in run), []
            for k in run:
                acc, left = acc + rows[k], left - rows[k]
                current.append(k)
                if acc >= target and left >= target:
                    bins.append(current)
                    acc, current = 0, []
            bins.append(current)
        run = []
    return bins


def after_compaction(rows: list[int], target: int) -> list[int]:
    """The fragments (their rows) that Lance's compaction to `target` leaves, in order: each bin
    of `compaction_bins` becomes one fragment, placed after all the fragments that were not
    rewritten."""
    bins = compaction_bins(rows, target)
    rewritten = {k for b in bins for k in b}
    return [r for i, r in enumerate(rows) if i not in rewritten] + [sum(rows[k] for k in b) for b in bins]


def _rewrite_sequenced(loc: Location, ds: LanceDataset, bins: list[list[Any]],
                       rewrite: Callable[[pa.Table], pa.Table] | None = None) -> None:
    """Compact a dataset with a SEQ column: each bin of fragments (LanceFragment objects) becomes
    one fragment whose rows keep their commit order in SEQ (see `first_per_key`), in one Rewrite
    commit, as Lance's own compaction would commit it."""
    groups = []
    for olds in bins:
        # one scan of the bin (a read per fragment cost ~2 ms each); an appended row's sequence is
        # its fragment's id, the upper half of its row address
        merged = _sequenced_rows(loc, ds, olds)
        merged = merged.take(pc.sort_indices(merged[SEQ]))  # stable: rows of one commit keep their order
        if rewrite is not None:
            merged = rewrite(merged)
        new = write_fragments(merged, ds, schema=ds.schema, max_rows_per_file=merged.num_rows,
                              storage_options=loc.lance_options())
        written_rows.retire(loc, olds)
        if len(new) == 1:  # the next tier's compaction, a fold, need not read them back (within `written_rows`' bound)
            written_rows.note(loc, new, [merged])
        if "log_id" in merged.column_names:  # the writer's next id look-up need not read the new file back
            keys.note_keys(loc, "log_id", new, pc.unique(merged["log_id"]).to_pylist())
        if merged.num_rows:  # nor the next fold, once it folded past these rows (`keys.firsts_after`)
            keys.note_seq_hi(loc, new, pc.max(merged[SEQ]).as_py())
        groups.append(LanceOperation.RewriteGroup([f.metadata for f in olds], new))
    if groups:
        # through the dataset planned on: no listing of `_versions/` to find the latest
        committed = LanceDataset.commit(ds, LanceOperation.Rewrite(groups, []), read_version=ds.version,
                                        storage_options=loc.lance_options(), max_retries=COMMIT_RETRIES,
                                        commit_message="compact")
        handles.remember(loc, committed)
        note_commit(loc, committed)  # the version map then needs no read of its manifest


def _sequenced_rows(loc: Location, ds: LanceDataset, fragments: list[Any]) -> pa.Table:
    """Every row of `fragments` (of `ds`, with a SEQ column), in their order, SEQ filled in with
    each appended row's fragment id: rows this process wrote itself (`written_rows`) from memory,
    the others in one scan (a GET per data file on a bucket)."""
    kept = {f.fragment_id: t for f in fragments if (t := written_rows.rows_of(loc, f, ds.schema)) is not None}
    missing = [f for f in fragments if f.fragment_id not in kept]
    read = {}
    if missing:
        t = ds.scanner(fragments=missing, with_row_address=True, scan_in_order=True).to_table()
        at = pc.cast(pc.shift_right(t["_rowaddr"], pa.scalar(32, pa.uint64())), pa.int64())
        t = t.drop_columns(["_rowaddr"])
        t = t.set_column(t.schema.get_field_index(SEQ), t.schema.field(SEQ), pc.coalesce(t[SEQ], at))
        read = {f.fragment_id: t.filter(pc.equal(at, f.fragment_id)) for f in missing} if kept else {-1: t}
    if not kept:
        return read[-1]
    parts = []
    for f in fragments:
        if f.fragment_id in kept:
            t = kept[f.fragment_id].select(ds.schema.names).cast(ds.schema)
            seq = pc.coalesce(t[SEQ], pa.scalar(f.fragment_id, pa.int64()))
            parts.append(t.set_column(t.schema.get_field_index(SEQ), t.schema.field(SEQ), seq))
        else:
            parts.append(read[f.fragment_id])
    return pa.concat_tables(parts)


def rewrite_fragments(loc: Location, ds: LanceDataset, fragments: list[Any],
                      rewrite: Callable[[pa.Table], pa.Table]) -> None:
    """Rewrite `fragments` (LanceFragment objects of `ds`, the dataset at `loc` with a SEQ
    column) into one fragment through `rewrite` (same schema and row count), keeping their
    commit order: one Rewrite commit. A CommitConflictError or StorageError when another
    compaction rewrote any of them first (the caller tries again later)."""
    with storage_errors(loc, "rewrite"):
        _rewrite_sequenced(loc, ds, [fragments], rewrite)


def compaction_target(rows: list[int], top: int, after: int | None = None, to: int | None = None) -> int | None:
    """The smallest tier whose compaction leaves at most `to` (COMPACT_TO_FRAGMENTS) fragments
    under `top` rows, or None while fewer than `after` (COMPACT_AFTER_FRAGMENTS) are (nothing to
    do yet)."""
    after = COMPACT_AFTER_FRAGMENTS if after is None else after
    to = COMPACT_TO_FRAGMENTS if to is None else to
    full = sum(r >= top for r in rows)
    if len(rows) - full < after:
        return None
    for target in tiers(top, min(rows)):
        if len(after_compaction(rows, target)) - full <= to:
            return target
    return top


def maintain(loc: Location, table: str, retention: timedelta, force: bool = False, *,
             compact: bool = True, cleanup: bool = True,
             rewrite: Callable[[pa.Table], pa.Table] | None = None, held: bool = False) -> dict[str, int]:
    """Compact small fragments (tiered, see `compaction_target`; with `compact`) and remove
    versions older than `retention` (with `cleanup`; pinned versions, those with a Lance tag, are
    kept; a logical tag keeps none: `tags`).

    Cheap when there is nothing to do: it opens the dataset and counts rows per fragment. Lance's
    cleanup reads every manifest inside the window (on a bucket `version_cleanup` reads only those
    this process has not seen, and deletes in one request), so it runs only when `cleanup_due` (after a compaction,
    at most once per CLEANUP_EVERY_FRACTION_OF_RETENTION of the window; `log()` runs it in the
    background: `artstore.log.upkeep`). Safe beside concurrent writers (compaction commits like any
    writer; cleanup keeps the files of versions inside the window and unverified new files).
    `force` compacts everything to the largest size and cleans up now. `rewrite` (for a table
    with a SEQ column) changes the rows a compaction rewrites (same schema and row count: e.g. the
    journal drops the payloads of folded logs). `held`: plan on this process's handle of the
    dataset, with no probe for a newer version (a writer's upkeep right after its own commit:
    Lance's commit of the compaction checks what landed since, as for any commit).
    """
    ds = _open(loc, held)  # this process's handle when nothing changed: a probe, not an open
    if ds is None:
        return {"fragments": 0, "compacted": 0, "rewritten_rows": 0, "removed_versions": 0}
    with storage_errors(loc, "compact"):
        # An explicit compaction (force) retries a lost race; a writer's own upkeep leaves it to the
        # compaction that won (no retry, no wait in log()).
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(retryable), reraise=True,
            stop=tenacity.stop_after_attempt(COMPACT_ATTEMPTS if force else 1),
            wait=tenacity.wait_random_exponential(multiplier=0.05, max=2))
        try:
            # the first try plans on `ds`; a retry opens the latest afresh
            first = [ds]
            rows, target, ds = retrying(lambda: _compact(loc, table, force, compact, rewrite,
                                                         first.pop() if first else open_latest(loc)))
        except (OSError, RuntimeError, ValueError) as e:
            # Lost a race: another compaction rewrote these fragments, or a cleanup removed the
            # version opened. The winner did the work, and the next round plans afresh: quiet.
            if force or not (retryable(e) or vanished(e)):
                raise
            logger.debug("compaction of %s left to a concurrent one: %s", loc.redact(loc.uri), e)
            return {"fragments": 0, "compacted": 0, "rewritten_rows": 0, "removed_versions": 0}
        after, removed = rows, 0
        if target is not None:
            mine = handles.held(loc)  # the commit of a sequenced rewrite is held: no probe
            latest = mine if mine is not None and mine.version > ds.version else open_latest(loc)
            after = {f.fragment_id: f.physical_rows for f in latest.get_fragments()}
        # after a compaction (it leaves old files), or once versions piled up without one (its
        # writer compacted, or a rival); either way not for fewer than half that many versions:
        # a cleanup reads every manifest in the window, and a short window made it ~1 in 6 logs.
        since = ds.version - _cleaned_at.get(loc.uri, 0)
        piled = since >= CLEANUP_AFTER_VERSIONS or target is not None and since >= CLEANUP_AFTER_VERSIONS // 2
        if force or cleanup and (piled or not compact) and cleanup_due(loc, retention):
            _last_cleanup[loc.uri] = time.monotonic()
            _cleaned_at[loc.uri] = ds.version
            with CLEANUP_LOCK:  # no tag is made while the versions to remove are chosen and removed
                # the handle: a probe; with `held`, on a bucket, as held (no request): a cleanup there
                # keeps every version from it on, and maps the versions before it (`version_map`)
                bucket = version_cleanup.applies(loc) and not force
                latest = _open(loc, held) if bucket else open_latest(loc)
                if table == "logs" and SEQ in ds.schema.names:  # old versions stay answerable: version_map
                    version_map.record(loc, latest)
                removed = version_cleanup.cleanup(loc, latest, retention) if bucket else None
                if removed is None:  # locally, forced (files of failed commits too), or a deletion file
                    removed = ds.cleanup_old_versions(older_than=retention, error_if_tagged_old_versions=False).old_versions
        gone = rows.keys() - after.keys()
        return {"fragments": len(after), "compacted": len(gone), "rewritten_rows": sum(rows[i] for i in gone),
                "removed_versions": removed}


def retryable(e: BaseException) -> bool:
    """Whether Lance says a failed commit may simply be tried again (e.g. "Retryable commit
    conflict ... This Rewrite transaction was preempted by concurrent transaction Rewrite": another
    compaction, often a writer's, rewrote the same fragments first)."""
    return isinstance(e, (OSError, RuntimeError, ValueError)) and "retryable commit conflict" in str(e).lower()


def _open(loc: Location, held: bool) -> LanceDataset | None:
    """The dataset at `loc` at its latest version (`open_latest`: a probe), or with `held` this
    process's handle of it when there is one (no request)."""
    if held:
        barrier.wait(loc)
        mine = handles.held(loc)
        if mine is not None:
            return mine
    return open_latest(loc)


def _compact(loc: Location, table: str, force: bool, compact: bool,
             rewrite: Callable[[pa.Table], pa.Table] | None, ds: LanceDataset) -> tuple[dict[int, int], int | None, LanceDataset]:
    """One try at compacting `ds`, the dataset at `loc` at its latest version a moment ago (a
    retry plans again on a fresh open): (rows per fragment before, the target used or None, `ds`)."""
    rows = {f.fragment_id: f.physical_rows for f in ds.get_fragments()}
    top = TARGET_ROWS.get(table, DEFAULT_TARGET_ROWS)
    policy = (JOURNAL_COMPACT_AFTER_FRAGMENTS, JOURNAL_COMPACT_TO_FRAGMENTS) if table == "logs" else (None, None)
    target = top if force else compaction_target(list(rows.values()), top, *policy) if compact else None
    if target is not None:
        if SEQ in ds.schema.names:
            fragments = ds.get_fragments()
            _rewrite_sequenced(loc, ds, [[fragments[k] for k in b] for b in compaction_bins(list(rows.values()), target)],
                               rewrite)
        else:
            # One thread: these are small rewrites beside a writer (measured 10-35% less time).
            # On a dataset of its own: compact_files borrows it mutably (a Lance panic, "Already
            # borrowed", when another thread uses the held handle meanwhile).
            open_dataset(loc, version=ds.version).optimize.compact_files(target_rows_per_fragment=target, num_threads=None if force else 1)
    return rows, target, ds


def cleanup_due(loc: Location, retention: timedelta) -> bool:
    """Whether this process has not cleaned up the dataset at `loc` within the last
    CLEANUP_EVERY_FRACTION_OF_RETENTION of the window."""
    last = _last_cleanup.get(loc.uri)
    return last is None or time.monotonic() - last >= retention.total_seconds() * CLEANUP_EVERY_FRACTION_OF_RETENTION
