"""Process plumbing shared by the server modules: free ports, start, wait, stop, reap.

Every server runs in its own session (process group), logs to a file (never a pipe, which
would block the server once full), is stopped with SIGTERM then SIGKILL, and is always
reaped with ``wait()`` so no zombie is left. Three nets catch leaks: the fixtures' finalizers,
an ``atexit`` hook, and ``PR_SET_PDEATHSIG`` (Linux, via `setpriv`) so a server dies with a SIGKILLed pytest.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

log = logging.getLogger(__name__)

LOCALHOST = "127.0.0.1"

_live: set[ServerProcess] = set()
_live_lock = threading.Lock()


def free_ports(n: int = 1) -> list[int]:
    """Return ``n`` distinct TCP ports free on 127.0.0.1 right now.

    All sockets are held open until every port is picked, so the ports are distinct; a
    small race with other programs remains until the server binds them.
    """
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((LOCALHOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def wait_until(
    ready: Callable[[], bool],
    timeout: float,
    what: str,
    proc: ServerProcess | None = None,
    interval: float = 0.05,
) -> float:
    """Poll ``ready()`` every ``interval`` seconds until it is true; return the seconds waited.

    Raises RuntimeError (with the server's log tail) if ``proc`` exits or ``timeout`` seconds
    pass first. Exceptions from ``ready()`` count as "not yet".
    """
    start = time.monotonic()
    while True:
        if proc is not None and not proc.alive:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{proc.log_tail()}")
        with contextlib.suppress(Exception):
            if ready():
                return time.monotonic() - start
        if time.monotonic() - start > timeout:
            tail = proc.log_tail() if proc is not None else ""
            raise RuntimeError(f"{what} not ready after {timeout:.0f} s\n{tail}")
        time.sleep(interval)


def _pdeathsig_prefix() -> list[str]:
    """argv prefix that makes Linux SIGKILL the server when the thread that spawned it dies.

    util-linux's `setpriv` sets it, then execs the server (same pid); a parent killed in the
    instant before that leaves the server running. A `preexec_fn` would do
    the same but runs Python in the forked child, which Lance (not fork-safe) warns about.
    """
    setpriv = shutil.which("setpriv") if sys.platform.startswith("linux") else None
    return [setpriv, "--pdeathsig", "KILL", "--"] if setpriv else []


_PDEATHSIG = _pdeathsig_prefix()


class ServerProcess:
    """One server subprocess in its own process group, logging to ``log_path``."""

    def __init__(
        self, argv: Sequence[str], log_path: Path, env: dict[str, str] | None = None
    ) -> None:
        self.argv = [str(a) for a in argv]
        self.log_path = Path(log_path)
        self.env = env
        self._popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Spawn the process (it must not be running)."""
        if self.alive:
            raise RuntimeError(f"{self.argv[0]} already running")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        # PDEATHSIG fires when the *thread* that forked exits: only safe from the main thread.
        main = threading.current_thread() is threading.main_thread()
        argv = (_PDEATHSIG if main else []) + self.argv
        with open(self.log_path, "ab") as out:
            self._popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=None if self.env is None else {**os.environ, **self.env},
                start_new_session=True,
            )
        with _live_lock:
            _live.add(self)
        log.debug("started pid %s: %s", self._popen.pid, " ".join(self.argv))

    @property
    def pid(self) -> int | None:
        return None if self._popen is None else self._popen.pid

    @property
    def alive(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self._popen is None else self._popen.returncode

    def kill(self) -> None:
        """SIGKILL the whole process group at once (a crash), then reap it."""
        self._signal_and_reap(signal.SIGKILL, grace=0.0)

    def stop(self, grace: float = 3.0) -> None:
        """SIGTERM, wait up to ``grace`` seconds, then SIGKILL; always reaps."""
        self._signal_and_reap(signal.SIGTERM, grace)

    def _signal_and_reap(self, sig: int, grace: float) -> None:
        p = self._popen
        if p is None:
            return
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, sig)
            try:
                p.wait(timeout=grace if sig != signal.SIGKILL else 10.0)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=10.0)
        with _live_lock:
            _live.discard(self)

    def log_tail(self, n_bytes: int = 4000) -> str:
        """The last ``n_bytes`` bytes of the server log, for error messages."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - n_bytes))
                return f.read().decode(errors="replace")
        except OSError:
            return ""


@atexit.register
def _kill_leftovers() -> None:
    """Last net: a fixture finalizer that never ran must not leave a server behind."""
    with _live_lock:
        procs = list(_live)
    for p in procs:
        p.kill()
