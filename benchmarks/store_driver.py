"""artstore's side of the benchmarks: the same JSON-lines server as ``art_driver.py``.

Run with the project's interpreter; ``benchmarks/art_client.py`` (:class:`StoreDriver`) starts
and drives it. Both sides run in a process of their own, build their objects from the same plain
structures (``benchmarks/synthetic.py``), and time only the library call, so the two columns of
the benchmark table are measured the same way. The protocol is ``art_driver.py``'s; the commands
answer the same questions through artstore's public API:

- ``init`` base_path, project, name: an ``artstore.TrainableModel`` (``report_metrics=[]``).
- ``log`` step, split, groups | synthetic, metrics: builds artstore objects (``build_seconds``)
  and times ``await model.log(groups, split=split, step=step, metrics=metrics)``.
- ``log_template`` step, template, scale, split: logs a cached template step (built once) with
  every reward rescaled (``synthetic.scaled_reward``), through the same ``model.log``.
- ``read_step`` step, split: times ``Run.groups(split=, step=)``.
- ``history``: times ``Run.history()``.
- ``best_checkpoint`` metric: times ``Run.best_step(metric)`` (what ``checkpoint("best")`` and
  retention rank by: the run's step summary, one freshness check when warm). The first call for
  a run in this process (it builds the summary) is timed apart as ``first_seconds``;
  ``metrics_query_seconds`` times the old query over ``Run.metrics()`` (pyarrow filter +
  group-by + arg max), whose answer must agree.
- ``analytics`` project_wide: mean reward per (split, step) (per (model, split, step) over
  every run of the project when ``project_wide``) with ``Store.sql`` over the trajectories view.
- ``warmup``: one small cycle in a scratch store (first-call costs).
- ``backlog``: what upkeep has not caught up with (not timed): journal rows not yet folded into
  every data table, fragments and manifests (``_versions/``) per table, pending files.
- ``settle`` timeout: waits for this process's queued logs and the upkeep they asked for
  (``Run.wait_for_upkeep``); its seconds are how far upkeep was behind.
- ``mark``: lands the queued logs and names the run's latest version with its history's rows and
  a digest; ``as_of_history`` version rows digest: times ``Run.history(as_of=version)`` and
  checks it is that same table (time travel to an earlier log).
- ``bytes_on_disk`` after_retention=False: bytes of the run folder, by table, and of the
  version metadata (``_versions/``) and transaction files. ``after_retention``: the same for a
  copy of the run once its retention window has passed (``open_store(copy,
  retention=timedelta(0))``, then ``Run.compact()``: old versions and the files only they use
  are gone).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

_T0 = time.perf_counter()
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.driver_protocol import (  # noqa: E402
    build_timed,
    cpu_counters,
    serve,
    take_stdout,
    trajectory_fields,
    warmup,
)

_PROTO = take_stdout()

import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402

import artstore  # noqa: E402
from artstore import Choice, PydanticException, Trajectory, TrajectoryGroup  # noqa: E402
from benchmarks.synthetic import scaled_reward, step_from_spec  # noqa: E402

_IMPORT_SECONDS = time.perf_counter() - _T0
_SCRATCH = tempfile.mkdtemp(prefix="storebench-")


def _trajectory(data: dict[str, Any]) -> Trajectory:
    return Trajectory(**trajectory_fields(data, Choice))


def build_groups(groups: list[dict[str, Any]]) -> list[TrajectoryGroup]:
    """artstore ``TrajectoryGroup`` objects from plain groups (Choice dicts become ``Choice``)."""
    return [
        TrajectoryGroup(
            [_trajectory(t) for t in g["trajectories"]],
            exceptions=[PydanticException(**e) for e in g.get("exceptions", [])],
            metadata=g.get("metadata", {}),
            metrics=g.get("metrics", {}),
            logs=g.get("logs", []),
        )
        for g in groups
    ]


class Driver:
    """State of one session: the model under test."""

    def __init__(self) -> None:
        self.model: artstore.TrainableModel | None = None
        self.templates: dict[str, tuple[list[TrajectoryGroup], list[float]]] = {}
        self.ranked: set[str] = set()  # runs best_checkpoint has ranked in this process

    def _model(self) -> artstore.TrainableModel:
        if self.model is None:
            raise RuntimeError("send init first")
        return self.model

    def _dir(self) -> Path:
        return Path(self._model().run.location.uri)

    async def init(self, base_path: str, project: str, name: str,
                   base_model: str = "Qwen/Qwen2.5-0.5B-Instruct", retention_s: float | None = None,
                   reader_window_s: float | None = None) -> dict[str, Any]:
        t = time.perf_counter()
        extra: dict[str, Any] = {} if retention_s is None else {"retention": timedelta(seconds=retention_s)}
        if reader_window_s is not None:
            extra["reader_window"] = timedelta(seconds=reader_window_s)
        self.model = artstore.TrainableModel(name=name, project=project, base_model=base_model,
                                             base_path=base_path, report_metrics=[], **extra)
        return {"seconds": time.perf_counter() - t, "model_dir": str(self._dir())}

    async def log(self, step: int, split: str = "train",
                  groups: list[dict[str, Any]] | None = None,
                  synthetic: dict[str, Any] | None = None,
                  metrics: dict[str, float] | None = None) -> dict[str, Any]:
        model = self._model()
        built, build = build_timed(build_groups, step, groups, synthetic)
        t = time.perf_counter()
        record = await model.log(built, split=split, step=step, metrics=metrics)
        seconds = time.perf_counter() - t
        return {"seconds": seconds, "build_seconds": build, "n_groups": len(built),
                "n_trajectories": record.num_trajectories, **cpu_counters()}

    async def log_template(self, step: int, template: dict[str, Any], scale: float,
                           split: str = "train") -> dict[str, Any]:
        key = json.dumps(template, sort_keys=True)
        if key not in self.templates:
            groups = build_groups(step_from_spec(template["step"], template))
            self.templates[key] = (groups, [t.reward for g in groups for t in g.trajectories])
        groups, rewards = self.templates[key]
        new = [scaled_reward(r, scale) for r in rewards]
        for trajectory, reward in zip((t for g in groups for t in g.trajectories), new,
                                      strict=True):
            trajectory.reward = reward
        t = time.perf_counter()
        record = await self._model().log(groups, split=split, step=step)
        return {"seconds": time.perf_counter() - t, "n_trajectories": record.num_trajectories,
                "mean_reward": sum(new) / len(new)}

    async def read_step(self, step: int, split: str = "train") -> dict[str, Any]:
        run = self._model().run
        t = time.perf_counter()
        groups = run.groups(split=split, step=step)
        seconds = time.perf_counter() - t
        rewards = [tr.reward for g in groups for tr in g.trajectories]
        return {"seconds": seconds, "n_groups": len(groups), "n_trajectories": len(rewards),
                "mean_reward": sum(rewards) / len(rewards) if rewards else None}

    async def history(self) -> dict[str, Any]:
        run = self._model().run
        t = time.perf_counter()
        table = run.history()
        seconds = time.perf_counter() - t
        return {"seconds": seconds, "rows": table.num_rows, "columns": table.num_columns}

    async def best_checkpoint(self, metric: str = "val/reward",
                              steps: list[int] | None = None) -> dict[str, Any]:
        run = self._model().run
        first = None
        if run.location.uri not in self.ranked:  # the first call after opening builds the summary
            self.ranked.add(run.location.uri)
            t = time.perf_counter()
            run.best_step(metric)
            first = time.perf_counter() - t
        t = time.perf_counter()
        best = run.best_step(metric)
        seconds = time.perf_counter() - t
        t = time.perf_counter()
        long = run.metrics()
        by_query = _best_step(long.filter(pc.equal(long["name"], metric)))
        query_seconds = time.perf_counter() - t
        if by_query != best:
            raise RuntimeError(f"best step {best} != {by_query} by a query over Run.metrics()")
        return {"seconds": seconds, "best_step_seconds": seconds, "first_seconds": first,
                "metrics_query_seconds": query_seconds, "best_step": best}

    async def analytics(self, engine: str = "duckdb", project_wide: bool = False) -> dict[str, Any]:
        model = self._model()
        keys = "model, split, step" if project_wide else "split, step"
        where = "project = ?" + ("" if project_wide else " AND model = ?")
        params = [model.project] if project_wide else [model.project, model.name]
        t = time.perf_counter()
        table = model.store.sql(f"SELECT {keys}, avg(reward) AS mean_reward, count(reward) AS n "
                                f"FROM trajectories WHERE {where} GROUP BY ALL ORDER BY ALL", params)
        seconds = time.perf_counter() - t
        return {"seconds": seconds, "engine": "Store.sql",
                "rows": [list(r.values()) for r in table.to_pylist()]}

    async def warmup(self) -> dict[str, Any]:
        return await warmup(self, _SCRATCH, ("analytics", {}))

    async def backlog(self) -> dict[str, Any]:
        import lance  # benchmarks may: artstore imports lance only in artstore/storage

        root = self._dir()
        out: dict[str, Any] = {"fragments": {}, "manifests": {}}
        folded = []
        for table in ("logs", "trajectories", "groups", "metrics"):
            path = root / f"{table}.lance"
            if not path.exists():
                continue
            ds = lance.dataset(str(path))
            out["fragments"][table] = len(ds.get_fragments())
            out["manifests"][table] = len(os.listdir(path / "_versions"))
            if table != "logs":
                folded.append(int(ds.config().get("artstore.folded_seq", -1)))
        logs = lance.dataset(str(root / "logs.lance"))
        rows = logs.to_table(columns=["commit_seq"], with_row_address=True)
        seq = pc.coalesce(rows["commit_seq"], pc.shift_right(rows["_rowaddr"], 32).cast(pa.int64()))
        low = min(folded, default=-1)
        out["unfolded"] = int(pc.sum(pc.greater(seq, low)).as_py() or 0)
        out["journal_rows"] = rows.num_rows
        pending = root / "logs.pending"
        out["pending_files"] = len(os.listdir(pending)) if pending.exists() else 0
        return out

    async def settle(self, timeout: float = 600.0) -> dict[str, Any]:
        t = time.perf_counter()
        done = self._model().run.wait_for_upkeep(timeout)
        return {"seconds": time.perf_counter() - t, "done": done}

    async def mark(self) -> dict[str, Any]:
        self._model().flush()  # this process's queued logs land, so the version holds them
        run = self._model().run
        table = run.history()
        return {"version": run.versions()[-1]["version"], "rows": table.num_rows,
                "digest": _digest(table)}

    async def as_of_history(self, version: int, rows: int, digest: str) -> dict[str, Any]:
        run = self._model().run
        t = time.perf_counter()
        table = run.history(as_of=version)
        seconds = time.perf_counter() - t
        if table.num_rows != rows or _digest(table) != digest:
            raise RuntimeError(f"history as of version {version}: {table.num_rows} rows, not the "
                               f"{rows} it had then (or other values)")
        return {"seconds": seconds, "rows": table.num_rows}

    async def bytes_on_disk(self, after_retention: bool = False) -> dict[str, Any]:
        t = time.perf_counter()
        root = self._dir()
        if after_retention:
            model = self._model()
            copy = Path(tempfile.mkdtemp(prefix="retention-", dir=_SCRATCH))
            shutil.copytree(root, copy / model.project / "models" / model.name)
            artstore.open_store(copy, retention=timedelta(0)).run(model.project, model.name).compact()
            root = copy / model.project / "models" / model.name
        parts: dict[str, int] = {}
        files_parts: dict[str, int] = {}
        meta = {"_versions": 0, "_transactions": 0}
        files = 0
        for dirpath, _, names in os.walk(root):
            for name in names:
                path = Path(dirpath) / name
                rel = path.relative_to(root).parts
                size = path.stat().st_size
                parts[rel[0]] = parts.get(rel[0], 0) + size
                files_parts[rel[0]] = files_parts.get(rel[0], 0) + 1
                if len(rel) > 1 and rel[1] in meta:
                    meta[rel[1]] += size
                files += 1
        # the store-level tables a run adds to (its registry row, the pool's copy of a small run's
        # rows) count too: ART keeps nothing outside the run folder
        store_root = self._dir().parents[2]
        for sub in ("_runs.lance", "_pool"):
            for dirpath, _, names in os.walk(store_root / sub):
                for name in names:
                    parts[f"store/{sub}"] = parts.get(f"store/{sub}", 0) + (Path(dirpath) / name).stat().st_size
                    files_parts[f"store/{sub}"] = files_parts.get(f"store/{sub}", 0) + 1
                    files += 1
        if after_retention:
            shutil.rmtree(copy, ignore_errors=True)
        return {"seconds": time.perf_counter() - t, "bytes": sum(parts.values()), "files": files,
                "parts": parts, "files_parts": files_parts, "versions_bytes": meta["_versions"],
                "transactions_bytes": meta["_transactions"]}


def _digest(table: pa.Table) -> str:
    """A digest of a history table's values, every column (sorted by name)."""
    import hashlib

    cols = sorted(table.column_names)
    return hashlib.sha256(repr(table.select(cols).to_pydict()).encode()).hexdigest()


def _best_step(table: pa.Table) -> int | None:
    """The step with the highest per-step mean of ``value`` (ART's rule), or None."""
    if table.num_rows == 0:
        return None
    per_step = table.group_by("step").aggregate([("value", "mean")])
    return per_step["step"][pc.index(per_step["value_mean"],
                                     pc.max(per_step["value_mean"])).as_py()].as_py()


async def main() -> None:
    """Answer requests from stdin until ``shutdown`` or end of input (see driver_protocol)."""
    await serve(_PROTO, Driver(), {"version": artstore.__version__, "python": sys.version.split()[0],
                                   "import_seconds": _IMPORT_SECONDS})
    shutil.rmtree(_SCRATCH, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
