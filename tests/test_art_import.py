"""import-art on real ART run folders (openpipe-art 0.5.9: parquet v1; 0.5.23: parquet v2).

Expected values are read from the fixture files here, independently of artstore's readers.
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import artstore as art
from artstore.art.importer import find_models, import_art, plan_import
from artstore.art.legacy_names import current_metric_name
from artstore.cli import app
from artstore.records.trajectory import Choice
from artstore.storage import Location
from tests.art_fixtures import ART_FIXTURES

FIXTURES = ART_FIXTURES
VERSIONS = ["0.5.9", "0.5.23"]
MODEL = Path("fixture-proj", "models", "agent-001")

pytestmark = pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"ART fixtures not found at {FIXTURES}")


def fixture_dir(version: str) -> Path:
    return FIXTURES / f"art-{version}"


def model_dir(version: str) -> Path:
    return fixture_dir(version) / MODEL


def manifest(version: str) -> dict:
    return json.loads((fixture_dir(version) / "MANIFEST.json").read_text())


def parquet_files(version: str) -> dict[tuple[str, int], Path]:
    return {(p.parent.name, int(p.stem)): p for p in sorted(model_dir(version).glob("trajectories/*/*.parquet"))}


def history_rows(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "history.jsonl").read_text().splitlines() if line.strip()]


def imported(tmp_path, version: str, **kw) -> art.Run:
    store = art.open_store(tmp_path / f"store-{version}")
    import_art(store, fixture_dir(version), **kw)
    return store.run("fixture-proj", "agent-001")


@pytest.fixture(scope="module", params=VERSIONS)
def version_run(request, tmp_path_factory):
    """Each fixture imported once per module (imports are read-only afterwards)."""
    return request.param, imported(tmp_path_factory.mktemp("imp"), request.param)


def test_every_trajectory_lands_with_its_reward_and_group(version_run):
    version, run = version_run
    total = 0
    for (split, step), path in parquet_files(version).items():
        rows = pq.read_table(path).to_pylist()
        total += len(rows)
        groups = run.groups(split=split, step=step)
        by_group: dict[int, list[float]] = {}
        for r in rows:
            by_group.setdefault(r["group_index"], []).append(r["reward"])
        assert [[t.reward for t in g.trajectories] for g in groups] == [by_group[i] for i in sorted(by_group)]
        assert run.trajectories(split=split, step=step)["reward"].to_pylist() == [r["reward"] for r in rows]
    assert run.trajectories().num_rows == total == 96
    assert len(run.groups()) == 24


def test_group_and_trajectory_fields_match_the_fixture(version_run):
    version, run = version_run
    for (split, step), path in parquet_files(version).items():
        rows = pq.read_table(path).to_pylist()
        flat = [t for g in run.groups(split=split, step=step) for t in g.trajectories]
        groups = {r["group_index"]: g for r, g in zip(rows, [g for g in run.groups(split=split, step=step)
                                                              for _ in g.trajectories], strict=True)}
        for r, t in zip(rows, flat, strict=True):
            assert t.metrics == json.loads(r["metrics"])
            assert t.metadata == json.loads(r["metadata"])
            assert t.logs == r["logs"]
            assert t.tools == json.loads(r["tools"])  # v1 too: read from its tools column
            assert [m.message.role if isinstance(m, Choice) else m["role"] for m in t.messages_and_choices] == \
                [m["role"] for m in r["messages"]]
            assert [isinstance(m, Choice) for m in t.messages_and_choices] == [m["trainable"] for m in r["messages"]]
            g = groups[r["group_index"]]
            assert g.metadata == json.loads(r["group_metadata"])
            assert g.metrics == json.loads(r["group_metrics"])
            assert g.logs == r["group_logs"]


def test_v2_full_json_is_preferred_exceptions_histories_and_choices_land(tmp_path):
    run = imported(tmp_path, "0.5.23")
    n_exc = 0
    for (split, step), path in parquet_files("0.5.23").items():
        rows = pq.read_table(path).to_pylist()
        groups = run.groups(split=split, step=step)
        for r in rows:
            g = groups[r["group_index"]]
            gj, tj = json.loads(r["group_json"]), json.loads(r["trajectory_json"])
            assert [e.model_dump() for e in g.exceptions] == gj.get("exceptions", [])
            t = g.trajectories[r["trajectory_index"]]
            dumped = [m.model_dump(mode="json") if isinstance(m, Choice) else m for m in t.messages_and_choices]
            assert dumped == tj["messages_and_choices"]
            assert [h.model_dump(mode="json") for h in t.additional_histories] == tj.get("additional_histories", [])
        n_exc += sum(len(g.exceptions) for g in groups)
    assert n_exc == 1  # the train step-2 group that timed out
    assert run.logs()["num_exceptions"].to_pylist() == [0, 0, 0, 1, 0, 0, 0]


def test_v1_holds_what_v2_holds_except_what_it_cannot(tmp_path):
    v1 = imported(tmp_path, "0.5.9").groups()
    v2 = imported(tmp_path, "0.5.23").groups()
    stripped = [g.model_copy(update={"exceptions": [], "trajectories": [
        t.model_copy(update={"additional_histories": []}) for t in g.trajectories]}) for g in v2]
    assert v1 == stripped
    assert all(not g.exceptions for g in v1)


def as_0_5_23(version: str, name: str) -> str:
    """A history column of the fixture of `version` as 0.5.23 names it (what import-art stores)."""
    return {"train/group_metric_judge_score": "train/group/judge_score",
            "val/group_metric_judge_score": "val/group/judge_score",
            "train/loss/train": "loss/train", "train/loss/grad_norm": "loss/grad_norm",
            "train/loss/learning_rate": "loss/learning_rate"}.get(name, name) if version == "0.5.9" else name


def test_0_5_9_names_are_imported_as_0_5_23_names(tmp_path):
    old = set(imported(tmp_path, "0.5.9").history().column_names)
    new = set(imported(tmp_path, "0.5.23").history().column_names)
    assert old <= new  # 0.5.23 has more columns (counts, cumulative, training_step), never other names
    assert {"val/group/judge_score", "train/group/judge_score", "loss/train", "loss/grad_norm"} <= old
    assert not {n for n in old if "group_metric_" in n or n.startswith("train/loss/")}
    assert current_metric_name("val/data/step_num_scenarios") == "val/data/step_num_scenarios"  # 0.5.23 writes it
    assert current_metric_name("train/data/step_num_scenarios") == "data/step_num_scenarios"
    assert current_metric_name("train/costs/train/sample") == "costs/train/sample"
    assert current_metric_name("val/judge/score") == "val/judge/score"


@pytest.mark.parametrize("version", VERSIONS)
def test_history_rows_land_with_arts_names_steps_and_times(tmp_path, version):
    run = imported(tmp_path, version)
    expected = history_rows(model_dir(version))
    h = run.history().to_pylist()
    assert len(h) == len(expected) == manifest(version)["history_rows"]
    for got, want in zip(h, expected, strict=True):
        assert got["step"] == want["step"]
        assert got["recorded_at"] == datetime.fromisoformat(want["recorded_at"]).replace(tzinfo=UTC)
        metrics = {k: v for k, v in got.items() if k not in ("step", "recorded_at") and v is not None}
        assert metrics == {as_0_5_23(version, k): float(v) for k, v in want.items() if k not in ("step", "recorded_at")}
    names = set(run.history().column_names[2:])
    assert names == {as_0_5_23(version, k) for k in manifest(version)["history_columns"]} - {"step", "recorded_at"}
    # each row is the log() call that wrote its trajectory file: one log per row, split from the file
    assert run.logs()["split"].to_pylist() == ["val", "train", "val", "train", "val", "train", "val"]


@pytest.mark.parametrize("version", VERSIONS)
def test_checkpoints_are_copied_and_registered_ready(tmp_path, version):
    run = imported(tmp_path, version)
    ckpts = run.checkpoints().to_pylist()
    assert [f"{c['step']:04d}" for c in ckpts] == manifest(version)["checkpoints_left"]
    for c in ckpts:
        assert c["status"] == "ready" and not c["linked"]
        assert c["uri"].startswith(str(run.location.uri))
        src = model_dir(version) / "checkpoints" / f"{c['step']:04d}" / "FIXTURE_PLACEHOLDER.txt"
        assert (Path(c["uri"]) / src.name).read_bytes() == src.read_bytes()
        assert c["size_bytes"] == src.stat().st_size
    assert run.latest_checkpoint_step() == 3
    for name in ("model.json", "state.json"):
        assert (Path(run.location.uri) / "art" / name).read_bytes() == (model_dir(version) / name).read_bytes()


def test_link_references_checkpoints_in_place(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(fixture_dir("0.5.23"), src)
    store = art.open_store(tmp_path / "store")
    import_art(store, src, link=True)
    ckpts = store.run("fixture-proj", "agent-001").checkpoints().to_pylist()
    assert [c["uri"] for c in ckpts] == [str(src / MODEL / "checkpoints" / s) for s in ("0002", "0003")]
    assert all(c["linked"] and c["status"] == "ready" for c in ckpts)
    assert not (tmp_path / "store" / MODEL / "checkpoints").exists()


@pytest.mark.parametrize("version", VERSIONS)
def test_importing_again_changes_nothing(tmp_path, version):
    run = imported(tmp_path, version)
    before = (run.versions(), run.checkpoints(), {t: run.read_table(t).num_rows
                                                   for t in ("trajectories", "groups", "metrics")})
    results = import_art(run.store, fixture_dir(version))
    assert (results[0].logs_written, results[0].logs_present) == (0, 7)
    assert (results[0].checkpoints_written, results[0].checkpoints_present) == (0, 2)
    after = (run.versions(), run.checkpoints(), {t: run.read_table(t).num_rows
                                                  for t in ("trajectories", "groups", "metrics")})
    assert after == before


def test_summary_says_what_v1_cannot_hold():
    (plan,) = plan_import(fixture_dir("0.5.9"))
    (held,) = plan.cannot_hold()
    assert held.startswith("7 parquet v1 file(s)")
    for lost in ("exceptions", "additional_histories", "finish_reason"):
        assert lost in held
    (plan2,) = plan_import(fixture_dir("0.5.23"))
    assert plan2.cannot_hold() == [] and plan2.notes == [] and plan2.skipped == []


# -- malformed folders import nothing ---------------------------------------------------------------
def _broken_copy(tmp_path, version: str) -> Path:
    src = tmp_path / "broken"
    shutil.copytree(fixture_dir(version), src)
    return src


@pytest.mark.parametrize("version", VERSIONS)
def test_truncated_parquet_names_the_file_and_imports_nothing(tmp_path, version):
    src = _broken_copy(tmp_path, version)
    bad = src / MODEL / "trajectories" / "train" / "0002.parquet"
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    store = art.open_store(tmp_path / "store")
    with pytest.raises(art.ImportFormatError, match=r"train/0002\.parquet"):
        import_art(store, src)
    assert store.runs() == [] and not (tmp_path / "store").exists()


def test_broken_history_line_names_file_and_line_and_imports_nothing(tmp_path):
    src = _broken_copy(tmp_path, "0.5.23")
    hist = src / MODEL / "history.jsonl"
    lines = hist.read_text().splitlines()
    lines[2] = lines[2][: len(lines[2]) // 2]
    hist.write_text("\n".join(lines) + "\n")
    store = art.open_store(tmp_path / "store")
    with pytest.raises(art.ImportFormatError, match=r"history\.jsonl:3"):
        import_art(store, src)
    assert store.runs() == [] and not (tmp_path / "store").exists()


def test_non_numeric_metric_and_broken_state_json_are_named(tmp_path):
    src = _broken_copy(tmp_path, "0.5.9")
    (src / MODEL / "state.json").write_text("{not json")
    with pytest.raises(art.ImportFormatError, match=r"state\.json"):
        plan_import(src)
    (src / MODEL / "state.json").write_text("{}")
    with (src / MODEL / "history.jsonl").open("a") as f:
        f.write(json.dumps({"val/reward": "high", "step": 4, "recorded_at": "2026-01-01T00:00:00"}) + "\n")
    with pytest.raises(art.ImportFormatError, match=r"history\.jsonl:8: metric 'val/reward'"):
        plan_import(src)


# -- layouts and older formats ----------------------------------------------------------------------
def test_base_project_and_model_folders_find_the_same_run(tmp_path):
    base = fixture_dir("0.5.23")
    for src in (base, base / "fixture-proj", base / "fixture-proj" / "models", base / MODEL):
        ((project, name, folder, rel),) = find_models(Location.parse(src))
        assert (project, name, folder.uri) == ("fixture-proj", "agent-001", str(base / MODEL))
        assert "history.jsonl" in rel
    bare = tmp_path / "somewhere" / "my-run"
    shutil.copytree(base / MODEL, bare)
    with pytest.raises(art.ImportFormatError, match="pass --project"):
        find_models(Location.parse(bare))
    ((project, name, _, _),) = find_models(Location.parse(bare), project="p")
    assert (project, name) == ("p", "my-run")
    with pytest.raises(art.ImportFormatError, match="two ART folders for run fixture-proj/agent-001"):
        find_models(Location.parse(FIXTURES))


def test_five_digit_steps(tmp_path):
    src = _broken_copy(tmp_path, "0.5.23")
    m = src / MODEL
    (m / "trajectories" / "val" / "0003.parquet").rename(m / "trajectories" / "val" / "12345.parquet")
    (m / "checkpoints" / "0003").rename(m / "checkpoints" / "12345")
    rows = history_rows(m)
    rows[-1]["step"] = 12345
    (m / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    store = art.open_store(tmp_path / "store")
    import_art(store, src)
    run = store.run("fixture-proj", "agent-001")
    assert run.trajectories(split="val", step=12345).num_rows == 12
    assert run.history()["step"].to_pylist()[-1] == 12345
    assert run.checkpoints()["step"].to_pylist() == [2, 12345]
    assert Path(run.checkpoints()["uri"].to_pylist()[1]).name == "12345"


def _legacy_group(r: dict, with_metadata: bool) -> dict:
    """A group as ART wrote it before parquet, from a v2 fixture row's full JSON."""
    t = json.loads(r["trajectory_json"])
    t = {k: t.get(k, []) for k in ("reward", "metrics", "metadata", "messages_and_choices", "tools",
                                   "additional_histories", "logs")}
    for m in t["messages_and_choices"]:
        m.pop("logprobs", None)  # ART dropped logprobs from these files
    return {"trajectories": [t], **({"metadata": json.loads(r["group_metadata"])} if with_metadata else {})}


def test_legacy_jsonl_and_yaml_trajectories(tmp_path):
    yaml = pytest.importorskip("yaml")
    src = tmp_path / "legacy" / "proj" / "models" / "old-run"
    (src / "trajectories" / "val").mkdir(parents=True)
    rows = pq.read_table(parquet_files("0.5.23")[("val", 0)]).to_pylist()
    jsonl = "\n".join(json.dumps(_legacy_group(r, False)) for r in rows)
    (src / "trajectories" / "val" / "0000.jsonl").write_text(jsonl)
    (src / "trajectories" / "val" / "0001.yaml").write_text(yaml.dump([_legacy_group(r, True) for r in rows]))
    shutil.copy(parquet_files("0.5.23")[("val", 0)], src / "trajectories" / "val" / "0002.parquet")
    (src / "trajectories" / "val" / "0002.jsonl").write_text(jsonl)  # left beside its migrated parquet
    store = art.open_store(tmp_path / "store")
    (result,) = import_art(store, tmp_path / "legacy")
    run = store.run("proj", "old-run")
    assert dict(result.plan.formats) == {"jsonl": 1, "yaml": 1, "parquet v2": 1}
    assert result.plan.skipped == ["trajectories/val/0002.jsonl: same split and step as "
                                   "trajectories/val/0002.parquet, which was imported"]
    for step in (0, 1):
        groups = run.groups(split="val", step=step)
        assert [g.trajectories[0].reward for g in groups] == [r["reward"] for r in rows]
        assert isinstance(groups[0].trajectories[0].messages_and_choices[2], Choice)
    assert run.groups(split="val", step=1)[0].metadata == json.loads(rows[0]["group_metadata"])
    # no history.jsonl: each file is its own log, metrics computed by artstore (and said so)
    assert run.history()["val/reward"].to_pylist()[0] == pytest.approx(sum(r["reward"] for r in rows) / len(rows))
    assert any("no history row" in n for n in result.plan.notes)


# -- the command line -------------------------------------------------------------------------------
def test_cli_import_with_link_warns_about_pruning_and_dry_run_writes_nothing(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(fixture_dir("0.5.9"), src)
    runner = CliRunner()
    dry = runner.invoke(app, ["import-art", str(src), "--store", str(tmp_path / "store"), "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "dry run" in dry.output and not (tmp_path / "store").exists()
    res = runner.invoke(app, ["import-art", str(src), "--store", str(tmp_path / "store"), "--link"])
    assert res.exit_code == 0, res.output
    out = " ".join(res.output.split())
    assert "24 groups, 96 trajectories, 0 exceptions, 7 history rows, 2 checkpoints" in out
    assert "could not hold: 7 parquet v1 file(s)" in out
    assert "pruning" in out and "deletes the files in the ART folder itself" in out
    bad = src / MODEL / "trajectories" / "val" / "0001.parquet"
    bad.write_bytes(b"PAR1 not really")
    res = runner.invoke(app, ["import-art", str(src), "--store", str(tmp_path / "other")])
    assert res.exit_code == 1 and "0001.parquet" in " ".join(res.output.split())


def test_empty_file_without_history_is_skipped_and_duplicate_indexes_are_refused(tmp_path):
    import pyarrow as pa

    from artstore.art.format import write_parquet_groups

    src = _broken_copy(tmp_path, "0.5.23")
    (src / MODEL / "trajectories" / "test").mkdir()
    (src / MODEL / "trajectories" / "test" / "0007.parquet").write_bytes(write_parquet_groups([], "v2")[0])
    (plan,) = plan_import(src)
    assert "trajectories/test/0007.parquet: no groups and no history row (nothing to store)" in plan.skipped
    bad = src / MODEL / "trajectories" / "val" / "0001.parquet"
    table = pq.read_table(bad)
    i = table.schema.get_field_index("trajectory_index")
    pq.write_table(table.set_column(i, table.schema.field(i), pa.array([0] * table.num_rows, pa.int64())), bad)
    with pytest.raises(art.ImportFormatError, match=r"val/0001\.parquet group 0: duplicate or missing trajectory_index"):
        plan_import(src)


def test_write_log_for_importers_keeps_names_and_times(tmp_path, make_trajectory):
    from artstore.log.commit import write_log

    run = art.open_store(tmp_path / "s").run("p", "m")
    at = datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    rec = write_log(run.location, [art.TrajectoryGroup([make_trajectory(0.5)])], split="val", step=3,
                    metrics={"training_step": 3, "val/group/judge_score": 0.25, "nan": float("nan")},
                    metrics_as_given=True, recorded_at=at, log_id="art-x")
    assert rec.metrics == {"training_step": 3.0, "val/group/judge_score": 0.25}  # nothing computed, NaN dropped
    assert run.history().to_pylist() == [{"step": 3, "recorded_at": at, "training_step": 3.0,
                                          "val/group/judge_score": 0.25}]
    with pytest.raises(art.ValidationError, match="recorded_at"):
        write_log(run.location, None, split="val", step=4, metrics={"a/b": 1.0}, metrics_as_given=True,
                  recorded_at=datetime(2025, 1, 1))  # noqa: DTZ001 (naive on purpose)
