"""Run: one run's read API (with time travel), a facade over the services that do the work:
`run_logs` (committed logs, as of a version, and the rows they make visible), `groups`,
`history` (metrics and history), `step_summary`, `checkpoint_files`, `run_upkeep` (validate,
compact), and the checkpoints, tokens, retention and config tables.

A run lives at `{store}/{project}/models/{name}/`, one Lance dataset per table. Readers see only
rows of committed log calls (see `artstore.log.commit`), so every read is all-or-nothing per log
call. `as_of` takes a version of the run (its `logs` table version), a tag, or a datetime.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pyarrow as pa

from artstore.checkpoints.table import Checkpoint, CheckpointTable
from artstore.errors import CheckpointError, RetentionError, ValidationError
from artstore.log import group_commit, pending_deletes, upkeep
from artstore.log.configs import ConfigLog
from artstore.names import check_segment, check_tag
from artstore.read import checkpoint_files, history, run_logs, run_upkeep, step_summary
from artstore.read.as_of import MAX_VERSION, AsOf
from artstore.read.as_of import as_of_args as _as_of_args
from artstore.read.groups import read_groups
from artstore.read.step_summary import StepSummary
from artstore.storage import Location, datasets, files, tags, version_map
from artstore.storage.tags import Tag
from artstore.tokens import DEFAULT_BATCH_SIZE, TokenTable

if TYPE_CHECKING:
    from types import ModuleType

    from artstore.checkpoints.retention import Plan, Policy
    from artstore.read.store import Store
    from artstore.records.trajectory import TrajectoryGroup


class Run:
    """One run (a model of a project): read access to everything it logged."""

    def __init__(self, store: Store, project: str, name: str):
        self.store = store
        self.project = check_segment("project", project)
        self.name = check_segment("model", name)

    @functools.cached_property
    def location(self) -> Location:
        """Where the run lives: `{store}/{project}/models/{name}` (made on first use: listing 500
        runs makes 500 Runs)."""
        return self.store.location.child(self.project, "models", self.name)

    def __repr__(self) -> str:
        return f"Run({self.project!r}, {self.name!r}, at {self.location.uri!r})"

    def table_location(self, table: str) -> Location:
        """Where the Lance dataset of `table` lives."""
        return self.location.child(f"{table}.lance")

    def exists(self) -> bool:
        return datasets.exists(self.table_location("logs"))

    # -- visibility and time travel ---------------------------------------------------------
    def logs(self, as_of: AsOf = None) -> pa.Table:
        """The committed log calls, one row each (the first committed row of each log_id: see
        `writer`), in the order they were logged (`recorded_at`, then `log_id`). Not the order of
        the rows in the dataset: Lance's compaction moves the fragments it rewrites after all others."""
        return self._logs(as_of)

    def _logs(self, as_of: AsOf = None, with_metrics: bool = False) -> pa.Table:
        """`logs()`; `with_metrics`: a journal's rows also hold their metric names and values."""
        return run_logs.committed(self.location, as_of, with_metrics,
                                  f"{self.project}/{self.name} in {self.store.location.uri}")

    def read_table(self, table: str, *, filter: str | None = None, columns: list[str] | None = None,
                   as_of: AsOf = None) -> pa.Table:
        """Visible rows of a log-written table (trajectories, groups, metrics), in the order of
        `logs()`, each log's rows in the order it wrote them."""
        return self._visible(table, self.logs(as_of), filter=filter, columns=columns)

    def _visible(self, table: str, committed: pa.Table, *, filter: str | None = None,
                 columns: list[str] | None = None) -> pa.Table:
        """Rows of `table` written by the `committed` log calls, in their order (`run_logs.visible`)."""
        return run_logs.visible(self.location, table, committed, filter=filter, columns=columns)

    # -- the read API ----------------------------------------------------------------------
    def trajectories(self, split: str | None = None, step: int | None = None, as_of: AsOf = None) -> pa.Table:
        """Stored trajectories (one row each; typed columns, see schemas/trajectories.json)."""
        return self.read_table("trajectories", filter=run_logs.where(split, step), as_of=as_of)

    def groups(self, split: str | None = None, step: int | None = None, as_of: AsOf = None) -> list[TrajectoryGroup]:
        """The groups logged, equal to what was logged; ordered by step, split, then position."""
        return read_groups(self.location, split, step, as_of, self.logs)

    def metrics(self, as_of: AsOf = None) -> pa.Table:
        """Every metric value (long form): log_id, step, split, name, value, recorded_at."""
        return self._metrics(self._logs(as_of, with_metrics=True))

    def _metrics(self, committed: pa.Table) -> pa.Table:
        return history.metrics(self.location, committed)

    def history(self, as_of: AsOf = None) -> pa.Table:
        """One row per log call in commit order: `step`, `recorded_at` (UTC), then one float64
        column per metric name ever logged (null where a row lacks it), as ART's history.jsonl.
        At the latest version it is kept in memory per version (`history.latest`)."""
        if as_of is None and (found := history.latest(self.location, self._history)) is not None:
            return found
        return self._history(self._logs(as_of, with_metrics=True))

    def _history(self, logs: pa.Table) -> pa.Table:
        return history.table(logs, self._metrics(logs))

    def step_summary(self, as_of: AsOf = None) -> StepSummary:
        """Per-step sums and counts of every metric at the run's latest version (or `as_of`), kept
        in memory per version: repeated calls cost one manifest read (see `artstore.read.step_summary`)."""
        return step_summary.load(self.table_location("logs"),
                                 lambda committed: self._metrics(committed).select(["step", "name", "value"]),
                                 *_as_of_args(as_of))

    def _step_means(self, metric: str, as_of: AsOf = None) -> dict[int, float]:
        scores = self.step_summary(as_of).means(metric)
        if not scores:
            raise RetentionError(f"no values of {metric!r} in {self.project}/{self.name}: cannot rank its steps. "
                                 "Log that metric or choose another.")
        return scores

    def best_step(self, metric: str = "val/reward", mode: Literal["max", "min"] = "max", as_of: AsOf = None) -> int:
        """The step with the best per-step mean of `metric` (highest for max; ties go to the later
        step), as `checkpoint("best")` and retention rank. RetentionError when `metric` has no
        values. Fast: served from the run's step summary (one freshness check when warm)."""
        return _retention().best(self._step_means(metric, as_of), mode)

    def latest_checkpoint_step(self) -> int | None:
        """Step of the newest checkpoint whose files are ready, or None when there is none."""
        latest = self.checkpoints_table().latest()
        return None if latest is None else latest.step

    def checkpoints_table(self) -> CheckpointTable:
        """The run's checkpoints table (register, list, mark ready/deleted)."""
        return CheckpointTable(self.location)

    def checkpoints(self) -> pa.Table:
        """Every checkpoint of the run: step, uri, status, sizes, times, why deleted."""
        return self.checkpoints_table().table()

    def table_versions(self) -> dict[str, int]:
        """{table: latest version} of the run's logged tables (what a checkpoint is trained on).
        This process's logs still queued for a group commit land first: a checkpoint trained on
        them names the versions that hold them."""
        group_commit.flush(self.location)
        out = {}
        for t in self.store.table_names(self):
            ds = None if t in ("checkpoints", "retention") else datasets.open_dataset(self.table_location(t))
            if ds is not None:
                out[t] = ds.version
        return out

    def register_checkpoint(self, step: int, *, base_model: str | None = None, uri: str | None = None,
                            linked: bool = False, size_bytes: int | None = None,
                            table_versions: Mapping[str, int] | None = None) -> Checkpoint:
        """Record the complete checkpoint of `step` (status `ready`; size measured when not given),
        with the run's current table versions. Its files are at `uri` (default
        `{run}/checkpoints/{step:04d}/`, see `checkpoint_uri`)."""
        versions = self.table_versions() if table_versions is None else table_versions
        return self.checkpoints_table().register(step, base_model=base_model, table_versions=versions, uri=uri,
                                                 linked=linked, size_bytes=size_bytes)

    def save_checkpoint_files(self, step: int, local_dir: str | os.PathLike[str], *, base_model: str | None = None,
                              table_versions: Mapping[str, int] | None = None) -> Checkpoint:
        """Store the files of a local folder (e.g. a peft adapter) as the checkpoint of `step`:
        record the row (`saving`), clear what an interrupted save of this step left, copy every
        file to `checkpoint_uri(step)` (each moved into place whole), then mark the row `ready`
        with its size. `table_versions` defaults to the run's current ones."""
        return checkpoint_files.save(self.checkpoints_table(), step, local_dir, base_model,
                                     lambda: self.table_versions() if table_versions is None else table_versions)

    def delete_checkpoint_files(self, step: int) -> None:
        """Delete the files of the checkpoint of `step` (wherever its row says they are) and leave
        its row as it is: for training backends (`Backend._delete_checkpoint_files`); retention
        marks the rows. A step without a row, or already without files, is fine."""
        checkpoint_files.delete(self.checkpoints_table(), step, self.location.storage_options)

    def checkpoint_uri(self, step: int) -> str:
        """Where the store keeps the files of the checkpoint of `step`."""
        return self.checkpoints_table().files_location(step).uri

    def checkpoint(self, which: Literal["best", "latest"] | int = "latest", metric: str = "val/reward",
                   mode: Literal["max", "min"] = "max",
                   cache_dir: str | os.PathLike[str] | None = None) -> tuple[Checkpoint, Path]:
        """A ready checkpoint and a local path to its files: `which` is "latest", "best" (the ready
        checkpoint with the best per-step mean of `metric`; ties go to the later step) or a step.
        Files in a bucket are downloaded once to `cache_dir` (default $ARTSTORE_CACHE or
        ~/.cache/artstore) and reused from there."""
        chosen = checkpoint_files.choose(self.checkpoints_table(), which, mode, lambda: self._step_means(metric),
                                         f"{self.project}/{self.name}")
        return chosen, checkpoint_files.local_path(chosen, self.location.storage_options, cache_dir)

    # -- training tokens (see artstore.tokens) ----------------------------------------------
    def tokens_table(self) -> TokenTable:
        """The run's tokens table: one row per training sequence (schemas/tokens.json)."""
        return TokenTable(self.location)

    def write_tokens(self, table_or_rows: Any) -> int:
        """Validate and upsert training sequences by `sequence_id` (a retry replaces, never
        duplicates); one commit. Bad input raises ValidationError naming the field and writes
        nothing. Returns the tokens table version."""
        return self.tokens_table().write(table_or_rows)

    def tokens(self, step: int | None = None, split: str | None = None, columns: list[str] | None = None,
               version: int | None = None) -> pa.Table:
        """Stored training sequences of `step`/`split` (all when None), in storage order."""
        return self.tokens_table().read(step, split, columns, version)

    def token_count(self, step: int | None = None, split: str | None = None, version: int | None = None) -> int:
        """How many training sequences match `step`/`split`."""
        return self.tokens_table().count(step, split, version)

    def token_batches(self, step: int | None = None, split: str | None = None, columns: list[str] | None = None,
                      batch_size: int = DEFAULT_BATCH_SIZE, rank: int = 0, world_size: int = 1,
                      version: int | None = None) -> Iterator[pa.RecordBatch]:
        """Stream `rank`'s shard of the matching sequences as record batches of exactly
        `batch_size` rows (the last may be short). Shards are contiguous, cover every row once over
        all ranks, and differ in size by at most one row (`artstore.shard_range`)."""
        return self.tokens_table().batches(step, split, columns, batch_size, rank, world_size, version)

    # -- retention (see artstore.checkpoints.retention and artstore.checkpoints.pruning) -----------------------------
    def pin_checkpoint(self, step: int, note: str | None = None) -> None:
        """Keep the checkpoint of `step` under every retention policy until unpinned."""
        c = self.checkpoints_table().get(step)
        if c is None or c.status == "deleted":
            raise CheckpointError(f"no live checkpoint {step} in {self.project}/{self.name} to pin")
        _pruning().RetentionLog(self.location).pin(step, note)

    def unpin_checkpoint(self, step: int) -> None:
        _pruning().RetentionLog(self.location).unpin(step)

    def pinned_checkpoints(self) -> dict[int, str | None]:
        """{step: note} of the pinned checkpoints."""
        return _pruning().RetentionLog(self.location).pins()

    def set_retention_policy(self, policy: Policy) -> None:
        """Store `policy` with the run: the default of `retention_plan()` and `apply_retention()`."""
        _pruning().RetentionLog(self.location).set_policy(policy)

    def retention_policy(self) -> Policy | None:
        return _pruning().RetentionLog(self.location).policy()

    def _policy(self, policy: Policy | None) -> Policy:
        policy = policy or self.retention_policy()
        if policy is None:
            raise RetentionError(f"{self.project}/{self.name} has no stored retention policy: give one")
        return policy

    def retention_plan(self, policy: Policy | None = None) -> Plan:
        """What `policy` (default: the stored one) would keep and delete, and why. Deletes nothing."""
        return _pruning().plan(self, self._policy(policy))

    def apply_retention(self, plan_or_policy: Plan | Policy | None = None) -> Plan:
        """Apply a plan or policy, deleting files through fsspec (use `TrainableModel.apply_retention`
        to delete through a training backend). Repairs interrupted prunes first."""
        target = plan_or_policy if isinstance(plan_or_policy, _retention().Plan) else self._policy(plan_or_policy)
        return _pruning().apply(self, target, _pruning().store_deleter(self))

    def config(self, as_of: AsOf = None) -> dict[str, Any]:
        """The run's stored configuration: {"model": Model(config=...), "train": the last TrainConfig
        used (a dict)}, each key present once stored; as of a version, tag or time of the run (the
        last stored before that version was committed). See `artstore.log.configs`."""
        version, asof = _as_of_args(as_of)
        if version is not None:
            asof = tags.committed_at(self.table_location("logs"), version)
        return ConfigLog(self.location).latest(before=asof)

    def versions(self) -> list[dict[str, Any]]:
        """Versions of the run (its `logs` table): [{version, timestamp (UTC), tags}], oldest first.
        Each can be read (`as_of`): those Lance still keeps, and those only the run's version map
        holds (cleaned up after the reader window: `artstore.storage.version_map`). `tags` names
        both kinds of tag on it (`tags()`)."""
        listed = version_map.all_versions(self.table_location("logs"))
        by_version: dict[int, list[str]] = {}
        for name, version in self.tags().items():
            by_version.setdefault(int(version), []).append(name)
        return [{**v, "tags": sorted({*v["tags"], *by_version.get(v["version"], [])})} for v in listed]

    def tag(self, name: str, version: int | None = None, pin: bool = False) -> Tag:
        """Name a point of the run: `version` of its logs (default: the latest; this process's
        queued logs land first), that is the logs committed by then, in commit order. Moving a
        tag re-points it. `as_of=name` then reads that point everywhere (Run reads, `Store.sql`,
        `Store.snapshot`, the command line), even after cleanup removed the version: the tag is a
        record of the point (`artstore.storage.tags`) and keeps no physical version. With `pin`,
        the physical version is also kept through cleanup (a Lance tag), as a reader of the raw
        Lance dataset needs. VersionNotFoundError when the run never had that version, or (pin)
        no longer keeps it. Runs whose logs predate the journal are always pinned. Returns the
        `Tag` (the version, and whether it is pinned)."""
        check_tag(name)
        if version is not None and (isinstance(version, bool) or not isinstance(version, int)
                                    or not 0 <= version < MAX_VERSION):
            raise ValidationError("version", f"a version number of the run (Run.versions() lists them), got {version!r}")
        return tags.create_tag(self.table_location("logs"), name, version, pin)

    def delete_tag(self, name: str) -> Tag:
        """Remove the tag `name` (logical or pinned); a pinned tag's version is then cleaned up after
        the window like any other. Returns the `Tag` it named; VersionNotFoundError when the run
        has no such tag. `as_of=name` no longer answers."""
        check_tag(name)
        return tags.delete_tag(self.table_location("logs"), name)

    def tags(self) -> dict[str, Tag]:
        """{name: Tag} of the run's tags, logical and pinned, sorted by name. A `Tag` is the
        version it names (an int), with `.pinned` and `.committed_at` (UTC)."""
        return tags.tags(self.table_location("logs"))

    def validate(self) -> list[str]:
        """Check the run; the tables checked. Raises StorageError naming the first damaged table:
        the logs unreadable (e.g. a damaged manifest), a table the committed logs name rows of
        missing or holding fewer visible rows than they wrote, or Lance's own consistency check
        failing (e.g. a data file it needs is missing). This process's logs still queued for a
        group commit land first, so the check covers everything logged here."""
        group_commit.flush(self.location)
        names = self.store.table_names(self)
        return run_upkeep.validate(self.location, names, self.logs())

    def size_bytes(self) -> int:
        """Bytes the run takes in storage: every table (all versions kept) and checkpoint file."""
        return files.size(self.location)

    def wait_for_upkeep(self, timeout: float | None = None) -> bool:
        """Block until the background cleanup of old versions that this process's log() calls
        asked for on this run is done; False when `timeout` seconds passed first. log() never
        waits for it (it compacts inline); call this before counting files or copying the run.
        This process's logs queued for a group commit (the default mode) land first, and their
        pending files still waiting to be deleted in a batch (on a bucket) go."""
        group_commit.flush(self.location, timeout)
        pending_deletes.drain(self.location)
        return upkeep.wait(self.location, timeout)

    def compact(self, force: bool = True) -> dict[str, dict[str, int]]:
        """Fold the run's journal into its data tables (`artstore.log.fold`), then compact every
        table and drop versions older than the store's retention window (a journal run's logs and
        data tables: older than its reader window, `Store.reader_window`), and refresh the run's
        stats in the store's registry of runs. A table that fails does
        not stop the others; then a StorageError names each that failed."""
        return run_upkeep.compact(self.location, lambda: self.store.table_names(self), self.store.retention,
                                  self.store.reader_window, force, f"{self.project}/{self.name}")


def _retention() -> ModuleType:
    """`artstore.checkpoints.retention`, imported on first use: its pydantic models (~0.14 s of
    imports) are not needed by a run that is only read, as in a cross-run SQL query."""
    from artstore.checkpoints import retention

    return retention


def _pruning() -> ModuleType:
    from artstore.checkpoints import pruning  # as `_retention`

    return pruning
