"""Parity with the real openpipe-art 0.5.23 for `delete_checkpoints()` at its edges
(`scripts/delete_checkpoints_edges.py`, run under ART and, changed only in its import, under
artstore; the backend is a user backend at ART's seam writing ART's checkpoint folders):
the best step with a checkpoint, the best step without one (step 0), and a metric never logged,
the one difference kept on purpose (docs/switching-from-art.md)."""

from __future__ import annotations

import pytest

from tests.art_parity.harness import SCRIPTS, run_art, run_artstore
from tests.art_venv import build_art_venv

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]  # the first use builds the ART venv (~3 min)
SCRIPT = SCRIPTS / "delete_checkpoints_edges.py"


@pytest.fixture(scope="module")
def sides(tmp_path_factory):
    root = tmp_path_factory.mktemp("edges")
    return run_art(build_art_venv()[0], SCRIPT, root / "art"), run_artstore(SCRIPT, root / "artstore")


@pytest.mark.parametrize(("case", "kept"), [("best_between", [2, 4]), ("best_before_training", [4])])
def test_the_same_checkpoints_are_kept(sides, case, kept):
    theirs, ours = sides
    assert ours.checkpoint_folders("edges", case) == theirs.checkpoint_folders("edges", case) == kept
    assert ours.returned[case] == theirs.returned[case] == {"error": None, "step": 4}


def test_a_metric_never_logged_is_an_error_in_artstore_where_art_deletes_the_best(sides):
    theirs, ours = sides
    assert theirs.returned["no_val"]["error"] is None
    assert theirs.checkpoint_folders("edges", "no_val") == [4]  # ART kept the latest only
    assert ours.returned["no_val"]["error"] == "RetentionError"
    assert ours.checkpoint_folders("edges", "no_val") == [1, 2, 3, 4]  # nothing deleted
