"""Option values read without pydantic (`artstore.cli.plain_params`): the same values and the same
usage errors (exit 2) as typer's own coercion."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

import artstore as art
from artstore.cli import app
from artstore.cli.plain_params import RuntimeParam, _kind

runner = CliRunner()


@pytest.fixture
def store(tmp_path):
    path = str(tmp_path / "store")
    model = art.Model(name="m", project="p", base_path=path, report_metrics=[])
    model.log_sync(None, split="val", step=3, metrics={"reward": 0.5})
    return path


def test_a_choice_is_matched_ignoring_case_and_a_bad_one_is_a_usage_error(store):
    ok = runner.invoke(app, ["runs", "--store", store, "--format", "CSV", "-o", "a=b", "-o", "c=d"])
    assert ok.exit_code == 0, ok.output
    assert ok.output.splitlines()[1].startswith('"p","m",3,0.5,'), ok.output
    bad = runner.invoke(app, ["runs", "--store", store, "--format", "yaml"])
    assert bad.exit_code == 2 and "'yaml' is not one of 'table', 'tsv', 'csv', 'json', 'parquet'" in bad.output


def test_a_path_option_keeps_typers_checks(store, tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    refused = runner.invoke(app, ["runs", "--store", store, "--output", str(folder)])  # dir_okay=False
    assert refused.exit_code == 2 and "is a directory" in refused.output, refused.output
    written = runner.invoke(app, ["runs", "--store", store, "--output", str(tmp_path / "runs.json")])
    assert written.exit_code == 0, written.output
    assert '"model": "m"' in (tmp_path / "runs.json").read_text()


def test_options_other_than_text_choice_flag_or_path_keep_typers_coercion():
    if RuntimeParam is None:
        pytest.skip("this typer has no runtime coercion")
    from typer.models import OptionInfo

    assert _kind(int, OptionInfo()) is None and _kind(list[int], OptionInfo()) is None
    assert _kind(str, OptionInfo(parser=str.upper)) is None
    assert _kind(str, OptionInfo()) == "text" and _kind(list[str], OptionInfo()) == "texts"
