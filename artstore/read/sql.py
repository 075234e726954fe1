"""SQL over the runs of a store, through DuckDB: read-only, time-travelling, pushed down into Lance.

    store.sql("SELECT model, step, avg(reward) FROM trajectories WHERE split = ? GROUP BY ALL", ["val"])

Views, each with `project` and `model` first (see VIEWS for their columns): `runs`, `logs`,
`trajectories`, `groups`, `messages`, `metrics`, `history`, `checkpoints`, and `tokens` when a run
has a tokens table.

How a query reads the store:
- Each run's Lance tables are registered with DuckDB as Arrow datasets (`storage.tables.arrow_dataset`),
  so DuckDB pushes column projections and simple predicates (`=`, `<`, `IN`, `BETWEEN`, `AND`) into
  Lance's scan. A view is a UNION ALL of one branch per run whose `project` and `model` are
  constants: a query that names a run prunes every other branch, and a pruned run's tables are
  never opened (they are opened when DuckDB first scans them).
- Visibility: rows of `trajectories`, `groups` and `metrics` count only when their `write_id` is in
  the run's `logs` table, so each log() call is seen whole or not at all. That semi-join runs in
  each run's scan (an Arrow `is_in` against the logs' write_ids), not as a join in every branch of
  a view: binding a hundred joins cost more than answering a small query. A run's `logs` table is
  pinned first, and its other tables are opened after the pin, so they hold every row it names.
- The views, the registered datasets and the DuckDB connection are kept per Store between queries
  (rebuilt when the set of runs changes); tables are opened afresh by every query.
- Time travel: `as_of` is a version, tag or datetime of every run's `logs` table, or a mapping
  {"project/model": as_of} per run (runs not named are read at their latest). `checkpoints` and
  `tokens` (not part of a log call) are read as they were when that `logs` version was committed.
  The result's schema metadata holds, under `artstore.versions`, the versions each run's tables were
  read at, as JSON {"project/model": {table: version}}; that mapping is itself an `as_of`, so
  `store.sql(q, as_of=versions_read(result))` reads the same versions again.
- Read-only: one SELECT (or EXPLAIN of one) per call, checked with DuckDB's own parser; the connection
  has external access off (no files, URLs, COPY, ATTACH, extension loading), no scans of Python
  variables, and its configuration locked. Parameters are bound, never formatted into SQL.
"""

from __future__ import annotations

import functools
import json
import re
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.dataset as pads

from artstore.errors import InvalidNameError, RunNotFoundError, SqlError, ValidationError
from artstore.names import check_segment
from artstore.read import sql_runs
from artstore.read.run import Run
from artstore.read.scan import GATED, LazyDataset, Query, view_schema
from artstore.read.store import Store
from artstore.storage import tables

VERSIONS_KEY = b"artstore.versions"
STATIC = ("logs", *GATED, "checkpoints")  # tables with a schema file, registered for every run
_CONFIG = {
    "enable_external_access": False,  # no files or URLs: read_csv, glob, COPY, ATTACH, httpfs all fail
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "allow_community_extensions": False,
    "python_enable_replacements": False,  # a query cannot scan the caller's Python variables
}

VIEWS = {
    "runs": "one row per run: uri, logs, latest_step, trajectories, groups, exceptions, metric_values, "
            "first_logged_at, last_logged_at",
    "logs": "one row per committed log() call: log_id, split, step, num_groups, num_trajectories, "
            "num_exceptions, num_metrics, table_versions, recorded_at",
    "trajectories": "one row per trajectory (schemas/trajectories.json, without write_id)",
    "groups": "one row per trajectory group (schemas/groups.json, without write_id)",
    "messages": "one row per message: log_id, split, step, group_id, trajectory_id, reward, message_index, "
                "role, content, content_parts, name, tool_calls, tool_names (called), tool_name (answered), "
                "tool_call_id, refusal, trainable, finish_reason, logprobs, recorded_at",
    "metrics": "one row per metric value: log_id, step, split, name, value, recorded_at",
    "history": "one row per log call: step, recorded_at, then one DOUBLE column per metric name",
    "checkpoints": "one row per checkpoint (schemas/checkpoints.json)",
    "tokens": "one row per training sequence, when a run has a tokens table",
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

# Views in the order they must be built, and what each stands on.
_BUILD_ORDER = ("logs", "trajectories", "groups", "metrics", "checkpoints", "messages", "runs",
                "history", "tokens")
_NEEDS = {"messages": ("trajectories",), "runs": ("logs",), "history": ("logs", "metrics")}

_RUNS = """
SELECT r.project, r.model, r.uri, count(*) AS logs, max(l.step) AS latest_step,
       sum(l.num_trajectories)::BIGINT AS trajectories, sum(l.num_groups)::BIGINT AS groups,
       sum(l.num_exceptions)::BIGINT AS exceptions, sum(l.num_metrics)::BIGINT AS metric_values,
       min(l.recorded_at) AS first_logged_at, max(l.recorded_at) AS last_logged_at
FROM _runs r JOIN logs l ON l.project = r.project AND l.model = r.model
GROUP BY r.project, r.model, r.uri
"""


def versions_read(result: pa.Table) -> dict[str, dict[str, int]]:
    """The versions a `Store.sql` result was read at: {"project/model": {table: version}}."""
    raw = (result.schema.metadata or {}).get(VERSIONS_KEY)
    return {} if raw is None else json.loads(raw)


# -- checking a statement ----------------------------------------------------------------------
_EXPLAIN = re.compile(r"\s*EXPLAIN(\s+ANALY[SZ]E)?\b", re.IGNORECASE)


def check_read_only(query: str) -> None:
    """Raise SqlError unless `query` is exactly one SELECT (or EXPLAIN of one), by DuckDB's parser."""
    if not isinstance(query, str) or not query.strip():
        raise SqlError("the query is empty: give one SELECT statement")
    try:
        statements = duckdb.extract_statements(query)
    except duckdb.Error as e:
        raise SqlError(_one_line(e)) from None
    if len(statements) != 1:
        raise SqlError(f"one statement per call, got {len(statements)}")
    kind = statements[0].type
    if kind == duckdb.StatementType.EXPLAIN:
        check_read_only(_EXPLAIN.sub("", query, count=1))
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
    """A DuckDB connection holding the views over a store's runs, kept between queries: each run's
    tables are registered once (as lazy datasets), and a view is built when a query first names it
    and rebuilt when the set of runs changes."""

    def __init__(self) -> None:  # no reference to its Store: the cache below is weak on the Store
        self.lock = threading.Lock()
        self.query: Query | None = None
        self.con = duckdb.connect(config=_CONFIG)
        self.con.execute("SET TimeZone = 'UTC'")  # timestamps come back in UTC, as they are stored
        self.con.execute("SET lock_configuration = true")  # no statement can undo any of this
        self._ids: dict[str, int] = {}  # run -> its number in registered names
        self._registered: set[tuple[str, str]] = set()  # (run, table) registered with DuckDB
        self._keys: tuple[str, ...] | None = None  # the runs the views cover
        self._built: set[str] = set()  # views built for those runs
        self._tokens: dict[str, pa.Schema] = {}
        self._schemas = {t: view_schema(t) for t in STATIC}
        for name, schema in self._schemas.items():
            self.con.register(f"_empty_{name}", schema.empty_table())

    def _open(self, key: str, table: str) -> pads.Dataset | None:
        return self._in_query(lambda q: q.snapshot(key).dataset(table))

    def _gate(self, key: str, table: str) -> pa.Array | None:
        return self._in_query(lambda q: q.snapshot(key).gate(table))

    def _tail(self, key: str, table: str) -> pa.Table | None:
        return self._in_query(lambda q: q.snapshot(key).tail(table))

    def _in_query(self, fn: Callable[[Query], Any]) -> Any:
        query = self.query
        if query is None:
            raise SqlError("a view was scanned outside Store.sql")
        try:
            return fn(query)
        except BaseException as e:  # DuckDB reports it as its own error; Store.sql re-raises this one
            query.error = query.error or e
            raise

    def reach(self, query: str, params: Any) -> list[sql_runs.Reach] | None:
        """What `query` can read (see `sql_runs`), from DuckDB's syntax tree; None: every run."""
        try:
            tree = self.con.execute("SELECT json_serialize_sql(?)", [query]).fetchall()[0][0]
            return sql_runs.reach(json.loads(tree), params)
        except (duckdb.Error, ValueError, TypeError):
            return None

    def _register(self, key: str, name: str) -> None:
        # logs too: a log_id appended twice by racing attempts shows its first commit only
        gate = functools.partial(self._gate, key, name) if name in (*GATED, "logs") else None
        tail = functools.partial(self._tail, key, name) if name in GATED else None  # a journal's unfolded rows
        self.con.register(f"_r{self._ids[key]}_{name}", LazyDataset(
            self._schemas[name], functools.partial(self._open, key, name), gate, tail))

    def prepare(self, query: str, runs: list[Run]) -> None:
        """Make the views `query` names (and those they stand on) cover exactly `runs`.

        A view is built on first use and rebuilt when the runs change; each run's table is
        registered once. Views a query does not name cost nothing: with a hundred runs, building
        every view up front took seconds (a registration and a union branch per run and table).
        """
        keys = tuple(f"{r.project}/{r.name}" for r in runs)
        if keys != self._keys:
            self._keys, self._built = keys, set()
            for key in keys:
                self._ids.setdefault(key, len(self._ids))
            self.con.register("_runs", pa.table({
                "project": [r.project for r in runs], "model": [r.name for r in runs],
                "uri": [r.location.uri for r in runs]}, schema=pa.schema(
                    [("project", pa.string()), ("model", pa.string()), ("uri", pa.string())])))
        words = {w.lower() for w in re.findall(r"[A-Za-z_]+", query)}  # every name the query could mean
        for view in _BUILD_ORDER:
            if view in words or any(view in _NEEDS.get(w, ()) for w in words):
                if view == "history":
                    self._history()
                elif view == "tokens":
                    self._tokens_view(runs)
                elif view not in self._built:
                    self._build(view, keys)
                    self._built.add(view)

    def _build(self, view: str, keys: tuple[str, ...]) -> None:
        if view == "messages":
            return self._view("messages", _MESSAGES)
        if view == "runs":
            return self._view("runs", _RUNS)
        name = view.lstrip("_")
        schema = self._schemas[name]
        for key in keys:
            if (key, name) not in self._registered:
                self._register(key, name)
                self._registered.add((key, name))
        columns = ", ".join(_ident(c) for c in schema.names)
        branches = [f"SELECT {_lit(p)} AS project, {_lit(m)} AS model, {columns} FROM _r{self._ids[k]}_{name}"
                    for k in keys for p, m in [k.split("/")]]
        empty = f"SELECT NULL::VARCHAR AS project, NULL::VARCHAR AS model, {columns} FROM _empty_{name}"
        return self._view(view, "\nUNION ALL\n".join(branches or [empty]))

    def _view(self, name: str, body: str) -> None:
        self.con.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS {body}")

    def _history(self) -> None:
        names = [r[0] for r in self.con.execute("SELECT DISTINCT name FROM metrics ORDER BY name").fetchall()]
        pivot = "".join(f",\n  any_value(value) FILTER (WHERE name = {_lit(n)}) AS {_ident(n)}" for n in names)
        columns = "".join(f", m.{_ident(n)}" for n in names)
        self._view("history", f"""
SELECT l.project, l.model, l.step, l.recorded_at{columns}
FROM logs l LEFT JOIN (SELECT project, model, log_id{pivot} FROM metrics GROUP BY project, model, log_id) m
  ON m.project = l.project AND m.model = l.model AND m.log_id = l.log_id
ORDER BY l.project, l.model, l.recorded_at, l.step""")

    def _tokens_view(self, runs: list[Run]) -> None:
        branches = []
        for run in runs:
            key = f"{run.project}/{run.name}"
            found = tables.arrow_dataset(run.table_location("tokens"))
            if found is None:
                continue
            schema = found[0].schema
            if self._tokens.get(key) != schema:
                self.con.register(f"_r{self._ids[key]}_tokens",
                                  LazyDataset(schema, functools.partial(self._open, key, "tokens")))
                self._tokens[key] = schema
            branches.append(f"SELECT {_lit(run.project)} AS project, {_lit(run.name)} AS model, * "
                            f"FROM _r{self._ids[key]}_tokens")
        if branches:
            self._view("tokens", "\nUNION ALL BY NAME\n".join(branches))
        else:
            self.con.execute("DROP VIEW IF EXISTS tokens")


_catalogs: weakref.WeakKeyDictionary[Store, _Catalog] = weakref.WeakKeyDictionary()
_catalogs_lock = threading.Lock()


def _catalog(store: Store) -> _Catalog:
    with _catalogs_lock:
        if store not in _catalogs:
            _catalogs[store] = _Catalog()
        return _catalogs[store]


def _as_of(store: Store, as_of: Any, projects: list[str] | None) -> Any:
    """Check `as_of`: one spec for every run, or {"project/model": spec} naming runs that exist."""
    if not isinstance(as_of, Mapping):
        return as_of
    out = {}
    for key, spec in as_of.items():
        if not isinstance(key, str) or key.count("/") != 1:
            raise ValidationError("as_of", f"name runs as 'project/model', got {key!r}")
        project, model = key.split("/")
        if (projects is not None and project not in projects) or not store.run(project, model).exists():
            raise RunNotFoundError(f"as_of names {key!r}, which is not a run of this store (or of `projects`)")
        if isinstance(spec, Mapping):
            bad = [t for t, v in spec.items() if not isinstance(v, int) or isinstance(v, bool)]
            if bad:
                raise ValidationError(f"as_of[{key!r}]", f"table versions must be ints, got {bad}")
        out[key] = spec
    return out


def _runs_read(store: Store, reach: list[sql_runs.Reach] | None, projects: list[str] | None) -> list[Run]:
    """The runs the views need branches for: those the query's WHERE pins, else every run."""
    if reach is not None and all(p is not None and m is not None for p, m in reach):
        keys = {(p, m) for ps, ms in reach for p in ps or () for m in ms or ()
                if projects is None or p in projects}
        found = []
        for project, model in sorted(keys):
            try:
                run = store.run(project, model)
            except InvalidNameError:
                continue  # not a name a run can have
            if run.exists():
                found.append(run)
        return found
    runs = store.runs(projects)
    if reach is None:
        return runs
    return [r for r in runs if any((ps is None or r.project in ps) and (ms is None or r.name in ms) for ps, ms in reach)]


def query(store: Store, sql: str, params: Any = None, as_of: Any = None,
          projects: Sequence[str] | None = None) -> pa.Table:
    """Run one read-only SELECT over the store's views; see the module doc. Returns a pyarrow.Table
    whose schema metadata holds the versions read (`versions_read`)."""
    check_read_only(sql)
    bound = _params(params)
    if projects is not None:
        projects = [check_segment("project", p) for p in ([projects] if isinstance(projects, str) else projects)]
    spec = _as_of(store, as_of, projects)
    catalog = _catalog(store)
    with catalog.lock:
        runs = _runs_read(store, catalog.reach(sql, bound), projects)
        catalog.query = q = Query(store, spec)
        try:
            catalog.prepare(sql, runs)
            result = catalog.con.sql(sql, params=bound).to_arrow_table()
        except duckdb.Error as e:
            if q.error is not None:
                raise q.error from None
            raise SqlError(_one_line(e)) from None
        finally:
            catalog.query = None
    meta = {**(result.schema.metadata or {}), VERSIONS_KEY: json.dumps(q.versions()).encode()}
    return result.replace_schema_metadata(meta)


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
