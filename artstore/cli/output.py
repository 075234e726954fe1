"""Writing a result table: a rich table on a terminal, plain TSV when piped, or CSV, JSON or
Parquet for other programs.

Every value DuckDB or a run can hold is written: TIME, INTERVAL, UUID, DECIMAL, BLOB, nested
values, infinite timestamps ('infinity'), NaN and infinities (null in JSON, which has no NaN).
Names (project, model, metric, tag) are never shortened; only long free text is, in the terminal
table, where --format json or csv shows it whole.
"""

from __future__ import annotations

import base64
import json
import math
import sys
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from uuid import UUID

import typer

from artstore.cli.common import console

if TYPE_CHECKING:
    import pyarrow as pa

MAX_CELL = 80  # characters of free text in a terminal table cell
# Columns holding names: never shortened or wrapped mid-name in a table.
NAME_COLUMNS = {"project", "model", "run", "name", "metric", "tag", "tags", "split", "table", "source"}


class Format(StrEnum):
    table = "table"
    tsv = "tsv"
    csv = "csv"
    json = "json"
    parquet = "parquet"


FormatOption = Annotated[Format | None, typer.Option(
    "--format", "-f", case_sensitive=False,
    help="table (for people; the default on a terminal), tsv (the default when piped or with --output), "
         "csv (with a header row), json (an array of objects) or parquet (needs --output).")]
OutputOption = Annotated[Path | None, typer.Option(
    "--output", "-O", dir_okay=False, help="Write to this file instead of standard output.")]

_BY_SUFFIX = {".csv": Format.csv, ".json": Format.json, ".parquet": Format.parquet, ".tsv": Format.tsv}


def resolve(fmt: Format | None, output: Path | None = None) -> Format:
    """The format to write: the one asked for; else from --output's suffix; else a table on a
    terminal and TSV when standard output is a pipe or a file."""
    if fmt is not None:
        return fmt
    if output is not None:
        return _BY_SUFFIX.get(output.suffix.lower(), Format.tsv)
    return Format.table if sys.stdout.isatty() else Format.tsv


# -- one value -----------------------------------------------------------------------------------
def _interval(v: Any) -> str:
    """A DuckDB INTERVAL (pyarrow MonthDayNano) as ISO 8601, e.g. P1M3DT4.5S."""
    seconds = v.nanoseconds / 1e9
    out = "P" + (f"{v.months}M" if v.months else "") + (f"{v.days}D" if v.days else "")
    return out + (f"T{seconds:g}S" if seconds or out == "P" else "")


def plain(value: Any) -> Any:
    """A value as JSON can hold it: times as ISO 8601 text, bytes as base64, NaN and infinities as null."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, timedelta):
        return f"PT{value.total_seconds():g}S"
    if isinstance(value, Decimal):
        if not value.is_finite():
            return None
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, UUID):
        return str(value)
    if type(value).__name__ == "MonthDayNano":  # a named tuple: before the tuples below
        return _interval(value)
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return str(value)


def _text(value: Any) -> str:
    """A value as one line of text (a table or TSV cell)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="seconds")
    if isinstance(value, (list, dict, tuple)) and type(value).__name__ != "MonthDayNano":
        return json.dumps(plain(value), ensure_ascii=False)
    out = plain(value)
    return str(out) if out is not None else str(value)


def column_values(column: pa.ChunkedArray) -> list[Any]:
    """A column's Python values. A timestamp or date beyond Python's range (DuckDB's 'infinity')
    comes back as the text 'infinity' or '-infinity' instead of failing the whole result."""
    try:
        return column.to_pylist()
    except (OverflowError, ValueError):
        out = []
        for scalar in column:
            try:
                out.append(scalar.as_py())
            except (OverflowError, ValueError):
                out.append("infinity" if scalar.cast("int64").as_py() > 0 else "-infinity")
        return out


def rows(table: pa.Table) -> list[dict[str, Any]]:
    columns = {name: column_values(table.column(i)) for i, name in enumerate(table.column_names)}
    return [dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)] \
        if columns else [{} for _ in range(table.num_rows)]


# -- a table -------------------------------------------------------------------------------------
def _for_csv(table: pa.Table) -> pa.Table:
    """Columns CSV cannot hold (nested, intervals, out-of-range times) as text."""
    import pyarrow as pa

    for i, field in enumerate(table.schema):
        t = field.type
        simple = not (pa.types.is_nested(t) or pa.types.is_interval(t) or pa.types.is_binary(t)
                      or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t) or pa.types.is_time(t)
                      or pa.types.is_duration(t) or pa.types.is_dictionary(t) or pa.types.is_null(t)
                      or getattr(t, "extension_name", None) is not None)
        if simple and (pa.types.is_timestamp(t) or pa.types.is_date(t)):
            try:
                table.column(i).to_pylist()
            except (OverflowError, ValueError):
                simple = False
        if not simple:
            text = [None if v is None else v if isinstance(v, str) else _text(v)
                    for v in column_values(table.column(i))]
            table = table.set_column(i, pa.field(field.name, pa.string()), pa.array(text, pa.string()))
    return table


def _tsv_cell(value: Any) -> str:
    if isinstance(value, float):  # every digit: TSV is for programs
        return repr(value) if math.isfinite(value) else str(value)
    return _text(value).replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _table_cell(name: str, value: Any) -> str:
    if isinstance(value, datetime) and value.utcoffset() is not None and not value.utcoffset():
        value = value.replace(tzinfo=None)  # every time artstore stores is UTC: the offset is noise here
    text = _text(value)
    if name in NAME_COLUMNS or len(text) <= MAX_CELL:
        return text
    return text[: MAX_CELL - 1] + "…"


def print_table(table: pa.Table, title: str | None = None, count: bool = True) -> None:
    """A rich table for a person. When it is wider than the terminal, each row is printed as a
    block of `column  value` lines instead (as psql's expanded display), so no name is cut and
    no column squeezed away."""
    from rich import box
    from rich.measure import Measurement
    from rich.table import Table

    data = rows(table)
    view = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for name in table.column_names:
        view.add_column(name, overflow="fold", no_wrap=name in NAME_COLUMNS)
    for row in data:
        view.add_row(*(_table_cell(k, v) for k, v in row.items()))
    natural = Measurement.get(console, console.options.update(width=10**6, max_width=10**6), view).maximum
    if natural > console.width:
        _print_expanded(table.column_names, data, title)
    else:
        if title:
            console.print(title, style="italic", markup=False, highlight=False, soft_wrap=True)
        console.print(view)
    if count and table.num_rows != 1:
        console.print(f"{table.num_rows} rows", style="dim")


def _print_expanded(names: list[str], data: list[dict[str, Any]], title: str | None) -> None:
    from rich.markup import escape

    if title:
        console.print(title, style="italic", markup=False, highlight=False, soft_wrap=True)
    width = max((len(n) for n in names), default=0)
    for i, row in enumerate(data):
        console.print(f"[dim]-- row {i + 1} --[/]", highlight=False)
        for name, value in row.items():
            console.print(f"[bold]{escape(name.ljust(width))}[/]  {escape(_table_cell(name, value))}",
                          highlight=False, soft_wrap=name in NAME_COLUMNS)


def _write(text: str | bytes, output: Path | None) -> None:
    if output is None:
        sys.stdout.write(text if isinstance(text, str) else text.decode())
        sys.stdout.flush()  # a full disk or closed pipe fails here, inside the command's error handling
    elif isinstance(text, bytes):
        output.write_bytes(text)
    else:
        output.write_text(text)


def render(table: pa.Table, fmt: Format | None = None, output: Path | None = None, title: str | None = None) -> None:
    """Write `table` as `fmt` (see `resolve`) to `output` (a file) or standard output."""
    fmt = resolve(fmt, output)
    if fmt == Format.parquet:
        import pyarrow.parquet as pq

        if output is None:
            raise typer.BadParameter("parquet is binary: give --output FILE", param_hint="--format")
        pq.write_table(table, output)
        return
    if fmt == Format.table:
        if output is not None:
            raise typer.BadParameter("a terminal table is for the screen: use --format tsv, csv or json with "
                                     "--output", param_hint="--output")
        print_table(table, title)
        return
    if fmt == Format.csv:
        import pyarrow as pa
        import pyarrow.csv as pacsv

        sink = pa.BufferOutputStream()
        pacsv.write_csv(_for_csv(table), sink, pacsv.WriteOptions(include_header=True))
        _write(sink.getvalue().to_pybytes(), output)
    elif fmt == Format.tsv:
        lines = ["\t".join(table.column_names)]
        lines += ["\t".join(_tsv_cell(v) for v in row.values()) for row in rows(table)]
        _write("\n".join(lines) + "\n", output)
    else:
        write_json(rows(table), output)


def write_json(objects: list[dict[str, Any]], output: Path | None = None) -> None:
    """Objects as a JSON array (strict JSON: NaN and infinities become null)."""
    _write(json.dumps([plain(o) for o in objects], ensure_ascii=False, indent=1, allow_nan=False) + "\n", output)
