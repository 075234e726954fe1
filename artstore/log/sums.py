"""The running sums of a run's metrics builder (ART's `_metrics_builder_state`: `cum_state` and
`unique_scenario_ids`), kept so that a Model's log is one commit and reads nothing.

Each Model log adds to the sums what its step added (`delta`). On a journal run that delta
travels in the log's own journal row (`state_delta`), so it is all or nothing with the log and
counted once per log_id (the first committed row wins, as for every reader). The sums of a run
are its *base*, `_metrics_builder_state` in `state.lance`, plus the deltas of the committed rows
whose sequence (`artstore.log.journal`) is above the base's *position*: `POSITION`, stored in
the state beside the base (absent: -1, every delta). A change of the state (`update`) stores
the sums it read as the new base, with the sequence they account for as its position. Rows
from before the column (logs schema 2) and runs whose logs are not a journal (schema 1) hold no
delta: their base holds their sums (`store_delta`, a state commit per log, as before).

A delta holds, per summed key, the value before and after the log ([from, to]): applied to a
sum that still equals `from` it gives `to` exactly (one writer: the sums read back are the
builder's own numbers, as ART stores them), otherwise it adds `to - from` (several writers:
exact totals). Ratio keys are set, not summed; scenario ids are a set.

`Tracker` is a Model's copy of the sums, read once, then kept current from its own deltas; it
reads the journal again only when another commit landed between two of its own.
"""

from __future__ import annotations

import bisect
import json
import time
from collections.abc import Callable
from typing import Any

import pyarrow as pa

from artstore.errors import VersionNotFoundError
from artstore.log import journal
from artstore.log import state as state_table
from artstore.records.metrics_builder import STATE_KEY
from artstore.storage import Location, datasets, handles, keys, writes

POSITION = "_artstore_sums_seq"  # state key: the journal sequence the stored base accounts for
RATIOS = frozenset({"data/cum/unused_and_dummy_ratio"})  # set, not summed

Sums = dict[str, Any]  # {"cum_state": {key: float}, "unique_scenario_ids": [id, ...]}


def empty() -> Sums:
    return {"cum_state": {}, "unique_scenario_ids": []}


def delta(before: Sums, after: Sums) -> dict[str, Any]:
    """What one log added (`after` minus `before`, builder `state_dict()`s or `sums_snapshot()`s:
    ids as a list or a set), as stored in its row."""
    old, new = before["cum_state"], after["cum_state"]
    out: dict[str, Any] = {}
    added = {k: [old.get(k, 0.0), v] for k, v in new.items() if k not in RATIOS and v != old.get(k)}
    ratios = {k: v for k, v in new.items() if k in RATIOS}
    after_ids = after["unique_scenario_ids"]
    ids = sorted((after_ids if isinstance(after_ids, set) else set(after_ids)).difference(before["unique_scenario_ids"]))
    for key, value in (("add", added), ("set", ratios), ("ids", ids)):
        if value:
            out[key] = value
    return out


def apply(sums: Sums, change: dict[str, Any]) -> Sums:
    """`sums` with one log's `delta` applied (see the module doc)."""
    cum = dict(sums["cum_state"])
    for key, (before, after) in (change.get("add") or {}).items():
        current = cum.get(key, 0.0)
        cum[key] = after if current == before else current + (after - before)
    cum.update(change.get("set") or {})
    ids = list(sums["unique_scenario_ids"])  # sorted, no repeats
    for new in change.get("ids") or ():  # a few a log: inserted in place, not a sort of all so far
        at = bisect.bisect_left(ids, new)
        if at == len(ids) or ids[at] != new:
            ids.insert(at, new)
    return {"cum_state": cum, "unique_scenario_ids": ids}


def _stored_base(raw: dict[str, Any] | None) -> Sums | None:
    stored = (raw or {}).get(STATE_KEY)
    if not isinstance(stored, dict):
        return None
    return {"cum_state": {str(k): float(v) for k, v in (stored.get("cum_state") or {}).items()},
            "unique_scenario_ids": sorted({str(i) for i in stored.get("unique_scenario_ids") or []})}


class _Journal:
    """The deltas of a run's committed logs, read at one version of its logs table."""

    def __init__(self, run: Location):
        self.loc = run.child("logs.lance")
        self.ds = datasets.open_dataset(self.loc)
        self.is_journal = self.ds is not None and journal.is_journal(self.ds.schema)
        self.has_deltas = self.is_journal and journal.DELTA_COLUMN in self.ds.schema.names
        self.last = keys.last_fragment_id(self.ds) if self.is_journal else -1

    def rows(self) -> pa.Table:
        """log_id, state_delta (null where none), sequence: the committed rows, in commit order."""
        if not self.is_journal:
            return pa.table({"log_id": pa.array([], pa.string()), journal.DELTA_COLUMN: pa.array([], pa.string()),
                             keys.SEQ: pa.array([], pa.int64())})
        cols = ["log_id", keys.SEQ] + ([journal.DELTA_COLUMN] if self.has_deltas else [])
        found = keys.first_per_key(self.loc, self.ds, "log_id", columns=cols)
        if not self.has_deltas:
            found = found.append_column(journal.DELTA_COLUMN, pa.nulls(found.num_rows, pa.string()))
        return found


def _add_rows(sums: Sums | None, rows: pa.Table, after: int, seen: set[str] | None = None) -> Sums | None:
    """`sums` (None: none stored yet) with the deltas of `rows` (commit order) whose sequence is
    above `after` applied; with `seen`, rows whose log_id it holds are skipped (a later attempt
    of a counted log), and every log_id read is added to it."""
    for log_id, text, seq in zip(rows["log_id"].to_pylist(), rows[journal.DELTA_COLUMN].to_pylist(),
                                 rows[keys.SEQ].to_pylist(), strict=True):
        if seen is not None:
            if log_id in seen:
                continue
            seen.add(log_id)
        if text is not None and seq > after:
            sums = apply(sums or empty(), json.loads(text))
    return sums


def compose(raw: dict[str, Any] | None, found: _Journal) -> dict[str, Any] | None:
    """The state as ART's read_state() returns it: `raw` (a stored snapshot) without POSITION,
    its builder sums brought up to date with the deltas of `found`."""
    if raw is None and not found.has_deltas:
        return None
    position = int((raw or {}).get(POSITION, -1))
    sums = _add_rows(_stored_base(raw), found.rows(), position) if found.has_deltas else _stored_base(raw)
    state = {k: v for k, v in (raw or {}).items() if k != POSITION}
    if sums is not None:
        state[STATE_KEY] = sums
    return state or (None if raw is None else state)


def read(run: Location) -> dict[str, Any] | None:
    """The run's state (its builder sums current), None when none was ever written."""
    raw = state_table.read(run)[1]  # before the journal: a base never accounts for unread rows
    return compose(raw, _Journal(run))


def update(run: Location, change: Callable[[dict[str, Any] | None], dict[str, Any] | None]) -> dict[str, Any] | None:
    """Commit `change(current state)` as the new state (see `artstore.log.state.update`; `change`
    may run more than once, so it must be pure) and return it. The stored snapshot holds the
    builder sums of the state written, at the journal position they were read at."""
    result: list[dict[str, Any] | None] = []

    def stored(raw: dict[str, Any] | None) -> dict[str, Any] | None:
        found = _Journal(run)
        current = compose(raw, found)
        new = change(None if current is None else json.loads(json.dumps(current)))
        result[:] = [current if new is None else new]
        if new is None or new == current:
            return None
        return {**new, POSITION: found.last} if found.is_journal else new

    state_table.update(run, stored)
    return result[-1] if result else None


def store_delta(run: Location, change: dict[str, Any]) -> None:
    """Add one log's delta to the stored base (a state commit): for a log whose row cannot hold it."""
    def add(current: dict[str, Any] | None) -> dict[str, Any]:
        current = current or {}
        return {**current, STATE_KEY: apply(_stored_base(current) or empty(), change)}

    state_table.update(run, add)


class Tracker:
    """A Model's copy of its run's builder sums (see the module doc): `sums` is exact as of
    `version` of the logs table; the deltas of its own logs not yet settled are `pending`.

    `working()` (sums with the pending deltas) is what the builder computes on. After its own
    commit at version V, `settle` adds its delta without reading when V directly follows the
    version it knows; otherwise it reads the rows committed since (`keys.rows_after`: only the
    fragments after the last it read, and of those only the ones its log's id look-ups did not
    just read: `keys.keep_rows`). Not thread-safe: the Model calls it under its lock."""

    def __init__(self, run: Location):
        self.run = run
        # when the read began (time.monotonic()): `group_commit.commits_since` counts commits after it
        self.read_at = time.monotonic()
        raw = state_table.read(run)[1]  # the base first: it never accounts for rows read after it
        found = _Journal(run)
        self.legacy = found.ds is not None and not found.is_journal  # logs schema 1: deltas go to the base
        self.seen: set[str] = set()
        self.sums = _stored_base(raw)
        if found.is_journal:
            self.sums = _add_rows(self.sums, found.rows(), int((raw or {}).get(POSITION, -1)), self.seen)
        self.version = 0 if found.ds is None else found.ds.version
        self.last = found.last
        if found.is_journal or found.ds is None:  # its logs' id look-ups read others' rows for `catch_up` too
            keys.keep_rows(found.loc, ["log_id", journal.DELTA_COLUMN])
        self.rows = 0 if found.ds is None else _row_count(found.ds)  # physical rows of `version`
        self.pending: dict[int, dict[str, Any]] = {}
        self._next = 0
        self.mine: set[str] = set()  # write_ids of our logs queued for a group commit, not yet followed

    def refresh(self) -> None:
        """Read the stored base again: a run whose logs are not a journal keeps its sums there only."""
        self.sums = _stored_base(state_table.read(self.run)[1])

    def working(self) -> Sums:
        sums = self.sums or empty()
        for change in self.pending.values():
            sums = apply(sums, change)
        return sums

    def begin(self, change: dict[str, Any]) -> int:
        """Hold `change` (a log being written) as pending; returns its token for `settle`."""
        self._next += 1
        self.pending[self._next] = change
        return self._next

    def settle(self, token: int, log_id: str | None, created: bool, stored: bool, version: int | None) -> bool:
        """The log of `token` is done: committed by us (`created`, its delta `stored` in its row,
        at logs `version`), found already stored, or failed (`log_id` None). Returns whether
        `working()` changed other than by the log's own delta (the builder must reload it)."""
        change = self.pending.pop(token)
        if log_id is None:
            return True
        if created and not stored:  # the run's logs cannot hold it: into the base, as before the journal
            store_delta(self.run, change)
            self.sums = apply(self.sums or empty(), change)
            return False
        if created and log_id not in self.seen and version == self.version + 1:
            self.seen.add(log_id)
            self.sums = apply(self.sums or empty(), change)
            self.version = version
            self.rows += 1
            # our version's fragments are all counted: a later catch-up need not read them back
            if (made := writes.committed_seq_hi(self.run.child("logs.lance"), version)) is not None:
                self.last = max(self.last, made[1])
            return False
        if created and log_id not in self.seen and self._only_ours(version):
            self.seen.add(log_id)
            self.sums = apply(self.sums or empty(), change)
            return False
        if created and log_id not in self.seen:  # our row is its id's first: counted here, not read back
            self.seen.add(log_id)
            self.sums = apply(self.sums or empty(), change)
        self.catch_up(version)
        return True

    def settle_queued(self, token: int, log_id: str, write_id: str) -> None:
        """The log of `token` was queued for a group commit (`artstore.log.group_commit`): its
        delta counts now, and `follow` knows the rows of that commit for ours."""
        change = self.pending.pop(token)
        self.seen.add(log_id)
        self.mine.add(write_id)
        self.sums = apply(self.sums or empty(), change)

    def follow(self, found: tuple[int, int, list[str] | None] | None) -> bool:
        """Move to this process's latest group commit of the run (`group_commit.commits_since`:
        version, physical rows, write_ids committed since `self.version`, None when not all are
        known). k more rows after our k queued logs committed: only ours, nothing is read;
        otherwise the rows committed since are read (`catch_up`). Returns whether other logs'
        deltas were added."""
        if found is None:
            return False
        version, rows, ids = found
        ours = ids is not None and self.mine.issuperset(ids)
        self.mine.difference_update(ids or ())
        if ours and rows - self.rows == len(ids):
            ds = handles.held(self.run.child("logs.lance"), version)
            if ds is not None:
                self.last = max(self.last, keys.last_fragment_id(ds))
            self.version, self.rows = version, rows
            return False
        self.catch_up(version)
        return True

    def _only_ours(self, version: int | None) -> bool:
        """Whether our commit at logs `version` is the only row appended since `self.version`
        (then the versions between were compactions: this process's upkeep, or another's, which
        move rows into new fragments and never add one). Counts the rows of `version`, from its
        manifest, through this process's handle on it; False (read the rows) when that handle is
        gone, e.g. a compaction landed right after our commit. On True the tracker moves to it."""
        loc = self.run.child("logs.lance")
        ds = handles.held(loc, version) if version is not None and version > self.version else None
        if ds is None or _row_count(ds) != self.rows + 1:
            return False
        self.version, self.rows = version, self.rows + 1
        self.last = max(self.last, keys.last_fragment_id(ds))
        return True

    def catch_up(self, version: int | None = None) -> None:
        """Add the deltas of the rows committed after the last fragment read (at logs `version`,
        or the latest when it is None or gone)."""
        if version is not None and version <= self.version:
            return
        loc = self.run.child("logs.lance")
        ds = None if version is None else handles.held(loc, version)  # (our commit's: no open)
        try:
            ds = ds if ds is not None else datasets.open_dataset(loc, version=version)
        except VersionNotFoundError:  # cleaned up meanwhile: the latest holds every row it held
            ds = datasets.open_dataset(loc)
        if ds is None or journal.DELTA_COLUMN not in ds.schema.names:
            return
        rows = keys.rows_after(loc, ds, self.last, ["log_id", journal.DELTA_COLUMN], note_key="log_id",
                               known=self.seen)
        self.sums = _add_rows(self.sums, rows, self.last, self.seen)
        self.last = max(self.last, keys.last_fragment_id(ds))
        if ds.version > self.version:
            self.version, self.rows = ds.version, _row_count(ds)


def _row_count(ds: Any) -> int:
    """The rows of a version of a journal, from its manifest (no journal row is ever deleted)."""
    return ds.count_rows()
