"""On a bucket, the upkeep of a run's small logs (compaction, fold, cleanup of old versions)
costs a number of requests per log that does not grow with the run: cleanups read no manifest
this process made and delete their files in one request (`artstore.storage.version_cleanup`).
Counted at the fault proxy in front of moto, each log followed by the upkeep it asked for."""

from __future__ import annotations

import urllib.parse
from datetime import timedelta

import pytest

import artstore as art
from artstore.log import upkeep

pytestmark = [pytest.mark.s3, pytest.mark.usefixtures("stats_refresh_held")]  # counts no stats refresh

WINDOW = timedelta(seconds=2)  # the reader window: a cleanup falls due every 0.25 s, 16 versions


def _upkeep_deletes_and_manifest_reads(seen: list[tuple[str, str]]) -> tuple[int, int]:
    deletes = sum(m == "DELETE" or (m == "POST" and "delete" in p) for m, p in seen)
    manifests = sum(m == "GET" and "list-type" not in urllib.parse.urlsplit(p).query
                    and urllib.parse.unquote(p).endswith(".manifest") for m, p in seen)
    return deletes, manifests


def test_a_bucket_runs_upkeep_deletes_and_reads_no_more_per_log_as_the_run_grows(faulty_s3, make_trajectory):
    model = art.Model(name="m", project="p", base_path=faulty_s3.uri, storage_options=faulty_s3.storage_options,
                      report_metrics=[], reader_window=WINDOW, commit="sync")
    proxy = faulty_s3.proxy
    proxy.seen = seen = []
    per_stretch = []
    for stretch in range(3):
        before = len(seen)
        for i in range(stretch * 32, (stretch + 1) * 32):
            model.log_sync(art.TrajectoryGroup([make_trajectory(i / 100, i)]), split="val", step=i)
            upkeep.wait(model.run.location, 120, stats=False)  # the upkeep this log asked for
        per_stretch.append(_upkeep_deletes_and_manifest_reads(seen[before:]))
    # Per 32 logs, in each stretch alike: a few batch deletes, and reads of manifests this process
    # did not make (Lance's cleanup: 58, 91, 80 deletes and 46, 66, 60 manifest reads here)
    for deletes, manifests in per_stretch:
        assert deletes <= 8 and manifests <= 16, per_stretch
