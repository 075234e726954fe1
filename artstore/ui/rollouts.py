"""The rollout viewer: pick a run, split, step and group; read its trajectories' conversations.

Every read names its split and step (and group), so Lance reads only those rows: a page costs
about the same at step 10 of a small run and at step 999 of a run with 500k trajectories.
"""

from __future__ import annotations

import math
from typing import Any

import pyarrow.compute as pc
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from artstore import Store, ValidationError
from artstore.ui import jsonable, lookup, transcript

TRAJECTORY_COLUMNS = ["trajectory_id", "group_id", "trajectory_index", "reward", *transcript.MESSAGE_COLUMNS,
                      "tools", "metrics", "metric_kinds", "metadata", "logs", "additional_histories",
                      "initial_policy_version", "final_policy_version"]


def quote(text: str) -> str:
    """A string literal for a Lance filter."""
    return "'" + str(text).replace("'", "''") + "'"


def where(split: str, step: int | None = None, group_id: str | None = None) -> str:
    parts = [f"split = {quote(split)}"]
    if step is not None:
        parts.append(f"step = {int(step)}")
    if group_id is not None:
        parts.append(f"group_id = {quote(group_id)}")
    return " AND ".join(parts)


def steps(store: Store, ref: str, as_of_text: str | None = None) -> dict[str, Any]:
    """{splits: {split: [{step, groups, trajectories, exceptions}]}}: the steps that logged
    rollouts, per split, in step order (log calls of one step and split added up)."""
    logs = lookup.run_of(store, ref).logs(lookup.as_of(as_of_text))
    logs = logs.filter(pc.greater(pc.add(logs["num_groups"], logs["num_exceptions"]), 0))
    agg = logs.group_by(["split", "step"]).aggregate(
        [("num_groups", "sum"), ("num_trajectories", "sum"), ("num_exceptions", "sum")]
    ).sort_by([("split", "ascending"), ("step", "ascending")])
    out: dict[str, list[dict[str, int]]] = {}
    for r in agg.to_pylist():
        out.setdefault(r["split"], []).append({"step": r["step"], "groups": r["num_groups_sum"],
                                               "trajectories": r["num_trajectories_sum"],
                                               "exceptions": r["num_exceptions_sum"]})
    return {"run": ref, "splits": out}


def _stats(values: list[float]) -> dict[str, float | None]:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return {"mean": None, "min": None, "max": None}
    return {"mean": sum(finite) / len(finite), "min": min(finite), "max": max(finite)}


def groups(store: Store, ref: str, split: str, step: int, as_of_text: str | None = None) -> dict[str, Any]:
    """The groups of one split and step: id, position, size, reward mean/min/max, metadata,
    exceptions; in the order they were logged."""
    run = lookup.run_of(store, ref)
    at = lookup.as_of(as_of_text)
    traj = run.read_table("trajectories", filter=where(split, step), as_of=at,
                          columns=["group_id", "trajectory_index", "reward", "metadata"])
    grp = run.read_table("groups", filter=where(split, step), as_of=at,
                         columns=["group_id", "group_index", "metadata", "exceptions", "num_trajectories"])
    rewards: dict[str, list[float]] = {}
    scenario: dict[str, Any] = {}
    for gid, reward, meta in zip(traj["group_id"].to_pylist(), traj["reward"].to_pylist(),
                                 traj["metadata"].to_pylist(), strict=True):
        rewards.setdefault(gid, []).append(reward)
        scenario.setdefault(gid, meta)
    out = []
    for g in grp.to_pylist():
        gid = g["group_id"]
        out.append({"group_id": gid, "group_index": g["group_index"], "trajectories": g["num_trajectories"],
                    "reward": jsonable.value(_stats(rewards.get(gid, []))),
                    "metadata": jsonable.value(jsonable.parse_json(g["metadata"])),
                    "first_trajectory_metadata": jsonable.value(jsonable.parse_json(scenario.get(gid))),
                    "exceptions": len(g["exceptions"] or [])})
    return {"run": ref, "split": split, "step": step, "groups": out}


def group(store: Store, ref: str, split: str, step: int, group_id: str, as_of_text: str | None = None,
          with_logprobs: bool = False) -> dict[str, Any]:
    """One group in full: its metadata, metrics, logs and exceptions, and every trajectory's
    conversation (see `transcript`), in trajectory order; `best`/`worst` name the trajectory
    indexes with the highest and lowest reward."""
    run = lookup.run_of(store, ref)
    at = lookup.as_of(as_of_text)
    grp = run.read_table("groups", filter=where(split, step, group_id), as_of=at)
    if grp.num_rows == 0:
        raise ValidationError("group", f"{ref} has no group {group_id!r} at {split} step {step}")
    traj = run.read_table("trajectories", filter=where(split, step, group_id), as_of=at, columns=TRAJECTORY_COLUMNS)
    traj = traj.sort_by("trajectory_index") if traj.num_rows else traj
    rows = [transcript.trajectory(r, with_logprobs) for r in traj.to_pylist()]
    g = grp.to_pylist()[0]
    kinds = jsonable.parse_json(g.get("metric_kinds")) or {}
    scored = [t for t in rows if t["reward"] is not None]
    return {
        "run": ref, "split": split, "step": step, "group_id": group_id, "group_index": g["group_index"],
        "metadata": jsonable.value(jsonable.parse_json(g["metadata"])),
        "metrics": {k: (bool(v) if kinds.get(k) == "bool" else jsonable.value(v)) for k, v in (g["metrics"] or [])},
        "logs": g["logs"] or [],
        "exceptions": jsonable.value(g["exceptions"] or []),
        "best": max(scored, key=lambda t: t["reward"])["index"] if scored else None,
        "worst": min(scored, key=lambda t: t["reward"])["index"] if scored else None,
        "trajectories": rows,
    }


router = APIRouter()


@router.get("/api/rollouts/steps")
def get_steps(request: Request, run: str, as_of: str | None = None) -> JSONResponse:
    return jsonable.reply(steps(request.app.state.store, run, as_of))


@router.get("/api/rollouts/groups")
def get_groups(request: Request, run: str, split: str, step: int, as_of: str | None = None) -> JSONResponse:
    return jsonable.reply(groups(request.app.state.store, run, split, step, as_of))


@router.get("/api/rollouts/group")
def get_group(request: Request, run: str, split: str, step: int, group_id: str, as_of: str | None = None,
              logprobs: bool = False) -> JSONResponse:
    return jsonable.reply(group(request.app.state.store, run, split, step, group_id, as_of, logprobs))
