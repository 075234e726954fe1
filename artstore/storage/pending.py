"""Pending journal rows: one file per log written in group-commit mode (`artstore.log.group_commit`),
the durable record of a log between its `log()` returning and its row's Lance commit.

A run's pending rows live in `{run}/logs.pending/` (a sibling of `logs.lance`, never inside it:
Lance's cleanup owns the files of a dataset), one Arrow IPC stream per log holding its journal
row, named `{host}-{pid}-{write_id}.arrow` (the writer that owns it: `owner`). Each file appears
whole or not at all: locally it is written under a temporary name and renamed into place, on a
bucket it is one PUT. Local files are not fsynced, like Lance's own local writes: a killed
process loses nothing (the page cache keeps the file), a power cut may.

`write_batch_fragment` writes a batch's rows as one Lance data file (uncommitted), so a group
commit adds one fragment to the journal however many logs it holds: its rows share one sequence
and keep their order by row address (`artstore.log.journal`).
"""

from __future__ import annotations

import os
import socket
import uuid
from datetime import UTC, datetime

import pyarrow as pa
from lance.fragment import FragmentMetadata, write_fragments

from artstore.errors import StorageError
from artstore.storage import files, handles, written_rows
from artstore.storage.failures import storage_errors
from artstore.storage.location import Location

DIR = "logs.pending"
SUFFIX = ".arrow"
HOST = socket.gethostname().replace("-", "_")


def folder(run: Location) -> Location:
    return run.child(DIR)


def name_for(write_id: str) -> str:
    """The file name of this process's pending row of the attempt `write_id`."""
    return f"{HOST}-{os.getpid()}-{write_id}{SUFFIX}"


def owner(name: str) -> tuple[str, int] | None:
    """(host, pid) of the process that wrote the pending file `name`; None for another name."""
    parts = name[: -len(SUFFIX)].split("-") if name.endswith(SUFFIX) else []
    if len(parts) != 3 or not parts[1].isdigit():
        return None
    return parts[0], int(parts[1])


def _bytes(row: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, row.schema) as w:
        w.write_table(row)
    return sink.getvalue().to_pybytes()


def write(run: Location, name: str, row: pa.Table) -> None:
    """Store `row` as the pending file `name` of the run at `run`, whole or not at all."""
    data = _bytes(row)
    loc = folder(run).child(name)
    if not loc.is_local:
        files.put_bytes(loc, data)  # one PUT
        return
    path = loc.uri
    tmp = os.path.join(os.path.dirname(path), f".{uuid.uuid4().hex}.tmp")
    try:
        try:
            f = open(tmp, "wb")
        except FileNotFoundError:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            f = open(tmp, "wb")
        with f:
            f.write(data)
        os.replace(tmp, path)
    except OSError as e:
        raise StorageError(f"could not write the pending log {path}: {e}") from None


def names(run: Location) -> list[str]:
    """The pending files of the run at `run`, sorted; [] when none (locally one directory read,
    on a bucket one LIST)."""
    loc = folder(run)
    if loc.is_local:
        try:
            return sorted(n for n in os.listdir(loc.uri) if n.endswith(SUFFIX))
        except FileNotFoundError:
            return []
        except OSError as e:
            raise StorageError(f"could not list {loc.uri}: {e}") from None
    return [n for n in files.list_dir(loc) if n.endswith(SUFFIX)]


def read(run: Location, name: str) -> pa.Table:
    """The row of the pending file `name`."""
    return pa.ipc.open_stream(files.get_bytes(folder(run).child(name))).read_all()


def local_stamp(logs_uri: str) -> int | None:
    """The mtime (ns since the epoch) of the local pending folder beside the journal at `logs_uri`
    (a path), None when it does not exist: one stat. Creating, renaming or deleting a pending file
    changes it, so an unchanged stamp says the folder's names are the ones last listed."""
    try:
        return os.stat(os.path.join(os.path.dirname(logs_uri.rstrip("/")), DIR)).st_mtime_ns
    except OSError:
        return None


def age_s(run: Location, name: str) -> float:
    """Seconds since the pending file `name` was written (0 when unknown)."""
    loc = folder(run).child(name)
    if loc.is_local:
        try:
            return max(0.0, datetime.now(UTC).timestamp() - os.stat(loc.uri).st_mtime)
        except OSError:
            return 0.0
    when = files.last_modified(loc)
    return 0.0 if when is None else max(0.0, (datetime.now(UTC) - when).total_seconds())


def delete(run: Location, done: list[str]) -> None:
    """Remove the pending files `done` (committed); missing ones are fine."""
    loc = folder(run)
    if not loc.is_local:
        files.delete_files([loc.child(name) for name in done])  # one request per 1,000 on a bucket
        return
    for name in done:
        try:
            os.remove(os.path.join(loc.uri, name))
        except FileNotFoundError:
            pass
        except OSError as e:
            raise StorageError(f"could not delete {loc.uri}/{name}: {e}") from None


def write_batch_fragment(loc: Location, rows: pa.Table) -> tuple[list[FragmentMetadata], list[tuple[int, int]]]:
    """Write `rows` as uncommitted data of the dataset at `loc`: one data file (one fragment) for
    the batch, unless Lance splits a very large one. Returns (the fragments written, in row
    order; for each row, (the index of its fragment in that list, its offset there)).
    `writes.commit_files` commits them in one append."""
    with storage_errors(loc, "write to"):
        held = handles.held(loc)
        target = held if held is not None else loc.uri  # not `or`: bool(dataset) counts its rows
        written = write_fragments(rows, target, schema=rows.schema, max_rows_per_file=max(1, rows.num_rows),
                                  storage_options=loc.lance_options())
    starts = [0]
    for fragment in written:
        starts.append(starts[-1] + fragment.physical_rows)
    if starts[-1] != rows.num_rows:
        raise StorageError(f"writing {rows.num_rows} journal rows to {loc.redact(loc.uri)} wrote {starts[-1]}: "
                           "nothing was committed; the group commit is retried")
    # their compaction, seconds later, need not read them back
    written_rows.note(loc, written, [rows.slice(starts[n], f.physical_rows) for n, f in enumerate(written)])
    return written, [(n, offset) for n, f in enumerate(written) for offset in range(f.physical_rows)]
