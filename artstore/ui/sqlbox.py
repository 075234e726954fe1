"""The SQL box: one read-only SELECT over the views of `Store.sql` (runs, logs, trajectories,
groups, messages, metrics, history, checkpoints, tokens); the result as a table and a chart.

`Store.sql` refuses anything but a SELECT, and its DuckDB connection reaches no file or URL, so
the box cannot write to the store. At most MAX_ROWS rows come back (the total is reported).
Time travel: `as_of` maps runs ("project/model") to a version or tag; other runs are read at
their latest.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from artstore import Store
from artstore.ui import jsonable, lookup

MAX_ROWS = 5000


class SqlRequest(BaseModel):
    query: str
    as_of: dict[str, str] | None = None  # {"project/model": version or tag}


def run_query(store: Store, query: str, as_of: dict[str, str] | None = None) -> dict[str, Any]:
    """{columns: [{name, type, kind}], rows: [[...]], total, truncated}."""
    spec = {ref: lookup.as_of(text) for ref, text in (as_of or {}).items() if lookup.as_of(text) is not None}
    result = store.sql(query, as_of=spec or None)
    shown = result.slice(0, MAX_ROWS)
    # by position: a result may repeat a column name
    rows = [[jsonable.value(v) for v in row] for row in zip(*(c.to_pylist() for c in shown.columns), strict=True)]
    return {"columns": jsonable.columns(shown), "rows": rows, "total": result.num_rows,
            "truncated": result.num_rows > MAX_ROWS}


router = APIRouter()


@router.post("/api/sql")
def post_sql(request: Request, body: SqlRequest) -> JSONResponse:
    return jsonable.reply(run_query(request.app.state.store, body.query, body.as_of))
