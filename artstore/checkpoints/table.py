"""The checkpoints table: one row per checkpoint, from `saving` to `ready` to `deleted`.

A checkpoint's files live at `{run}/checkpoints/{step:04d}/` (or elsewhere when linked). Its
row is upserted by step; a deleted checkpoint keeps its row, with when, why and by which policy.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

import pyarrow as pa

from artstore.errors import CheckpointError
from artstore.log import group_commit
from artstore.schema import arrow_schema
from artstore.storage import Location, files, scans, writes

STATUSES = ("saving", "ready", "deleted")


def checkpoint_dir_name(step: int) -> str:
    """ART's folder name: the step zero-padded to at least 4 digits (12345 stays 12345)."""
    return f"{step:04d}"


@dataclass(frozen=True)
class Checkpoint:
    """One row of the checkpoints table."""

    step: int
    uri: str
    status: str
    size_bytes: int | None
    base_model: str | None
    table_versions: dict[str, int]
    linked: bool
    created_at: datetime
    ready_at: datetime | None
    deleted_at: datetime | None
    deleted_reason: str | None
    deleted_by_policy: str | None

    @classmethod
    def from_row(cls, row: Mapping) -> Checkpoint:
        return cls(**{**row, "table_versions": dict(row["table_versions"] or []), "linked": bool(row["linked"])})

    def to_row(self) -> dict:
        return {**self.__dict__, "table_versions": list(self.table_versions.items())}


class CheckpointTable:
    """Reads and updates the checkpoints table of the run at `run_location`."""

    def __init__(self, run_location: Location):
        self.run_location = run_location
        self.location = run_location.child("checkpoints.lance")

    def files_location(self, step: int) -> Location:
        """Where the store keeps the files of the checkpoint at `step`."""
        return self.run_location.child("checkpoints", checkpoint_dir_name(step))

    def location_of(self, uri: str) -> Location:
        """Where checkpoint files named by `uri` live (a path, file://, s3:// or gs://), with the
        run's storage_options: one mapping serves tables and files, on any scheme."""
        return Location.parse(uri, self.run_location.storage_options)

    def table(self) -> pa.Table:
        """Every checkpoint row, ordered by step."""
        found = scans.scan(self.location)
        if found is None:
            return arrow_schema("checkpoints").empty_table()
        return found.sort_by("step")

    def list(self) -> list[Checkpoint]:
        return [Checkpoint.from_row(r) for r in self.table().to_pylist()]

    def get(self, step: int) -> Checkpoint | None:
        found = scans.scan(self.location, filter=f"step = {int(step)}")
        return Checkpoint.from_row(found.to_pylist()[0]) if found is not None and found.num_rows else None

    def latest(self, status: str = "ready") -> Checkpoint | None:
        ready = [c for c in self.list() if c.status == status]
        return ready[-1] if ready else None

    def _upsert(self, rows: Iterable[Checkpoint]) -> None:
        table = pa.Table.from_pylist([c.to_row() for c in rows], schema=arrow_schema("checkpoints"))
        writes.upsert(self.location, table, "step")

    def begin(self, step: int, *, base_model: str | None = None, table_versions: Mapping[str, int] | None = None,
              uri: str | None = None, linked: bool = False) -> Checkpoint:
        """Record that the checkpoint of `step` is being saved (status `saving`). This process's
        logs of the run still queued for a group commit land first: a checkpoint comes after
        the logs it was trained on, in every reader's view (its `table_versions` may name them)."""
        group_commit.flush(self.run_location)
        existing = self.get(step)
        if existing is not None and existing.status == "ready":
            raise CheckpointError(f"checkpoint {step} of {self.run_location.uri} is already ready; use a new step")
        c = Checkpoint(
            step=step, uri=self.location_of(uri).uri if uri else self.files_location(step).uri, status="saving", size_bytes=None,
            base_model=base_model, table_versions=dict(table_versions or {}), linked=linked,
            created_at=writes.now_utc(), ready_at=None, deleted_at=None, deleted_reason=None, deleted_by_policy=None,
        )
        self._upsert([c])
        return c

    def register(self, step: int, *, base_model: str | None = None, table_versions: Mapping[str, int] | None = None,
                 uri: str | None = None, linked: bool = False, size_bytes: int | None = None) -> Checkpoint:
        """Record a checkpoint whose files are already complete: `begin` then `mark_ready`."""
        self.begin(step, base_model=base_model, table_versions=table_versions, uri=uri, linked=linked)
        return self.mark_ready(step, size_bytes)

    def unrecorded(self) -> list[Checkpoint]:
        """Checkpoint folders under `{run}/checkpoints/` (named by their step, as ART names them)
        that have no row: written by a user's backend, or copied in by hand. Returned as `ready`
        rows not yet written (see `record_unrecorded`); a folder whose row says `deleted` is
        not returned (its row holds why). Sizes are measured."""
        known = {c.step for c in self.list()}
        found = []
        for name in files.list_dir(self.run_location.child("checkpoints")):
            if not name.isdigit() or int(name) in known:
                continue
            loc = self.files_location(int(name))
            now = writes.now_utc()
            found.append(Checkpoint(step=int(name), uri=loc.uri, status="ready", size_bytes=files.size(loc),
                                    base_model=None, table_versions={}, linked=False, created_at=now,
                                    ready_at=now, deleted_at=None, deleted_reason=None, deleted_by_policy=None))
        return found

    def record_unrecorded(self) -> list[int]:
        """Write rows for the checkpoint folders that have none (see `unrecorded`); their steps."""
        found = self.unrecorded()
        if found:
            self._upsert(found)
        return [c.step for c in found]

    def live(self) -> list[Checkpoint]:
        """Checkpoints whose files exist (status saving or ready), ordered by step."""
        return [c for c in self.list() if c.status != "deleted"]

    def mark_ready(self, step: int, size_bytes: int | None = None) -> Checkpoint:
        """Mark the checkpoint's files complete; measures their size when not given."""
        c = self.get(step)
        if c is None:
            raise CheckpointError(f"no checkpoint {step} in {self.run_location.uri}: call begin() first")
        if size_bytes is None:
            size_bytes = files.size(self.location_of(c.uri))
        ready = Checkpoint(**{**c.__dict__, "status": "ready", "size_bytes": size_bytes, "ready_at": writes.now_utc()})
        self._upsert([ready])
        return ready

    def mark_deleted(self, steps: Mapping[int, str], policy: str | None = None) -> None:
        """Mark checkpoints deleted, each with its reason; rows stay."""
        now = writes.now_utc()
        rows = []
        for step, reason in steps.items():
            c = self.get(step)
            if c is None:
                raise CheckpointError(f"no checkpoint {step} in {self.run_location.uri}")
            rows.append(Checkpoint(**{**c.__dict__, "status": "deleted", "deleted_at": now,
                                      "deleted_reason": reason, "deleted_by_policy": policy}))
        if rows:
            self._upsert(rows)
