"""What one SQL query reads of one run: its `RunSnapshot`, and the columns the views show of a table.

The datasets behind the SQL views (`artstore.read.view_datasets`) read through a `Query`
(`artstore.read.query`), which holds, for one `Store.sql` call, a `RunSnapshot` per run it touches:
- the run's `logs` table is pinned first (at `as_of`, or latest), and every other table is opened
  after the pin, so it holds every row the pinned logs name (data rows commit before their logs row);
- rows of the log-written tables pass only when their `write_id` is one the pinned logs name
  (the visibility semi-join, an Arrow `is_in` in the scan), unless row counts prove every row
  visible: then no `write_id` is read (see `artstore.log.visibility`). The counts come from the
  pinned logs, or, when a query reads a run at its latest and the store's registry holds the
  commit-check counts of exactly the pinned logs version (`registry.COMMIT_CHECK`), from the
  registry: then the run's logs are not read at all (at 500 small runs, ~1/3 of a fresh query);
- the versions opened are recorded, so the result can say what it read (also those read through
  the store's pool of small runs: `artstore.read.pool_scan`, `Query.pool_stamp`).
No DuckDB here: this is Arrow and the storage layer.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from artstore.errors import VersionNotFoundError
from artstore.log import journal
from artstore.log.visibility import GATE_COLUMNS, GATED, all_visible, check_present, committed_logs
from artstore.read.as_of import as_of_args as _as_of_args
from artstore.schema import arrow_schema
from artstore.storage import datasets, keys, tags, version_map

if TYPE_CHECKING:  # the facade calls this service, never the other way
    from artstore.read.run import Run

# (logs uri, version, time) -> the committed logs rows (GATE_COLUMNS)
_COMMITTED: OrderedDict[tuple[str, int, str], pa.Table] = OrderedDict()
_COMMITTED_MAX = 4096
_COMMITTED_LOCK = threading.Lock()
# (logs uri, version, time, table, FOLDED) -> a journal run's unfolded rows of the table (decoded
# from the payloads: 2-10 ms per run, the most of a cross-run query over small runs)
_TAILS: OrderedDict[tuple[str, int, str, str, int], pa.Table] = OrderedDict()
TAILS_MAX_BYTES = 256 << 20
_TAILS_BYTES = 0
_TAILS_LOCK = threading.Lock()
# a gated table -> the registry's count of the rows the committed logs wrote to it
_REGISTERED_ROWS = {"trajectories": "trajectories", "groups": "groups", "metrics": "metric_values"}


class RunSnapshot:
    """One run as one query reads it: the `logs` table pinned at first use, every other table opened
    after the pin (so it holds every row the pinned logs name), each opened at most once."""

    def __init__(self, run: Run, as_of: Any, registered: Callable[[], dict[str, Any] | None] = lambda: None,
                 logs_version: int | None = None):
        self.run = run
        self.as_of = as_of
        self._pin = logs_version  # at latest, but the logs pinned at this version (the pool's: `pool_scan`)
        self._registered = registered  # the run's commit-check counts in the store's registry, if any
        self._proven: dict[str, bool] = {}
        self.read: dict[str, int] = {}
        self._opened: dict[str, pads.Dataset | None] = {}
        self._latest: set[str] = set()  # tables opened at their latest version
        self._committed: pa.Table | None = None
        self._upto: int | None = None  # the pinned logs version read from a later one (`version_map`)
        self._logs_time: datetime | None = None  # when the pinned logs version was committed
        self._gates: dict[str, pa.Array | None] = {}
        self._lock = threading.RLock()

    def dataset(self, table: str) -> pads.Dataset | None:
        with self._lock:
            if table not in self._opened:
                pinned = self.dataset("logs") if table != "logs" else None
                self._opened[table] = self._open(table, pinned is not None)
            return self._opened[table]

    def _logs_key(self) -> tuple[str, int, str]:
        return self.run.table_location("logs").uri, self.read["logs"], str(self._logs_time)

    def proven_by_registry(self, table: str) -> bool:
        """Whether the store's registry proves, without reading the run's logs, that gated `table`
        holds exactly the rows the pinned logs wrote, all of them folded (no journal rows left):
        read at its latest; the registry's counts are of the same logs version (number and commit
        time); the table, opened after the pin, holds that many rows; a journal run's table is
        folded up to exactly the last committed log. Any doubt (no counts, a stale or newer
        entry, extra rows of a crashed writer or a lost retry race) is False: the logs are read."""
        with self._lock:
            if table not in self._proven:
                self._proven[table] = self._check_registry(table)
            return self._proven[table]

    def _check_registry(self, table: str) -> bool:
        if table not in GATED or self.as_of is not None or self._committed is not None:
            return False
        logs, ds = self.dataset("logs"), self.dataset(table)
        if logs is None or ds is None or not {"logs", table} <= self._latest:
            return False
        with _COMMITTED_LOCK:
            if self._logs_key() in _COMMITTED:
                return False  # kept from an earlier query: the usual gate reads nothing either
        entry = self._registered()
        if entry is None or entry["logs_version"] != self.read["logs"] or entry["logs_committed_at"] != self._logs_time:
            return False
        rows = entry[_REGISTERED_ROWS[table]]
        if rows is None or ds.count_rows() != rows:
            return False
        if journal.is_journal(logs.schema):
            return entry["last_seq"] is not None and journal.folded_seq(ds) == entry["last_seq"]
        return True

    def committed(self) -> pa.Table:
        """The pinned logs' rows (`visibility.GATE_COLUMNS`; the first committed row of each
        log_id, as `Run.logs`): which rows of the data tables, and of the logs table itself, this
        query may see. Kept between queries per logs version (a version never changes)."""
        with self._lock:
            if self._committed is None:
                logs = self.dataset("logs")
                if logs is None:
                    self._committed = arrow_schema("logs").empty_table().select(GATE_COLUMNS)
                else:
                    key = self._logs_key()
                    with _COMMITTED_LOCK:
                        found = _COMMITTED.get(key)
                    if found is None:
                        found = committed_logs(self.run.table_location("logs"), logs,
                                               GATE_COLUMNS, upto=self._upto).combine_chunks()
                        with _COMMITTED_LOCK:
                            _COMMITTED[key] = found
                            while len(_COMMITTED) > _COMMITTED_MAX:
                                _COMMITTED.popitem(last=False)
                    self._committed = found
            return self._committed

    def check_missing(self, table: str) -> None:
        """StorageError when gated `table` is missing although the pinned logs name rows of it
        (a damaged store, not an empty table); only where it would be read at its latest."""
        if table in GATED and not isinstance(self.as_of, Mapping):
            check_present(self.run.table_location(table), table, self.committed(), None)

    def gate(self, table: str) -> pa.Array | None:
        """The write_ids a scan of gated `table` must match its rows against, or None when every
        row is visible: the table was opened at its latest version after the logs pin and holds
        exactly as many rows as the pinned logs wrote to it (`visibility.all_visible`)."""
        with self._lock:
            if table not in self._gates and self.proven_by_registry(table):
                self._gates[table] = None
            if table not in self._gates:
                committed = self.committed()
                ds = self.dataset(table)
                if journal.marked(committed) and table in GATED:
                    self._gates[table] = self._journal_gate(table, committed, ds)
                    return self._gates[table]
                rows = ds.count_rows() if ds is not None and table in self._latest else None
                if rows is not None:
                    check_present(self.run.table_location(table), table, committed, rows)
                if rows is not None and all_visible(table, committed, rows):
                    self._gates[table] = None
                else:
                    self._gates[table] = committed.column("write_id").combine_chunks()
            return self._gates[table]

    def _journal_gate(self, table: str, committed: pa.Table, ds: pads.Dataset | None) -> pa.Array | None:
        """A journal run: the logs up to the table's FOLDED are read from the table (all its rows
        when it holds exactly theirs), the others from their journal payloads (`tail`)."""
        upto = journal.folded_seq(ds)
        folded = committed.filter(pc.less_equal(committed[keys.SEQ], upto))
        expected = pc.sum(folded[journal.ROW_COUNTS[table]]).as_py() or 0
        last = pc.max(committed[keys.SEQ]).as_py() if committed.num_rows else -1
        if ds is not None and upto <= last and ds.count_rows() == expected:
            return None
        return folded.column("write_id").combine_chunks()

    def tail(self, table: str) -> pa.Table | None:
        """A journal run's rows of gated `table` not folded into it yet (all columns; None when
        there are none or the run is not a journal), read from the journal's payloads."""
        with self._lock:
            key = f"tail:{table}"
            if key not in self._gates and self.proven_by_registry(table):
                self._gates[key] = None
            if key not in self._gates:
                committed = self.committed()
                found = None
                if journal.marked(committed) and table in GATED:
                    upto = journal.folded_seq(self.dataset(table))
                    rest = committed.filter(pc.greater(committed[keys.SEQ], upto))
                    if rest.num_rows:
                        found = self._unfolded(table, rest, upto)
                self._gates[key] = found
            return self._gates[key]

    def _unfolded(self, table: str, rest: pa.Table, upto: int) -> pa.Table:
        """The rows of gated `table` that the `rest` logs (those after FOLDED `upto`) wrote, from
        their journal payloads; kept between queries per logs version (its rows never change)."""
        logs_loc = self.run.table_location("logs")
        key = (logs_loc.uri, self.read["logs"], str(datasets.version_time(self.dataset("logs"))), table, upto)
        with _TAILS_LOCK:
            found = _TAILS.get(key)
            if found is not None:
                _TAILS.move_to_end(key)
                return found
        rows = journal.read_payloads(logs_loc, rest["write_id"].to_pylist(), columns=journal.payload_columns(table),
                                     dataset=self.dataset("logs"))  # the pinned version: it holds them
        found = journal.payload_rows(table, rows)
        dropped = journal.payloads_dropped(table, rows)
        if dropped:  # folded since this query pinned the table: read them from it
            folded = journal.rows_of(self.run.table_location(table), table, dropped)
            found = pa.concat_tables([found, folded.select(found.column_names)])
        with _TAILS_LOCK:
            global _TAILS_BYTES
            if key not in _TAILS and found.nbytes <= TAILS_MAX_BYTES:
                _TAILS[key] = found
                _TAILS_BYTES += found.nbytes
                while _TAILS_BYTES > TAILS_MAX_BYTES:
                    _TAILS_BYTES -= _TAILS.popitem(last=False)[1].nbytes
        return found

    def _open(self, table: str, has_logs: bool) -> pads.Dataset | None:
        spec = self.as_of
        version, asof = None, None
        if isinstance(spec, Mapping):
            version = spec.get(table)
        elif spec is not None:
            if table == "logs":
                version, asof = _as_of_args(spec)
            elif table not in GATED:  # not part of a log call: as the store was at that logs version
                if not has_logs:
                    return None  # the run did not exist yet at that time
                asof = spec if isinstance(spec, datetime) else self._logs_time
        if table == "logs":
            return self._open_logs(self._pin if self._pin is not None else version, asof)
        try:
            found = datasets.arrow_dataset(self.run.table_location(table), version=version, asof=asof)
        except VersionNotFoundError:
            if version is not None and table in GATED and self._journal():
                # a journal run's data tables are read at their latest, gated by the pinned logs:
                # a version gone after the reader window gives the same visible rows
                found = datasets.arrow_dataset(self.run.table_location(table))
            elif asof is None:
                raise
            else:
                return None  # the table had no version yet at that time
        if found is None:
            return None
        self.read[table] = found[1]
        if version is None and asof is None:
            self._latest.add(table)
        return found[0]

    def _open_logs(self, version: int | str | None, asof: datetime | None) -> pads.Dataset | None:
        """The logs at `version` (a number or tag) / `asof` (latest when both are None); a version
        cleaned up after the reader window is read through the run's version map (`version_map`),
        a tag at the point it names (`tags`)."""
        loc = self.run.table_location("logs")
        if asof is not None:  # the newest version then, Lance's or the map's
            try:
                version = version_map.version_at(loc, asof)
            except VersionNotFoundError:
                return None  # the run had no version yet at that time
            if version is None:
                return None
        if not isinstance(version, str):  # a tag: the point it names, below
            try:
                found = datasets.arrow_dataset(loc, version=version)
            except VersionNotFoundError:
                if version is None:
                    raise
            else:
                if found is None:
                    return None
                self.read["logs"], self._logs_time = found[1], datasets.version_time(found[0])
                if version is None:
                    self._latest.add("logs")
                return found[0]
        pinned = tags.open_version(loc, version, session=datasets.read_session())
        if pinned is None:
            return None
        self.read["logs"], self._upto, self._logs_time = pinned.version, pinned.upto, pinned.committed_at
        return pinned.dataset

    def _journal(self) -> bool:
        logs = self.dataset("logs")
        return logs is not None and journal.is_journal(logs.schema)


def view_schema(table: str) -> pa.Schema:
    """The columns a run's table shows in the views: all but the internal write_id and commit_seq."""
    schema = arrow_schema(table)
    for internal in ("write_id", keys.SEQ, *journal.PAYLOAD_COLUMNS):
        if internal in schema.names:
            schema = schema.remove(schema.get_field_index(internal))
    return schema
