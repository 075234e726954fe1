"""The checkpoints page: every checkpoint (status, size, times, why deleted), the best and the
latest, and the retention plan: what the run's stored policy (else ART's `delete_checkpoints`
rule on the chosen metric) would keep and delete now, and why. Planning deletes nothing.

As of a past version, the checkpoints are read through `Store.sql` (the table as it was when
that version was committed); the plan is always of the present.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from artstore import Policy, RetentionError, Store
from artstore.ui import jsonable, lookup

_COLUMNS = ["step", "status", "size_bytes", "created_at", "ready_at", "deleted_at", "deleted_reason", "uri", "linked"]


def page(store: Store, ref: str, metric: str = "val/reward", as_of_text: str | None = None) -> dict[str, Any]:
    """{checkpoints, latest, best, best_error, plan: {policy, source, decisions, ...} | None,
    plan_error}."""
    run = lookup.run_of(store, ref)
    at = lookup.as_of(as_of_text)
    if at is None:
        table = run.checkpoints().select(_COLUMNS)
    else:
        table = store.sql(f"SELECT {', '.join(_COLUMNS)} FROM checkpoints WHERE project = ? AND model = ? ORDER BY step",
                          [run.project, run.name], as_of={ref: at})
    rows = jsonable.rows(table)
    ready = [r["step"] for r in rows if r["status"] == "ready"]
    out: dict[str, Any] = {"run": ref, "as_of": as_of_text or None, "metric": metric, "checkpoints": rows,
                           "latest": max(ready) if ready else None, "best": None, "best_error": None,
                           "plan": None, "plan_error": None}
    try:
        out["best"] = run.best_step(metric, as_of=at)
    except RetentionError as e:
        out["best_error"] = str(e)
    if at is None:
        out["plan"], out["plan_error"] = _plan(run, metric)
    return out


def _plan(run: Any, metric: str) -> tuple[dict[str, Any] | None, str | None]:
    stored = run.retention_policy()
    policy = stored or Policy.art(metric)
    source = "the run's stored policy" if stored else f"ART's delete_checkpoints rule (latest + best {metric})"
    try:
        plan = run.retention_plan(policy)
    except RetentionError as e:
        return None, str(e)
    return {"source": source, "policy": jsonable.value(policy.model_dump(mode="json")),
            "blocked": plan.blocked, "warnings": plan.warnings, "keep": plan.keep, "delete": plan.delete,
            "decisions": [{"step": d.step, "action": d.action, "reason": d.reason, "status": d.status,
                           "size_bytes": d.size_bytes} for d in plan.decisions]}, None


router = APIRouter()


@router.get("/api/checkpoints")
def get_checkpoints(request: Request, run: str, metric: str = "val/reward", as_of: str | None = None) -> JSONResponse:
    return jsonable.reply(page(request.app.state.store, run, metric, as_of))
