"""Run upkeep: checking a run (`Run.validate`) and compacting it (`Run.compact`): folding its
journal, compacting every table and dropping old versions, refreshing its stats in the store's
registry of runs. `Run` delegates here."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pyarrow as pa

from artstore.errors import CommitConflictError, StorageError
from artstore.log import fold, journal, run_stats, upkeep
from artstore.log.visibility import GATED, expected_rows
from artstore.read import run_logs
from artstore.storage import Location, compaction, datasets


def validate(run: Location, table_names: list[str], committed: pa.Table) -> list[str]:
    """`Run.validate` of the run at `run` with tables `table_names` and committed logs `committed`."""
    for t in GATED:
        want = expected_rows(t, committed)
        got = run_logs.visible(run, t, committed, columns=["log_id"]).num_rows
        if got != want:
            raise StorageError(f"{run.child(f'{t}.lance').uri} holds {got} visible rows, but the run's committed "
                               f"logs name {want}: the store is damaged. Restore the run from a copy.")
    for t in table_names:
        datasets.validate(run.child(f"{t}.lance"))
    return sorted({*table_names, *GATED})


def compact(run: Location, table_names: Callable[[], list[str]], retention: timedelta, reader_window: timedelta,
            force: bool, name: str) -> dict[str, dict[str, int]]:
    """`Run.compact` of the run at `run` (named `name` in errors); `table_names()` lists its
    tables (after the fold, which may make the data tables)."""
    upkeep.wait(run)  # a background fold or compaction of this process first
    while any(fold.fold(run, max_logs=fold.MAX_LOGS).values()):
        pass
    done, failed = {}, {}
    logs = datasets.open_dataset(run.child("logs.lance"))
    short = (*GATED, "logs") if logs is not None and journal.is_journal(logs.schema) else ()
    for t in table_names():
        try:
            done[t] = compaction.maintain(
                run.child(f"{t}.lance"), t, min(reader_window, retention) if t in short else retention,
                force=force,
                rewrite=fold.drop_folded_payloads(run) if t == "logs" else None)
        except StorageError as e:
            failed[t] = e
    try:  # the registry's stats of the run, exact now (also for a writer killed before its refresh)
        run_stats.refresh(run)
    except StorageError as e:
        failed["_runs (stats)"] = e
    if failed:
        kind = CommitConflictError if all(isinstance(e, CommitConflictError) for e in failed.values()) \
            else StorageError
        raise kind(f"compaction of {name} failed for {', '.join(failed)} (the other tables "
                   f"were compacted: {', '.join(done) or 'none'}); run it again. " + str(next(iter(failed.values()))))
    return done
