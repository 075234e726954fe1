"""Bring OpenPipe ART run folders into a store: every trajectory, group, history row, checkpoint.

What each file of an ART model folder (`{base}/{project}/models/{name}/`) becomes:

  trajectories/{split}/{step}.parquet  v2 (openpipe-art 0.5.2x: `group_json`/`trajectory_json`, read
                                       in full) or v1 (earlier 0.5.x: 10 flat columns, lossy)
  trajectories/{split}/{step}.jsonl    legacy JSONL (one group per line; migrated by ART 0.5)
  trajectories/{split}/{step}.yaml     legacy YAML (a list of groups; ART 0.3-0.4)
  history.jsonl                        one log per row, metric names exactly as ART wrote them; a
                                       row and the trajectory file its log() call wrote become one
                                       log, as they were one call in ART
  model.json, state.json               kept byte for byte in the run's `art/` folder
  checkpoints/{step}/                  copied into the store, or linked in place (`link=True`)

Two phases: `plan_import` reads and checks every file and raises ImportFormatError naming the bad
file before anything is written; `apply_import` writes the plan. Log ids are derived from the
source files (path, row, content), so importing again changes nothing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from artstore.art.format import (
    CANNOT_HOLD,
    TRAJECTORY_SUFFIXES,
    json_object,
    read_legacy_groups,
    read_parquet_groups,
    sha256,
)
from artstore.art.history_file import HistoryRow, read_history
from artstore.errors import ImportFormatError, ValidationError
from artstore.log import group_commit
from artstore.log.commit import write_log
from artstore.names import check_segment
from artstore.read.store import Store
from artstore.records.encoding import encode_groups
from artstore.records.trajectory import TrajectoryGroup
from artstore.storage import Location, files

ART_FILES_DIR = "art"  # the run's folder for ART's own files (model.json, state.json)
ART_FILES = ("model.json", "state.json")
METRIC_SPLITS = ("train", "val", "test")  # ART's own split names, used to infer a row's split

Progress = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass
class PlannedLog:
    """One log() call to store: groups from a trajectory file and/or one history row."""

    log_id: str
    split: str
    step: int
    groups: list[TrajectoryGroup]
    metrics: dict[str, float]
    recorded_at: datetime | None
    sources: tuple[str, ...]
    metrics_as_given: bool = True


@dataclass
class RunPlan:
    """Everything one ART model folder holds, parsed and checked, ready to write."""

    project: str
    name: str
    source: Location
    logs: list[PlannedLog] = field(default_factory=list)
    checkpoints: dict[int, Location] = field(default_factory=dict)
    art_files: dict[str, bytes] = field(default_factory=dict)
    formats: Counter = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    history_rows: int = 0

    @property
    def num_groups(self) -> int:
        return sum(len(lg.groups) for lg in self.logs)

    @property
    def num_trajectories(self) -> int:
        return sum(len(g.trajectories) for lg in self.logs for g in lg.groups)

    @property
    def num_exceptions(self) -> int:
        return sum(len(g.exceptions) for lg in self.logs for g in lg.groups)

    def cannot_hold(self) -> list[str]:
        """What the source formats of this run could not hold, one line per format used."""
        return [f"{n} {fmt} file(s): {CANNOT_HOLD[fmt]}" for fmt, n in sorted(self.formats.items()) if CANNOT_HOLD[fmt]]


@dataclass
class RunImport:
    """What `apply_import` did for one run."""

    plan: RunPlan
    logs_written: int = 0
    logs_present: int = 0
    checkpoints_written: int = 0
    checkpoints_present: int = 0
    linked: bool = False


# -- finding model folders ------------------------------------------------------------------------
def _tail(loc: Location, n: int) -> list[str]:
    return loc.path_for_fsspec().rstrip("/").split("/")[-n:]


def find_models(src: Location, project: str | None = None, model: str | None = None
                ) -> list[tuple[str, str, Location, list[str]]]:
    """(project, name, folder, files relative to it) of each ART model folder in `src`: a base
    (`.art`) folder, a project folder, a model folder, or any folder holding such folders. A model
    folder is `{project}/models/{name}/`; a bare model folder elsewhere needs `project`."""
    paths = files.walk(src)
    if not paths:
        raise ImportFormatError(f"{src.uri}: no files found; give an ART base, project or model folder")
    lead = ([""] * 3 + _tail(src, 3))[-3:]  # src's own last segments: src may itself be `models/{name}`
    found: dict[tuple[str, ...], list[str]] = {}  # model folder (segments, lead included) -> its files
    for p in paths:
        parts = [*lead, *p.split("/")]
        # the deepest `models/{name}/` whose rest is an ART file names the model folder
        cut = next((i for i in range(len(parts) - 3, 0, -1)
                    if parts[i] == "models" and i + 2 >= len(lead) and _kind("/".join(parts[i + 2:]))), None)
        if cut is not None:
            found.setdefault(tuple(parts[:cut + 2]), []).append("/".join(parts[cut + 2:]))
    models = []
    for folder, rel in found.items():
        proj = project or folder[-3]
        if not proj:
            raise ImportFormatError(f"{src.uri}: cannot tell the project of {'/'.join(folder)}; pass --project")
        models.append((proj, folder[-1], src.child(*folder[len(lead):]), rel))
    if not found and any(_kind(p) for p in paths):  # src is a model folder outside `{project}/models/`
        if project is None:
            raise ImportFormatError(f"{src.uri}: a model folder outside `{{project}}/models/`; pass --project")
        models.append((project, lead[-1], src, paths))
    if not models:
        raise ImportFormatError(f"{src.uri}: not an ART folder (no history.jsonl, trajectories/ or checkpoints/)")
    if model is not None:
        if len(models) != 1:
            raise ImportFormatError(f"{src.uri}: holds {len(models)} models; --model needs a single model folder")
        models = [(models[0][0], model, models[0][2], models[0][3])]
    seen: dict[tuple[str, str], str] = {}
    for proj, name, folder_loc, _ in models:
        check_segment("project", proj)
        check_segment("model", name)
        if (proj, name) in seen:
            raise ImportFormatError(f"{src.uri}: two ART folders for run {proj}/{name} ({seen[(proj, name)]} and "
                                    f"{folder_loc.uri}); import them one at a time, with --project or --model")
        seen[(proj, name)] = folder_loc.uri
    return sorted(models, key=lambda m: (m[0], m[1]))


def _kind(rel: str) -> str | None:
    parts = rel.split("/")
    if rel == "history.jsonl":
        return "history"
    if rel in ART_FILES:
        return "art_file"
    if len(parts) == 3 and parts[0] == "trajectories":
        stem, _, ext = parts[2].rpartition(".")
        if stem.isdigit() and ext in TRAJECTORY_SUFFIXES:
            return "trajectories"
    if len(parts) >= 3 and parts[0] == "checkpoints" and parts[1].isdigit():
        return "checkpoint"
    return None


# -- planning -------------------------------------------------------------------------------------
def _row_split(metrics: dict[str, float], splits: set[str]) -> str:
    """The split a metrics-only history row was logged under: the most common first name segment
    that is a split (ART's or one with trajectories); 'train' when none is (loss/*, data/*)."""
    counts = Counter(k.split("/", 1)[0] for k in metrics if "/" in k)
    known = [(n, s) for s, n in counts.items() if s in splits or s in METRIC_SPLITS]
    return max(known)[1] if known else "train"


def _choose_files(rel_paths: list[str], plan: RunPlan) -> list[str]:
    """The files to read: history, ART's JSON files, and one trajectory file per split and step
    (parquet before a legacy JSONL or YAML file ART's migration left beside it)."""
    chosen: dict[tuple[str, int], str] = {}
    out = []
    rank = {"parquet": 0, "jsonl": 1, "yaml": 2, "yml": 3}
    for rel in rel_paths:
        kind = _kind(rel)
        if kind in {"history", "art_file"}:
            out.append(rel)
        elif kind == "trajectories":
            _, split, fname = rel.split("/")
            stem, _, ext = fname.rpartition(".")
            key = (split, int(stem))
            other = chosen.get(key)
            if other is not None:
                keep, drop = sorted([other, rel], key=lambda r: rank[r.rpartition(".")[2]])
                plan.skipped.append(f"{drop}: same split and step as {keep}, which was imported")
                chosen[key] = keep
            else:
                chosen[key] = rel
    return out + sorted(chosen.values())


def plan_model(project: str, name: str, folder: Location, rel_paths: list[str],
               progress: Progress | None = None) -> RunPlan:
    """Read and check every file of one ART model folder. Raises ImportFormatError; writes nothing."""
    plan = RunPlan(project, name, folder)
    dropped: Counter = Counter()
    traj_files: dict[tuple[str, int], tuple[str, list[TrajectoryGroup], str]] = {}
    history: list[HistoryRow] = []
    readable = _choose_files(rel_paths, plan)
    for done, rel in enumerate(readable, 1):
        loc = folder.child(*rel.split("/"))
        where = loc.uri
        data = files.get_bytes(loc)
        kind = _kind(rel)
        if kind == "history":
            history = read_history(data, where)
        elif kind == "art_file":
            json_object(data.decode("utf-8", errors="replace"), where)
            plan.art_files[rel] = data
        else:
            _, split, fname = rel.split("/")
            stem, _, ext = fname.rpartition(".")
            fmt = TRAJECTORY_SUFFIXES[ext]
            try:
                check_segment("split", split)
            except ValidationError as e:
                raise ImportFormatError(f"{where}: {e}") from None
            if fmt == "parquet":
                groups, fmt = read_parquet_groups(data, where, dropped)
            else:
                groups = read_legacy_groups(data, fmt, where, dropped)
            traj_files[(split, int(stem))] = (rel, groups, f"{fmt}:{sha256(data)}")
            plan.formats[fmt] += 1
        if progress:
            progress(f"read {project}/{name}", done, len(readable))
    for rel in rel_paths:
        if _kind(rel) is None:
            plan.skipped.append(f"{rel}: not ART run data" if not rel.startswith("logs/")
                                else f"{rel}: server log, not run data")
    for rel in rel_paths:
        if _kind(rel) == "checkpoint":
            step_dir = rel.split("/")[1]
            step = int(step_dir)
            other = plan.checkpoints.get(step)
            if other is not None and _tail(other, 1)[0] != step_dir:
                raise ImportFormatError(f"{folder.uri}/checkpoints: two folders for step {step}")
            plan.checkpoints[step] = folder.child("checkpoints", step_dir)
    plan.history_rows = len(history)
    _merge(plan, history, traj_files)
    for k, n in sorted(dropped.items()):
        plan.notes.append(f"field {k!r} of {n} item(s) has no place in artstore and was not imported")
    for lg in plan.logs:  # encode once, so a value the tables cannot hold fails before any write
        try:
            encode_groups(lg.groups, log_id="", write_id="", split=lg.split, step=lg.step,
                          recorded_at=datetime.now(UTC))
        except ValidationError as e:
            raise ImportFormatError(f"{folder.uri}/{lg.sources[-1]}: {e}") from None
    return plan


def _merge(plan: RunPlan, history: list[HistoryRow],
           traj_files: dict[tuple[str, int], tuple[str, list[TrajectoryGroup], str]]) -> None:
    """One log per history row; a trajectory file joins the last row of its step that holds its
    split's reward (the row its log() call wrote). Files without a row get their own log."""
    owner: dict[int, tuple[str, int]] = {}
    for key in traj_files:
        split, step = key
        rows = [r for r in history if r.step == step and r.index not in owner
                and (f"{split}/reward" in r.metrics or f"{split}/exception_rate" in r.metrics)]
        if rows:
            owner[rows[-1].index] = key
    matched = set(owner.values())
    entries: list[tuple[tuple, PlannedLog]] = []
    for r in history:
        key = owner.get(r.index)
        src = f"history.jsonl:{r.index + 1}"
        if key is None:
            if not r.metrics:
                plan.skipped.append(f"{src}: a row without metrics (nothing to store)")
                continue
            split = _row_split(r.metrics, {s for s, _ in traj_files})
            lg = PlannedLog(_log_id(f"history#{r.index}:{r.digest}"), split, r.step, [], r.metrics,
                            r.recorded_at, (src,))
        else:
            rel, groups, digest = traj_files[key]
            lg = PlannedLog(_log_id(f"history#{r.index}:{r.digest}|{rel}:{digest}"), key[0], r.step, groups,
                            r.metrics, r.recorded_at, (src, rel))
        entries.append(((r.index, 0, ""), lg))
    for key in sorted(set(traj_files) - matched, key=lambda k: (k[1], k[0])):
        rel, groups, digest = traj_files[key]
        if not groups:
            plan.skipped.append(f"{rel}: no groups and no history row (nothing to store)")
            continue
        before = max((r.index for r in history if r.step <= key[1]), default=-1)
        lg = PlannedLog(_log_id(f"{rel}:{digest}"), key[0], key[1], groups, {}, None, (rel,),
                        metrics_as_given=False)
        entries.append(((before, 1, key[0]), lg))
        plan.notes.append(f"{rel}: no history row; its metrics were computed by artstore")
    plan.logs = [lg for _, lg in sorted(entries, key=lambda e: e[0])]


def _log_id(key: str) -> str:
    return "art-" + sha256(key)[:40]


def plan_import(src: str | Location, *, project: str | None = None, model: str | None = None,
                storage_options: dict[str, str] | None = None, progress: Progress | None = None) -> list[RunPlan]:
    """Read and check every ART model folder in `src`. Raises ImportFormatError; writes nothing."""
    loc = src if isinstance(src, Location) else Location.parse(src, storage_options)
    return [plan_model(p, n, folder, rel, progress) for p, n, folder, rel in find_models(loc, project, model)]


# -- writing --------------------------------------------------------------------------------------
def apply_import(store: Store, plans: list[RunPlan], *, link: bool = False,
                 progress: Progress | None = None) -> list[RunImport]:
    """Write checked plans into `store`. Idempotent: logs and checkpoints already there are kept."""
    results = []
    for plan in plans:
        run = store.run(plan.project, plan.name)
        result = RunImport(plan, linked=link)
        total = len(plan.logs) + len(plan.checkpoints)
        for i, lg in enumerate(plan.logs, 1):
            record = write_log(run.location, lg.groups, split=lg.split, step=lg.step, metrics=lg.metrics,
                               log_id=lg.log_id, allow_nonfinite_rewards=True, retention=store.retention,
                               reader_window=store.reader_window,
                               metrics_as_given=lg.metrics_as_given, recorded_at=lg.recorded_at)
            if record.created:
                result.logs_written += 1
            else:
                result.logs_present += 1
            if progress:
                progress(f"write {plan.project}/{plan.name}", i, total)
        group_commit.flush(run.location)  # the logs queued for a group commit: other processes see them now
        for name, data in plan.art_files.items():
            target = run.location.child(ART_FILES_DIR, name)
            if not files.exists(target) or files.get_bytes(target) != data:
                files.put_bytes(target, data)
        base_model = json_object(plan.art_files.get("model.json", b"{}").decode("utf-8", "replace"),
                               "model.json").get("base_model")
        table = run.checkpoints_table()
        for i, (step, folder) in enumerate(sorted(plan.checkpoints.items()), len(plan.logs) + 1):
            existing = table.get(step)
            if existing is not None and existing.status != "saving":
                result.checkpoints_present += 1
            else:
                if link:
                    table.begin(step, base_model=base_model, uri=folder.uri, linked=True)
                    table.mark_ready(step)
                else:
                    table.begin(step, base_model=base_model)
                    size = files.copy_tree(folder, table.files_location(step))
                    table.mark_ready(step, size_bytes=size)
                result.checkpoints_written += 1
            if progress:
                progress(f"write {plan.project}/{plan.name}", i, total)
        results.append(result)
    return results


def import_art(store: Store, src: str | Location, *, project: str | None = None, model: str | None = None,
               link: bool = False, progress: Progress | None = None) -> list[RunImport]:
    """Import every ART model folder in `src` into `store`: plan (read and check all), then write."""
    plans = plan_import(src, project=project, model=model, storage_options=dict(store.location.storage_options),
                        progress=progress)
    return apply_import(store, plans, link=link, progress=progress)


__all__ = ["ART_FILES", "ART_FILES_DIR", "PlannedLog", "RunImport", "RunPlan", "apply_import", "find_models",
           "import_art", "plan_import"]
