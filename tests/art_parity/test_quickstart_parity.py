"""Parity with the real openpipe-art 0.5.23: `scripts/quickstart.py` (an ART quickstart-style run:
tool calls, `Choice` objects, rollouts that raise, metadata, metrics, costs, val every 4 steps,
`get_step`, state, a resume, `delete_checkpoints`) runs once under ART and once under artstore,
changed only in its import; what each left is compared field by field.

ART's training needs a GPU, so the script trains through a user backend at ART's backend seam
(the methods `Model` calls on its backend, as ART's own unit tests stub them): it writes the
checkpoint folder ART's LocalBackend writes and returns loss metrics. Everything else (metric
names and values, history, cumulative and cost rollups, state, step, which checkpoints are kept)
is each library's own. Differences that remain are listed in docs/switching-from-art.md.
The ART side needs the cached venv of tests/art_venv.py (skips with the reason without it).
"""

from __future__ import annotations

import json

import pytest

import artstore as art
from artstore.art.exporter import export_art
from tests.art_parity.harness import (
    ART_IMPORT,
    ARTSTORE_IMPORT,
    SCRIPTS,
    art_history,
    artstore_history,
    artstore_variant,
    run_art,
    run_artstore,
)
from tests.art_venv import build_art_venv, run_with_art

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]  # the first use builds the ART venv (~3 min)
SCRIPT = SCRIPTS / "quickstart.py"
PROJECT, RUN = "parity", "agent-001"
ART_READER = str(SCRIPTS.parents[1] / "art_reader.py")


def _python() -> str:
    return build_art_venv()[0]


@pytest.fixture(scope="module")
def sides(tmp_path_factory):
    python = _python()
    root = tmp_path_factory.mktemp("parity")
    return run_art(python, SCRIPT, root / "art"), run_artstore(SCRIPT, root / "artstore")


def test_the_script_differs_only_in_its_import(tmp_path):
    ours = artstore_variant(SCRIPT, tmp_path / "s.py").read_text().splitlines()
    theirs = SCRIPT.read_text().splitlines()
    changed = [(a, b) for a, b in zip(theirs, ours, strict=True) if a != b]
    assert changed == [(ART_IMPORT.strip(), ARTSTORE_IMPORT.strip())]


def test_the_user_api_returns_the_same(sides):
    theirs, ours = (s.returned for s in sides)
    for key in ("first_step", "steps", "val_steps", "resumed_at", "final_step", "step_after_delete"):
        assert ours[key] == theirs[key], key
    assert theirs["steps"] == list(range(1, 21)) and theirs["val_steps"] == [0, 4, 8, 12, 16, 20]


def test_history_rows_have_the_same_names_and_values(sides):
    theirs, ours = art_history(sides[0], PROJECT, RUN), artstore_history(sides[1], PROJECT, RUN)
    assert len(ours) == len(theirs) == 26  # 20 train rows, 6 val rows, in log order
    for i, (a, b) in enumerate(zip(theirs, ours, strict=True)):
        assert sorted(b) == sorted(a), f"row {i} (step {a['step']}): names differ"
        assert b == pytest.approx(a, rel=1e-9, abs=1e-12), f"row {i} (step {a['step']}): values differ"


def test_delete_checkpoints_keeps_the_same_checkpoints(sides):
    theirs = sides[0].checkpoint_folders(PROJECT, RUN)
    ours = sides[1].checkpoint_folders(PROJECT, RUN)
    assert ours == theirs == [12, 20]  # the best val/reward (step 12) and the latest; 18 others deleted
    rows = art.open_store(sides[1].base).run(PROJECT, RUN).checkpoints_table().list()
    assert {c.step: c.status for c in rows} == {s: "ready" if s in (12, 20) else "deleted" for s in range(1, 21)}


def test_state_is_the_same(sides):
    def normal(state):
        builder = state.get("_metrics_builder_state")
        if builder and "unique_scenario_ids" in builder:  # a set in ART: its order is arbitrary
            builder["unique_scenario_ids"] = sorted(builder["unique_scenario_ids"])
        return state
    theirs, ours = (s.returned for s in sides)
    for key in ("state_before_resume", "state_after_resume", "state"):
        assert normal(ours[key]) == normal(theirs[key]), key


def in_attempt_order(group: dict) -> dict:
    """A group with its trajectories sorted by rollout: both libraries keep a group gathered from
    awaitables in completion order, and rollouts that finish in the same event-loop turn are
    ordered by each library's scheduling; an exception's traceback runs through each library's own
    files, so only its last line (type and message) is compared (see docs/switching-from-art.md)."""
    out = {**group, "trajectories": sorted(group["trajectories"], key=lambda t: t["metadata"]["attempt"])}
    if group.get("exceptions"):
        out["exceptions"] = [{**e, "traceback": e["traceback"].strip().splitlines()[-1]} for e in group["exceptions"]]
    return out


def test_art_reads_an_artstore_export_as_it_reads_its_own_files(sides, tmp_path):
    run = art.open_store(sides[1].base).run(PROJECT, RUN)
    export_art(run, tmp_path / "export")
    out = run_with_art(_python(), ART_READER, str(sides[0].run_dir(PROJECT, RUN)), str(tmp_path / "export"))
    theirs, ours = json.loads(out.stdout)["folders"]
    assert sorted(ours["trajectories"]) == sorted(theirs["trajectories"])
    assert len(theirs["trajectories"]) == 26
    for name, groups in theirs["trajectories"].items():
        assert [in_attempt_order(g) for g in ours["trajectories"][name]] == [in_attempt_order(g) for g in groups], name
    assert ours["best_step"] == theirs["best_step"] == 12
    assert ours["checkpoints"] == theirs["checkpoints"] == ["0012", "0020"]
