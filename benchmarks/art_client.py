"""Python 3.11 side of the benchmarks: start a JSON-lines driver process and talk to it.

>>> with ArtDriver(".bench/art-run", project="bench", name="agent-001") as art:
...     art.log(step=1, split="train", synthetic={"n_groups": 32, "group_size": 16})["seconds"]

:class:`ArtDriver` runs ``art_driver.py`` in ART's venv; :class:`StoreDriver` runs
``store_driver.py`` (artstore) with this interpreter. Both speak the same protocol and answer the
same commands, so the benchmarks time both sides the same way: in a process of their own, each
command timing only the library call. Each method sends one JSON line and returns the driver's
answer (a dict with ``ok`` and ``seconds``); an answer with ``ok: false`` raises
:class:`ArtDriverError` carrying the driver's traceback. See ``art_driver.py`` for the protocol.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.art_env import ensure_art_env

DRIVER = Path(__file__).resolve().parent / "art_driver.py"
STORE_DRIVER = Path(__file__).resolve().parent / "store_driver.py"


class ArtDriverError(RuntimeError):
    """The driver answered with an error, or died."""


class DriverProcess:
    """A running driver bound to one model ``{base_path}/{project}/models/{name}``.

    ``start_seconds`` is the driver's own import time. ``env`` entries are added to the
    driver's environment.
    """

    def __init__(self, base_path: str | Path, project: str = "bench", name: str = "agent-001",
                 *, python: str | Path, driver: Path, init: bool = True,
                 env: dict[str, str] | None = None) -> None:
        self.python = str(python)
        self._stderr = tempfile.TemporaryFile(mode="w+")
        self._proc = subprocess.Popen(
            [self.python, str(driver)],
            env=None if env is None else {**os.environ, **env},
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
            text=True, bufsize=1,
        )
        self._next_id = 0
        ready = self._read()
        self.version = ready.get("version") or ready.get("art_version")
        self.art_version = self.version
        self.python_version = ready.get("python")
        self.start_seconds = ready.get("import_seconds")
        if init:
            self.init(base_path=str(base_path), project=project, name=name)

    # -- transport ---------------------------------------------------------------------------
    def _read(self) -> dict[str, Any]:
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            raise ArtDriverError(f"ART driver exited ({self._proc.poll()}):\n{self.stderr_tail()}")
        message = json.loads(line)
        if not message.get("ok"):
            raise ArtDriverError(f"{message.get('error')}\n{message.get('traceback', '')}")
        return message

    def call(self, cmd: str, **args: Any) -> dict[str, Any]:
        """Send one command and return its answer."""
        if self._proc.poll() is not None:
            raise ArtDriverError(f"ART driver is not running:\n{self.stderr_tail()}")
        assert self._proc.stdin is not None
        self._next_id += 1
        self._proc.stdin.write(json.dumps({"cmd": cmd, "id": self._next_id, **args}) + "\n")
        self._proc.stdin.flush()
        answer = self._read()
        if answer.get("id") != self._next_id:
            raise ArtDriverError(f"answer out of order: {answer}")
        return answer

    def stderr_tail(self, chars: int = 4000) -> str:
        """The end of what the driver wrote to stderr (ART's prints included)."""
        self._stderr.flush()
        self._stderr.seek(0)
        return self._stderr.read()[-chars:]

    # -- commands ----------------------------------------------------------------------------
    def init(self, base_path: str, project: str, name: str, **kw: Any) -> dict[str, Any]:
        return self.call("init", base_path=base_path, project=project, name=name, **kw)

    def log(self, step: int, split: str = "train", *, groups: list[dict] | None = None,
            synthetic: dict[str, Any] | None = None,
            metrics: dict[str, float] | None = None) -> dict[str, Any]:
        """Time ``model.log``; pass plain ``groups`` or a ``synthetic`` spec for ``make_step``."""
        args: dict[str, Any] = {"step": step, "split": split}
        if groups is not None:
            args["groups"] = groups
        if synthetic is not None:
            args["synthetic"] = synthetic
        if metrics is not None:
            args["metrics"] = metrics
        return self.call("log", **args)

    def read_step(self, step: int, split: str = "train") -> dict[str, Any]:
        return self.call("read_step", step=step, split=split)

    def history(self) -> dict[str, Any]:
        return self.call("history")

    def best_checkpoint(self, metric: str = "val/reward",
                        steps: list[int] | None = None) -> dict[str, Any]:
        return self.call("best_checkpoint", metric=metric, steps=steps)

    def analytics(self, engine: str = "duckdb", project_wide: bool = False) -> dict[str, Any]:
        """Mean reward per (split, step); ``project_wide``: per (model, split, step) over every
        model of the project."""
        return self.call("analytics", engine=engine, project_wide=project_wide)

    def tool_failure_rate(self, prefix: str = "ERROR") -> dict[str, Any]:
        return self.call("tool_failure_rate", prefix=prefix)

    def warmup(self) -> dict[str, Any]:
        return self.call("warmup")

    def log_template(self, step: int, template: dict[str, Any], scale: float,
                     split: str = "train") -> dict[str, Any]:
        """Log a cached template step with every reward scaled (see ``synthetic.scaled_reward``)."""
        return self.call("log_template", step=step, template=template, scale=scale, split=split)

    def bytes_on_disk(self, **kw: Any) -> dict[str, Any]:
        return self.call("bytes_on_disk", **kw)

    # -- lifetime ----------------------------------------------------------------------------
    def close(self, timeout: float = 10.0) -> None:
        """Ask the driver to exit; terminate it if it does not within ``timeout`` seconds."""
        if self._proc.poll() is None:
            try:
                self.call("shutdown")
            except (ArtDriverError, OSError, ValueError):
                pass
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.terminate()
                self._proc.wait(timeout)
        for stream in (self._proc.stdin, self._proc.stdout):
            if stream is not None:
                stream.close()
        self._stderr.close()

    def __enter__(self) -> DriverProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ArtDriver(DriverProcess):
    """``art_driver.py`` in ART's venv. ``python`` defaults to the interpreter of the benchmark
    venv, created on first use (network needed once)."""

    side = "ART"

    def __init__(self, base_path: str | Path, project: str = "bench", name: str = "agent-001",
                 *, python: str | Path | None = None, init: bool = True) -> None:
        super().__init__(base_path, project, name, python=python or ensure_art_env(),
                         driver=DRIVER, init=init)


class StoreDriver(DriverProcess):
    """``store_driver.py`` (artstore) with this interpreter (the project's environment)."""

    side = "artstore"

    def __init__(self, base_path: str | Path, project: str = "bench", name: str = "agent-001",
                 *, python: str | Path | None = None, init: bool = True, env: dict[str, str] | None = None) -> None:
        super().__init__(base_path, project, name, python=python or sys.executable,
                         driver=STORE_DRIVER, init=init, env={"LANCE_LOG": "error", **(env or {})})
