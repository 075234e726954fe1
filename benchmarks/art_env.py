"""The OpenPipe ART environment the benchmarks compare against.

openpipe-art 0.5.23 needs Python 3.12, so it lives in its own virtualenv under
``.bench/art-venv/`` (git-ignored), never in the project's environment. :func:`ensure_art_env`
creates it once (network: PyPI) and returns its interpreter; later calls only check a marker file.

The minimal install for what the benchmarks call, without a GPU:

- ``openpipe-art==0.5.23`` with no extras: ``import art``, ``art.Model``/``art.TrainableModel``,
  ``Model.log`` (history.jsonl via ``json``, ``delete_checkpoints`` via polars, both core deps);
- ``pyarrow``: ``art.utils.trajectory_logging.write_trajectory_groups_parquet`` imports it lazily
  (only the ``backend`` extra lists it, and that extra pulls torch, unsloth, vllm's stack);
- ``duckdb``: ``read_trajectory_groups_parquet`` and
  ``art.utils.benchmarking.load_trajectories`` read parquet through it (also ``backend``-only).

Usage: ``python -m benchmarks.art_env`` creates the environment and prints what it installed.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
VENV_DIR = REPO_ROOT / ".bench" / "art-venv"
MARKER = "artbench-env.json"
ART_VERSION = "0.5.23"
REQUIREMENTS = (f"openpipe-art=={ART_VERSION}", "pyarrow>=15", "duckdb>=1.0")


class ArtEnvError(RuntimeError):
    """The ART environment could not be created."""


def find_python312() -> str:
    """Path of a Python 3.12 interpreter: ``$ART_PYTHON``, ``python3.12`` or a pyenv install.

    A pyenv shim named ``python3.12`` may exist without a 3.12 selected, so every candidate is
    run once to check it really is 3.12.
    """
    candidates = [os.environ.get("ART_PYTHON"), shutil.which("python3.12")]
    pyenv_root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    candidates += sorted(glob.glob(f"{pyenv_root}/versions/3.12*/bin/python3.12"), reverse=True)
    candidates += ["/usr/bin/python3.12", "/usr/local/bin/python3.12"]
    for candidate in candidates:
        if not candidate or not os.path.exists(candidate):
            continue
        probe = subprocess.run(
            [candidate, "-c", "import sys; print(sys.version_info[:2] == (3, 12))"],
            capture_output=True, text=True,
        )
        if probe.returncode == 0 and probe.stdout.strip() == "True":
            return candidate
    raise ArtEnvError("no Python 3.12 interpreter found; set ART_PYTHON to one")


def venv_python(venv: Path = VENV_DIR) -> Path:
    """The interpreter inside ``venv``."""
    return venv / "bin" / "python"


def _dir_bytes(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            file = os.path.join(root, name)
            if not os.path.islink(file):
                total += os.path.getsize(file)
    return total


def env_info(venv: Path = VENV_DIR) -> dict | None:
    """The marker written when ``venv`` was created (requirements, versions, seconds, bytes)."""
    marker = venv / MARKER
    if not marker.exists() or not venv_python(venv).exists():
        return None
    return json.loads(marker.read_text())


def ensure_art_env(venv: Path = VENV_DIR, *, quiet: bool = True) -> Path:
    """Create ``venv`` with ART installed unless it already is; return its interpreter.

    Idempotent: an environment whose marker lists the same requirements is reused as is. A
    half-built one (no marker) is removed and built again. Needs network access to PyPI.
    """
    info = env_info(venv)
    if info is not None and tuple(info.get("requirements", ())) == REQUIREMENTS:
        return venv_python(venv)
    if venv.exists():
        shutil.rmtree(venv)
    venv.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    python = find_python312()
    _run([python, "-m", "venv", str(venv)], quiet)
    pip = [str(venv_python(venv)), "-m", "pip", "--disable-pip-version-check"]
    _run([*pip, "install", "--quiet", *REQUIREMENTS], quiet)
    seconds = time.perf_counter() - started
    freeze = subprocess.run([*pip, "freeze"], capture_output=True, text=True, check=True).stdout
    versions = dict(line.split("==", 1) for line in freeze.splitlines() if "==" in line)
    info = {
        "requirements": list(REQUIREMENTS),
        "python": subprocess.run(
            [str(venv_python(venv)), "-c", "import sys; print(sys.version.split()[0])"],
            capture_output=True, text=True, check=True,
        ).stdout.strip(),
        "install_seconds": round(seconds, 1),
        "size_bytes": _dir_bytes(venv),
        "packages": len(versions),
        "versions": {k: v for k, v in versions.items()
                     if k.lower() in {"openpipe-art", "pyarrow", "duckdb", "polars", "openai",
                                      "pydantic"}},
    }
    (venv / "requirements.lock").write_text(freeze)
    (venv / MARKER).write_text(json.dumps(info, indent=2) + "\n")
    return venv_python(venv)


def _run(cmd: list[str], quiet: bool) -> None:
    result = subprocess.run(cmd, capture_output=quiet, text=True)
    if result.returncode != 0:
        detail = (result.stderr or "")[-4000:] if quiet else ""
        raise ArtEnvError(f"{' '.join(cmd[:4])} ... failed ({result.returncode}):\n{detail}")


def main() -> None:
    """Create the environment if needed and print its marker."""
    existed = env_info() is not None
    python = ensure_art_env(quiet=False)
    info = env_info() or {}
    info["reused"] = existed
    info["interpreter"] = str(python)
    json.dump(info, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
