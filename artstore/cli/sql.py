"""The `sql` command: one read-only SELECT over every run of the store."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from artstore.cli.common import StorageOption, StoreOption, err_console, get_store, handle_errors
from artstore.cli.output import Format, FormatOption, OutputOption, render
from artstore.read.sql import VIEWS, named_parameters, versions_read

_INT = re.compile(r"-?[0-9]+")
_FLOAT = re.compile(r"-?([0-9]+\.[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?|-?[0-9]+[eE][-+]?[0-9]+")


def register(app: typer.Typer) -> None:
    app.command("sql", help=_HELP)(sql)


def value(text: str) -> Any:
    """A parameter from the command line: an int or float when it reads as one exactly, else text."""
    if _INT.fullmatch(text) and str(int(text)) == text:
        return int(text)
    if _FLOAT.fullmatch(text):
        return float(text)
    return text


def parse_params(query: str, params: list[str] | None) -> list[Any] | dict[str, Any] | None:
    """--param VALUE binds the next `?`; with `$name` placeholders each is --param NAME=VALUE."""
    if not params:
        return None
    if not named_parameters(query):
        return [value(p) for p in params]
    bound = {}
    for p in params:
        name, sep, text = p.partition("=")
        if not sep or not name:
            raise typer.BadParameter(f"{p!r}: the query uses $names, so give NAME=VALUE", param_hint="--param")
        bound[name] = value(text)
    return bound


def parse_as_of(text: str | None) -> int | str | datetime | None:
    """A version number, an ISO time (UTC unless it says otherwise), or a tag."""
    if text is None:
        return None
    if _INT.fullmatch(text):
        return int(text)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return text
    return when if when.tzinfo else when.replace(tzinfo=UTC)


_HELP = f"""Run one read-only SELECT over every run of the store (DuckDB SQL).

Views (each has project and model):

{chr(10).join(f"  {name}: {doc}" for name, doc in VIEWS.items())}

Examples:

  artstore sql "SELECT model, step, avg(reward) FROM trajectories WHERE split = 'val' GROUP BY ALL ORDER BY ALL"

  artstore sql "SELECT step, value FROM metrics WHERE model = ? AND name = 'val/reward' ORDER BY value DESC LIMIT 1" --param agent-001

  artstore sql "SELECT * FROM messages WHERE role = 'tool' AND starts_with(content, 'ERROR')" --format csv --output errors.csv

  artstore sql "SELECT count(*) FROM trajectories" --as-of release-1

Anything that writes or reads outside the store (CREATE, COPY, ATTACH, read_csv, ...) is refused (exit 1).
"""


@handle_errors
def sql(
    query: Annotated[str, typer.Argument(metavar="QUERY", help="One SELECT statement.")],
    store: StoreOption = ".art",
    storage_option: StorageOption = None,
    param: Annotated[list[str] | None, typer.Option(
        "--param", "-p", help="A bound parameter: VALUE for each ? in order, or NAME=VALUE for $NAME. "
                              "Numbers are bound as numbers. Repeatable.")] = None,
    as_of: Annotated[str | None, typer.Option(
        "--as-of", help="Read every run as of a version number, a tag, or an ISO time (UTC by default).")] = None,
    project: Annotated[list[str] | None, typer.Option(
        "--project", help="Only runs of this project (repeatable).")] = None,
    fmt: FormatOption = Format.table,
    output: OutputOption = None,
    show_versions: Annotated[bool, typer.Option(
        "--show-versions", help="Print the table versions read (JSON, on stderr); pass them back as as_of "
                                "to Store.sql to read the same data again.")] = False,
) -> None:
    s = get_store(store, storage_option)
    result = s.sql(query, parse_params(query, param), as_of=parse_as_of(as_of), projects=project)
    render(result, fmt, output)
    if show_versions:
        err_console.print(json.dumps(versions_read(result)), highlight=False, soft_wrap=True)
