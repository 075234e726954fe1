"""The charts page: any metric of a run against its step, smoothed as retention smooths.

A point is the per-step mean of the metric (every value logged at that step, as checkpoint
ranking uses it), read from the run's step summary (kept in memory per version of the run).
Smoothing is retention's own (`mean`, `window:N`, `ema:ALPHA`; see `artstore.checkpoints.retention`), so a
curve shows exactly the scores `KeepBest(smooth=...)` ranks by.
"""

from __future__ import annotations

import difflib
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from artstore import Store, ValidationError
from artstore.checkpoints.smoothing import parse_smoothing, smoothed
from artstore.ui import jsonable, lookup


def counterpart(metric: str) -> str | None:
    """`val/x` <-> `train/x`; None for a metric of neither split."""
    for a, b in (("val/", "train/"), ("train/", "val/")):
        if metric.startswith(a):
            return b + metric[len(a):]
    return None


def metric_names(store: Store, refs: list[str], as_of_text: str | None = None) -> list[str]:
    """Every metric name logged by any of the runs `refs`, sorted (val/ and train/ first)."""
    names: set[str] = set()
    for ref in refs:
        names |= lookup.run_of(store, ref).step_summary(lookup.as_of(as_of_text)).names()
    return sorted(names, key=lambda n: (not n.startswith(("val/", "train/")), n))


def series(store: Store, ref: str, metric: str, as_of_text: str | None = None,
           smooth: str | None = None) -> dict[str, Any]:
    """{run, metric, steps, values (per-step means), smoothed (None without `smooth`)}. A metric
    the run never logged raises ValidationError naming the closest ones it did."""
    run = lookup.run_of(store, ref)
    summary = run.step_summary(lookup.as_of(as_of_text))
    means = summary.means(metric)
    if not means:
        close = difflib.get_close_matches(metric, sorted(summary.names()), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValidationError("metric", f"{ref} has no values of {metric!r}{hint}")
    out = {"run": ref, "metric": metric, "as_of": as_of_text or None, "steps": list(means),
           "values": [jsonable.value(v) for v in means.values()], "smoothed": None}
    if smooth and smooth.strip() and smooth.strip() != "none":
        out["smoothed"] = [jsonable.value(v) for v in smoothed(means, parse_smoothing(smooth)).values()]
    return out


router = APIRouter()


@router.get("/api/metrics")
def get_metrics(request: Request, runs: str, as_of: str | None = None) -> JSONResponse:
    refs = [r for r in runs.split(",") if r]
    return jsonable.reply({"runs": refs, "metrics": metric_names(request.app.state.store, refs, as_of)})


@router.get("/api/series")
def get_series(request: Request, run: str, metric: str, as_of: str | None = None,
               smooth: str | None = None) -> JSONResponse:
    return jsonable.reply(series(request.app.state.store, run, metric, as_of, smooth))
