"""SQL over the runs of a store, through DuckDB: read-only, time-travelling, pushed down into Lance.

    store.sql("SELECT model, step, avg(reward) FROM trajectories WHERE split = ? GROUP BY ALL", ["val"])

Views, each with `project` and `model` first (see VIEWS for their columns): `runs`, `logs`,
`trajectories`, `groups`, `messages`, `metrics`, `history`, `checkpoints`, and `tokens` when a run
has a tokens table.

How a query reads the store:
- Each view is one Arrow dataset registered with DuckDB under the view's name
  (`artstore.read.view_datasets`), spanning every run of the store (or of `projects`): no query shape can
  make a view cover too few runs, and there are no per-run tables to reach. A scan keeps only the
  runs whose `project` and `model` can satisfy DuckDB's pushed-down filter (decided by pyarrow's
  partition pruning), so a pruned run's tables are never opened. The runs are listed once per
  query, when a view is first scanned.
- Column projections and simple predicates (`=`, `<`, `IN`, `BETWEEN`, `AND`) go into Lance's scan
  when the filter does not name `project` or `model`; otherwise the filter is applied in Arrow.
- Visibility: rows of `trajectories`, `groups` and `metrics` count only when their `write_id` is in
  the run's `logs` table, so each log() call is seen whole or not at all. That semi-join runs in
  each run's scan (an Arrow `is_in` against the logs' write_ids). A run's `logs` table is
  pinned first, and its other tables are opened after the pin, so they hold every row it names.
- `history` (one column per metric name) and `tokens` (each run's columns) depend on the data:
  a query that finds other columns than registered registers them and runs again.
- Small runs read at their latest come from the store's pool of small runs' rows when their copy
  is of their current logs version (`artstore.read.pool_scan`): one scan for all of them, the same
  rows their own tables give.
- Every reader a scan opens is closed when the query ends, also when DuckDB stopped early.
- Time travel: `as_of` is a version, tag or datetime of every run's `logs` table, or a mapping
  {"project/model": as_of} per run (runs not named are read at their latest). `checkpoints` and
  `tokens` (not part of a log call) are read as they were when that `logs` version was committed.
  The result's schema metadata holds, under `artstore.versions`, the versions each run's tables were
  read at, as JSON {"project/model": {table: version}}; that mapping is itself an `as_of`, so
  `store.sql(q, as_of=versions_read(result))` reads the same versions again.
- A read that finds files of its snapshot removed (another process compacted and cleaned up with a
  short reader window while it read) runs once more on a fresh snapshot; a second such failure
  raises SnapshotRemovedError (`READ_ATTEMPTS`).
- Read-only: one SELECT (or EXPLAIN of one) per call, checked with DuckDB's own parser; the connection
  has external access off (no files, URLs, COPY, ATTACH, extension loading), no scans of Python
  variables, and its configuration locked. Parameters are bound, never formatted into SQL.
"""

from __future__ import annotations

import json
import re
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow as pa
import tenacity

from artstore.errors import (
    SnapshotRemovedError,
    SqlError,
    StorageError,
    ValidationError,
    VersionNotFoundError,
)
from artstore.names import check_segment
from artstore.read import computed_views
from artstore.read import view_datasets as views
from artstore.read.as_of import check_as_of
from artstore.read.query import Query
from artstore.read.scan import GATED, view_schema
from artstore.read.views import VIEWS  # noqa: F401  (re-exported: the views and their docs)
from artstore.storage.failures import vanished

if TYPE_CHECKING:  # the facade calls this service, never the other way
    from artstore.read.store import Store

VERSIONS_KEY = b"artstore.versions"
READ_ATTEMPTS = 2  # a query whose snapshot's files a concurrent cleanup removed runs once more, afresh
STATIC = ("logs", *GATED, "checkpoints", "configs")  # tables with a schema file, registered for every run
_CONFIG = {
    "enable_external_access": False,  # no files or URLs: read_csv, glob, COPY, ATTACH, httpfs all fail
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "allow_community_extensions": False,
    "python_enable_replacements": False,  # a query cannot scan the caller's Python variables
}

# Over the trajectories view: its message_* columns are parallel lists (entry i is message i), so
# DuckDB asks the scan for, and Lance decodes, only the message fields a query uses.
_MESSAGES = """
SELECT project, model, log_id, split, step, group_id, trajectory_id, reward, i AS message_index,
       message_role[i + 1] AS role, message_content[i + 1] AS content,
       message_content_parts[i + 1] AS content_parts, message_name[i + 1] AS name,
       message_tool_calls[i + 1] AS tool_calls,
       list_transform(message_tool_calls[i + 1], lambda c: c.name) AS tool_names,
       CASE WHEN message_tool_call_id[i + 1] IS NOT NULL THEN
         list_filter(flatten(message_tool_calls), lambda c: c.id = message_tool_call_id[i + 1])[1].name
       END AS tool_name,
       message_tool_call_id[i + 1] AS tool_call_id, message_refusal[i + 1] AS refusal,
       message_trainable[i + 1] AS trainable, message_finish_reason[i + 1] AS finish_reason,
       message_logprobs[i + 1] AS logprobs, recorded_at
FROM (SELECT *, unnest(range(len(message_role))) AS i FROM trajectories)
"""

_RUNS = """
SELECT project, model, {base} || project || {middle} || model AS uri, count(*) AS logs, max(step) AS latest_step,
       sum(num_trajectories)::BIGINT AS trajectories, sum(num_groups)::BIGINT AS groups,
       sum(num_exceptions)::BIGINT AS exceptions, sum(num_metrics)::BIGINT AS metric_values,
       min(recorded_at) AS first_logged_at, max(recorded_at) AS last_logged_at
FROM logs
GROUP BY project, model
"""


def versions_read(result: pa.Table) -> dict[str, dict[str, int]]:
    """The versions a `Store.sql` result was read at: {"project/model": {table: version}}."""
    raw = (result.schema.metadata or {}).get(VERSIONS_KEY)
    return {} if raw is None else json.loads(raw)


# -- checking a statement ----------------------------------------------------------------------
_EXPLAIN = re.compile(r"\s*EXPLAIN(\s+ANALY[SZ]E)?\b", re.IGNORECASE)


def check_read_only(query: str, con: duckdb.DuckDBPyConnection | None = None) -> None:
    """Raise SqlError unless `query` is exactly one SELECT (or EXPLAIN of one), by DuckDB's parser
    (`con`'s, when given: a process's first use of DuckDB's default connection costs ~15 ms)."""
    if not isinstance(query, str) or not query.strip():
        raise SqlError("the query is empty: give one SELECT statement")
    try:
        statements = (con or duckdb).extract_statements(query)
    except duckdb.Error as e:
        raise SqlError(_one_line(e)) from None
    if len(statements) != 1:
        raise SqlError(f"one statement per call, got {len(statements)}")
    kind = statements[0].type
    if kind == duckdb.StatementType.EXPLAIN:
        check_read_only(_EXPLAIN.sub("", query, count=1), con)
    elif kind != duckdb.StatementType.SELECT:
        name = kind.name if kind != duckdb.StatementType.MULTI else "PIVOT (give its values: PIVOT ... ON x IN (...))"
        raise SqlError(f"the store is read-only through SQL: {name} statements are refused; write a SELECT")


def named_parameters(query: str) -> set[str]:
    """The `$name` parameters `query` binds, by DuckDB's parser (empty for `?` placeholders)."""
    try:
        statements = duckdb.extract_statements(query)
    except duckdb.Error as e:
        raise SqlError(_one_line(e)) from None
    return {n for s in statements for n in s.named_parameters if not n.isdigit()}


def _one_line(e: BaseException) -> str:
    head = str(e).split("\n\n", 1)[0]
    return " ".join(line.strip() for line in head.splitlines() if line.strip())


_INTERNAL = re.compile(r"\b_(?:r[0-9]+|empty)_([a-z]+)\b")
_MISSING = re.compile(r'Table with name (\S+) does not exist!.*', re.DOTALL)


def public_message(message: str) -> str:
    """DuckDB's error as a user can act on it: internal table names (`_r3_metrics`,
    `_empty_trajectories`) shown as the view they belong to, and a mistyped view name answered
    with the closest view, not with DuckDB's guess among internal names."""
    missing = _MISSING.search(message)
    if missing:
        import difflib

        name = missing.group(1).strip('"')
        close = [] if _INTERNAL.fullmatch(name) else difflib.get_close_matches(name.lower(), list(VIEWS), n=2,
                                                                               cutoff=0.5)
        hint = f" Did you mean {' or '.join(close)}?" if close else ""
        return _INTERNAL.sub(lambda m: m.group(1), message[: missing.start()]) + \
            f"no view named {name}.{hint} Views: {', '.join(VIEWS)}."
    return _INTERNAL.sub(lambda m: m.group(1), message)


def _params(params: Any) -> list[Any] | dict[str, Any] | None:
    if params is None:
        return None
    if isinstance(params, Mapping):
        return dict(params)
    if isinstance(params, (list, tuple)):
        return list(params)
    raise ValidationError("params", f"give a list (for ?) or a dict (for $name), got {type(params).__name__}")


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _ident(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


# -- the views, per store ----------------------------------------------------------------------
class _Catalog:
    """A DuckDB connection holding the views over a store's runs, kept between queries. Each view
    is one Arrow dataset registered under the view's name (`artstore.read.view_datasets`): it spans every
    run of the query that scans it, so no query shape can make it cover too few runs, and there is
    no per-run name to reach. `messages` and `runs` are SQL views over those."""

    def __init__(self, store: Store) -> None:  # no reference to `store` kept: the cache is weak on it
        self.lock = threading.Lock()
        self.query: Query | None = None
        self.con = duckdb.connect(config=_CONFIG)
        self.con.execute("SET TimeZone = 'UTC'")  # timestamps come back in UTC, as they are stored
        self.con.execute("SET enable_progress_bar = false")  # a long query prints nothing but its result
        current = views.current_query(lambda: self.query)
        for name in STATIC:
            self.con.register(name, views.ViewDataset(name, view_schema(name), current))
        base = store.location.child("x").uri[:-1]  # the store's uri and its separator
        self.con.execute(f"CREATE TEMP VIEW messages AS {_MESSAGES}")
        self.con.execute("CREATE TEMP VIEW runs AS " + _RUNS.format(
            base=_lit(base), middle=_lit(store.location.child("x", "models", "y").uri[len(base) + 1:-1])))
        self._computed = {
            "history": (computed_views.history_columns, computed_views.history_rows),
            "tokens": (computed_views.tokens_columns, computed_views.tokens_rows),
        }
        self._current = current
        self.registered: dict[str, pa.Schema] = {}  # data-dependent views now registered: their columns
        self.register("history", computed_views.history_columns(_EmptyQuery()))
        self.con.execute("SET lock_configuration = true")  # no statement can undo any of this

    def register(self, view: str, schema: pa.Schema | None) -> None:
        """(Re)register a data-dependent view with `schema`; None: the view does not exist."""
        if schema is None:
            if view in self.registered:
                self.con.unregister(view)
                del self.registered[view]
            return
        columns, rows = self._computed[view]
        self.registered[view] = schema
        self.con.register(view, computed_views.ComputedDataset(view, schema, self._current, columns, rows))

    def rebind(self, q: Query) -> bool:
        """Register again each data-dependent view whose columns for `q` differ from those
        registered (a query naming a metric column that DuckDB could not bind: the views of a
        fresh Store have none yet); whether any did."""
        changed = False
        for view, schema in list(self.registered.items()):
            found = self._computed[view][0](q)
            if found is None or not found.equals(schema):
                self.register(view, found)
                changed = True
        return changed


class _EmptyQuery:
    """A query over no runs: the columns of the views before any query ran."""

    def keys(self) -> list[str]:
        return []

    def cached(self, key: tuple, compute: Callable[[], Any]) -> Any:
        return compute()


_catalogs: weakref.WeakKeyDictionary[Store, _Catalog] = weakref.WeakKeyDictionary()
_catalogs_lock = threading.Lock()


def _catalog(store: Store) -> _Catalog:
    with _catalogs_lock:
        if store not in _catalogs:
            _catalogs[store] = _Catalog(store)
        return _catalogs[store]


def query(store: Store, sql: str, params: Any = None, as_of: Any = None,
          projects: Sequence[str] | None = None, runs: Sequence[str] | None = None) -> pa.Table:
    """Run one read-only SELECT over the store's views; see the module doc. Returns a pyarrow.Table
    whose schema metadata holds the versions read (`versions_read`). `runs` ("project/model")
    limits the views to those runs."""
    catalog = _catalog(store)
    with catalog.lock:  # a DuckDB connection serves one thread at a time
        check_read_only(sql, catalog.con)
    bound = _params(params)
    if projects is not None:
        projects = [check_segment("project", p) for p in ([projects] if isinstance(projects, str) else projects)]
    spec = check_as_of(store, as_of, projects)

    def removed(e: BaseException) -> bool:  # a file of the snapshot gone mid-read (not a bucket that is not
        if isinstance(e, StorageError):  # there, nor a version a user named that is not)
            return vanished(e) and "bucket does not exist" not in str(e)
        return isinstance(e, VersionNotFoundError) and spec is None

    def once() -> tuple[pa.Table, Query]:
        with catalog.lock:
            catalog.query = q = Query(store, spec, projects, runs)  # a fresh snapshot each attempt
            try:
                return _run(catalog, q, sql, bound), q
            finally:
                catalog.query = None
                q.close()  # every reader a scan opened, also those DuckDB stopped reading early

    try:
        result, q = tenacity.Retrying(retry=tenacity.retry_if_exception(removed), reraise=True,
                                      stop=tenacity.stop_after_attempt(READ_ATTEMPTS))(once)
    except (StorageError, VersionNotFoundError) as e:
        if not removed(e):
            raise
        raise SnapshotRemovedError(
            f"the query was tried {READ_ATTEMPTS} times, each on a fresh snapshot, and each time files of the "
            f"versions it read were removed while it read: another process is compacting and cleaning up with a short window (reader_window / "
            f"retention). Run it again when that is done, or give that process a window longer than this query "
            f"takes (open_store(..., reader_window=...)). [{e}]") from None
    meta = {**(result.schema.metadata or {}), VERSIONS_KEY: json.dumps(q.versions()).encode()}
    return result.replace_schema_metadata(meta)


def _run(catalog: _Catalog, q: Query, sql: str, bound: Any) -> pa.Table:
    """Run `sql`; when a data-dependent view (history, tokens) turns out to have other columns
    than registered (found by a scan, or by DuckDB failing to bind a column), or `tokens` is
    missing and now exists, register them and run it again (the query's snapshots are kept, so
    the second run reads what the first did)."""
    for attempt in range(3):
        try:
            return catalog.con.sql(sql, params=bound).to_arrow_table()
        except duckdb.Error as e:
            error, q.error = q.error, None
            if isinstance(error, views.SchemaChanged) and attempt < 2:
                catalog.register(error.view, error.schema)
                continue
            if error is not None:
                raise error from None
            if isinstance(e, duckdb.CatalogException) and attempt < 2 and "tokens" not in catalog.registered:
                found = computed_views.tokens_columns(q)
                if found is not None:
                    catalog.register("tokens", found)
                    continue
            if isinstance(e, duckdb.BinderException) and attempt < 2 and catalog.rebind(q):
                continue
            raise SqlError(public_message(_one_line(e))) from None
    raise AssertionError("unreachable")


def query_tables(query: str, tables: Mapping[str, pa.Table]) -> pa.Table:
    """Run one read-only SELECT over in-memory Arrow `tables` (registered as views by name), e.g.
    a retention rule over a run's metrics. The connection reaches no file or network."""
    check_read_only(query)
    con = duckdb.connect(":memory:")
    try:
        for name, table in tables.items():
            con.register(name, table)
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
        return con.sql(query).to_arrow_table()
    except duckdb.Error as e:
        raise SqlError(f"query failed: {_one_line(e)}") from None
    finally:
        con.close()
