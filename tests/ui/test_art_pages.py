"""`artstore ui` over the real ART run folders (openpipe-art 0.5.9 and 0.5.23) imported with
import-art, driven in headless chromium."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from tests.ui import stores
from tests.ui.browse import drawn_lines, settle, traces, visit
from tests.ui.conftest import serving, snapshot

OLD, NEW = "art-0.5.9/agent-001", "art-0.5.23/agent-001"

pytestmark = pytest.mark.skipif(not stores.ART_FIXTURES.is_dir(), reason=f"no ART fixtures at {stores.ART_FIXTURES}")


@pytest.fixture(scope="module")
def art_ui(tmp_path_factory):
    root = tmp_path_factory.mktemp("art-store")
    store = stores.build_art(root)
    for run in store.runs():
        run.wait_for_upkeep(30)
    before = snapshot(root / "store")
    shots = tmp_path_factory.mktemp("screenshots")
    with serving(store.uri, log=shots / "server.log") as url:
        yield url, shots
    assert snapshot(root / "store") == before, "the UI wrote to the store"


def test_runs_table_lists_both_imported_art_runs(art_ui, page):
    url, shots = art_ui
    visit(page, url + "/#runs", shots / "runs.png")
    body = page.locator("table tbody").inner_text()
    assert "art-0.5.9" in body and "art-0.5.23" in body
    row = page.locator("table tbody tr", has_text="art-0.5.23").inner_text()
    assert "0.7507" in row  # val/reward of the last val step, from the fixture's history.jsonl


def test_chart_overlays_the_two_art_runs(art_ui, page):
    url, shots = art_ui
    visit(page, f"{url}/#charts?runs={quote(OLD)},{quote(NEW)}&metric=val/reward", shots / "chart.png")
    plotted = traces(page, "#chart")
    assert {t["name"] for t in plotted} == {f"{OLD} val/reward", f"{NEW} val/reward"}
    assert all(t["points"] == 4 and len(t["y"]) == 4 for t in plotted)  # val at steps 0..3
    assert drawn_lines(page, "#chart") == 2


def test_rollout_viewer_shows_an_art_tool_call_trajectory(art_ui, page):
    url, shots = art_ui
    visit(page, f"{url}/#rollouts?run={quote(NEW)}&split=train&step=2", shots / "rollouts.png")
    view = page.locator("#group-view")
    assert view.locator(".toolcall", has_text="search_inbox").count() == 4
    assert view.locator(".msg.tool", has_text="result of search_inbox").count() == 4
    text = view.inner_text()
    assert "rollout timed out after 30s" in text  # the group's exception, kept by parquet v2
    assert "additional history 1" in text
    page.click("#jump-worst")
    page.select_option("#sort-select", "reward-asc")
    settle(page)
    assert "worst" in page.locator(".card.trajectory").first.get_attribute("class")


def test_checkpoints_of_an_art_run_show_the_retention_plan(art_ui, page):
    url, shots = art_ui
    visit(page, f"{url}/#checkpoints?run={quote(OLD)}", shots / "checkpoints.png")
    rows = page.locator("table.checkpoints tbody tr")
    assert rows.count() == 2  # ART's own delete_checkpoints left steps 2 and 3
    assert "best 1: val/reward" in page.locator("table.checkpoints tr.keep").first.inner_text()
    assert "latest checkpoint" in page.locator("table.checkpoints tr.keep").last.inner_text()
    assert "keeps 2, deletes 0" in page.locator("#plan-summary").inner_text()


def test_sql_box_charts_tool_calls_of_the_art_runs(art_ui, page):
    url, shots = art_ui
    q = ("SELECT tool_names[1] AS tool, count(*) AS calls FROM messages "
         "WHERE role = 'assistant' AND len(tool_names) > 0 GROUP BY ALL ORDER BY tool")
    visit(page, f"{url}/#sql?q={quote(q)}", shots / "sql.png")
    cells = page.locator("table.sql-result tbody tr td:first-child").all_inner_texts()
    assert "search_inbox" in cells
    page.select_option("#sql-kind", "bar")
    plotted = traces(page, "#sql-chart")
    assert len(plotted) == 1 and plotted[0]["points"] == len(cells) and all(v > 0 for v in plotted[0]["y"])
