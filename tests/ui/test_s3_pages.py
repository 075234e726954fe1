"""`artstore ui --store s3://...` with the same storage options as every other command: a store in a
bucket on moto (over HTTP on 127.0.0.1), browsed in headless chromium."""

from __future__ import annotations

from urllib.parse import quote

import pytest

import artstore as art
from tests.conftest import tool_call_trajectory
from tests.ui.browse import drawn_lines, traces, visit
from tests.ui.conftest import serving

pytestmark = [pytest.mark.s3, pytest.mark.slow]


def test_pages_of_a_store_in_a_bucket(s3_bucket, page, tmp_path):
    opts = s3_bucket.storage_options
    for name in ("agent-a", "agent-b"):
        model = art.Model(name=name, project="bucket-proj", base_path=s3_bucket.uri, storage_options=opts,
                          report_metrics=[])
        for step in range(3):
            groups = [art.TrajectoryGroup([tool_call_trajectory(0.2 * step + 0.1 * j, i=j) for j in range(2)])]
            model.log_sync(groups, split="val", step=step)
        model.run.register_checkpoint(2, uri=f"{s3_bucket.uri}/files/{name}", linked=True, size_bytes=1000)
    with serving(s3_bucket.uri, opts, log=tmp_path / "server.log") as url:
        visit(page, url + "/#runs", tmp_path / "runs.png")
        assert page.locator("table tbody tr").count() == 2
        page.wait_for_function("() => document.body.innerText.includes('KiB')")  # sizes listed in the bucket

        visit(page, f"{url}/#charts?runs={quote('bucket-proj/agent-a')},{quote('bucket-proj/agent-b')}",
              tmp_path / "chart.png")
        assert [t["points"] for t in traces(page, "#chart")] == [3, 3] and drawn_lines(page, "#chart") == 2

        visit(page, f"{url}/#rollouts?run={quote('bucket-proj/agent-b')}&split=val&step=1", tmp_path / "rollouts.png")
        assert page.locator("#group-view .toolcall", has_text="search_inbox").count() == 2

        visit(page, f"{url}/#checkpoints?run={quote('bucket-proj/agent-a')}", tmp_path / "checkpoints.png")
        assert "latest checkpoint" in page.locator("table.checkpoints tr.keep").inner_text()
