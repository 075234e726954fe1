"""Tags name a logical point of a run (the logs committed by a version) and keep no physical
version unless pinned (`artstore.storage.tags`): every read as of a tag answers the same after
compaction and a cleanup with no window removed the version, a pinned tag keeps the version, and
tags of stores written before (Lance tags) still read."""

from __future__ import annotations

import json
import multiprocessing
import pickle
from datetime import timedelta

import lance
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import artstore as art
from artstore.errors import InvalidNameError, ValidationError, VersionNotFoundError
from artstore.storage import Location, datasets, files, tags
from artstore.storage.version_map import MAP_DIR
from tests.test_version_map import _answers, _clean, _log_steps


def _logs_version(run: art.Run) -> int:
    return datasets.latest_version(run.table_location("logs"))


def _physical(run: art.Run, version: int) -> bool:
    try:
        return datasets.open_dataset(run.table_location("logs"), version=version) is not None
    except VersionNotFoundError:
        return False


def test_a_logical_tag_answers_after_compaction_and_cleanup_removed_its_version(store_location, make_trajectory):
    uri, opts = store_location
    model = store_location.model(name="m", project="p")
    _log_steps(model, make_trajectory, range(3))
    model.flush()
    store, run = store_location.store(), store_location.store().run("p", "m")
    tagged = run.tag("mid")
    assert isinstance(tagged, art.Tag) and not tagged.pinned and tagged == _logs_version(run)
    before = _answers(store, run, "mid")
    _log_steps(model, make_trajectory, range(3, 6))
    model.flush()

    _clean(uri, opts)
    assert not _physical(run, tagged)  # cleanup removed the tagged version: nothing pinned it
    assert _answers(store, run, "mid") == before
    q = "SELECT split, step, count(*) AS n, sum(reward) AS r FROM trajectories GROUP BY ALL ORDER BY ALL"
    assert store.sql(q, as_of={"p/m": "mid"}).replace_schema_metadata(None) == before["sql"]
    # the tag's own record answers it, without the version map
    files.delete(Location.parse(uri, opts).child("p", "models", "m", "logs.lance", MAP_DIR))
    assert _answers(store, run, "mid") == before
    assert run.tags() == {"mid": tagged} and not run.tags()["mid"].pinned


def test_a_pinned_tag_keeps_its_physical_version_through_cleanup(tmp_path, make_trajectory):
    model = art.Model(name="m", project="p", base_path=str(tmp_path), report_metrics=[])
    _log_steps(model, make_trajectory, range(2))
    model.flush()
    run, store = model.run, art.open_store(str(tmp_path))
    pinned = run.tag("kept", pin=True)
    early = run.tag("early-kept", run.versions()[0]["version"], pin=True)
    before = _answers(store, run, "kept")
    _log_steps(model, make_trajectory, range(2, 4))
    model.flush()
    _clean(str(tmp_path))
    assert pinned.pinned and _physical(run, pinned) and _physical(run, early)
    assert _answers(store, run, "kept") == before
    assert {k: (int(v), v.pinned) for k, v in run.tags().items()} == {"kept": (pinned, True),
                                                                      "early-kept": (early, True)}


def test_retagging_a_pinned_tag_without_pin_lets_cleanup_remove_the_version_and_still_answers(tmp_path,
                                                                                             make_trajectory):
    model = art.Model(name="m", project="p", base_path=str(tmp_path), report_metrics=[])
    _log_steps(model, make_trajectory, range(2))
    model.flush()
    run, store = model.run, art.open_store(str(tmp_path))
    version = run.tag("t", pin=True)
    before = _answers(store, run, "t")
    assert not run.tag("t", version).pinned
    assert "t" not in lance.dataset(run.table_location("logs").uri).tags.list()  # unpinned
    _log_steps(model, make_trajectory, range(2, 4))
    model.flush()
    _clean(str(tmp_path))
    assert not _physical(run, version)
    assert _answers(store, run, "t") == before


def test_a_deleted_tag_no_longer_answers_and_its_pinned_version_is_cleaned_up(tmp_path, make_trajectory):
    model = art.Model(name="m", project="p", base_path=str(tmp_path), report_metrics=[])
    _log_steps(model, make_trajectory, range(2))
    model.flush()
    run = model.run
    logical, pinned = run.tag("mid"), run.tag("kept", pin=True)
    old_style = run.tag("old", pin=True)
    files.delete(run.table_location("logs").child(tags.TAGS_DIR, "old.json"))  # a Lance tag only, as before records
    assert run.tags().keys() == {"kept", "mid", "old"}
    assert run.delete_tag("mid") == logical and run.delete_tag("kept") == pinned and run.delete_tag("old") == old_style
    assert run.tags() == {} and lance.dataset(run.table_location("logs").uri).tags.list() == {}
    for name in ("mid", "kept", "old"):
        with pytest.raises(VersionNotFoundError, match=f"no tag '{name}'"):
            run.history(as_of=name)
        with pytest.raises(VersionNotFoundError, match="Run.tags"):
            run.delete_tag(name)
    _log_steps(model, make_trajectory, range(2, 4))
    model.flush()
    _clean(str(tmp_path))
    assert not _physical(run, pinned)  # nothing keeps it any more
    again = run.tag("kept")  # the name is free again
    assert not again.pinned and run.history(as_of="kept").num_rows == run.history().num_rows


def test_a_version_cleaned_up_already_can_be_tagged_but_not_pinned(tmp_path, make_trajectory):
    model = art.Model(name="m", project="p", base_path=str(tmp_path), report_metrics=[])
    _log_steps(model, make_trajectory, range(3))
    model.flush()
    run = model.run
    first = run.versions()[0]["version"]
    before = run.trajectories(as_of=first)
    _clean(str(tmp_path))
    assert not _physical(run, first)
    with pytest.raises(VersionNotFoundError, match="without pin"):
        run.tag("old", first, pin=True)
    assert "old" not in run.tags()
    assert run.tag("old", first) == first
    assert run.trajectories(as_of="old") == before


def test_tags_made_by_lance_in_a_store_written_before_read_as_pinned_tags(tmp_path, make_trajectory):
    model = art.Model(name="m", project="p", base_path=str(tmp_path), report_metrics=[])
    _log_steps(model, make_trajectory, range(2))
    model.flush()
    run, store = model.run, art.open_store(str(tmp_path))
    version = _logs_version(run)
    lance.dataset(run.table_location("logs").uri).tags.create("from-before", version)  # as artstore did
    before = _answers(store, run, version)
    _log_steps(model, make_trajectory, range(2, 4))
    model.flush()
    _clean(str(tmp_path))
    found = run.tags()["from-before"]
    assert found == version and found.pinned and found.committed_at is None
    assert _physical(run, version)
    assert _answers(store, run, "from-before") == before
    assert next(v for v in run.versions() if v["version"] == version)["tags"] == ["from-before"]


@pytest.mark.parametrize("name", ["", ".x", "x.", "a..b", "x.lock", "a b", "a/b", "é", "x" * 129, "t\ud800", 7, None])
def test_a_bad_tag_name_raises_a_validation_error_naming_the_tag_and_writes_nothing(tmp_path, name):
    model = art.Model(name="m", project="p", base_path=str(tmp_path), report_metrics=[])
    model.log_sync(None, split="val", step=0, metrics={"x": 1.0})
    with pytest.raises(InvalidNameError) as caught:
        model.run.tag(name)
    assert caught.value.field == "tag"
    assert model.run.tags() == {}


@pytest.mark.parametrize("version", [-1, 2**64, True, 1.0, "1"])
def test_a_tag_of_something_not_a_version_number_raises_a_validation_error(tmp_path, version):
    model = art.Model(name="m", project="p", base_path=str(tmp_path), report_metrics=[])
    model.log_sync(None, split="val", step=0, metrics={"x": 1.0})
    with pytest.raises(ValidationError) as caught:
        model.run.tag("t", version)
    assert caught.value.field == "version"


def test_a_tag_of_a_version_that_never_existed_is_not_found_and_says_what_to_do(tmp_path):
    model = art.Model(name="m", project="p", base_path=str(tmp_path), report_metrics=[])
    model.log_sync(None, split="val", step=0, metrics={"x": 1.0})
    for never in (0, _logs_version(model.run) + 5):
        with pytest.raises(VersionNotFoundError, match=r"Run\.versions\(\)"):
            model.run.tag("future", never)
    with pytest.raises(VersionNotFoundError, match="nothing to tag"):
        art.open_store(str(tmp_path)).run("p", "none").tag("t")
    assert model.run.tags() == {}
    with pytest.raises(VersionNotFoundError, match="no tag 'future'"):
        model.run.logs(as_of="future")


def _tag_many(uri: str, names: list[str], versions: list[int], out) -> None:
    run = art.open_store(uri).run("p", "m")
    out.put({name: int(run.tag(name, v)) for name, v in zip(names, versions, strict=True)})


def test_two_processes_tagging_at_once_lose_no_tag(tmp_path, make_trajectory):
    model = art.Model(name="m", project="p", base_path=str(tmp_path), report_metrics=[])
    _log_steps(model, make_trajectory, range(3))
    model.flush()
    versions = [v["version"] for v in model.run.versions()]
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    jobs = [ctx.Process(target=_tag_many, args=(str(tmp_path), [f"{who}{i}" for i in range(8)] + ["both"],
                                                [versions[(i + k) % len(versions)] for i in range(9)], out))
            for k, who in enumerate("ab")]
    for j in jobs:
        j.start()
    made = {}
    for _ in jobs:
        made.update(out.get(timeout=120))
    for j in jobs:
        j.join(timeout=60)
        assert j.exitcode == 0
    listed = {k: int(v) for k, v in model.run.tags().items()}
    assert {k: v for k, v in listed.items() if k != "both"} == {k: v for k, v in made.items() if k != "both"}
    assert len(listed) == 17 and listed["both"] in versions  # one of the two writes, whole
    assert model.run.logs(as_of="both") == model.run.logs(as_of=listed["both"])


def test_the_command_line_tags_logically_or_pinned_and_reads_as_of_after_cleanup(tmp_path, make_trajectory):
    from typer.testing import CliRunner

    from artstore.cli import app

    model = art.Model(name="m", project="p", base_path=str(tmp_path), report_metrics=[])
    _log_steps(model, make_trajectory, range(2))
    model.flush()
    cli = CliRunner()

    def run(*args: str) -> str:
        result = cli.invoke(app, [*args, "--store", str(tmp_path)])
        assert result.exit_code == 0, result.output
        return result.output

    version = _logs_version(model.run)
    assert f"tagged version {version} of p/m as 'mid' (logical" in run("tag", "p/m", "mid")
    assert "(pinned" in run("tag", "p/m", "kept", "--version", str(version), "--pin")
    q = "SELECT count(*) AS n FROM trajectories"
    before = json.loads(run("sql", q, "--run", "p/m", "--as-of", "mid", "-f", "json"))
    _log_steps(model, make_trajectory, range(2, 4))
    model.flush()
    _clean(str(tmp_path))
    assert json.loads(run("sql", q, "--run", "p/m", "--as-of", "mid", "-f", "json")) == before == [{"n": 4}]
    assert json.loads(run("sql", q, "--run", "p/m", "--as-of", "kept", "-f", "json")) == before
    shown = " ".join(run("show", "p/m").split())
    assert f"tags kept -> {version} (pinned), mid -> {version}" in shown
    listed = json.loads(run("versions", "p/m", "-f", "json"))
    assert next(v for v in listed if v["version"] == version)["tags"] == ["kept", "mid"]
    bad = cli.invoke(app, ["tag", "p/m", "a b", "--store", str(tmp_path)])
    assert bad.exit_code != 0 and "not a tag name" in bad.output
    assert f"deleted tag 'kept' of p/m (it named version {version})" in run("tag", "p/m", "kept", "--delete")
    listed = json.loads(run("versions", "p/m", "-f", "json"))
    assert next(v for v in listed if v["version"] == version)["tags"] == ["mid"]
    gone = cli.invoke(app, ["tag", "p/m", "kept", "-d", "--store", str(tmp_path)])
    assert gone.exit_code != 0 and "no tag 'kept'" in gone.output


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=st.lists(st.tuples(st.integers(1, 3), st.booleans()), min_size=1, max_size=4))
def test_round_trip_every_tag_reads_what_its_point_held_after_cleanup(tmp_path_factory, plan):
    """Logs in bursts, a tag after each (pinned or not), then compaction and cleanup with no
    window: each tag reads the logs and metrics it read when made."""
    path = str(tmp_path_factory.mktemp("store"))
    model = art.Model(name="m", project="p", base_path=path, report_metrics=[])
    want, step = {}, 0
    for i, (logs, pin) in enumerate(plan):
        for _ in range(logs):
            model.log_sync(None, split="val", step=step, metrics={"reward": step / 7})
            step += 1
        model.flush()
        tag = model.run.tag(f"t{i}", pin=pin)
        assert tag.pinned == pin
        want[f"t{i}"] = (model.run.logs(as_of=f"t{i}")["log_id"], model.run.history(as_of=f"t{i}"))
    _clean(path)
    run = art.open_store(path).run("p", "m")
    for name, (log_ids, history) in want.items():
        assert run.logs(as_of=name)["log_id"] == log_ids
        assert run.history(as_of=name) == history
    assert {k: v.pinned for k, v in run.tags().items()} == {f"t{i}": pin for i, (_, pin) in enumerate(plan)}
    files.delete(Location.parse(path))


def test_a_tag_is_a_record_beside_the_logs_not_a_lance_tag_and_holds_this_processes_queued_logs(tmp_path):
    model = art.Model(name="m", project="p", base_path=str(tmp_path), report_metrics=[], commit="group")
    for step in range(3):
        model.log_sync(None, split="val", step=step, metrics={"x": 1.0}, log_id=f"l{step}")
    tagged = model.run.tag("t")  # no flush: the queued logs land first
    assert model.run.logs(as_of="t")["log_id"].to_pylist() == ["l0", "l1", "l2"]
    logs = model.run.table_location("logs")
    assert lance.dataset(logs.uri).tags.list() == {}
    assert files.list_dir(logs.child(tags.TAGS_DIR)) == ["t.json"]
    again = pickle.loads(pickle.dumps(tagged))
    assert (again, again.pinned, again.committed_at) == (tagged, False, tagged.committed_at)


def test_a_run_whose_logs_have_no_commit_sequence_is_always_tagged_pinned(tmp_path, make_trajectory):
    import pyarrow as pa

    from artstore.log import journal
    from artstore.schema import arrow_schema
    from artstore.storage import keys, writes

    model = art.Model(name="m", project="p", base_path=str(tmp_path), report_metrics=[])
    oldest = pa.schema([f for f in arrow_schema("logs") if f.name not in {*journal.PAYLOAD_COLUMNS, keys.SEQ}])
    writes.create(model.run.table_location("logs"), oldest.empty_table())  # the first layout of `logs`
    model.log_sync([art.TrajectoryGroup([make_trajectory(0.5, 0)])], split="train", step=0)
    model.flush()
    tagged = model.run.tag("t")
    assert tagged.pinned and "t" in lance.dataset(model.run.table_location("logs").uri).tags.list()
    before = model.run.trajectories(as_of="t")
    model.log_sync([art.TrajectoryGroup([make_trajectory(0.5, 1)])], split="train", step=1)
    model.flush()
    art.open_store(str(tmp_path), retention=timedelta(0)).run("p", "m").compact()
    assert not _physical(model.run, 1)  # the cleanup ran
    assert _physical(model.run, tagged) and model.run.trajectories(as_of="t") == before
