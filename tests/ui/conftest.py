"""UI test fixtures: Debian's chromium driven by playwright (one browser per module), and
`artstore ui` started as a real process on 127.0.0.1 on a free port, stopped after.

Playwright's own browser download (`playwright install`) cannot work here: the browser is the
`chromium` apt package, installed on first use when missing (tests run as root in CI).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
REPO = Path(__file__).resolve().parents[2]


def ensure_chromium() -> str:
    """The path of Debian's chromium, installed with apt when missing."""
    if not os.access(CHROMIUM, os.X_OK):
        if os.geteuid() != 0 or not shutil.which("apt-get"):
            pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium), "
                        "or run `make test`, which does")
        subprocess.run(["apt-get", "update", "-q"], check=True, capture_output=True, timeout=600)
        subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], check=True, capture_output=True, timeout=900,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    return CHROMIUM


@pytest.fixture(scope="module")
def browser():
    """A headless chromium shared by a module's tests (--no-sandbox: the tests run as root)."""
    from playwright.sync_api import sync_playwright

    path = ensure_chromium()
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, headless=True, args=["--no-sandbox", "--disable-gpu"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def shared_page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    p = context.new_page()
    p.errors = []
    p.on("pageerror", lambda e: p.errors.append(str(e)))
    p.on("console", lambda m: p.errors.append(m.text) if m.type == "error" else None)
    try:
        yield p
    finally:
        context.close()


@pytest.fixture
def page(shared_page):
    """The module's page at 1280x800 (loading the app once per module keeps the tests quick:
    `browse.visit` changes only the hash); browser errors collected in `page.errors`, cleared
    for each test."""
    shared_page.errors.clear()
    return shared_page


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(uri: str, storage_options: dict[str, str] | None = None, log: Path | None = None) -> Iterator[str]:
    """`artstore ui --store uri` running on 127.0.0.1 (a real process); yields its base URL."""
    port = free_port()
    cmd = [sys.executable, "-m", "artstore", "ui", "--store", uri, "--port", str(port), "--host", "127.0.0.1"]
    for k, v in (storage_options or {}).items():
        cmd += ["-o", f"{k}={v}"]
    out = open(log, "wb") if log else subprocess.DEVNULL  # closed below
    env = {**os.environ, "PYTHONPATH": str(REPO), "LANCE_LOG": "error"}
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"artstore ui exited with {proc.returncode}: "
                                   + (log.read_text() if log and log.exists() else ""))
            try:
                with urllib.request.urlopen(url + "/api/store", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if log:
            out.close()


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """{relative path: (size, mtime_ns)} of every file under `root`: what "nothing written" compares."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}
