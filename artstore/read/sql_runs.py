"""Which runs a SQL query can read, from its syntax tree (DuckDB's `json_serialize_sql`).

Each view is a UNION ALL of one branch per run, and DuckDB binds every branch before its optimizer
drops the runs a filter rules out: with a hundred runs that binding costs more than a small query.
So before a query runs, its tree is read: when every reference to a view is the only table in the
FROM of a SELECT whose WHERE pins `project` and/or `model` (`=` or `IN` of constants or bound
parameters, as top-level AND terms), the views get branches for those runs only. Anything else
(OR, joins, the view inside a subquery without such a WHERE, a table function, a string naming a
view, a tree shape not known here) means every run. The analysis only ever leaves out runs the query's own filter excludes; DuckDB still
applies that filter.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from artstore.read.views import VIEWS

VIEW_NAMES = frozenset(VIEWS)
PINNED = ("project", "model")

# One reference to a view: the projects and models it can read (None: any).
Reach = tuple[frozenset[str] | None, frozenset[str] | None]


def reach(tree: Mapping[str, Any], params: list[Any] | dict[str, Any] | None) -> list[Reach] | None:
    """What each reference to a view in `tree` can read; None when one of them can read any run."""
    if tree.get("error") or len(tree.get("statements", [])) != 1:
        return None
    found: list[Reach] = []
    pinned_tables: set[int] = set()
    for node in _dicts(tree["statements"][0]):
        if node.get("type") == "TABLE_FUNCTION" or _names_a_view(node):
            return None  # query('...'), query_table('...'): a view read by a name in a string
        if node.get("type") == "SELECT_NODE":
            table = node.get("from_table") or {}
            if _is_view(table):
                found.append(_where_reach(node.get("where_clause"), table, params))
                pinned_tables.add(id(table))
        elif _is_view(node) and id(node) not in pinned_tables:
            # a view joined with something, or in a FROM this does not understand: may read any run
            # (SELECT nodes come before the tables inside them in the walk)
            found.append((None, None))
    if any(r == (None, None) for r in found):
        return None
    return found


def _dicts(value: Any) -> Iterator[dict[str, Any]]:
    """Every dict in a JSON value, parents before children."""
    if isinstance(value, dict):
        yield value
        for v in value.values():
            yield from _dicts(v)
    elif isinstance(value, list):
        for v in value:
            yield from _dicts(v)


def _names_a_view(node: Mapping[str, Any]) -> bool:
    literal = node.get("literal") if node.get("class") == "CONSTANT" else None
    if not isinstance(literal, dict) or literal.get("kind") != "STRING":
        return False
    return any(w.lower() in VIEW_NAMES for w in re.findall(r"[A-Za-z_]+", str(literal.get("text", ""))))


def _is_view(node: Mapping[str, Any]) -> bool:
    return (node.get("type") == "BASE_TABLE" and str(node.get("table_name", "")).lower() in VIEW_NAMES
            and str(node.get("schema_name") or "main").lower() in ("main", "temp")
            and not node.get("catalog_name"))


def _where_reach(where: Mapping[str, Any] | None, table: Mapping[str, Any], params: Any) -> Reach:
    # With an alias, only the alias names this table (the bare name would be an outer table's).
    names = {str(table.get("alias") or table.get("table_name", "")).lower()}
    pins: dict[str, frozenset[str]] = {}
    for term in _and_terms(where):
        pin = _pin(term, names, params)
        if pin is not None:
            column, values = pin
            pins[column] = pins[column] & values if column in pins else values
    return pins.get("project"), pins.get("model")


def _and_terms(where: Mapping[str, Any] | None) -> Iterator[Mapping[str, Any]]:
    if not where:
        return
    if where.get("class") == "CONJUNCTION" and where.get("type") == "CONJUNCTION_AND":
        for child in where.get("children", []):
            yield from _and_terms(child)
    else:
        yield where


def _pin(term: Mapping[str, Any], names: set[str], params: Any) -> tuple[str, frozenset[str]] | None:
    """(column, values) when `term` is `project|model = value` or `... IN (values)`, else None."""
    if term.get("class") == "COMPARISON" and term.get("type") == "COMPARE_EQUAL":
        left, right = term.get("left") or {}, term.get("right") or {}
        column, value = (_column(left, names), _value(right, params))
        if column is None:
            column, value = (_column(right, names), _value(left, params))
        return None if column is None or value is None else (column, frozenset([value]))
    if term.get("class") == "OPERATOR" and term.get("type") == "COMPARE_IN":
        children = term.get("children") or []
        column = _column(children[0], names) if children else None
        values = [_value(c, params) for c in children[1:]]
        if column is None or not values or any(v is None for v in values):
            return None
        return column, frozenset(v for v in values if v is not None)
    return None


def _column(node: Mapping[str, Any], names: set[str]) -> str | None:
    if node.get("class") != "COLUMN_REF":
        return None
    parts = [str(p).lower() for p in node.get("column_names", [])]
    if len(parts) == 1 or (len(parts) == 2 and parts[0] in names):
        return parts[-1] if parts[-1] in PINNED else None
    return None


def _value(node: Mapping[str, Any], params: Any) -> str | None:
    if node.get("class") == "CONSTANT":
        literal = node.get("literal") or {}
        return literal.get("text") if literal.get("kind") == "STRING" else None
    if node.get("class") == "PARAMETER":
        ident = str(node.get("identifier", ""))
        if isinstance(params, list) and ident.isdigit() and 1 <= int(ident) <= len(params):
            value = params[int(ident) - 1]
        elif isinstance(params, dict) and ident in params:
            value = params[ident]
        else:
            return None
        return value if isinstance(value, str) else None
    return None
