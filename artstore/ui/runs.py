"""The runs page: one row per run (project, model, step, last val/train reward, config, size,
status), from `Store.sql` over the `runs`, `metrics` and `checkpoints` views.

Sizes list every file of a run (on S3 a LIST per run), so they come from their own call
(`sizes`), and the table shows before they are known.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from artstore import Store
from artstore.ui import jsonable

ACTIVE_WITHIN = timedelta(minutes=15)
"""A run that logged within this long is `active`; older ones are `idle`."""

# Display order: these first, then any other column of the `runs` view as it is (e.g. a run's
# configuration, once stored), then the counts at the end.
_FIRST = ["project", "model", "step", "val/reward", "train/reward"]
_LAST = ["trajectories", "exceptions", "logs", "groups", "metric_values", "last_logged_at"]
_HIDDEN = {"uri", "latest_step", "first_logged_at"}

_QUERY = """
SELECT r.*, r.latest_step AS step, m.val_reward AS "val/reward", m.train_reward AS "train/reward",
       coalesce(c.ready, 0) AS checkpoints_ready, coalesce(c.deleted, 0) AS checkpoints_deleted,
       coalesce(c.saving, 0) AS checkpoints_saving
FROM runs r
LEFT JOIN (
  SELECT project, model,
         arg_max(value, recorded_at) FILTER (WHERE name = 'val/reward') AS val_reward,
         arg_max(value, recorded_at) FILTER (WHERE name = 'train/reward') AS train_reward
  FROM metrics WHERE name IN ('val/reward', 'train/reward') GROUP BY project, model) m
  ON m.project = r.project AND m.model = r.model
LEFT JOIN (
  SELECT project, model, count(*) FILTER (WHERE status = 'ready') AS ready,
         count(*) FILTER (WHERE status = 'deleted') AS deleted,
         count(*) FILTER (WHERE status = 'saving') AS saving
  FROM checkpoints GROUP BY project, model) c
  ON c.project = r.project AND c.model = r.model
ORDER BY r.project, r.model
"""


def status(last_logged_at: datetime | None, saving: int, now: datetime) -> str:
    """`saving` while a checkpoint is being written, `active` when the run logged within
    ACTIVE_WITHIN of `now`, else `idle`."""
    if saving:
        return "saving"
    if last_logged_at is not None and now - last_logged_at <= ACTIVE_WITHIN:
        return "active"
    return "idle"


def _flat(config: dict[str, Any]) -> dict[str, Any]:
    """{"model": {...}, "train": {...}} -> {"model.k": v, "train.k": v} for scalar values (a
    model config that is not an object stays whole under "model")."""
    out: dict[str, Any] = {}
    for source, value in config.items():
        if isinstance(value, dict):
            out.update({f"{source}.{k}": v for k, v in value.items() if not isinstance(v, (dict, list))})
        else:
            out[source] = value
    return out


def configs(store: Store, keys: list[tuple[str, str]]) -> tuple[list[str], dict[tuple[str, str], dict[str, Any]]]:
    """The stored configuration of each run (`Run.config()`), flattened; and the config keys
    whose values differ between runs (the ones worth a column: e.g. learning rates)."""
    readable = [store.run(p, m) for p, m in keys]
    if not readable:
        return [], {}
    with ThreadPoolExecutor(max_workers=8) as pool:
        found = dict(zip(keys, pool.map(lambda r: _flat(r.config()), readable), strict=True))
    names = sorted({k for c in found.values() for k in c})
    varying = [k for k in names if len({repr(c.get(k)) for c in found.values()}) > 1]
    return varying, found


def table(store: Store, now: datetime | None = None) -> dict[str, Any]:
    """{columns: [names in display order], rows: [{column: value}]}: one row per run, with a
    column per configuration key that differs between runs, and the whole `config`."""
    now = now or datetime.now(UTC)
    result = store.sql(_QUERY)
    names = result.column_names
    keys = list(zip(result["project"].to_pylist(), result["model"].to_pylist(), strict=True))
    varying, found = configs(store, keys)
    order = [c for c in _FIRST if c in names]
    order += [c for c in names if c not in order and c not in _LAST and c not in _HIDDEN
              and not c.startswith("checkpoints_")]
    order += varying
    order += ["status", "checkpoints", *(c for c in _LAST if c in names)]
    if found:
        order.append("config")
    rows = []
    for raw in result.to_pylist():
        config = found.get((raw["project"], raw["model"]), {})
        row = {c: jsonable.value(raw[c]) for c in order if c in raw}
        row.update({k: jsonable.value(config.get(k)) for k in varying})
        if found:
            row["config"] = jsonable.value(config)
        row["checkpoints"] = f"{raw['checkpoints_ready']} ready, {raw['checkpoints_deleted']} deleted" + (
            f", {raw['checkpoints_saving']} saving" if raw["checkpoints_saving"] else "")
        row["status"] = status(raw.get("last_logged_at"), raw["checkpoints_saving"], now)
        row["run"] = f"{raw['project']}/{raw['model']}"
        rows.append(row)
    return {"store": store.uri, "columns": order, "rows": rows}


def sizes(store: Store) -> dict[str, int]:
    """{"project/model": bytes in storage (every kept version and checkpoint file)}."""
    runs = store.runs()
    with ThreadPoolExecutor(max_workers=8) as pool:
        found = list(pool.map(lambda r: r.size_bytes(), runs))
    return {f"{r.project}/{r.name}": n for r, n in zip(runs, found, strict=True)}


router = APIRouter()


@router.get("/api/runs")
def get_runs(request: Request) -> JSONResponse:
    return jsonable.reply(table(request.app.state.store))


@router.get("/api/runs/sizes")
def get_sizes(request: Request) -> JSONResponse:
    return jsonable.reply(sizes(request.app.state.store))
