"""`artstore checkpoints`, `artstore pin` and `artstore prune` (a dry run unless --apply)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

import artstore as art
from artstore.cli import app

runner = CliRunner()


@pytest.fixture
def store(base_path):
    model = art.TrainableModel(name="agent-001", project="email-search", base_model="b", base_path=base_path,
                               report_metrics=[])
    for step, v in {0: 0.2, 1: 0.9, 2: 0.4, 3: 0.3, 4: 0.1, 5: 0.5}.items():
        model.log_sync(None, split="val", metrics={"reward": v}, step=step)
    for s in range(6):
        d = Path(model.run.checkpoint_uri(s))
        d.mkdir(parents=True)
        (d / "adapter_model.safetensors").write_bytes(b"w" * 1000 * (s + 1))
        model.register_checkpoint(s)
    return base_path


def cli(*args):
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def flat(text):
    return " ".join(text.split())


def lines(output):
    return [line.split(None, 2) for line in output.splitlines()]


def test_prune_is_a_dry_run_with_one_line_per_checkpoint(store):
    code, out = cli("prune", "email-search/agent-001", "--store", store, "--keep-last", "2",
                    "--keep-best", "val/reward")
    assert code == 0, out
    rows = lines(out)
    assert [(r[0], r[1]) for r in rows[:6]] == [("0", "delete"), ("1", "keep"), ("2", "delete"), ("3", "delete"),
                                                ("4", "keep"), ("5", "keep")]
    assert rows[1][2].startswith("best 1: val/reward (max, mean) = 0.9, rank 1 of 6")
    assert rows[5][2] == "latest checkpoint; among the last 2"
    assert rows[0][2].startswith("kept by no rule: not in the last 2; not best 1")
    assert "dry run: 3 checkpoint(s) would be deleted (7.8KiB)" in out  # 1 + 3 + 4 thousand bytes
    code, out = cli("checkpoints", "email-search/agent-001", "--store", store)
    assert code == 0 and out.count("\tready\t") == 6 and "\tdeleted\t" not in out  # nothing changed


def test_prune_apply_with_smoothing_and_budget(store):
    # ema alpha .5 of 0.2, 0.9, 0.4, 0.3, 0.1, 0.5 -> 0.2, 0.55, 0.475, 0.3875, 0.24375, 0.371875
    code, out = cli("prune", "email-search/agent-001", "--store", store, "--keep-best", "val/reward:max",
                    "--best-k", "3", "--smooth", "ema:0.5", "--max-size", "13KB", "--apply")
    assert code == 0, out
    rows = {r[0]: r for r in lines(out)[:6]}
    # best three by ema: 1, 2, 3 (+ latest 5): 2+3+4+6 = 15KB > 13KB -> evict the worst kept, 3
    assert {s for s, r in rows.items() if r[1] == "keep"} == {"1", "2", "5"}
    assert rows["3"][1] == "deleted" and rows["3"][2].startswith("size budget 12.7KiB: evicted")
    assert "deleted 3 checkpoint(s), 9.8KiB freed" in out  # 0, 3, 4: 1 + 4 + 5 KB
    code, out = cli("checkpoints", "email-search/agent-001", "--store", store)
    assert code == 0 and out.count("\tdeleted\t") == 3 and out.count("\tready\t") == 3


def test_prune_every_nth_and_sql(store):
    code, out = cli("prune", "email-search/agent-001", "--store", store, "--keep-every", "2", "--sql",
                    "SELECT step FROM metrics WHERE name = 'val/reward' AND value >= 0.9")
    assert code == 0, out
    assert [r[0] for r in lines(out)[:6] if r[1] == "keep"] == ["0", "1", "2", "4", "5"]


def test_pin_then_prune_keeps_the_pin(store):
    code, out = cli("pin", "email-search/agent-001", "0", "--note", "baseline", "--store", store)
    assert code == 0 and "pinned" in out
    code, out = cli("prune", "email-search/agent-001", "--store", store, "--keep-last", "1")
    assert lines(out)[0][:3] == ["0", "keep", "pinned: baseline"]
    cli("pin", "email-search/agent-001", "0", "--unpin", "--store", store)
    code, out = cli("prune", "email-search/agent-001", "--store", store, "--keep-last", "1")
    assert lines(out)[0][1] == "delete"


def test_prune_errors_are_one_clear_line(store):
    code, out = cli("prune", "email-search/agent-001", "--store", store, "--keep-best", "val/nope", "--apply")
    assert code == 1 and "RetentionError" in out and "Nothing was deleted" in flat(out)
    code, out = cli("prune", "email-search/agent-001", "--store", store, "--keep-best", "val/reward",
                    "--smooth", "median")
    assert code == 1 and "smooth" in out
    code, out = cli("prune", "email-search/agent-001", "--store", store, "--max-size", "lots")
    assert code == 1 and "max_size" in out
    code, out = cli("prune", "email-search/nobody", "--store", store)
    assert code == 3
    code, out = cli("prune", "email-search/agent-001", "--store", store)  # no rules, no stored policy
    assert code == 0 and "would be deleted (0B)" in out


def test_prune_unscored_keep_is_the_default_and_delete_frees_them(base_path):
    model = art.TrainableModel(name="agent-001", project="email-search", base_model="b", base_path=base_path,
                               report_metrics=[])
    for step, v in {0: 0.2, 2: 0.9, 4: 0.1}.items():  # val every 2 steps; checkpoints every step
        model.log_sync(None, split="val", metrics={"reward": v}, step=step)
    for s in range(6):
        d = Path(model.run.checkpoint_uri(s))
        d.mkdir(parents=True)
        (d / "adapter_model.safetensors").write_bytes(b"w" * 1000)
        model.register_checkpoint(s)
    run = ["prune", "email-search/agent-001", "--store", base_path, "--keep-best", "val/reward"]
    code, out = cli(*run)
    assert code == 0, out
    actions = {r[0]: r[1] for r in lines(out)[:6]}
    assert actions == {"0": "delete", "1": "keep", "2": "keep", "3": "keep", "4": "delete", "5": "keep"}
    assert lines(out)[1][2] == "unranked: no val/reward at step 1"
    code, out = cli(*run, "--unscored", "delete", "--apply")
    assert code == 0, out
    actions = {r[0]: r[1] for r in lines(out)[:6]}
    assert actions == {"0": "deleted", "1": "deleted", "2": "keep", "3": "deleted", "4": "deleted", "5": "keep"}
    assert "deleted 4 checkpoint(s), 3.9KiB freed" in out
    code, out = cli("prune", "email-search/agent-001", "--store", base_path, "--unscored", "delete")
    assert code != 0 and "--unscored" in out and "--keep-best" in out
