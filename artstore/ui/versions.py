"""The versions page: the versions of a run (commits of its `logs` table), newest first, a page
at a time, with their time and tags; and, per version, what the run held then (log calls,
latest step, the last log), so a person can pick one to view the run as of.

The list is one manifest listing. What a version held is read exactly (`Run.logs(as_of=version)`,
~10-20 ms each on a 1,000-step run), so it has its own call (`held`, several versions at once),
which the page makes for the rows it shows after showing them.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from artstore import Store, ValidationError, VersionNotFoundError
from artstore.ui import jsonable, lookup

PAGE = 20


def held(store: Store, ref: str, version: int) -> dict[str, Any]:
    """{version, logs, latest_step, last_log}: the committed log calls of the run at `version`
    (nulls when retention has cleaned that version up)."""
    run = lookup.run_of(store, ref)
    try:
        logs = run.logs(as_of=version)
    except VersionNotFoundError:
        return {"version": version, "logs": None, "latest_step": None, "last_log": None}
    if logs.num_rows == 0:
        return {"version": version, "logs": 0, "latest_step": None, "last_log": None}
    last = logs.slice(logs.num_rows - 1).to_pylist()[0]
    return {"version": version, "logs": logs.num_rows, "latest_step": max(logs["step"].to_pylist()),
            "last_log": f"{last['split']} step {last['step']} ({last['num_trajectories']} trajectories)"}


def page(store: Store, ref: str, offset: int = 0, limit: int = PAGE) -> dict[str, Any]:
    """{versions: `limit` versions from the `offset`-th newest, total, tags: {name: version},
    config: the run's stored configuration ({"model": ..., "train": ...})}."""
    run = lookup.run_of(store, ref)
    versions = run.versions()[::-1]
    out = [{"version": v["version"], "timestamp": jsonable.value(v["timestamp"]), "tags": v.get("tags") or []}
           for v in versions[offset: offset + limit]]
    return {"run": ref, "total": len(versions), "offset": offset, "versions": out, "tags": run.tags(),
            "config": jsonable.value(run.config())}


router = APIRouter()


@router.get("/api/versions")
def get_versions(request: Request, run: str, offset: int = 0, limit: int = PAGE) -> JSONResponse:
    return jsonable.reply(page(request.app.state.store, run, max(offset, 0), min(max(limit, 1), 200)))


@router.get("/api/versions/held")
def get_held(request: Request, run: str, versions: str) -> JSONResponse:
    """`versions`: comma-separated version numbers (a page's worth), read 4 at a time."""
    try:
        wanted = [int(v) for v in versions.split(",") if v.strip()][:200]
    except ValueError:
        raise ValidationError("versions", f"{versions!r}: give version numbers, comma-separated") from None
    with ThreadPoolExecutor(max_workers=4) as pool:  # Lance releases the GIL while it reads
        return jsonable.reply(list(pool.map(lambda v: held(request.app.state.store, run, v), wanted)))
