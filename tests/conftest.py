"""Shared fixtures: a fresh store (a folder, or a bucket on S3) per test, and builders of
realistic trajectories."""

from __future__ import annotations

import os
import threading
from typing import Any, NamedTuple

import pytest
from openai.types.chat.chat_completion import Choice

import artstore as art

pytest_plugins = ["tests.servers.fixtures"]

os.environ.setdefault("LANCE_LOG", "error")
os.environ.setdefault("WANDB_SILENT", "true")


def tool_call_trajectory(reward: float, i: int = 0, **metrics: float | bool | int) -> art.Trajectory:
    """A small email-search rollout: system, user, a tool call, its result, the answer."""
    return art.Trajectory(
        messages_and_choices=[
            {"role": "system", "content": "You are an email assistant. Use the tools."},
            {"role": "user", "content": f"When is the offsite for project {i}?"},
            Choice(finish_reason="tool_calls", index=0, message={
                "role": "assistant", "content": None,
                "tool_calls": [{"id": f"call_{i}", "type": "function",
                                "function": {"name": "search_inbox", "arguments": f'{{"query": "offsite {i}"}}'}}],
            }),
            {"role": "tool", "tool_call_id": f"call_{i}", "content": '[{"email_id": "e1"}]'},
            Choice(finish_reason="stop", index=0, message={"role": "assistant", "content": f"Day {i}."}),
        ],
        tools=[{"type": "function", "function": {"name": "search_inbox", "parameters": {"type": "object"}}}],
        reward=reward,
        metrics=metrics,
        metadata={"scenario_id": f"s-{i:03d}"},
        logs=[f"rollout {i}"],
    )


def count_calls(monkeypatch, *targets: tuple[object, str]) -> dict[str, int]:
    """Count the calls of each `module.name` in `targets` made on this thread from now on (the
    background upkeep's threads open and read the run too)."""
    counts = dict.fromkeys((name for _, name in targets), 0)
    me = threading.get_ident()
    for module, name in targets:
        real = getattr(module, name)

        def counted(*args, _real=real, _name=name, **kwargs):
            if threading.get_ident() == me:
                counts[_name] += 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(module, name, counted)
    return counts


@pytest.fixture(scope="session", autouse=True)
def _no_idle_folds():
    """Runs a test logs keep the state it made (e.g. logs left unfolded on purpose), also those of
    session fixtures: the fold of quiet runs (`artstore.log.idle_fold`) waits an hour here.
    tests/test_idle_fold.py turns it on."""
    from artstore.log import idle_fold

    idle_fold.FOLD_IDLE_S, before = 3600.0, idle_fold.FOLD_IDLE_S
    yield
    idle_fold.FOLD_IDLE_S = before


@pytest.fixture(autouse=True)
def _drop_idle_folds():
    """What still waits to be folded on idle is dropped after each test (not folded at exit)."""
    yield
    from artstore.log import idle_fold

    idle_fold.drop_waiting()


@pytest.fixture
def stats_refresh_held(monkeypatch, faulty_s3):
    """Runs' stats refreshes in the faulty bucket wait until the test ends, then run while it still
    answers: for tests that count the requests of other upkeep. A refresh falls due 30 s after a
    log on a bucket, so on a slow machine it fell inside the counted logs (its LISTs and manifest
    reads counted as theirs); its own requests are counted by its own tests."""
    from artstore.log import run_stats, upkeep
    from artstore.storage import Location

    monkeypatch.setattr(run_stats, "STATS_DELAY_S", 3600.0)
    yield
    upkeep.wait(Location.parse(faulty_s3.uri, faulty_s3.storage_options), timeout=120)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item):
    """Logs a test queued for a group commit (the default mode) are committed before its fixtures
    stop the servers they were logged to (and the pending files a bucket keeps to delete in a
    batch are deleted); a test that broke its storage on purpose has them dropped, so the
    committer does not retry them against a server that is gone."""
    from artstore.errors import ArtstoreError
    from artstore.log import group_commit, pending_deletes

    try:
        group_commit.flush(timeout=60)
    except ArtstoreError:
        group_commit.drop_queued()
        pending_deletes.forget()
    else:
        pending_deletes.drain()  # a bucket's committed pending files, while its server still runs


@pytest.fixture
def make_trajectory():
    return tool_call_trajectory


@pytest.fixture
def base_path(tmp_path):
    """A fresh store folder."""
    return str(tmp_path / "store")


class StoreLocation(NamedTuple):
    """Where a test's store lives: unpack as ``uri, storage_options = store_location``."""

    uri: str
    storage_options: dict[str, str] | None

    @property
    def kind(self) -> str:
        return "s3" if self.uri.startswith("s3://") else "local"

    def model(self, name: str = "test-model", project: str = "test-project", **kw: Any) -> art.Model:
        """A Model on this store (``report_metrics=[]`` unless given)."""
        kw.setdefault("report_metrics", [])
        return art.Model(name=name, project=project, base_path=self.uri, storage_options=self.storage_options, **kw)

    def store(self) -> art.Store:
        return art.open_store(self.uri, self.storage_options)


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def store_location(request, tmp_path) -> StoreLocation:
    """A fresh, empty store, once on local disk and once in a bucket on moto S3 (over HTTP on
    127.0.0.1): a test that takes this fixture runs twice, and must hold on both.

    Adopt it in a store-behaviour test by replacing ``base_path`` with
    ``uri, opts = store_location`` and ``Model(..., base_path=uri, storage_options=opts)`` /
    ``open_store(uri, opts)`` (or ``store_location.model(...)``, ``store_location.store()``).
    Check files through ``artstore.storage`` (``files.exists(Location.parse(uri, opts).child(...))``),
    not ``pathlib``. ``-m "not s3"`` skips the S3 runs. The S3 options carry short retry and
    timeout knobs, so a broken server fails a test in seconds.
    """
    if request.param == "local":
        return StoreLocation(str(tmp_path / "store"), None)
    bucket = request.getfixturevalue("s3_bucket")
    return StoreLocation(bucket.uri, bucket.storage_options)
