"""The real openpipe-art 0.5.23, in its own cached Python 3.12 venv, for tests that check artstore
against it (the export test, the parity suite).

The venv holds `openpipe-art==0.5.23` plus `duckdb` and `pyarrow` (its parquet reader's
backend-extra needs). It lives at $ARTSTORE_ART_VENV, default ~/.cache/artstore-test/art-venv-0.5.23,
is built once (about 2-3 minutes from PyPI) and reused; a file written last marks it complete and
holds the build time in seconds. When it cannot be built (no Python 3.12, no network) the test
asking for it skips with the reason.
"""

from __future__ import annotations

import fcntl
import glob
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

ART_VERSION = "0.5.23"
ART_VENV = Path(os.environ.get("ARTSTORE_ART_VENV",
                               Path.home() / ".cache" / "artstore-test" / f"art-venv-{ART_VERSION}"))
# ART imports litellm, which fetches a cost map over the network at import unless told not to.
ART_ENV = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "WANDB_MODE": "disabled", "WANDB_SILENT": "true"}


def _python312() -> str | None:
    candidates = [os.environ.get("ARTSTORE_PYTHON312"), shutil.which("python3.12"),
                  *sorted(glob.glob(str(Path.home() / ".pyenv" / "versions" / "3.12*" / "bin" / "python3.12")))]
    for c in filter(None, candidates):
        try:
            out = subprocess.run([c, "-c", "import sys; print(sys.version_info[:2] == (3, 12))"],
                                 capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if out.stdout.strip() == "True":
            return c
    return None


def build_art_venv() -> tuple[str, str]:
    """(python of the cached openpipe-art venv, a note on how it was had); builds it on first use.
    Skips the calling test with the reason when it cannot be built."""
    ART_VENV.parent.mkdir(parents=True, exist_ok=True)
    # one builder at a time: pytest-xdist's workers may each ask for it at once
    with open(ART_VENV.parent / f"{ART_VENV.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _build_art_venv()


def _build_art_venv() -> tuple[str, str]:
    py = ART_VENV / "bin" / "python"
    stamp = ART_VENV / "artstore-install-seconds"
    if stamp.exists():
        return str(py), f"cached; built in {stamp.read_text().strip()} s"
    base = _python312()
    if base is None:
        pytest.skip("no Python 3.12 found (openpipe-art 0.5.23 needs it); set ARTSTORE_PYTHON312")
    shutil.rmtree(ART_VENV, ignore_errors=True)  # built in place; the stamp written last marks it complete
    start = time.monotonic()
    try:
        subprocess.run([base, "-m", "venv", str(ART_VENV)], check=True, capture_output=True, timeout=300)
        subprocess.run([str(ART_VENV / "bin" / "pip"), "install", "-q", "--disable-pip-version-check",
                        f"openpipe-art=={ART_VERSION}", "duckdb", "pyarrow"],
                       check=True, capture_output=True, text=True, timeout=1200)
    except subprocess.CalledProcessError as e:
        shutil.rmtree(ART_VENV, ignore_errors=True)
        pytest.skip(f"could not install openpipe-art=={ART_VERSION} (no network?): {(e.stderr or '')[-300:]}")
    except subprocess.TimeoutExpired:
        shutil.rmtree(ART_VENV, ignore_errors=True)
        pytest.skip(f"installing openpipe-art=={ART_VERSION} timed out")
    stamp.write_text(f"{time.monotonic() - start:.0f}")
    return str(py), f"built in {stamp.read_text()} s"


def art_python(capsys) -> str:
    """The cached openpipe-art venv's python (see `build_art_venv`); says in the test output whether
    it was built or reused."""
    py, note = build_art_venv()
    with capsys.disabled():  # shown in every run's output
        print(f"\nopenpipe-art {ART_VERSION} venv at {ART_VENV}: {note}")
    return py


def run_with_art(python: str, *args: str, timeout: float = 600, cwd: str | Path | None = None
                 ) -> subprocess.CompletedProcess:
    """Run `python *args` in the openpipe-art venv (network-free settings), failing on a non-zero exit."""
    env = {**os.environ, **ART_ENV}
    env.pop("PYTHONPATH", None)  # artstore's tree must not shadow anything in ART's venv
    # -P: the script's folder (tests/, which holds a `tests/art` package) must not shadow ART's `art`
    out = subprocess.run([python, "-P", *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd)
    assert out.returncode == 0, out.stderr[-3000:]
    return out
