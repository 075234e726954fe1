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
- ``best_checkpoint`` metric: times the best step by ``metric`` as a query over
  ``Run.metrics()`` (pyarrow filter + group-by + arg max, as ART's delete_checkpoints does over
  history.jsonl); ``pushed_seconds`` times the same with the name filter pushed into the scan
  (``Run.read_table("metrics", filter=..., columns=[...])``).
- ``analytics`` project_wide: mean reward per (split, step) (per (model, split, step) over
  every run of the project when ``project_wide``): ``Run.read_table("trajectories",
  columns=["split", "step", "reward"])`` per run, then DuckDB over the Arrow table.
- ``warmup``: one small cycle in a scratch store (first-call costs).
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
import traceback
from datetime import timedelta
from pathlib import Path
from typing import Any

_T0 = time.perf_counter()
_PROTO = os.fdopen(os.dup(1), "w", buffering=1)
os.dup2(2, 1)
sys.stdout = sys.stderr
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import duckdb  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402

import artstore  # noqa: E402
from artstore import Choice, PydanticException, Trajectory, TrajectoryGroup  # noqa: E402
from benchmarks.synthetic import make_step, scaled_reward  # noqa: E402

_IMPORT_SECONDS = time.perf_counter() - _T0
_SCRATCH = tempfile.mkdtemp(prefix="storebench-")


def _trajectory(data: dict[str, Any]) -> Trajectory:
    return Trajectory(
        messages_and_choices=[
            Choice.model_validate(item) if "finish_reason" in item else item
            for item in data["messages_and_choices"]
        ],
        tools=data.get("tools"),
        reward=data["reward"],
        metrics=data.get("metrics", {}),
        metadata=data.get("metadata", {}),
        logs=data.get("logs", []),
        additional_histories=data.get("additional_histories", []),
        initial_policy_version=data.get("initial_policy_version"),
        final_policy_version=data.get("final_policy_version"),
    )


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


def _synthetic(step: int, spec: dict[str, Any] | None) -> list[dict[str, Any]]:
    spec = dict(spec or {})
    return make_step(spec.pop("step", step), spec.pop("n_groups", 32), spec.pop("group_size", 16),
                     spec.pop("seed", 0), **spec)


class Driver:
    """State of one session: the model under test."""

    def __init__(self) -> None:
        self.model: artstore.TrainableModel | None = None
        self.templates: dict[str, tuple[list[TrajectoryGroup], list[float]]] = {}

    def _model(self) -> artstore.TrainableModel:
        if self.model is None:
            raise RuntimeError("send init first")
        return self.model

    def _dir(self) -> Path:
        return Path(self._model().run.location.uri)

    async def init(self, base_path: str, project: str, name: str,
                   base_model: str = "Qwen/Qwen2.5-0.5B-Instruct") -> dict[str, Any]:
        t = time.perf_counter()
        self.model = artstore.TrainableModel(name=name, project=project, base_model=base_model,
                                             base_path=base_path, report_metrics=[])
        return {"seconds": time.perf_counter() - t, "model_dir": str(self._dir())}

    async def log(self, step: int, split: str = "train",
                  groups: list[dict[str, Any]] | None = None,
                  synthetic: dict[str, Any] | None = None,
                  metrics: dict[str, float] | None = None) -> dict[str, Any]:
        model = self._model()
        if groups is None:
            groups = _synthetic(step, synthetic)
        t = time.perf_counter()
        built = build_groups(groups)
        build = time.perf_counter() - t
        t = time.perf_counter()
        record = await model.log(built, split=split, step=step, metrics=metrics)
        seconds = time.perf_counter() - t
        return {"seconds": seconds, "build_seconds": build, "n_groups": len(built),
                "n_trajectories": record.num_trajectories}

    async def log_template(self, step: int, template: dict[str, Any], scale: float,
                           split: str = "train") -> dict[str, Any]:
        key = json.dumps(template, sort_keys=True)
        if key not in self.templates:
            groups = build_groups(_synthetic(template["step"], template))
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
        t = time.perf_counter()
        long = run.metrics()
        best = _best_step(long.filter(pc.equal(long["name"], metric)), metric)
        seconds = time.perf_counter() - t
        t = time.perf_counter()
        pushed = run.read_table("metrics", filter=f"name = '{metric}'", columns=["step", "value"])
        best_pushed = _best_step(pushed, metric)
        pushed_seconds = time.perf_counter() - t
        if best_pushed != best:
            raise RuntimeError(f"best step {best} != {best_pushed} with the filter pushed")
        return {"seconds": seconds, "best_step_seconds": seconds, "pushed_seconds": pushed_seconds,
                "best_step": best}

    async def analytics(self, engine: str = "duckdb", project_wide: bool = False) -> dict[str, Any]:
        model = self._model()
        t = time.perf_counter()
        runs = model.store.runs([model.project]) if project_wide else [model.run]
        parts = []
        for run in runs:
            part = run.read_table("trajectories", columns=["split", "step", "reward"])
            parts.append(part.append_column("model", pa.array([run.name] * part.num_rows,
                                                              pa.string())))
        keys = "model, split, step" if project_wide else "split, step"
        with duckdb.connect(":memory:") as con:
            con.register("trajectories", pa.concat_tables(parts))
            rows = con.execute(
                f"SELECT {keys}, avg(reward) AS mean_reward, count(reward) AS n "
                "FROM trajectories GROUP BY ALL ORDER BY ALL").fetchall()
        return {"seconds": time.perf_counter() - t, "engine": "read_table+duckdb",
                "rows": [list(r) for r in rows]}

    async def warmup(self) -> dict[str, Any]:
        saved = self.model
        base = tempfile.mkdtemp(prefix="warmup-", dir=_SCRATCH)
        t = time.perf_counter()
        try:
            await self.init(base, "warmup", "warmup")
            for step in (0, 1):
                await self.log(step, "val", groups=make_step(step, 2, 4, seed=99))
            await self.read_step(1, "val")
            await self.history()
            await self.best_checkpoint()
            await self.analytics()
        finally:
            self.model = saved
            shutil.rmtree(base, ignore_errors=True)
        return {"seconds": time.perf_counter() - t}

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
        meta = {"_versions": 0, "_transactions": 0}
        files = 0
        for dirpath, _, names in os.walk(root):
            for name in names:
                path = Path(dirpath) / name
                rel = path.relative_to(root).parts
                size = path.stat().st_size
                parts[rel[0]] = parts.get(rel[0], 0) + size
                if len(rel) > 1 and rel[1] in meta:
                    meta[rel[1]] += size
                files += 1
        if after_retention:
            shutil.rmtree(copy, ignore_errors=True)
        return {"seconds": time.perf_counter() - t, "bytes": sum(parts.values()), "files": files,
                "parts": parts, "versions_bytes": meta["_versions"],
                "transactions_bytes": meta["_transactions"]}


def _best_step(table: pa.Table, metric: str) -> int | None:
    """The step with the highest per-step mean of ``value`` (ART's rule), or None."""
    if table.num_rows == 0:
        return None
    per_step = table.group_by("step").aggregate([("value", "mean")])
    return per_step["step"][pc.index(per_step["value_mean"],
                                     pc.max(per_step["value_mean"])).as_py()].as_py()


def _reply(message: dict[str, Any]) -> None:
    _PROTO.write(json.dumps(message, default=str) + "\n")
    _PROTO.flush()


async def serve() -> None:
    """Answer requests from stdin until ``shutdown`` or end of input."""
    driver = Driver()
    _reply({"ok": True, "event": "ready", "version": artstore.__version__,
            "python": sys.version.split()[0], "import_seconds": _IMPORT_SECONDS})
    for line in sys.stdin:
        if not line.strip():
            continue
        cmd, req_id = None, None
        try:
            request = json.loads(line)
            cmd, req_id = request.pop("cmd"), request.pop("id", None)
            if cmd == "shutdown":
                _reply({"ok": True, "cmd": cmd, "id": req_id, "seconds": 0.0})
                break
            if cmd.startswith("_") or not hasattr(Driver, cmd):
                raise ValueError(f"unknown command {cmd!r}")
            result = await getattr(driver, cmd)(**request)
            _reply({"ok": True, "cmd": cmd, "id": req_id, **result})
        except Exception as exc:  # every failure is an answer, never a dead driver
            _reply({"ok": False, "cmd": cmd, "id": req_id,
                    "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()})
    shutil.rmtree(_SCRATCH, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(serve())
