"""Compare one scenario across steps: the groups at the same position of every step's log, or
the trajectories (or groups) whose metadata has the same value of a key (e.g. `scenario_id`).

By position, Lance filters on `group_index`. By metadata, Lance first keeps the rows whose
metadata text contains the value (a LIKE over one column), then each candidate's JSON is parsed
and compared exactly, so a value that merely appears inside another never matches. By group
metadata, the matching groups' ids then select their trajectories.
"""

from __future__ import annotations

import json
import math
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from artstore import Store, ValidationError
from artstore.ui import jsonable, lookup
from artstore.ui.rollouts import quote

_COLUMNS = ["step", "group_id", "group_index", "trajectory_index", "reward", "metadata"]


def _prefilter(value: Any) -> str | None:
    """A LIKE pattern every metadata text holding `value` matches (None: no safe pattern).
    `%` and `_` in the value only widen the match; a backslash or non-ASCII text could narrow it
    (escapes differ between JSON writers), so those get no pattern."""
    if isinstance(value, bool) or value is None:
        return None
    text = json.dumps(value) if isinstance(value, str) else str(value)
    if "\\" in text or not text.isascii():
        return None
    return f"metadata LIKE {quote('%' + text + '%')}"


def across_steps(store: Store, ref: str, split: str, *, group_index: int | None = None, key: str | None = None,
                 value: Any = None, level: str = "trajectory", as_of_text: str | None = None) -> dict[str, Any]:
    """One row per (step, group) of `split` holding the scenario: step, group_id, trajectories,
    reward mean/min/max, and the best trajectory's index. Give `group_index`, or `key` and `value`
    (a metadata key and its JSON value) of the trajectories' metadata (`level` "trajectory") or
    of the groups' (`level` "group")."""
    run = lookup.run_of(store, ref)
    at = lookup.as_of(as_of_text)
    filters = [f"split = {quote(split)}"]
    columns = [c for c in _COLUMNS if c != "metadata"]
    if group_index is not None:
        filters.append(f"group_index = {int(group_index)}")
    elif not key:
        raise ValidationError("scenario", "give group_index, or key and value of a metadata entry")
    elif level == "group":
        pattern = _prefilter(value)
        groups = run.read_table("groups", filter=" AND ".join(filters + ([pattern] if pattern else [])),
                                columns=["group_id", "metadata"], as_of=at)
        ids = [g for g, m in zip(groups["group_id"].to_pylist(), groups["metadata"].to_pylist(), strict=True)
               if _matches(m, key, value)]
        if not ids:
            return _result(ref, split, group_index, key, value, [])
        filters.append(f"group_id IN ({', '.join(quote(i) for i in ids)})")
    elif level == "trajectory":
        pattern = _prefilter(value)
        filters += [pattern] if pattern else []
        columns = _COLUMNS
    else:
        raise ValidationError("level", f"{level!r}: use trajectory or group")
    rows = run.read_table("trajectories", filter=" AND ".join(filters), columns=columns, as_of=at).to_pylist()
    if "metadata" in columns:
        rows = [r for r in rows if _matches(r["metadata"], key, value)]
    return _result(ref, split, group_index, key, value, rows)


def _result(ref: str, split: str, group_index: int | None, key: str | None, value: Any,
            rows: list[dict[str, Any]]) -> dict[str, Any]:
    found: dict[str, dict[str, Any]] = {}
    for r in rows:
        g = found.setdefault(r["group_id"], {"step": r["step"], "group_id": r["group_id"],
                                             "group_index": r["group_index"], "rewards": []})
        g["rewards"].append((r["reward"], r["trajectory_index"]))
    out = []
    for g in sorted(found.values(), key=lambda g: (g["step"], g["group_index"])):
        finite = [(rw, i) for rw, i in g.pop("rewards") if rw is not None and math.isfinite(rw)]
        values = [rw for rw, _ in finite]
        out.append({**g, "trajectories": len(finite),
                    "mean": sum(values) / len(values) if values else None,
                    "min": min(values, default=None), "max": max(values, default=None),
                    "best": max(finite)[1] if finite else None})
    return {"run": ref, "split": split, "group_index": group_index, "key": key, "value": jsonable.value(value),
            "groups": out}


def _matches(metadata: str | None, key: str, value: Any) -> bool:
    parsed = jsonable.parse_json(metadata)
    return isinstance(parsed, dict) and key in parsed and parsed[key] == value


router = APIRouter()


@router.get("/api/rollouts/scenario")
def get_scenario(request: Request, run: str, split: str, group_index: int | None = None, key: str | None = None,
                 value: str | None = None, level: str = "trajectory", as_of: str | None = None) -> JSONResponse:
    """`value` is JSON (a string value in quotes); a value that is not JSON is taken as a string."""
    parsed = None if value is None else jsonable.parse_json(value)
    return jsonable.reply(across_steps(request.app.state.store, run, split, group_index=group_index, key=key,
                                       value=parsed, level=level, as_of_text=as_of))
