"""Writing a result table: a rich table on the terminal, or CSV, JSON or Parquet for other programs."""

from __future__ import annotations

import base64
import json
import sys
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import typer
from rich.table import Table

from artstore.cli.common import console

MAX_CELL = 80  # characters of a cell in the terminal table; --format json shows every value whole


class Format(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"
    parquet = "parquet"


FormatOption = Annotated[Format, typer.Option(
    "--format", "-f", case_sensitive=False,
    help="table (for people), csv (with a header row), json (an array of objects) or parquet (needs --output).")]
OutputOption = Annotated[Path | None, typer.Option(
    "--output", "-O", dir_okay=False, writable=True, help="Write to this file instead of standard output.")]


def _plain(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="seconds")
    text = json.dumps(_plain(value), ensure_ascii=False) if isinstance(value, (list, dict, tuple)) else str(value)
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 1] + "…"


def _flat_for_csv(table: pa.Table) -> pa.Table:
    """Nested columns (lists, structs, maps) as JSON text: CSV holds scalars only."""
    for i, field in enumerate(table.schema):
        if pa.types.is_nested(field.type):
            text = [None if v is None else json.dumps(_plain(v), ensure_ascii=False) for v in table.column(i).to_pylist()]
            table = table.set_column(i, pa.field(field.name, pa.string()), pa.array(text, pa.string()))
    return table


def render(table: pa.Table, fmt: Format = Format.table, output: Path | None = None, title: str | None = None) -> None:
    """Write `table` as `fmt` to `output` (a file) or standard output."""
    if fmt == Format.parquet:
        if output is None:
            raise typer.BadParameter("parquet is binary: give --output FILE", param_hint="--format")
        pq.write_table(table, output)
        return
    if fmt == Format.table:
        if output is not None:
            raise typer.BadParameter("a terminal table is for the screen: use --format csv or json with --output",
                                     param_hint="--output")
        view = Table(*table.column_names, title=title)
        for row in table.to_pylist():
            view.add_row(*(_cell(v) for v in row.values()))
        console.print(view)
        if table.num_rows != 1:
            console.print(f"{table.num_rows} rows", style="dim")
        return
    if fmt == Format.csv:
        sink = pa.BufferOutputStream()
        pacsv.write_csv(_flat_for_csv(table), sink, pacsv.WriteOptions(include_header=True))
        text = sink.getvalue().to_pybytes().decode()
    else:
        text = json.dumps([_plain(r) for r in table.to_pylist()], ensure_ascii=False, indent=1) + "\n"
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text)
