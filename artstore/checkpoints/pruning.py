"""Applying retention plans to a run, safely: the retention log, file deletion, crash repair.

Protocol of one prune (`apply`):
1. repair: finish every earlier prune whose intent has no `done` event (see `repair`); write
   `ready` rows for checkpoint folders that have none (a user's backend wrote them);
2. plan (or check that a given plan is still safe to apply);
3. record an `intent` event in `retention.lance` holding the whole plan (with its policy);
4. delete the files of the plan's `delete` steps (through the backend, or fsspec);
5. mark those rows deleted (time, reason, policy JSON), then record `done`.

A process killed between 3 and 5 leaves an open intent. The next prune checks each of its steps
still marked live: files gone, or smaller than the size recorded when ready (a half-deleted
folder) -> the deletion is finished and the row marked deleted with the intent's reason and
policy; files intact -> nothing was deleted and the fresh plan decides. Then `done` closes it.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Protocol

import pyarrow as pa
import pyarrow.compute as pc

from artstore.checkpoints.retention import Plan, Policy, make_plan
from artstore.checkpoints.table import CheckpointTable
from artstore.errors import RetentionError
from artstore.read.step_summary import StepSummary
from artstore.schema import arrow_schema
from artstore.storage import Location, files, scans, writes


class Run(Protocol):
    """What pruning needs of a run (`artstore.Run` is one): its place, its metrics and its
    checkpoints. Pruning takes this, not the facade, so the facade can delegate here."""

    project: str
    name: str
    location: Location

    def metrics(self) -> pa.Table: ...
    def checkpoints(self) -> pa.Table: ...
    def checkpoints_table(self) -> CheckpointTable: ...
    def step_summary(self) -> StepSummary: ...

# A checkpoint save that is still `saving` this long after it began, with no file written for as
# long, was abandoned (its writer was killed): pruning deletes its files and marks its row.
SAVE_LEASE = timedelta(hours=1)

# delete_files(steps_to_delete, live_steps): removes the files of `steps_to_delete`.
DeleteFiles = Callable[[list[int], list[int]], None]

# Test hook: ARTSTORE_PAUSE_AT=<point> makes a prune stop at that point (after touching the file
# named by ARTSTORE_PAUSE_SIGNAL), so a test can kill it there. Points: intent-recorded, files-deleted.
PAUSE_ENV, SIGNAL_ENV = "ARTSTORE_PAUSE_AT", "ARTSTORE_PAUSE_SIGNAL"


def _pause_point(name: str) -> None:
    if os.environ.get(PAUSE_ENV) != name:
        return
    if os.environ.get(SIGNAL_ENV):
        Path(os.environ[SIGNAL_ENV]).write_text(name)
    time.sleep(float(os.environ.get("ARTSTORE_PAUSE_SECONDS", "600")))


class RetentionLog:
    """The run's append-only `retention.lance`: pins, stored policy, prune intents and their end."""

    def __init__(self, run_location: Location):
        self.location = run_location.child("retention.lance")

    def _append(self, kind: str, **fields: object) -> str:
        event_id = uuid.uuid4().hex
        row = {"event_id": event_id, "kind": kind, "intent_id": None, "step": None, "steps": None,
               "note": None, "payload": None, "created_at": writes.now_utc(), **fields}
        writes.append(self.location, pa.Table.from_pylist([row], schema=arrow_schema("retention")),
                      f"retention {kind}")
        return event_id

    def events(self, kind: str | None = None) -> list[dict]:
        found = scans.scan(self.location, filter=None if kind is None else f"kind = '{kind}'")
        if found is None:
            return []
        rows = found.to_pylist()
        return sorted(rows, key=lambda r: r["created_at"])  # stable: ties keep commit order

    # pins
    def pin(self, step: int, note: str | None = None) -> None:
        self._append("pin", step=int(step), note=note)

    def unpin(self, step: int) -> None:
        self._append("unpin", step=int(step))

    def pins(self) -> dict[int, str | None]:
        out: dict[int, str | None] = {}
        for e in self.events():
            if e["kind"] == "pin":
                out[e["step"]] = e["note"]
            elif e["kind"] == "unpin":
                out.pop(e["step"], None)
        return dict(sorted(out.items()))

    # the run's stored policy
    def set_policy(self, policy: Policy) -> None:
        self._append("policy", payload=policy.to_json())

    def policy(self) -> Policy | None:
        found = self.events("policy")
        return Policy.from_json(found[-1]["payload"]) if found else None

    # intents
    def record_intent(self, plan: Plan) -> str:
        return self._append("intent", steps=plan.delete, payload=plan.model_dump_json())

    def record_done(self, intent_id: str, steps: list[int], note: str) -> None:
        self._append("done", intent_id=intent_id, steps=steps, note=note)

    def open_intents(self) -> list[tuple[str, Plan]]:
        events = self.events()
        done = {e["intent_id"] for e in events if e["kind"] == "done"}
        return [(e["event_id"], Plan.model_validate_json(e["payload"]))
                for e in events if e["kind"] == "intent" and e["event_id"] not in done]


# -- planning against a run ----------------------------------------------------------------------
def _run_name(run: Run) -> str:
    return f"{run.project}/{run.name}"


def _metrics_view(run: Run) -> pa.Table:
    m = run.metrics()
    n = m.num_rows
    return pa.table({"project": pa.array([run.project] * n, pa.string()),
                     "model": pa.array([run.name] * n, pa.string()),
                     **{c: m[c] for c in ("step", "split", "name", "value", "recorded_at")}})


def _sql_steps(run: Run) -> Callable[[str], set[int]]:
    def steps(query: str) -> set[int]:
        from artstore.read.sql import query_tables  # duckdb only when a SQL rule runs

        ck = run.checkpoints().select(["step", "status", "size_bytes", "created_at", "ready_at"])
        result = query_tables(query, {"metrics": _metrics_view(run), "checkpoints": ck})
        if result.num_columns == 0:
            return set()
        col = result["step"] if "step" in result.column_names else result.column(0)
        try:
            return {int(s) for s in pc.drop_null(col).to_pylist()}
        except (TypeError, ValueError):
            raise RetentionError(f"the SQL rule must return steps (integers); got a {col.type} column") from None
    return steps


def plan(run: Run, policy: Policy) -> Plan:
    """The plan of `policy` for `run` now (reads checkpoints, pins and metrics; deletes nothing).
    Checkpoint folders without a row (a user's backend wrote them) are planned as ready ones."""
    metrics = run.step_summary() if policy.ranked() else StepSummary({})
    table = run.checkpoints_table()
    checkpoints = table.list() + table.unrecorded()  # folders without a row count, as in ART
    return make_plan(policy, checkpoints, metrics, pins=RetentionLog(run.location).pins(),
                     sql_steps=_sql_steps(run), run=_run_name(run))


def check_still_safe(run: Run, planned: Plan) -> None:
    """RetentionError unless every deletion of `planned` is still allowed now."""
    if planned.run != _run_name(run):
        raise RetentionError(f"this plan is for {planned.run}, not {_run_name(run)}")
    live = [c for c in run.checkpoints_table().list() if c.status != "deleted"]
    by_step = {c.step: c for c in live}
    pins = RetentionLog(run.location).pins()
    problems = []
    if live and live[-1].status != "ready":
        problems.append(f"the newest checkpoint ({live[-1].step}) is still saving")
    for s in planned.delete:
        c = by_step.get(s)
        if c is None:
            continue  # deleted meanwhile: nothing to do for it
        if c is live[-1]:
            problems.append(f"{s} is now the latest checkpoint")
        elif c.status != "ready":
            problems.append(f"{s} is {c.status}")
        if s in pins:
            problems.append(f"{s} is now pinned")
    if problems:
        raise RetentionError("the plan is stale (" + "; ".join(problems) + "): plan again. Nothing was deleted.")


# -- applying ------------------------------------------------------------------------------------
def store_deleter(run: Run) -> DeleteFiles:
    """Delete checkpoint files through fsspec (local folders and buckets alike), by each row's uri."""
    table = run.checkpoints_table()

    def delete(steps: list[int], live_steps: list[int]) -> None:
        for s in steps:
            c = table.get(s)
            if c is not None:
                files.delete(Location.parse(c.uri, run.location.storage_options))
    return delete


def _files_state(run: Run, uri: str, size_bytes: int | None) -> str:
    """'gone', 'partial' (smaller than when it was ready) or 'intact'."""
    loc = Location.parse(uri, run.location.storage_options)
    if not files.exists(loc):
        return "gone"
    if size_bytes is not None and files.size(loc) < size_bytes:
        return "partial"
    return "intact"


def repair(run: Run, delete_files: DeleteFiles) -> list[int]:
    """Finish prunes that were interrupted after their intent was recorded. Returns the steps marked."""
    log, table = RetentionLog(run.location), run.checkpoints_table()
    marked: list[int] = []
    for intent_id, planned in log.open_intents():
        finish: dict[int, str] = {}
        for s in planned.delete:
            c = table.get(s)
            if c is None or c.status == "deleted":
                continue
            state = _files_state(run, c.uri, c.size_bytes)
            if state == "intact":
                continue  # its files were never touched: today's plan decides
            if state == "partial":
                live = [x.step for x in table.list() if x.status != "deleted"]
                delete_files([s], live)
            finish[s] = planned.decision(s).reason + " (completed after an interrupted prune)"
        table.mark_deleted(finish, policy=planned.policy.to_json())
        log.record_done(intent_id, sorted(finish), "repaired")
        marked += sorted(finish)
    return marked


def abandon_stale_saves(run: Run, delete_files: DeleteFiles, lease: timedelta = SAVE_LEASE) -> list[int]:
    """Treat as failed every checkpoint still `saving` whose row was written more than `lease`
    ago and whose files have not changed for as long (no writer is alive: a killed save): delete
    its files and mark its row deleted, saying why. Returns those steps."""
    table = run.checkpoints_table()
    cutoff = writes.now_utc() - lease
    stale = [c for c in table.list() if c.status == "saving" and c.created_at < cutoff]
    abandoned: dict[int, str] = {}
    for c in stale:
        written = files.last_modified(Location.parse(c.uri, run.location.storage_options))
        if written is not None and written >= cutoff:
            continue  # its files are still being written: a live writer
        live = [x.step for x in table.list() if x.status != "deleted"]
        delete_files([c.step], live)
        abandoned[c.step] = (f"abandoned save: still saving {lease} after it began, with no file written since "
                             "(its writer was killed or failed)")
    table.mark_deleted(abandoned)
    return sorted(abandoned)


def apply(run: Run, plan_or_policy: Plan | Policy, delete_files: DeleteFiles,
          save_lease: timedelta = SAVE_LEASE) -> Plan:
    """Repair, plan (or check the plan given), record the intent, delete files, mark rows, done.
    A save older than `save_lease` with no live writer counts as failed (`abandon_stale_saves`)."""
    repair(run, delete_files)
    abandon_stale_saves(run, delete_files, save_lease)
    run.checkpoints_table().record_unrecorded()  # a folder without a row gets one before it is planned
    if isinstance(plan_or_policy, Plan):
        planned = plan_or_policy
        check_still_safe(run, planned)
    else:
        planned = plan(run, plan_or_policy)
    table = run.checkpoints_table()
    current = {c.step: c for c in table.list()}
    steps = [s for s in planned.delete if s in current and current[s].status != "deleted"]
    if not steps:
        return planned
    log = RetentionLog(run.location)
    intent_id = log.record_intent(planned)
    _pause_point("intent-recorded")
    delete_files(steps, [s for s, c in current.items() if c.status != "deleted"])
    _pause_point("files-deleted")
    table.mark_deleted({s: planned.decision(s).reason for s in steps}, policy=planned.policy.to_json())
    log.record_done(intent_id, steps, "applied")
    return planned

