"""Files that are not tables (checkpoint adapters, exports), through fsspec.

Writes go to a temporary name and are then moved into place, so a reader never sees a
half-written file.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import fsspec

from artstore.errors import StorageError
from artstore.storage.location import Location


def filesystem(loc: Location) -> fsspec.AbstractFileSystem:
    protocol, kwargs = loc.fsspec_arguments()
    return fsspec.filesystem(protocol, **kwargs)


@contextlib.contextmanager
def _errors(loc: Location, action: str) -> Iterator[None]:
    try:
        yield
    except (OSError, ValueError) as e:
        raise StorageError(f"{action} {loc.uri} failed: {loc.redact(str(e))}") from None


def put_bytes(loc: Location, data: bytes) -> None:
    """Write `data` at `loc` atomically (temporary name, then move)."""
    fs, path = filesystem(loc), loc.path_for_fsspec()
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    with _errors(loc, "write"):
        fs.makedirs(fs._parent(path), exist_ok=True)
        with fs.open(tmp, "wb") as f:
            f.write(data)
        fs.mv(tmp, path)


def get_bytes(loc: Location) -> bytes:
    with _errors(loc, "read"):
        return filesystem(loc).cat_file(loc.path_for_fsspec())


def exists(loc: Location) -> bool:
    with _errors(loc, "check"):
        return filesystem(loc).exists(loc.path_for_fsspec())


def list_dir(loc: Location) -> list[str]:
    """Names (not paths) of the entries directly under `loc`; [] when it does not exist."""
    fs, path = filesystem(loc), loc.path_for_fsspec()
    with _errors(loc, "list"):
        if not fs.exists(path):
            return []
        return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(path, detail=False))


def glob(loc: Location, pattern: str) -> list[str]:
    """Paths below `loc` matching `pattern`, relative to `loc`."""
    fs, path = filesystem(loc), loc.path_for_fsspec().rstrip("/")
    with _errors(loc, "list"):
        return sorted(p[len(path) + 1:] if p.startswith(path) else p for p in fs.glob(f"{path}/{pattern}"))


def delete(loc: Location, recursive: bool = True) -> None:
    """Delete `loc` (a file or folder); missing is fine."""
    fs, path = filesystem(loc), loc.path_for_fsspec()
    with _errors(loc, "delete"):
        if fs.exists(path):
            fs.rm(path, recursive=recursive)


def size(loc: Location) -> int:
    """Total bytes of a file or of every file under a folder."""
    fs, path = filesystem(loc), loc.path_for_fsspec()
    with _errors(loc, "size"):
        return int(fs.du(path, total=True)) if fs.exists(path) else 0


def walk(loc: Location) -> list[str]:
    """Paths of every file below `loc` (recursively), relative to `loc`, '/'-separated and sorted;
    [] when `loc` does not exist."""
    fs, path = filesystem(loc), loc.path_for_fsspec().rstrip("/")
    with _errors(loc, "list"):
        if not fs.exists(path) or not fs.isdir(path):
            return []
        found = fs.find(path, withdirs=False)
    prefix = path + "/"
    return sorted(p[len(prefix):] if p.startswith(prefix) else p for p in found)


def copy_file(src: Location, dst: Location, chunk_bytes: int = 8 << 20) -> int:
    """Copy one file from `src` to `dst` (any two storages), streamed in chunks and moved into
    place atomically. Returns the bytes copied."""
    sfs, dfs = filesystem(src), filesystem(dst)
    spath, dpath = src.path_for_fsspec(), dst.path_for_fsspec()
    tmp = f"{dpath}.tmp-{uuid.uuid4().hex}"
    copied = 0
    with _errors(dst, f"copy {src.uri} to"):
        dfs.makedirs(dfs._parent(dpath), exist_ok=True)
        with sfs.open(spath, "rb") as fin, dfs.open(tmp, "wb") as fout:
            while chunk := fin.read(chunk_bytes):
                fout.write(chunk)
                copied += len(chunk)
        dfs.mv(tmp, dpath)
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
