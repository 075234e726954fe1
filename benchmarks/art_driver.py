"""OpenPipe ART's side of the benchmarks: a long-lived JSON-lines server run in ART's venv.

Run with the interpreter of ``.bench/art-venv`` (Python 3.12, openpipe-art 0.5.23; see
``benchmarks/art_env.py``); ``benchmarks/art_client.py`` starts and drives it. Timings exclude
process start and imports: each command times only ART's own call.

Protocol: one JSON object per line. At start the driver writes
``{"ok": true, "event": "ready", "art_version", "python", "import_seconds"}``. Then each request
``{"cmd": NAME, "id": optional, ...arguments}`` gets one response ``{"ok": true, "cmd", "id",
"seconds", ...}`` or ``{"ok": false, "cmd", "id", "error", "traceback"}``. ``seconds`` is always
the wall time (``time.perf_counter``) of the ART call being measured. The protocol has its own
file descriptor: anything ART prints goes to stderr.

Commands (arguments with defaults):

- ``init`` base_path, project, name, base_model: a ``TrainableModel`` (``report_metrics=[]``)
  registered with a stub backend; ``seconds`` times register.
- ``log`` step, split="train", groups | synthetic={n_groups, group_size, seed, ...}, metrics:
  builds ART objects from the plain structures of ``benchmarks/synthetic.py`` (``build_seconds``)
  and times ``await model.log(groups, split=split, step=step, metrics=metrics)``.
- ``read_step`` step, split="train": times ``read_trajectory_groups_parquet`` on the step's file.
- ``history``: times ``polars.read_ndjson(history.jsonl)``, as ART reads it.
- ``best_checkpoint`` metric="val/reward", steps=None: creates ``checkpoints/NNNN/`` folders
  (default: every step in history), times ``await model.delete_checkpoints(metric)``; the stub
  backend records what it would delete. ``best_step_seconds`` times the history query alone.
- ``analytics`` engine="art_loader" | "duckdb", project_wide=False: mean reward per (split,
  step) over all parquet files of the model, with ART's ``load_trajectories`` + polars, or DuckDB
  over the parquet glob; ``project_wide``: per (model, split, step) over every model of the
  project (rows ``[model, split, step, mean, n]``).
- ``log_template`` step, template={n_groups, group_size, seed, step}, scale, split="train":
  writes the step's parquet file as a copy of a template step with every reward rescaled
  (``synthetic.scaled_reward``), for building large data sets fast. The template is written once
  with ART's own ``write_trajectory_groups_parquet``; each copy patches the ``reward`` column
  and the reward inside ``trajectory_json``, and is written with the call ART uses
  (``pq.write_table(..., compression="zstd")``). history.jsonl is not written.
- ``tool_failure_rate``: DuckDB over the parquet glob: failed tool messages / tool messages.
- ``warmup``: one small log/read/history/load cycle in a scratch model (first-call costs).
- ``bytes_on_disk``: bytes of the model folder, by part.
- ``shutdown``: answers, then exits.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

_T0 = time.perf_counter()
# litellm (imported by art) fetches a price list from GitHub at import unless told not to.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.driver_protocol import (  # noqa: E402
    build_timed,
    cpu_counters,
    serve,
    take_stdout,
    trajectory_fields,
    warmup,
)

# Protocol on a private descriptor; fd 1 (print, tqdm, ...) goes to stderr from here on.
_PROTO = take_stdout()

# load_trajectories makes "<repo root>/data/" at import, where the repo root is the first folder
# above site-packages holding .git: that would be this worktree. Point it at a scratch folder.
_SCRATCH = tempfile.mkdtemp(prefix="artbench-")
import art.utils.get_repo_root_path as _repo_root  # noqa: E402

_repo_root.get_repo_root_path = lambda: _SCRATCH

import art  # noqa: E402
import duckdb  # noqa: E402
import polars as pl  # noqa: E402
from art.trajectories import PydanticException  # noqa: E402
from art.utils.benchmarking.load_trajectories import load_trajectories  # noqa: E402
from art.utils.get_model_step import get_step_from_dir  # noqa: E402
from art.utils.trajectory_logging import (  # noqa: E402
    read_trajectory_groups_parquet,
    write_trajectory_groups_parquet,
)
from openai.types.chat.chat_completion import Choice  # noqa: E402

_IMPORT_SECONDS = time.perf_counter() - _T0


class StubBackend:
    """A backend that trains nothing and deletes nothing: it records what it would delete.

    ``register`` writes model.json as ``LocalBackend.register`` does; ``_get_step`` is
    LocalBackend's (the largest checkpoint folder name).
    """

    def __init__(self) -> None:
        self.delete_calls: list[dict[str, Any]] = []

    def _model_inference_name(self, model: Any, step: int | None = None) -> str:
        return model.name

    async def close(self) -> None:
        return None

    async def register(self, model: Any) -> None:
        output_dir = model._get_output_dir()
        os.makedirs(output_dir, exist_ok=True)
        with open(f"{output_dir}/model.json", "w") as f:
            json.dump(model.model_dump(), f)

    async def _prepare_backend_for_training(self, model: Any, config: Any) -> tuple[str, str]:
        return "http://127.0.0.1:9/v1", "stub"

    async def _get_step(self, model: Any) -> int:
        return get_step_from_dir(model._get_output_dir())

    async def _delete_checkpoint_files(self, model: Any, steps_to_keep: list[int]) -> None:
        ckpt_dir = Path(model._get_output_dir()) / "checkpoints"
        present = sorted(int(p.name) for p in ckpt_dir.iterdir() if p.name.isdigit())
        self.delete_calls.append({
            "steps_to_keep": sorted(set(steps_to_keep)),
            "would_delete": [s for s in present if s not in steps_to_keep],
        })


def _trajectory(data: dict[str, Any]) -> art.Trajectory:
    return art.Trajectory(**trajectory_fields(data, Choice))


def build_groups(groups: list[dict[str, Any]]) -> list[art.TrajectoryGroup]:
    """ART ``TrajectoryGroup`` objects from plain groups (Choice dicts become ``Choice``)."""
    return [
        art.TrajectoryGroup(
            [_trajectory(t) for t in g["trajectories"]],
            exceptions=[PydanticException(**e) for e in g.get("exceptions", [])],
            metadata=g.get("metadata", {}),
            metrics=g.get("metrics", {}),
            logs=g.get("logs", []),
        )
        for g in groups
    ]


def _count(groups: list[art.TrajectoryGroup]) -> int:
    return sum(len(g.trajectories) for g in groups)


class Driver:
    """State of one session: the model under test and its stub backend."""

    def __init__(self) -> None:
        self.model: art.TrainableModel | None = None
        self.backend = StubBackend()
        self.templates: dict[str, Any] = {}

    # -- helpers ---------------------------------------------------------------------------
    def _model(self) -> art.TrainableModel:
        if self.model is None:
            raise RuntimeError("send init first")
        return self.model

    def _dir(self) -> Path:
        return Path(self._model()._get_output_dir())

    def _glob(self) -> str:
        return str(self._dir() / "trajectories" / "*" / "*.parquet")

    # -- commands --------------------------------------------------------------------------
    async def init(self, base_path: str, project: str, name: str,
                   base_model: str = "Qwen/Qwen2.5-0.5B-Instruct") -> dict[str, Any]:
        self.model = art.TrainableModel(name=name, run_name=name, project=project,
                                        base_model=base_model, base_path=base_path,
                                        report_metrics=[])
        self.backend = StubBackend()
        t = time.perf_counter()
        await self.model.register(self.backend)
        return {"seconds": time.perf_counter() - t, "model_dir": str(self._dir())}

    async def log(self, step: int, split: str = "train",
                  groups: list[dict[str, Any]] | None = None,
                  synthetic: dict[str, Any] | None = None,
                  metrics: dict[str, float] | None = None) -> dict[str, Any]:
        model = self._model()
        art_groups, build = build_timed(build_groups, step, groups, synthetic)
        t = time.perf_counter()
        await model.log(art_groups, split=split, step=step, metrics=metrics)
        seconds = time.perf_counter() - t
        path = self._dir() / "trajectories" / split / f"{step:04d}.parquet"
        return {"seconds": seconds, "build_seconds": build, "n_groups": len(art_groups),
                "n_trajectories": _count(art_groups), "file": str(path),
                "file_bytes": path.stat().st_size, **cpu_counters()}

    async def read_step(self, step: int, split: str = "train") -> dict[str, Any]:
        path = self._dir() / "trajectories" / split / f"{step:04d}.parquet"
        t = time.perf_counter()
        groups = read_trajectory_groups_parquet(path)
        seconds = time.perf_counter() - t
        rewards = [tr.reward for g in groups for tr in g.trajectories]
        return {"seconds": seconds, "n_groups": len(groups), "n_trajectories": len(rewards),
                "mean_reward": sum(rewards) / len(rewards) if rewards else None}

    async def history(self) -> dict[str, Any]:
        t = time.perf_counter()
        df = pl.read_ndjson(f"{self._dir()}/history.jsonl")
        seconds = time.perf_counter() - t
        return {"seconds": seconds, "rows": df.height, "columns": df.width}

    async def best_checkpoint(self, metric: str = "val/reward",
                              steps: list[int] | None = None) -> dict[str, Any]:
        model = self._model()
        history_path = f"{self._dir()}/history.jsonl"
        if steps is None:
            steps = sorted(set(pl.read_ndjson(history_path)["step"].to_list()))
        for step in steps:  # what LocalBackend leaves after training each step
            folder = self._dir() / "checkpoints" / f"{step:04d}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "adapter_config.json").write_text('{"r": 8, "lora_alpha": 16}')
        t = time.perf_counter()
        try:  # the query inside TrainableModel.delete_checkpoints, alone
            best = (
                pl.read_ndjson(history_path).drop_nulls(subset=[metric]).group_by("step")
                .agg(pl.col(metric).mean()).sort(metric).select(pl.col("step").last()).item()
            )
        except pl.exceptions.ColumnNotFoundError:
            best = None  # ART then keeps only the latest step
        best_seconds = time.perf_counter() - t
        n_calls = len(self.backend.delete_calls)
        t = time.perf_counter()
        await model.delete_checkpoints(best_checkpoint_metric=metric)
        seconds = time.perf_counter() - t
        if len(self.backend.delete_calls) != n_calls + 1:
            raise RuntimeError("delete_checkpoints did not reach the backend")
        return {"seconds": seconds, "best_step_seconds": best_seconds, "best_step": best,
                "n_checkpoints": len(steps), **self.backend.delete_calls[-1]}

    async def analytics(self, engine: str = "duckdb", project_wide: bool = False) -> dict[str, Any]:
        model = self._model()
        keys = ["model", "split", "step"] if project_wide else ["split", "step"]
        t = time.perf_counter()
        if engine == "art_loader":
            df = await load_trajectories(
                model.project, models=None if project_wide else [model._storage_name()],
                art_path=model.base_path)
            out = (df.group_by(*keys)
                   .agg(pl.col("reward").mean().alias("mean_reward"), pl.len().alias("n"))
                   .sort(*keys))
            rows = [list(r) for r in out.iter_rows()]
        elif engine == "duckdb":
            glob = self._glob()
            if project_wide:
                glob = str(self._dir().parent / "*" / "trajectories" / "*" / "*.parquet")
            model_col = ("regexp_extract(filename, '/models/([^/]+)/', 1) AS model, "
                         if project_wide else "")
            with duckdb.connect(":memory:") as con:
                rows = con.execute(
                    f"SELECT {model_col}"
                    "regexp_extract(filename, '/([^/]+)/[^/]+$', 1) AS split, "
                    "CAST(regexp_extract(filename, '(\\d+)\\.parquet$', 1) AS BIGINT) AS step, "
                    "avg(reward) AS mean_reward, count(reward) AS n "
                    "FROM read_parquet(?, filename = true) GROUP BY ALL ORDER BY ALL",
                    [glob],
                ).fetchall()
            rows = [list(r) for r in rows]
        else:
            raise ValueError(f"engine must be 'art_loader' or 'duckdb', not {engine!r}")
        return {"seconds": time.perf_counter() - t, "engine": engine, "rows": rows}

    async def log_template(self, step: int, template: dict[str, Any], scale: float,
                           split: str = "train") -> dict[str, Any]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        from benchmarks.synthetic import make_step, scaled_reward

        key = json.dumps(template, sort_keys=True)
        if key not in self.templates:
            spec = dict(template)
            groups = build_groups(make_step(spec.pop("step"), spec.pop("n_groups"),
                                            spec.pop("group_size"), spec.pop("seed"), **spec))
            with tempfile.TemporaryDirectory(dir=_SCRATCH) as tmp:
                write_trajectory_groups_parquet(groups, f"{tmp}/t.parquet")
                self.templates[key] = pq.read_table(f"{tmp}/t.parquet")
        table = self.templates[key]
        path = self._dir() / "trajectories" / split / f"{step:04d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        old = table["reward"].to_pylist()
        new = [scaled_reward(r, scale) for r in old]
        docs = [doc.replace(f'"reward":{r!r}', f'"reward":{n!r}', 1)
                for doc, r, n in zip(table["trajectory_json"].to_pylist(), old, new, strict=True)]
        patched = table.set_column(table.schema.get_field_index("reward"), "reward",
                                   pa.array(new, pa.float64()))
        patched = patched.set_column(patched.schema.get_field_index("trajectory_json"),
                                     "trajectory_json", pa.array(docs, pa.large_string()))
        pq.write_table(patched, path, compression="zstd")
        return {"seconds": time.perf_counter() - t, "n_trajectories": table.num_rows,
                "mean_reward": sum(new) / len(new)}

    async def tool_failure_rate(self, prefix: str = "ERROR") -> dict[str, Any]:
        t = time.perf_counter()
        with duckdb.connect(":memory:") as con:
            calls, failed = con.execute(
                "SELECT count(*), count(*) FILTER (WHERE starts_with(m.content, ?)) "
                "FROM (SELECT unnest(messages) AS m FROM read_parquet(?)) WHERE m.role = 'tool'",
                [prefix, self._glob()],
            ).fetchone()
        return {"seconds": time.perf_counter() - t, "tool_calls": calls, "failed": failed,
                "rate": failed / calls if calls else None}

    async def warmup(self) -> dict[str, Any]:
        return await warmup(self, _SCRATCH, ("analytics", {"engine": "art_loader"}),
                            ("analytics", {"engine": "duckdb"}), ("tool_failure_rate", {}))

    async def bytes_on_disk(self) -> dict[str, Any]:
        t = time.perf_counter()
        parts: dict[str, int] = {}
        files = 0
        root = self._dir()
        for dirpath, _, names in os.walk(root):
            for name in names:
                path = Path(dirpath) / name
                part = path.relative_to(root).parts[0]
                parts[part] = parts.get(part, 0) + path.stat().st_size
                files += 1
        return {"seconds": time.perf_counter() - t, "bytes": sum(parts.values()),
                "files": files, "parts": parts}


async def main() -> None:
    """Answer requests from stdin until ``shutdown`` or end of input (see driver_protocol)."""
    await serve(_PROTO, Driver(), {"art_version": importlib.metadata.version("openpipe-art"),
                                   "python": sys.version.split()[0], "import_seconds": _IMPORT_SECONDS})
    shutil.rmtree(_SCRATCH, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
