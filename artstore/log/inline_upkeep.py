"""The upkeep a log() starts right after its commit: every MAINTAIN_EVERY versions of a table its
compaction is due; a journal's goes to `artstore.log.upkeep`'s background lane unless logs outrun
the lane (MAX_FRAGMENTS), a data table's runs here. Cleanup of old versions always runs in the
background. A failure here never fails the log, which is already committed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import timedelta

from artstore.errors import ArtstoreError
from artstore.log import fold, upkeep
from artstore.storage import Location, compaction, fragments, run_lock, writes

logger = logging.getLogger(__name__)

MAINTAIN_EVERY = 4  # check compaction every this many versions of a table
# A journal is compacted in the background (`artstore.log.upkeep`'s journal lane) once it has
# JOURNAL_COMPACT_AFTER_FRAGMENTS small fragments; its writer compacts it itself only past
# MAX_FRAGMENTS, when logs truly outrun the lane (busy with this journal all along: a loaded
# machine saw up to 22). With the bound at 12 and one upkeep thread, a steady small-log loop on 2
# idle cores compacted inline 18 times in 200 logs.
MAX_FRAGMENTS = compaction.JOURNAL_COMPACT_AFTER_FRAGMENTS + 4 * MAINTAIN_EVERY
CROWDED_WAIT_S = 5.0  # a journal MAINTAIN_EVERY past crowded: its writer waits at most this for the running compaction
# The most fragments a journal's writers let it reach (sync and group mode alike): past it, a
# sync log or a group commit waits for (or does) the journal's compaction before adding more.
BOUND = MAX_FRAGMENTS + MAINTAIN_EVERY


def maintain(run: Location, versions: Mapping[str, int], retention: timedelta, background: bool = False,
             crowded_wait_s: float = CROWDED_WAIT_S) -> None:
    """Compact each table whose new version is a multiple of MAINTAIN_EVERY (tiered, bounded
    cost), and leave the cleanup of old versions that then falls due to `artstore.log.upkeep`'s
    background thread (a group commit's version, like a sync log's, adds one fragment).

    Exactly one writer makes each version, so among many writers one does each round of upkeep,
    and the fragment count stays bounded without anyone calling compaction by hand. The log is
    committed before this runs: a failure here (e.g. losing a race with another compaction) is
    logged and left to the next round, never raised. With `background` (a journal's logs, whose
    rows keep their commit order in `commit_seq` wherever compaction puts them) the compaction too
    runs on `artstore.log.upkeep`'s thread: log() returns right after its commit. A journal
    crowded past MAX_FRAGMENTS is compacted here only when no other process of this host compacts
    it (`run_lock`), after waiting at most `crowded_wait_s` for this process's running one (a
    group committer waits for none: its next commit would wait too).
    """
    for name, version in versions.items():
        loc = run.child(f"{name}.lance")
        # In the background, unless the worker is so far behind (busy with a fold, or with this
        # table's compaction while logs keep coming) that the table has MAX_FRAGMENTS: then here
        # (when a compaction of it runs, after it lands, once MAINTAIN_EVERY more logs came), which
        # bounds the fragments however fast logs come.
        count = (writes.committed_fragments(loc, version) or 0) if background else 0
        wait = crowded_wait_s if count >= BOUND else 0.0  # far behind: wait
        if count >= MAX_FRAGMENTS and upkeep.take_over(loc, timeout=wait):
            pass
        elif version % MAINTAIN_EVERY:
            continue
        elif background:
            upkeep.request(loc, name, retention, compact=True)
            continue
        _compact_here(run, name, retention, journal=background)


def room(run: Location, count: int | None, retention: timedelta, wait_s: float = CROWDED_WAIT_S) -> int | None:
    """Make room in the run's journal for a group commit's one fragment within BOUND fragments,
    its count `count` at this process's last commit (None: not known); returns the journal's
    count now (None: not read).

    The sync bound, kept per group commit: when the commit would pass BOUND, the journal's
    fragments are counted afresh (a background compaction may have landed since) and, still too
    many, its compaction runs here first, after waiting at most `wait_s` for this process's
    running one, as a sync log that finds it crowded does. A compaction that cannot run (another
    process of this host holds it, a failure) leaves the count: the commit goes on, as a sync
    log goes on."""
    if count is not None and count + 1 <= BOUND:
        return count
    loc = run.child("logs.lance")
    count = fragments.fragment_count(loc)
    if count + 1 > BOUND and upkeep.take_over(loc, timeout=wait_s):
        count = fragments.fragment_count(loc)  # the compaction it waited for may have made room
        if count + 1 > BOUND and _compact_here(run, "logs", retention, journal=True):
            count = fragments.fragment_count(loc)
    return count


def _compact_here(run: Location, name: str, retention: timedelta, journal: bool) -> bool:
    """Compact the table `name` of the run on this thread, unless another process of this host
    compacts it now (its compaction bounds the count); leave the cleanup that falls due to the
    background. A `journal`'s compaction drops the payloads of folded logs. Whether it compacted."""
    loc = run.child(f"{name}.lance")
    rewrite = fold.drop_folded_payloads(run) if journal else None
    try:
        with run_lock.held(run, f"{name}.compact", wait=False) as mine:
            if not mine:
                return False
            done = compaction.maintain(loc, name, retention, cleanup=False, rewrite=rewrite)
    except ArtstoreError as e:
        logger.warning("maintenance of %s skipped: %s", name, e)
        return False
    if done["compacted"] and compaction.cleanup_due(loc, retention):
        upkeep.request(loc, name, retention)
    return bool(done["compacted"])
