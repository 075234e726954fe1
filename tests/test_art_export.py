"""export-art: runs out as ART model folders, checked by re-import and by the real openpipe-art.

The openpipe-art test runs ART's readers in the cached Python 3.12 venv of `tests/art_venv.py`
(built once; the test skips with the reason when that cannot be done).
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from openai.types.chat.chat_completion import Choice
from typer.testing import CliRunner

import artstore as art
from artstore.art.exporter import export_art
from artstore.art.importer import import_art
from artstore.art.legacy_names import current_metric_name
from artstore.cli import app
from tests.art_fixtures import ART_FIXTURES
from tests.art_venv import ART_VERSION, art_python, run_with_art

FIXTURES = ART_FIXTURES
MODEL = Path("fixture-proj", "models", "agent-001")

pytestmark = pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"ART fixtures not found at {FIXTURES}")


def as_stored(version: str, row: dict) -> dict:
    """A history row of the fixture of `version` as the store holds it: import-art gives 0.5.9's
    names 0.5.23's (`val/group_metric_judge_score` -> `val/group/judge_score`, ...)."""
    return {current_metric_name(k): v for k, v in row.items()} if version == "0.5.9" else row


def imported_run(tmp_path, version: str, name: str = "store") -> art.Run:
    store = art.open_store(tmp_path / name)
    import_art(store, FIXTURES / f"art-{version}")
    return store.run("fixture-proj", "agent-001")


def reimport(tmp_path, folder: Path) -> art.Run:
    store = art.open_store(tmp_path / "again")
    import_art(store, folder)
    return store.run("fixture-proj", "agent-001")


def same_history(a: art.Run, b: art.Run) -> None:
    ha, hb = a.history(), b.history()
    assert ha.num_rows == hb.num_rows
    assert sorted(ha.column_names) == sorted(hb.column_names)
    assert ha.to_pylist() == hb.select(ha.column_names).to_pylist()


@pytest.mark.parametrize(("version", "fmt"), [("0.5.23", "v2"), ("0.5.9", "v1"), ("0.5.9", "v2")])
def test_import_export_import_gives_an_equal_run(tmp_path, version, fmt):
    run = imported_run(tmp_path, version)
    dest = tmp_path / "out" / MODEL
    report = export_art(run, dest, format=fmt)
    assert (report.trajectory_files, report.groups, report.trajectories, report.history_rows) == (7, 24, 96, 7)
    assert report.checkpoints == [2, 3] and report.art_files == ["model.json", "state.json"]
    assert not report.lost
    again = reimport(tmp_path, tmp_path / "out")
    assert again.groups() == run.groups()
    same_history(run, again)
    assert again.checkpoints()["step"].to_pylist() == [2, 3]
    for name in ("model.json", "state.json"):
        assert (dest / name).read_bytes() == (FIXTURES / f"art-{version}" / MODEL / name).read_bytes()


@pytest.mark.parametrize("version", ["0.5.9", "0.5.23"])
def test_exported_files_have_arts_layout_and_schema(tmp_path, version):
    fmt = {"0.5.9": "v1", "0.5.23": "v2"}[version]
    export_art(imported_run(tmp_path, version), tmp_path / "out", format=fmt)
    src = FIXTURES / f"art-{version}" / MODEL
    ours = sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*") if p.is_file())
    theirs = sorted(str(p.relative_to(src)) for p in src.rglob("*") if p.is_file())
    assert ours == theirs
    for p in src.glob("trajectories/*/*.parquet"):
        exported = tmp_path / "out" / p.relative_to(src)
        assert pq.read_schema(exported) == pq.read_schema(p)
        assert pq.read_schema(exported).metadata == pq.read_schema(p).metadata
    lines = [json.loads(x) for x in (tmp_path / "out" / "history.jsonl").read_text().splitlines()]
    assert lines == [as_stored(version, json.loads(x)) for x in (src / "history.jsonl").read_text().splitlines()]


def test_v1_export_says_what_it_cannot_hold(tmp_path):
    run = imported_run(tmp_path, "0.5.23")
    report = export_art(run, tmp_path / "out" / MODEL, format="v1")
    assert report.lost == {"group exceptions": 1, "additional_histories": 24}
    again = reimport(tmp_path, tmp_path / "out")
    stripped = [g.model_copy(update={"exceptions": [], "trajectories": [
        t.model_copy(update={"additional_histories": []}) for t in g.trajectories]}) for g in run.groups()]
    assert again.groups() == stripped


async def test_native_run_round_trips_through_v2(tmp_path, make_trajectory):
    model = art.TrainableModel(name="m", project="p", base_model="b", base_path=str(tmp_path / "s"), report_metrics=[])
    chosen = Choice.model_validate({"finish_reason": "length", "index": 0, "message": {
        "role": "assistant", "content": "hi", "refusal": None},
        "logprobs": {"content": [{"token": "hi", "logprob": -0.5, "bytes": None, "top_logprobs": []}]}})
    await model.log([art.TrajectoryGroup([make_trajectory(0.5, 1), make_trajectory(1.0, 2)], metadata={"g": 1}),
                     art.TrajectoryGroup([RuntimeError("boom")], logs=["only an exception"])], split="val")
    await model.log([art.TrajectoryGroup([art.Trajectory(messages_and_choices=[
        {"role": "user", "content": [{"type": "text", "text": "multi"}]}, chosen], reward=2.0,
        initial_policy_version=3, final_policy_version=4)])], split="val")  # same split and step
    await model.log(None, split="train", metrics={"loss/train": 0.25}, step=12345)
    dest = tmp_path / "out" / "p" / "models" / "m"
    report = export_art(model.run, dest)
    assert report.trajectory_files == 1 and report.groups == 3 and not report.lost
    assert (dest / "trajectories" / "val" / "0000.parquet").exists()
    again = art.open_store(tmp_path / "again")
    import_art(again, tmp_path / "out")
    run = again.run("p", "m")
    assert run.groups() == model.run.groups()
    same_history(model.run, run)
    metrics = run.metrics()
    assert metrics.filter(pc.equal(metrics["name"], "loss/train"))["step"].to_pylist() == [12345]
    lost = export_art(model.run, tmp_path / "v1", format="v1").lost
    assert lost == {"group exceptions": 1, "groups without trajectories": 1, "policy versions": 1,
                    "Choice details (finish_reason, logprobs, refusal)": 1,
                    "messages with multi-part content (v1 holds text only)": 1}


def test_export_refuses_a_folder_that_is_not_empty(tmp_path):
    run = imported_run(tmp_path, "0.5.9")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(art.ValidationError, match="not empty"):
        export_art(run, tmp_path / "out")
    with pytest.raises(art.ValidationError, match="format"):
        export_art(run, tmp_path / "new", format="v3")


def test_cli_export(tmp_path):
    imported_run(tmp_path, "0.5.23")
    res = CliRunner().invoke(app, ["export-art", "fixture-proj/agent-001", str(tmp_path / "out"),
                                   "--store", str(tmp_path / "store"), "--format", "v1"])
    assert res.exit_code == 0, res.output
    out = " ".join(res.output.split())
    assert "7 trajectory files, 24 groups, 96 trajectories, 7 history rows, 2 checkpoints" in out
    assert "not held by parquet v1: group exceptions (1)" in out
    res = CliRunner().invoke(app, ["export-art", "fixture-proj/nope", str(tmp_path / "o2"),
                                   "--store", str(tmp_path / "store")])
    assert res.exit_code == 3


# -- the real openpipe-art reads what we export -----------------------------------------------------
def read_with_art(python: str, *folders: Path) -> list[dict]:
    out = run_with_art(python, str(Path(__file__).with_name("art_reader.py")), *map(str, folders))
    result = json.loads(out.stdout)
    assert result["openpipe_art"] == ART_VERSION
    return result["folders"]


@pytest.mark.slow
def test_openpipe_art_reads_our_exports_as_it_reads_its_own_files(tmp_path, capsys):
    python = art_python(capsys)
    folders = []
    for version, fmt in (("0.5.23", "v2"), ("0.5.9", "v1"), ("0.5.9", "v2")):
        out = tmp_path / f"{version}-{fmt}"
        export_art(imported_run(tmp_path, version, f"store-{version}-{fmt}"), out, format=fmt)
        folders += [FIXTURES / f"art-{version}" / MODEL, out]
    seen = read_with_art(python, *folders)
    for version, theirs, ours in zip(("0.5.23", "0.5.9", "0.5.9"), seen[0::2], seen[1::2], strict=True):
        assert ours["history"] == [as_stored(version, row) for row in theirs["history"]]
        assert ours["best_step"] == theirs["best_step"] == 2
        assert ours["checkpoints"] == theirs["checkpoints"] == ["0002", "0003"]
        assert ours["trajectories"].keys() == theirs["trajectories"].keys()
    # v2 of a v2 run and v1 of a v1 run: ART sees exactly what it wrote
    assert seen[1]["trajectories"] == seen[0]["trajectories"]
    assert seen[3]["trajectories"] == seen[2]["trajectories"]
    # v2 of a v1 run: ART now also sees the tools its own v1 reader dropped, and Choice objects
    for theirs, ours in zip(seen[4]["trajectories"]["train/0002.parquet"],
                            seen[5]["trajectories"]["train/0002.parquet"], strict=True):
        assert [t["reward"] for t in ours["trajectories"]] == [t["reward"] for t in theirs["trajectories"]]
        assert all(t.get("tools") for t in ours["trajectories"])
        assert not any(t.get("tools") for t in theirs["trajectories"])
        trainable = [t["messages_and_choices"][2] for t in ours["trajectories"]]
        assert all(m["finish_reason"] == "tool_calls" for m in trainable)  # a Choice again, not a dict
        assert not any("finish_reason" in t["messages_and_choices"][2] for t in theirs["trajectories"])
