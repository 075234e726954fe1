"""Step summary: the per-step sum and count of every metric of a run, at one version of the run.

Ranking checkpoints (`Run.best_step`, `Run.checkpoint("best")`, retention's KeepBest rules and
so `TrainableModel.delete_checkpoints`) needs per-step means of one metric. Read from storage that
is two Lance scans (the logs, for visibility, then the metrics): ~25 ms at 1,000 steps. So a
summary is built once per run and version and kept in memory (`load`):

- freshness: every `load` opens the run's `logs` table at its latest version (or at `as_of`) and
  uses the summary of exactly that version, so another writer's log (a new version) is never
  missed; the check costs one manifest read (~0.8 ms on a local run with 2,000 versions);
- a version never changes, so a summary stays right for it; the key also holds the version's
  commit time, so a run deleted and logged again under the same name is not mistaken for the old;
- this process's own logs extend the summary of the version they commit on top of (`note_log`,
  called by `Model.log`, notes them; the next `load` extends the summary by all of them at once),
  so a training loop that logs then ranks reads no metrics;
  versions that only compacted the logs keep the summary (`transactions.same_rows_since`); any other
  new version (another writer's log) rebuilds it from storage once.

A summary holds only visible metric values (`Run` applies the all-or-nothing rule) and is
immutable: extending makes a new one. Means are in step order; a metric never logged has none,
and the callers raise RetentionError for it (a missing metric is an error).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import pyarrow as pa

from artstore.errors import VersionNotFoundError
from artstore.log import group_commit, journal
from artstore.log.visibility import committed_logs
from artstore.storage import (
    Location,
    barrier,
    datasets,
    failures,
    tags,
    transactions,
    writes,
)

_CACHE: OrderedDict[tuple[str, int, str], StepSummary] = OrderedDict()  # (logs uri, version, time) ->
_NEWEST: dict[str, tuple[str, int, str]] = {}  # logs uri -> key of the newest summary built or extended
_CACHE_MAX = 256  # summaries in all
_PER_RUN = 4  # per run: the newest and the 3 most recently used others (as_of reads)
_LOCK = threading.Lock()


class StepSummary:
    """{metric: {step: (sum, count)}} of the visible metric values of a run at one version."""

    def __init__(self, sums: Mapping[str, Mapping[int, tuple[float, int]]]):
        self._sums = {name: dict(by_step) for name, by_step in sums.items()}
        self._means: dict[str, dict[int, float]] = {}

    @classmethod
    def from_metrics(cls, metrics: pa.Table) -> StepSummary:
        """From a long metrics table (step, name, value: e.g. `Run.metrics()`); null values skipped."""
        if metrics.num_rows == 0:
            return cls({})
        agg = metrics.select(["name", "step", "value"]).group_by(["name", "step"], use_threads=False) \
            .aggregate([("value", "sum"), ("value", "count")])
        sums: dict[str, dict[int, tuple[float, int]]] = {}
        for name, step, total, count in zip(agg["name"].to_pylist(), agg["step"].to_pylist(),
                                            agg["value_sum"].to_pylist(), agg["value_count"].to_pylist(), strict=True):
            if count:
                sums.setdefault(name, {})[step] = (total, count)
        return cls(sums)

    def names(self) -> set[str]:
        """The metrics with at least one value."""
        return set(self._sums)

    def means(self, metric: str) -> dict[int, float]:
        """{step: mean of every value of `metric` logged at that step}, in step order ({} if none)."""
        found = self._means.get(metric)
        if found is None:
            by_step = self._sums.get(metric, {})
            found = {s: by_step[s][0] / by_step[s][1] for s in sorted(by_step)}
            self._means[metric] = found
        return found

    def extended(self, logs: Iterable[tuple[int, Mapping[str, float]]]) -> StepSummary:
        """This summary plus the metric values of log calls, (step, values) each. Copies only the
        metrics they add to (once each), not every metric."""
        sums = dict(self._sums)
        copied: set[str] = set()
        for step, values in logs:
            for name, value in values.items():
                if name not in copied:
                    sums[name] = dict(sums.get(name, {}))
                    copied.add(name)
                by_step = sums[name]
                total, count = by_step.get(step, (0.0, 0))
                by_step[step] = (total + value, count + 1)
        extended = StepSummary({})
        extended._sums = sums  # (its own dicts, where it adds; shared read-only dicts elsewhere)
        return extended


def _key(logs_uri: str, ds: Any) -> tuple[str, int, str]:
    return logs_uri, ds.version, str(datasets.version_time(ds))


def _remember(key: tuple[str, int, str], summary: StepSummary) -> None:
    with _LOCK:
        _CACHE[key] = summary
        _CACHE.move_to_end(key)
        newest = _NEWEST.get(key[0])
        if newest is None or newest[1] <= key[1]:
            _NEWEST[key[0]] = key
        # Each log of this process makes a new version: keep a few per run, not one per version.
        others = [k for k in _CACHE if k[0] == key[0] and k != _NEWEST[key[0]]]
        for old in others[: max(0, len(others) - (_PER_RUN - 1))]:
            del _CACHE[old]
        while len(_CACHE) > _CACHE_MAX:
            old, _ = _CACHE.popitem(last=False)
            if _NEWEST.get(old[0]) == old:
                del _NEWEST[old[0]]


def load(logs_loc: Location, visible_metrics: Callable[[pa.Table], pa.Table],
         version: int | str | None = None, asof: Any = None) -> StepSummary:
    """The summary of the run whose logs table is at `logs_loc`, at its latest version, or at
    `version` (a number or tag) / `asof` (a timezone-aware datetime). `visible_metrics(committed)`
    reads the `step`, `name`, `value` of the metrics rows those committed logs made visible. Empty
    when the run has no logs (then, or at that time)."""
    if version is None and asof is None:
        barrier.wait(logs_loc)  # this process's queued group logs land (and are noted) first
        with barrier.bypass():  # one barrier check per load: the opens below skip it
            return _load(logs_loc, visible_metrics, version, asof)
    return _load(logs_loc, visible_metrics, version, asof)


def _load(logs_loc: Location, visible_metrics: Callable[[pa.Table], pa.Table],
          version: int | str | None, asof: Any) -> StepSummary:
    if logs_loc.uri in _NOTES:  # this process's logs since: extend the kept summary by them first
        _fold_notes(logs_loc)
    pinned = tags.open_version(logs_loc, version, asof, session=datasets.read_session())  # the freshness check
    if pinned is None:
        return StepSummary({})
    ds = pinned.dataset
    key = (logs_loc.uri, pinned.version, str(pinned.committed_at))
    with _LOCK:
        summary = _CACHE.get(key)
        newest = _NEWEST.get(key[0])
        before = None if newest is None or newest[1] >= key[1] else _CACHE.get(newest)
    if summary is None and before is not None and pinned.upto is None and _unchanged_since(logs_loc, ds, newest):
        summary = before  # only compactions since: the same committed logs
        _remember(key, summary)
    if summary is None:
        with failures.storage_errors(logs_loc, "read"):
            columns = journal.log_columns()
            if journal.is_journal(ds.schema):  # its rows hold their metrics: no other read
                columns = [*columns, "metric_names", "metric_values"]
            committed = committed_logs(logs_loc, ds, columns, upto=pinned.upto)
        summary = StepSummary.from_metrics(visible_metrics(committed))
        _remember(key, summary)
    return summary


def _unchanged_since(logs_loc: Location, ds: Any, key: tuple[str, int, str]) -> bool:
    """Whether `ds` (the logs at a later version) has the rows of the version `key` names, and that
    version is the one the key was made from (not the same number of a run since recreated)."""
    try:
        then = datasets.arrow_dataset(logs_loc, version=key[1])
    except VersionNotFoundError:  # cleaned up since: rebuild from the latest
        return False
    return then is not None and _key(logs_loc.uri, then[0]) == key and transactions.same_rows_since(ds, key[1])


# logs uri -> (the key of the summary the notes extend, [(version, commit time or None, step,
# values)] of this process's logs committed right after it, in version order)
_NOTES: dict[str, tuple[tuple[str, int, str], list[tuple[int, Any, int, dict[str, float]]]]] = {}
_MAX_NOTES = 256  # notes kept per run before they are folded on the log path (memory bound)


def note_log(run_location: Location, logs_version: int | None, step: int, values: Mapping[str, float]) -> None:
    """Tell the cache this process committed `logs_version` of the run at `run_location`, adding the
    metric `values` at `step`: when the summary of the version before it is kept (or that version
    was noted too), the log is noted, and the next `load` extends the summary by every noted log
    at once (`_fold_notes`: one copy of the summary, not one a log, which grew with the run).
    Any other history (a version in between, a retry that stored nothing) leaves the cache alone."""
    if logs_version is None:
        return
    _note(run_location.child("logs.lance"), logs_version, [(step, values)])


def note_group_commit(logs_loc: Location, version: int, rows: list[tuple[Any, int]]) -> None:
    """`note_log` of a group commit (`artstore.log.group_commit.on_commit`, in the committer
    thread): the logs `rows` ([(record, its row address)]) all made `version`; a row whose record
    is None lost to an earlier copy of its log_id and adds no value."""
    _note(logs_loc, version, [(0, {}) if record is None else (record.step, record.metrics)
                              for record, _ in sorted(rows, key=lambda r: r[1])])


def _note(logs_loc: Location, logs_version: int, logs: list[tuple[int, Mapping[str, float]]]) -> None:
    """Note the logs ([(step, metric values)], commit order) that made `logs_version`, together:
    a summary is kept for a version with all its logs or none."""
    when = writes.committed_at(logs_loc, logs_version)
    notes = [(logs_version, when, step, dict(values)) for step, values in logs]
    with _LOCK:
        pending = _NOTES.get(logs_loc.uri)
        if pending is not None and pending[1][-1][0] == logs_version - 1:
            pending[1].extend(notes)
            if len(pending[1]) <= _MAX_NOTES:
                return
    if pending is not None:  # full, or a version between (a compaction, say): extend up to the last noted
        _fold_notes(logs_loc)
        if pending[1][-1] is notes[-1]:
            return
    with _LOCK:
        newest = _NEWEST.get(logs_loc.uri)
        if newest is not None and newest[1] == logs_version - 1 and newest in _CACHE and logs_loc.uri not in _NOTES:
            _NOTES[logs_loc.uri] = (newest, notes)


def _fold_notes(logs_loc: Location) -> None:
    """Extend the kept summary the notes of `logs_loc` (`note_log`) start from by all of them, and
    keep it as the summary of the last one's version."""
    with _LOCK:
        pending = _NOTES.pop(logs_loc.uri, None)
        base = None if pending is None else _CACHE.get(pending[0])
    if base is None:
        return
    version, when = pending[1][-1][:2]
    if when is not None:
        key = (logs_loc.uri, version, str(when))
    else:
        try:
            found = datasets.arrow_dataset(logs_loc, version=version)
        except VersionNotFoundError:  # a cleanup beside us removed it (a short window): the load rebuilds
            return
        if found is None:
            return
        key = _key(logs_loc.uri, found[0])
    _remember(key, base.extended([(step, values) for _, _, step, values in pending[1]]))


group_commit.on_commit(note_group_commit)
