"""Table schemas, loaded from the JSON files in `schemas/` (the single source of truth).

Each file names the table, a schema version, a doc string and its fields. A field's type is a
name ("string", "int64", "int32", "float64", "float32", "bool", "timestamp" = microseconds UTC,
"large_binary")
or an object: {"list": T}, {"struct": [fields]}, {"map": [K, V]}.

Field docs stay in the JSON files (`table_spec`, `field_doc`): they are not Arrow field metadata,
because Lance copies a dataset's schema into every manifest and every data file it writes (a
run's thousands of versions each repeated every doc string).
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import pyarrow as pa

from artstore.errors import ArtstoreError

_SCALARS: dict[str, pa.DataType] = {
    "string": pa.string(),
    "int64": pa.int64(),
    "int32": pa.int32(),
    "int8": pa.int8(),
    "float64": pa.float64(),
    "float32": pa.float32(),
    "bool": pa.bool_(),
    "timestamp": pa.timestamp("us", tz="UTC"),
    "large_binary": pa.large_binary(),
}
# Lance enforces uniqueness of this key in merge_insert under concurrent writers.
PRIMARY_KEY_META = {b"lance-schema:unenforced-primary-key": b"true"}


def _schema_dir() -> Path:
    try:
        return Path(str(resources.files("artstore.schemas")))
    except ModuleNotFoundError:  # running from a source checkout without an install
        return Path(__file__).resolve().parent.parent / "schemas"


def _arrow_type(spec: Any) -> pa.DataType:
    if isinstance(spec, str):
        return _SCALARS[spec]
    if "list" in spec:
        return pa.list_(_arrow_type(spec["list"]))
    if "struct" in spec:
        return pa.struct([_arrow_field(f) for f in spec["struct"]])
    if "map" in spec:
        key, value = spec["map"]
        return pa.map_(_arrow_type(key), _arrow_type(value))
    raise ArtstoreError(f"unknown type in schema file: {spec!r}")


def _arrow_field(spec: dict[str, Any]) -> pa.Field:
    meta = PRIMARY_KEY_META if spec.get("primary_key") else None
    return pa.field(spec["name"], _arrow_type(spec["type"]), spec.get("nullable", True), meta)


@cache
def table_spec(table: str) -> dict[str, Any]:
    """The parsed JSON spec of `table` (e.g. "trajectories")."""
    path = _schema_dir() / f"{table}.json"
    if not path.exists():
        raise ArtstoreError(f"no schema file for table {table!r} in {path.parent}")
    return json.loads(path.read_text())


@cache
def arrow_schema(table: str) -> pa.Schema:
    """The Arrow schema of `table`: names, types, nullability, and the key marker as field
    metadata (docs: `field_doc`)."""
    spec = table_spec(table)
    meta = {b"artstore.table": table.encode(), b"artstore.schema_version": str(spec["schema_version"]).encode()}
    return pa.schema([_arrow_field(f) for f in spec["fields"]], metadata=meta)


def field_doc(table: str, name: str) -> str:
    """The doc string of a top-level field of `table`, from its schema file ("" when it has none)."""
    for f in table_spec(table)["fields"]:
        if f["name"] == name:
            return f.get("doc", "")
    raise ArtstoreError(f"table {table!r} has no field {name!r}")


def table_names() -> list[str]:
    """Every table that has a schema file."""
    return sorted(p.stem for p in _schema_dir().glob("*.json"))
