"""`artstore ui` over a demo-like store, driven in headless chromium: every page renders without
an error, charts have points, and the store is not written to. Screenshots go to the test's
tmp dir (printed with -s)."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from tests.ui import stores
from tests.ui.browse import drawn_lines, settle, traces, visit
from tests.ui.conftest import serving, snapshot

RUN_A, RUN_B = (f"{stores.PROJECT}/{name}" for name in stores.RUNS)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo-store")
    store = stores.build_demo(root)
    for run in store.runs():
        run.wait_for_upkeep(30)  # background cleanup of the build's logs finishes before the snapshot
    before = snapshot(root)
    shots = tmp_path_factory.mktemp("screenshots")
    with serving(str(root), log=shots / "server.log") as url:
        yield url, shots
    assert snapshot(root) == before, "the UI wrote to the store"


def test_runs_table_shows_every_run_with_its_full_name(demo, page):
    url, shots = demo
    visit(page, url + "/#runs", shots / "runs.png")
    page.wait_for_function("() => [...document.querySelectorAll('td')].some(td => /^\\d+(\\.\\d)?(KiB|MiB|B)$/.test(td.innerText))")
    for name in stores.RUNS:
        cell = page.locator("td", has_text=name).first
        assert cell.inner_text() == name
        assert cell.evaluate("td => td.scrollWidth <= td.clientWidth"), f"{name} is cut"
    headers = page.locator("th").all_inner_texts()
    for column in ("project", "model", "step", "val/reward", "train/reward", "model.learning_rate", "checkpoints",
                   "status", "size", "config"):
        assert column in headers
    assert "model.group_size" not in headers  # the same in every run: no column of its own
    row = page.locator("table tbody tr", has_text=stores.RUNS[1]).inner_text()
    assert "2.000e-5" in row and '"model.group_size":4' in row
    page.fill("#runs-filter", "ablation")
    assert page.locator("table tbody tr").count() == 1
    page.fill("#runs-filter", "")
    page.locator("th", has_text="val/reward").click()
    page.locator("th", has_text="val/reward").click()  # descending
    first = page.locator("table tbody tr").first.inner_text()
    assert stores.RUNS[1] in first  # the ablation run learns faster (skill +0.1)
    page.screenshot(path=str(shots / "runs-sorted.png"))


def test_chart_overlays_two_runs_with_smoothing_and_val_vs_train(demo, page):
    url, shots = demo
    visit(page, f"{url}/#charts?runs={quote(RUN_A)},{quote(RUN_B)}&metric=val/reward&smooth=ema:0.6&pair=1",
          shots / "chart.png")
    plotted = traces(page, "#chart")
    names = [t["name"] for t in plotted]
    assert any(RUN_A in n for n in names) and any(RUN_B in n for n in names)
    assert any("train/reward" in n for n in names), "val vs train: the train curve is missing"
    assert any("(ema:0.6)" in n for n in names)
    assert all(t["points"] == stores.STEPS and len(t["y"]) == stores.STEPS for t in plotted)
    assert drawn_lines(page, "#chart") == len(plotted)


def test_rollout_viewer_shows_a_tool_call_conversation(demo, page):
    url, shots = demo
    visit(page, f"{url}/#rollouts?run={quote(RUN_A)}&split=train&step=2", shots / "rollouts.png")
    view = page.locator("#group-view")
    call = view.locator(".toolcall").first
    assert "search_inbox" in call.inner_text() and '"max_results": 5' in call.inner_text()
    assert view.locator(".msg.tool", has_text="result of search_inbox").count() >= 4
    assert view.locator(".msg.system").count() == 4 and view.locator(".msg.user").count() == 4
    assert view.locator(".reward").count() == 4
    assert "judge_score" in view.inner_text()

    # sort by reward: the best trajectory first
    page.select_option("#sort-select", "reward-desc")
    settle(page)
    rewards = [float(t.split()[-1]) for t in page.locator(".card-head .reward").all_inner_texts()]
    assert rewards == sorted(rewards, reverse=True)
    assert "best" in page.locator(".card.trajectory").first.get_attribute("class")

    # logprobs on demand
    assert page.locator(".logprobs.values").count() == 0 and page.locator(".logprobs").count() == 4
    page.check("#logprobs-box")
    settle(page)
    assert page.locator(".logprobs.values").count() == 4  # the final answer of each

    # a group with an exception (logged at even steps, group 1)
    page.locator("table.groups tbody tr").nth(1).click()
    settle(page)
    assert "timed out at step 2" in page.locator("#group-view").inner_text()

    # the same scenario across steps
    page.click("#compare-steps")
    page.wait_for_function("() => (document.getElementById('compare-chart') || {}).data")
    plotted = traces(page, "#compare-chart")
    assert plotted[0]["points"] == stores.STEPS
    for by in ("trajectory:scenario_id", "group:scenario"):
        page.select_option("#compare-by", by)
        page.wait_for_function("() => (document.getElementById('compare-chart') || {}).data")
        assert traces(page, "#compare-chart")[0]["points"] == stores.STEPS
    page.screenshot(path=str(shots / "rollouts-compare.png"), full_page=False)
    assert not page.errors


def test_checkpoints_page_shows_the_retention_plan_and_why(demo, page):
    url, shots = demo
    visit(page, f"{url}/#checkpoints?run={quote(RUN_A)}", shots / "checkpoints.png")
    table = page.locator("table.checkpoints")
    assert table.locator("tbody tr").count() == stores.STEPS
    deleted = table.locator("tr.gone")
    assert deleted.count() == 2  # ART's rule at step 3 deleted steps 1 and 2 (not best, not latest)
    assert "kept by no rule" in deleted.first.inner_text()
    plan = page.locator("#plan-summary").inner_text()
    assert "ART's delete_checkpoints rule" in plan and "keeps 2, deletes 2" in plan
    keep, delete = table.locator("tr.keep"), table.locator("tr.delete")
    assert keep.count() == 2 and delete.count() == 2
    assert "best 1: val/reward" in keep.first.inner_text()  # step 4, where the rewards peak
    assert "latest checkpoint" in keep.last.inner_text()  # step 6
    assert "kept by no rule" in delete.first.inner_text()
    summary = page.locator("#checkpoint-summary").inner_text()
    assert f"latest ready: {stores.STEPS}" in summary and "best val/reward: 4" in summary


def test_versions_page_time_travels_to_a_tag(demo, page):
    url, shots = demo
    visit(page, f"{url}/#versions?run={quote(RUN_A)}", shots / "versions.png")
    assert "before-step-4" in page.locator("#tags").inner_text()
    assert '"learning_rate": 0.000005' in page.locator("#config").inner_text()
    assert page.locator("table.versions tbody tr").count() > 5
    tagged = page.locator("table.versions tbody tr", has_text="before-step-4").inner_text()
    assert "train step 3 (0 trajectories)" in tagged and "\t9\t" in tagged  # 3 log calls a step
    page.locator("#tags button").click()
    settle(page)
    assert "before-step-4" in page.locator("#asof-banner").inner_text()
    # the run as of the tag: its chart stops at step 3, the other run's does not
    page.click("nav a[data-page=charts]")
    settle(page)
    points = {t["name"]: t["points"] for t in traces(page, "#chart")}
    assert points[f"{RUN_A}@before-step-4 val/reward"] == 3
    assert points[f"{RUN_B} val/reward"] == stores.STEPS
    page.screenshot(path=str(shots / "time-travel.png"))
    page.click("#asof-banner button")
    page.wait_for_selector("#asof-banner[hidden]", state="attached")


def test_sql_box_shows_a_table_and_a_chart_and_refuses_writes(demo, page):
    url, shots = demo
    q = "SELECT model, step, avg(reward) AS reward FROM trajectories WHERE split = 'train' GROUP BY ALL ORDER BY model, step"
    visit(page, f"{url}/#sql?q={quote(q)}", shots / "sql.png")
    assert page.locator("table.sql-result tbody tr").count() == 2 * stores.STEPS
    plotted = traces(page, "#sql-chart")
    assert len(plotted) == 2 and all(t["points"] == stores.STEPS for t in plotted)  # one series per model
    assert drawn_lines(page, "#sql-chart") == 2

    page.fill("#sql-query", "DELETE FROM trajectories")
    page.click("#sql-run")
    settle(page)
    assert "read-only" in page.locator(".error").inner_text()
