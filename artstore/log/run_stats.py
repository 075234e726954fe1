"""A run's stats in the store's registry (`artstore.log.registry`): what `artstore runs` and
`Store.run_stats()` show, kept so that listing 500 runs reads one small table.

Computed from the run itself (its committed logs, its metrics' last rewards, its stored config,
and its size from the Lance manifests) and written into the run's registry row, off log()'s path:
log() asks `artstore.log.upkeep` for a refresh, which runs on the upkeep thread STATS_DELAY_S
after the first log that left the stats stale, so the logs of those seconds share one registry
commit (a log costs no registry commit of its own).

How fresh: while the writing process lives, at most STATS_DELAY_S (plus one refresh) behind its
last log (a run in a bucket: BUCKET_STATS_FACTOR times as long, since a refresh there costs ~25
requests, ~0.5 s at 20 ms each: at 5 s it made ~4 of a small log's ~20 requests); exact once `upkeep.wait()` returns, and after the process exits normally (the upkeep
thread refreshes what is stale at exit, for at most `upkeep.EXIT_FLUSH_S`). A writer killed before its
refresh leaves the stats of its last logs out, until the run's next log or `artstore compact`.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from artstore.errors import ArtstoreError
from artstore.log import journal, registry, run_pool
from artstore.log.configs import ConfigLog
from artstore.log.visibility import committed_logs, read_visible
from artstore.records.metric_names import with_current_names
from artstore.storage import Location, data_files, datasets, files, keys, writes

logger = logging.getLogger(__name__)

STATS_DELAY_S = 5.0  # a refresh runs this long after the first log that left the stats stale
BUCKET_STATS_FACTOR = 6  # ... times this for a run in a bucket (30 s)
REWARDS = {"val/reward": "val_reward", "train/reward": "train_reward"}
_LOG_COLUMNS = ["log_id", "write_id", "split", "step", "num_trajectories", "num_groups", "num_metrics",
                "recorded_at", keys.SEQ]


def delay_s(run: Location) -> float:
    """Seconds from the first log that left the stats of the run at `run` stale to its refresh."""
    return STATS_DELAY_S if run.is_local else STATS_DELAY_S * BUCKET_STATS_FACTOR


def compute(run: Location) -> dict[str, Any] | None:
    """The stats of the run at `run` (registry.STATS) at its latest logs version; None when it has
    no logs table. Reads the committed logs' small columns, the rewards, the config, and each
    table's manifest (no listing of data files)."""
    logs_loc = run.child("logs.lance")
    ds = datasets.open_latest(logs_loc)  # the writer's handle: a probe (one LIST on S3), not an open
    if ds is None:
        return None
    is_journal = journal.is_journal(ds.schema)
    columns = [*_LOG_COLUMNS, "metric_names", "metric_values"] if is_journal else _LOG_COLUMNS
    committed = committed_logs(logs_loc, ds, columns).sort_by([("recorded_at", "ascending"),
                                                                ("log_id", "ascending")])
    stats: dict[str, Any] = {
        "logs": committed.num_rows, "logs_version": ds.version, "stats_at": writes.now_utc(),
        "logs_committed_at": datasets.version_time(ds), "last_seq": pc.max(committed[keys.SEQ]).as_py(),
        "trajectories": pc.sum(committed["num_trajectories"]).as_py() or 0,
        "groups": pc.sum(committed["num_groups"]).as_py() or 0,
        "metric_values": pc.sum(committed["num_metrics"]).as_py() or 0,
        "last_step": pc.max(committed["step"]).as_py(), "last_logged_at": pc.max(committed["recorded_at"]).as_py(),
        **_last_rewards(run, committed, is_journal),
    }
    config = ConfigLog(run).latest()
    stats["config"] = json.dumps(config) if config else None
    stats["size_bytes"] = size_bytes(run, {"logs.lance": ds})
    return stats


def _last_rewards(run: Location, committed: pa.Table, is_journal: bool) -> dict[str, float | None]:
    """{val_reward, train_reward}: the last value of each logged, in log order (None if never)."""
    if is_journal:
        long = journal.payload_rows("metrics", committed).select(["name", "value"])
    else:
        long = read_visible(run.child("metrics.lance"), "metrics", committed,
                            columns=["log_id", "step", "split", "name", "value", "recorded_at"])
    long = with_current_names(long) if long.num_rows else long
    out: dict[str, float | None] = dict.fromkeys(REWARDS.values())
    for name, value in zip(long["name"].to_pylist(), long["value"].to_pylist(), strict=True):
        if name in REWARDS:
            out[REWARDS[name]] = value  # in log order: the last one logged wins
    return out


def size_bytes(run: Location, opened: dict[str, Any] | None = None) -> int:
    """Bytes of the run's tables at their latest versions (the data files their manifests name)
    plus its checkpoint files (one listing of `checkpoints/`). Each table is opened through this
    process's handle (a probe: no manifest read when unchanged), unless `opened` gives it
    ({folder name: the dataset at its latest version}, e.g. the journal just opened)."""
    opened = opened or {}
    names = files.list_dir(run)
    total = sum(data_files.data_bytes(run.child(n), lambda loc, n=n: opened[n] if n in opened else datasets.open_latest(loc))
                for n in names if n.endswith(".lance"))
    if "checkpoints" in names:
        total += files.size(run.child("checkpoints"))
    return total


def refresh(run: Location) -> bool:
    """Compute the stats of the run at `run` and write them into its store's registry row (one
    commit); False when the run has no logs or lies outside a store's layout."""
    found = registry.split_run(run)
    if found is None:
        return False
    stats = compute(run)
    if stats is None:
        return False
    changed = registry.write_stats(*found, stats)
    try:  # the store's pool of small runs' rows: a cache for cross-run queries, never the record
        run_pool.refresh(*found, run, stats)
    except (ArtstoreError, OSError, RuntimeError, ValueError) as e:
        logger.debug("pool copy of %s skipped: %s", run.redact(run.uri), e)
    return changed
