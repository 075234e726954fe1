"""Compare one scenario across steps: the groups at the same position of every step's log, or
the trajectories whose metadata has the same value of a key (e.g. `scenario_id`).

By position, Lance filters on `group_index`. By metadata, Lance first keeps the rows whose
metadata text contains the value (a LIKE over one column), then each candidate's JSON is parsed
and compared exactly, so a value that merely appears inside another never matches.
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
                 value: Any = None, as_of_text: str | None = None) -> dict[str, Any]:
    """One row per (step, group) of `split` holding the scenario: step, group_id, trajectories,
    reward mean/min/max, and the best trajectory's index. Give `group_index`, or `key` and `value`
    (a trajectory metadata key and its JSON value)."""
    run = lookup.run_of(store, ref)
    filters = [f"split = {quote(split)}"]
    if group_index is not None:
        filters.append(f"group_index = {int(group_index)}")
    elif key:
        pattern = _prefilter(value)
        if pattern:
            filters.append(pattern)
    else:
        raise ValidationError("scenario", "give group_index, or key and value of a metadata entry")
    by_metadata = group_index is None
    columns = _COLUMNS if by_metadata else [c for c in _COLUMNS if c != "metadata"]
    rows = run.read_table("trajectories", filter=" AND ".join(filters), columns=columns,
                          as_of=lookup.as_of(as_of_text)).to_pylist()
    if by_metadata:
        rows = [r for r in rows if _matches(r["metadata"], key, value)]
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
                 value: str | None = None, as_of: str | None = None) -> JSONResponse:
    """`value` is JSON (a string value in quotes); a value that is not JSON is taken as a string."""
    parsed = None if value is None else jsonable.parse_json(value)
    return jsonable.reply(across_steps(request.app.state.store, run, split, group_index=group_index, key=key,
                                       value=parsed, as_of_text=as_of))
