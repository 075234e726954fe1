"""The versions page: the versions of a run (commits of its `logs` table), newest first, a page
at a time, with their time, tags, and what the run held at each (log calls, latest step, the
last log), so a person can pick one to view the run as of.

What a version held is read exactly (`Run.logs(as_of=version)`), one read per version shown,
several at once (Lance releases the GIL): pages are small (PAGE versions), and a run's tags are
listed whole.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fastapi import APIRouter, Request

from artstore import Run, Store, VersionNotFoundError
from artstore.ui import jsonable, lookup

PAGE = 20


def _held(run: Run, version: int) -> dict[str, Any]:
    try:
        logs = run.logs(as_of=version)
    except VersionNotFoundError:  # cleaned up by retention
        return {"logs": None, "latest_step": None, "last_log": None}
    if logs.num_rows == 0:
        return {"logs": 0, "latest_step": None, "last_log": None}
    last = logs.slice(logs.num_rows - 1).to_pylist()[0]
    return {"logs": logs.num_rows, "latest_step": max(logs["step"].to_pylist()),
            "last_log": f"{last['split']} step {last['step']} ({last['num_trajectories']} trajectories)"}


def page(store: Store, ref: str, offset: int = 0, limit: int = PAGE) -> dict[str, Any]:
    """{versions: `limit` versions from the `offset`-th newest, total, tags: {name: version}}."""
    run = lookup.run_of(store, ref)
    versions = run.versions()[::-1]
    shown = versions[offset: offset + limit]
    with ThreadPoolExecutor(max_workers=4) as pool:
        held = list(pool.map(lambda v: _held(run, v["version"]), shown))
    out = [{"version": v["version"], "timestamp": jsonable.value(v["timestamp"]), "tags": v.get("tags") or [], **h}
           for v, h in zip(shown, held, strict=True)]
    return {"run": ref, "total": len(versions), "offset": offset, "versions": out, "tags": run.tags()}


router = APIRouter()


@router.get("/api/versions")
def get_versions(request: Request, run: str, offset: int = 0, limit: int = PAGE) -> dict[str, Any]:
    return page(request.app.state.store, run, offset, min(max(limit, 1), 200))
