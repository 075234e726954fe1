"""Files that are not tables (checkpoint adapters, exports), through fsspec.

A reader never sees a half-written file under its final name:

- on local disk a file is written under a temporary name beside it (`.{name}.artstore-tmp-{id}`),
  fsynced, then renamed into place (a rename within a folder is atomic); a failed write removes
  it. Other fsspec filesystems get the same through fsspec (temporary name, then `mv`);
- on S3 and GCS the object store's own write is already atomic (a single PUT, or a multipart /
  resumable upload, becomes visible only once complete), so the file is written to its final
  name directly. A temporary name plus `mv` would add a server-side copy and a delete (S3 has no
  rename) and, when a writer dies between the two, a visible temporary object.

Listings (`list_dir`, `glob`, `size`) skip temporary names.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from artstore.errors import ArtstoreError
from artstore.storage.failures import storage_error
from artstore.storage.location import Location

if TYPE_CHECKING:  # imported on first use: fsspec (asyncio, ...) costs ~0.08 s of CPU, and a local
    import fsspec  # store's reads (`artstore runs`, a version hint) need none of it

TMP_MARK = ".artstore-tmp-"
_ATOMIC_OBJECT_STORES = frozenset({"s3", "gs"})
_STORAGE_LIBRARIES = frozenset({"botocore", "aiobotocore", "aiohttp", "s3fs", "gcsfs", "google", "requests",
                                "urllib3", "fsspec"})


def filesystem(loc: Location) -> fsspec.AbstractFileSystem:
    """The fsspec filesystem of `loc` (instances are cached by fsspec per set of arguments)."""
    import fsspec

    protocol, kwargs = loc.fsspec_arguments()
    fs = fsspec.filesystem(protocol, **kwargs)
    if protocol == "s3":
        # botocore retries client_max_retries times (see Location.fsspec_arguments); s3fs's own
        # loop (5 tries of botocore's tries for SlowDown) would multiply that to minutes.
        fs.retries = 1
    return fs


def _is_storage_failure(e: BaseException) -> bool:
    return isinstance(e, (OSError, ValueError, RuntimeError, TimeoutError)) or \
        type(e).__module__.split(".")[0] in _STORAGE_LIBRARIES


@contextlib.contextmanager
def _errors(loc: Location, action: str) -> Iterator[None]:
    try:
        yield
    except ArtstoreError:
        raise
    except Exception as e:
        if not _is_storage_failure(e):
            raise
        raise storage_error(loc, action, e) from None


def _is_tmp(path: str) -> bool:
    return TMP_MARK in path.rstrip("/").rsplit("/", 1)[-1]


def _tmp_name(path: str) -> str:
    parent, _, name = path.rpartition("/")
    return f"{parent}/.{name}{TMP_MARK}{uuid.uuid4().hex}"


def _write_local(path: str, fill: Callable[[BinaryIO], object]) -> None:
    """Write a local file under a temporary name beside it, fsync, then rename into place."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = _tmp_name(path)
    try:
        with open(tmp, "wb") as f:
            fill(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def _write_elsewhere(fs: fsspec.AbstractFileSystem, path: str, write: Callable[[str], object]) -> None:
    """Other filesystems: write a temporary name through fsspec, then move it into place."""
    fs.makedirs(fs._parent(path), exist_ok=True)
    tmp = _tmp_name(path)
    try:
        write(tmp)
        fs.mv(tmp, path)
    except BaseException:
        with contextlib.suppress(Exception):
            fs.rm(tmp)
        raise


def put_bytes(loc: Location, data: bytes) -> None:
    """Write `data` at `loc` atomically: readers see the old file, or all of the new one."""
    fs, path = filesystem(loc), loc.path_for_fsspec()
    with _errors(loc, "write"):
        if loc.scheme in _ATOMIC_OBJECT_STORES:
            fs.pipe_file(path, data)
        elif loc.is_local:
            _write_local(path, lambda f: f.write(data))
        else:
            _write_elsewhere(fs, path, lambda tmp: fs.pipe_file(tmp, data))


def put_file(loc: Location, local_path: str | os.PathLike[str]) -> None:
    """Upload the local file `local_path` to `loc` atomically (streamed, never read whole)."""
    fs, path, src = filesystem(loc), loc.path_for_fsspec(), os.fspath(local_path)
    with _errors(loc, "write"):
        if loc.scheme in _ATOMIC_OBJECT_STORES:
            fs.put_file(src, path)
        elif loc.is_local:
            def copy(f: BinaryIO) -> None:
                with open(src, "rb") as s:
                    shutil.copyfileobj(s, f, 1 << 20)
            _write_local(path, copy)
        else:
            _write_elsewhere(fs, path, lambda tmp: fs.put_file(src, tmp))


def get_bytes(loc: Location) -> bytes:
    with _errors(loc, "read"):
        return _read(loc)


def get_bytes_or_none(loc: Location) -> bytes | None:
    """`get_bytes`, or None when there is no file at `loc` (one request; any other failure raises)."""
    with _errors(loc, "read"):
        try:
            return _read(loc)
        except FileNotFoundError:
            return None


def _read(loc: Location) -> bytes:
    if loc.is_local:  # what fsspec's local filesystem does, without importing it
        with open(loc.path_for_fsspec(), "rb") as f:
            return f.read()
    return filesystem(loc).cat_file(loc.path_for_fsspec())


def get_file(loc: Location, local_path: str | os.PathLike[str]) -> None:
    """Download `loc` to the local file `local_path` (streamed)."""
    with _errors(loc, "read"):
        filesystem(loc).get_file(loc.path_for_fsspec(), os.fspath(local_path))


def exists(loc: Location) -> bool:
    with _errors(loc, "check"):
        if loc.is_local:
            return os.path.lexists(loc.path_for_fsspec())
        return filesystem(loc).exists(loc.path_for_fsspec())


def first_name(loc: Location) -> str | None:
    """The name of the first entry directly under the S3 folder `loc` in key order (one LIST
    request limited to one key, however many there are); None when it is empty."""
    fs = filesystem(loc)
    bucket, key, _ = fs.split_path(loc.path_for_fsspec())
    with _errors(loc, "list"):
        found = fs.call_s3("list_objects_v2", Bucket=bucket, Prefix=key.rstrip("/") + "/", MaxKeys=1)
    contents = found.get("Contents") or []
    return contents[0]["Key"].rsplit("/", 1)[-1] if contents else None


def list_dir(loc: Location) -> list[str]:
    """Names (not paths) of the entries directly under `loc`; [] when it does not exist."""
    fs, path = filesystem(loc), loc.path_for_fsspec()
    with _errors(loc, "list"):
        if loc.is_local:
            if not fs.exists(path):
                return []
            found = fs.ls(path, detail=False)
        elif loc.scheme == "s3":
            found = _s3_names(fs, path)
        else:  # one LIST, fresh (not fsspec's cached listing), no existence check first (a HEAD and a LIST)
            try:
                found = fs.ls(path, detail=False, refresh=True)
            except FileNotFoundError:
                return []
        return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in found if not _is_tmp(p))


_S3_PAGE = 1000  # keys per LIST request (S3's most)


def _s3_pages(fs: fsspec.AbstractFileSystem, path: str) -> Iterator[dict]:
    """The LIST responses of the S3 folder `path`: one per 1,000 entries, none cached."""
    bucket, key, _ = fs.split_path(path)
    prefix, token = key.rstrip("/") + "/", None
    while True:
        page = fs.call_s3("list_objects_v2", Bucket=bucket, Prefix=prefix, Delimiter="/", MaxKeys=_S3_PAGE,
                          **({"ContinuationToken": token} if token else {}))
        yield page
        token = page.get("NextContinuationToken")
        if not page.get("IsTruncated") or not token:
            return


def _s3_names(fs: fsspec.AbstractFileSystem, path: str) -> list[str]:
    """The entries directly under the S3 folder `path`: one LIST per 1,000, none cached, and a
    missing folder is one empty LIST (s3fs's `ls` lists its parent too, or HEADs it)."""
    prefix, found = fs.split_path(path)[1].rstrip("/") + "/", []
    for page in _s3_pages(fs, path):
        found += [c["Key"] for c in page.get("Contents") or [] if c["Key"] != prefix]
        found += [c["Prefix"] for c in page.get("CommonPrefixes") or []]
    return found


def list_modified(loc: Location) -> dict[str, datetime]:
    """{name: last modified (UTC)} of the files directly under `loc` (on S3 one LIST per 1,000,
    none cached); {} when it does not exist."""
    fs, path = filesystem(loc), loc.path_for_fsspec()
    with _errors(loc, "list"):
        if loc.scheme == "s3":
            found = {c["Key"]: c.get("LastModified") for page in _s3_pages(fs, path) for c in page.get("Contents") or []}
        else:
            try:
                found = {i["name"]: _modified(i) for i in fs.ls(path, detail=True, refresh=True) if i.get("type") != "directory"}
            except FileNotFoundError:
                return {}
    out = {}
    for key, modified in found.items():
        name = key.rstrip("/").rsplit("/", 1)[-1]
        if name and not _is_tmp(key):
            out[name] = modified.astimezone(UTC) if isinstance(modified, datetime) else _modified({"mtime": modified})
    return {n: t for n, t in out.items() if t is not None}


def glob(loc: Location, pattern: str) -> list[str]:
    """Paths below `loc` matching `pattern`, relative to `loc`."""
    fs, path = filesystem(loc), loc.path_for_fsspec().rstrip("/")
    with _errors(loc, "list"):
        return sorted(p[len(path) + 1:] if p.startswith(path) else p
                      for p in fs.glob(f"{path}/{pattern}") if not _is_tmp(p))


def delete(loc: Location, recursive: bool = True) -> None:
    """Delete `loc` (a file or folder); missing is fine."""
    fs, path = filesystem(loc), loc.path_for_fsspec()
    with _errors(loc, "delete"):
        try:
            if fs.exists(path):
                fs.rm(path, recursive=recursive)
        except FileNotFoundError:  # deleted between the check and the rm (another merger, a cleanup)
            pass


def delete_files(locs: list[Location]) -> None:
    """Delete the files `locs` (of one filesystem); missing ones are fine. No existence check
    first: on S3 one batch request per 1,000 files (a HEAD and a delete each through `delete`)."""
    if not locs:
        return
    fs, paths = filesystem(locs[0]), [loc.path_for_fsspec() for loc in locs]
    with _errors(locs[0], "delete"):
        try:
            fs.rm(paths)
        except FileNotFoundError:  # a filesystem that refuses a missing path: one at a time
            for path in paths:
                try:  # not exists-then-rm: another deleter (a merge, a cleanup) may go between
                    fs.rm(path)
                except FileNotFoundError:
                    pass


def size(loc: Location) -> int:
    """Total bytes of a file, or of every file under a folder (0 when missing)."""
    fs, path = filesystem(loc), loc.path_for_fsspec()
    with _errors(loc, "size"):
        if not fs.exists(path):
            return 0
        if fs.isfile(path):
            return int(fs.size(path))
        return sum(int(info.get("size") or 0) for p, info in fs.find(path, detail=True).items() if not _is_tmp(p))


def last_modified(loc: Location) -> datetime | None:
    """When a file at or below `loc` was last written (UTC), counting unfinished temporary files
    (a copy in progress); None when there is none."""
    fs, path = filesystem(loc), loc.path_for_fsspec()
    with _errors(loc, "list"):
        if not fs.exists(path):
            return None
        infos = [fs.info(path)] if fs.isfile(path) else list(fs.find(path, detail=True).values())
    times = [t for t in (_modified(i) for i in infos) if t is not None]
    return max(times, default=None)


def _modified(info: dict) -> datetime | None:
    value = info.get("mtime", info.get("LastModified", info.get("updated", info.get("mtime_ns"))))
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value, UTC)
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


def walk(loc: Location) -> list[str]:
    """Paths of every file below `loc` (recursively), relative to `loc`, '/'-separated and sorted;
    [] when `loc` does not exist."""
    fs, path = filesystem(loc), loc.path_for_fsspec().rstrip("/")
    with _errors(loc, "list"):
        if not fs.exists(path) or not fs.isdir(path):
            return []
        found = fs.find(path, withdirs=False)
    prefix = path + "/"
    return sorted(p[len(prefix):] if p.startswith(prefix) else p for p in found if not _is_tmp(p))


def copy_file(src: Location, dst: Location, chunk_bytes: int = 8 << 20) -> int:
    """Copy one file from `src` to `dst` (any two storages), streamed in chunks, written as
    atomically as `put_file` writes. Returns the bytes copied."""
    sfs, dfs = filesystem(src), filesystem(dst)
    spath, dpath = src.path_for_fsspec(), dst.path_for_fsspec()
    copied = 0

    def stream(fout: BinaryIO) -> None:
        nonlocal copied
        with sfs.open(spath, "rb") as fin:
            while chunk := fin.read(chunk_bytes):
                fout.write(chunk)
                copied += len(chunk)

    def stream_to(path: str) -> None:
        with dfs.open(path, "wb") as fout:
            stream(fout)

    with _errors(dst, f"copy {src.uri} to"):
        if dst.scheme in _ATOMIC_OBJECT_STORES:
            stream_to(dpath)
        elif dst.is_local:
            _write_local(dpath, stream)
        else:
            _write_elsewhere(dfs, dpath, stream_to)
    return copied


def copy_tree(src: Location, dst: Location) -> int:
    """Copy every file below `src` to the same relative path below `dst`. Returns bytes copied."""
    return sum(copy_file(src.child(*rel.split("/")), dst.child(*rel.split("/"))) for rel in walk(src))


def download_dir(loc: Location, dest: str | os.PathLike[str]) -> Path:
    """Copy the folder (or single file) at `loc` to the local folder `dest`, atomically: files
    land in a temporary folder beside `dest` that is then renamed. An existing `dest` is taken
    as a complete earlier download and reused (checkpoint files never change once ready)."""
    dest = Path(dest)
    if dest.exists():
        return dest
    fs = filesystem(loc)
    root = fs._strip_protocol(loc.path_for_fsspec()).rstrip("/")
    tmp = dest.parent / f".{dest.name}.tmp-{uuid.uuid4().hex}"
    with _errors(loc, "download"):
        if not fs.exists(root):
            raise FileNotFoundError(f"{loc.uri} does not exist")
        try:
            tmp.mkdir(parents=True)
            remote = fs.find(root) if fs.isdir(root) else [root]
            for path in remote:
                rel = path[len(root) + 1:] if path != root else path.rsplit("/", 1)[-1]
                target = tmp / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                fs.get_file(path, str(target))
            try:
                tmp.rename(dest)
            except OSError:
                if not dest.exists():  # a concurrent download that won the rename is fine
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return dest
