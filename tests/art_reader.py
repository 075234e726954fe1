"""Run by tests under the real openpipe-art (its own venv, Python 3.12): read an ART model folder
with ART's readers and print what they see as JSON.

    python tests/art_reader.py MODEL_FOLDER [MODEL_FOLDER ...]

Per folder: every trajectory file through `art.utils.trajectory_logging.read_trajectory_groups_parquet`
(groups dumped with `model_dump(mode="json")`), history.jsonl through polars (as ART's
`delete_checkpoints` reads it), and the best `val/reward` step ART's `delete_checkpoints` would keep.
"""

import json
import sys
from importlib.metadata import version
from pathlib import Path

import polars as pl
from art.utils.trajectory_logging import read_trajectory_groups_parquet


def read_folder(folder: Path) -> dict:
    trajectories = {}
    for path in sorted(folder.glob("trajectories/*/*.parquet")):
        groups = read_trajectory_groups_parquet(path)
        trajectories[f"{path.parent.name}/{path.name}"] = [g.model_dump(mode="json") for g in groups]
    history = pl.read_ndjson(folder / "history.jsonl")
    best_step = (  # openpipe-art 0.5.23 Model.delete_checkpoints(best_checkpoint_metric="val/reward")
        history.drop_nulls(subset=["val/reward"]).group_by("step").agg(pl.col("val/reward").mean())
        .sort("val/reward").select(pl.col("step").last()).item()
    )
    return {"trajectories": trajectories, "history": history.to_dicts(), "best_step": best_step,
            "checkpoints": sorted(p.name for p in (folder / "checkpoints").iterdir())}


if __name__ == "__main__":
    out = {"openpipe_art": version("openpipe-art"), "folders": [read_folder(Path(a)) for a in sys.argv[1:]]}
    json.dump(out, sys.stdout, default=str)
