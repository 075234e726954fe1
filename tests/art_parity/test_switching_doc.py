"""The quickstart in docs/switching-from-art.md runs as written: its first python block is executed,
with `from trainer import LocalBackend` pointed at `tests/art_parity/doc_backend.py` (a backend at
ART's backend seam, no GPU) and a local OpenAI-compatible server; every other line is the doc's."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import artstore as art
from tests.art_parity.doc_backend import openai_server

DOC = Path(__file__).resolve().parents[2] / "docs" / "switching-from-art.md"
TRAINER_IMPORT = "from trainer import LocalBackend"


def quickstart() -> str:
    return re.search(r"```python\n(.*?)```", DOC.read_text(), re.S).group(1)


def test_the_quickstart_is_arts_with_the_imports_changed():
    code = quickstart()
    assert "import artstore as art                    # was: import art" in code
    assert TRAINER_IMPORT + "          # was: from art.local import LocalBackend" in code
    for pattern in ("run_name=", "art.gather_trajectory_groups(", "art.TrajectoryGroup(rollout(", "backend.train(",
                    "model.log(groups, metrics=result.metrics, step=result.step", "delete_checkpoints(", "get_step()"):
        assert pattern in code


def test_the_readme_shows_the_same_quickstart_after_the_make_commands():
    readme = (DOC.parents[1] / "README.md").read_text()
    assert readme.splitlines()[3:5] == [line for line in readme.splitlines()[3:5] if line.startswith("make ")]
    assert re.search(r"```python\n(.*?)```", readme, re.S).group(1) == quickstart()


def test_the_quickstart_runs(tmp_path, monkeypatch, capsys):
    code = quickstart().replace(TRAINER_IMPORT, "from tests.art_parity.doc_backend import LocalBackend")
    monkeypatch.chdir(tmp_path)
    with openai_server():
        exec(compile(code, str(DOC), "exec"), {"__name__": "__main__"})
    assert "trained to step 6" in capsys.readouterr().out
    run = art.open_store(tmp_path / ".art").run("arithmetic", "agent-001-run1")
    history = run.history()
    train = [s for s, r in zip(history["step"].to_pylist(), history["train/reward"].to_pylist(), strict=True)
             if r is not None]
    val = [s for s, r in zip(history["step"].to_pylist(), history["val/reward"].to_pylist(), strict=True)
           if r is not None]
    assert train == [1, 2, 3, 4, 5, 6] and val == [2, 4, 6]
    assert set(history["train/reward"].to_pylist()) - {None} == {0.5}  # "5" is right for 2+3 only
    kept = sorted(p.name for p in (tmp_path / ".art" / "arithmetic" / "models" / "agent-001-run1" / "checkpoints").iterdir())
    assert history["val/reward"].to_pylist().count(1.0) == 1  # step 2's val: the best
    assert kept == ["0002", "0006"]  # the best val/reward and the latest
    assert len(run.groups(split="train", step=1)) == 2


@pytest.mark.slow
def test_the_quickstart_runs_with_the_trainer(tmp_path, monkeypatch, capsys):
    """The same block with the real `trainer.LocalBackend` (its tiny model, on CPU, served over
    HTTP by the trainer): the only change is that the backend is given that model, since the doc's
    `Qwen/Qwen2.5-0.5B-Instruct` cannot be downloaded here."""
    code = quickstart().replace(TRAINER_IMPORT, "import functools\nimport trainer\n"
                                "LocalBackend = functools.partial(trainer.LocalBackend, 'tiny', device='cpu', serve='hf')")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, str(DOC), "exec"), {"__name__": "__main__"})
    assert "trained to step 6" in capsys.readouterr().out
    history = art.open_store(tmp_path / ".art").run("arithmetic", "agent-001-run1").history()
    steps = history["step"].to_pylist()
    assert [s for s, r in zip(steps, history["train/reward"].to_pylist(), strict=True) if r is not None] == [1, 2, 3, 4, 5, 6]
    assert [s for s, r in zip(steps, history["val/reward"].to_pylist(), strict=True) if r is not None] == [2, 4, 6]
    assert "loss/train" in history.column_names
    kept = sorted(p.name for p in (tmp_path / ".art" / "arithmetic" / "models" / "agent-001-run1" / "checkpoints").iterdir())
    assert kept[-1] == "0006" and len(kept) <= 2  # the latest, and the best val/reward when it is another
