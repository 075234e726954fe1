"""Run one parity script through the real openpipe-art 0.5.23 and through artstore, and read back
what each left behind.

A script in `scripts/` is written for ART (`import art`). For artstore it is copied with that one
line changed to `import artstore as art`; nothing else differs. Each side runs in its own process
and base folder: ART in the cached venv of `tests/art_venv.py`, artstore with this checkout's
interpreter. What is compared is read the way each product offers it: ART's `history.jsonl` and
checkpoint folders, artstore's `Run.history()` and `Run.checkpoints()`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import artstore as art
from tests.art_venv import run_with_art

SCRIPTS = Path(__file__).with_name("scripts")
REPO = Path(__file__).resolve().parents[2]
ART_IMPORT, ARTSTORE_IMPORT = "\nimport art\n", "\nimport artstore as art\n"


def artstore_variant(script: Path, dest: Path) -> Path:
    """`script` with `import art` changed to `import artstore as art` (the only change), at `dest`."""
    text = script.read_text()
    assert text.count(ART_IMPORT) == 1, f"{script.name} must hold `import art` exactly once"
    dest.write_text(text.replace(ART_IMPORT, ARTSTORE_IMPORT))
    return dest


@dataclass
class Side:
    """What one run of a script left: its JSON output and its base folder."""

    returned: dict
    base: Path

    def run_dir(self, project: str, run: str) -> Path:
        return self.base / project / "models" / run

    def checkpoint_folders(self, project: str, run: str) -> list[int]:
        root = self.run_dir(project, run) / "checkpoints"
        return sorted(int(p.name) for p in root.iterdir() if p.name.isdigit())


def run_art(python: str, script: Path, base: Path) -> Side:
    out = run_with_art(python, str(script), str(base), timeout=900)
    return Side(json.loads(out.stdout.strip().splitlines()[-1]), base)


def run_artstore(script: Path, base: Path) -> Side:
    variant = artstore_variant(script, base.parent / f"artstore_{script.name}")
    env = {**os.environ, "PYTHONPATH": str(REPO), "LANCE_LOG": "error", "WANDB_MODE": "disabled"}
    out = subprocess.run([sys.executable, str(variant), str(base)], capture_output=True, text=True,
                         timeout=900, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    return Side(json.loads(out.stdout.strip().splitlines()[-1]), base)


def art_history(side: Side, project: str, run: str) -> list[dict]:
    """ART's history.jsonl rows, without `recorded_at` (a clock reading)."""
    lines = (side.run_dir(project, run) / "history.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(x).items() if k != "recorded_at"} for x in lines if x.strip()]


def artstore_history(side: Side, project: str, run: str) -> list[dict]:
    """`Run.history()` rows, nulls (metrics a row lacks) and `recorded_at` left out."""
    rows = art.open_store(side.base).run(project, run).history().to_pylist()
    return [{k: v for k, v in r.items() if v is not None and k != "recorded_at"} for r in rows]
