"""The `sql` command: one read-only SELECT over every run of the store."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from artstore.cli.common import (
    StorageOption,
    StoreOption,
    err_console,
    get_run,
    get_store,
    handle_errors,
)
from artstore.cli.output import FormatOption, OutputOption, render
from artstore.read.views import VIEWS

_INT = re.compile(r"-?[0-9]+")
_FLOAT = re.compile(r"-?([0-9]+\.[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?|-?[0-9]+[eE][-+]?[0-9]+")


def register(app: typer.Typer) -> None:
    app.command("sql", help=_HELP)(sql)


def value(text: str) -> Any:
    """A parameter as a number, when it reads as one exactly, else as text."""
    if _INT.fullmatch(text) and str(int(text)) == text:
        return int(text)
    if _FLOAT.fullmatch(text):
        return float(text)
    return text


def parse_params(query: str, params: list[str] | None, numbers: bool = False) -> list[Any] | dict[str, Any] | None:
    """--param VALUE binds the next `?`; with `$name` placeholders each is --param NAME=VALUE.

    Values are bound as text, which DuckDB casts to what they are compared with (`model = ?` with
    2024 is the name '2024'; `step = ?` with 3 is the number 3). With `numbers`, values that read
    as numbers are bound as numbers (for `? + 1`, where text has nothing to take its type from)."""
    from artstore.read.sql import named_parameters

    if not params:
        return None
    convert = value if numbers else str
    if not named_parameters(query):
        return [convert(p) for p in params]
    bound = {}
    for p in params:
        name, sep, text = p.partition("=")
        if not sep or not name:
            raise typer.BadParameter(f"{p!r}: the query uses $names, so give NAME=VALUE", param_hint="--param")
        bound[name] = convert(text)
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

  artstore sql "SELECT count(*) FROM trajectories" --run email-search/agent-001 --as-of release-1

  artstore sql "SELECT config->>'learning_rate' AS lr, avg(value) FROM configs JOIN metrics USING (project, model) WHERE source = 'train' AND name = 'val/reward' GROUP BY lr"

Anything that writes or reads outside the store (CREATE, COPY, ATTACH, read_csv, ...) is refused (exit 1).
When piped, the result is TSV unless --format says otherwise.
"""


@handle_errors
def sql(
    query: Annotated[str, typer.Argument(metavar="QUERY", help="One SELECT statement.")],
    store: StoreOption = ".art",
    storage_option: StorageOption = None,
    param: Annotated[list[str] | None, typer.Option(
        "--param", "-p", help="A bound parameter: VALUE for each ? in order, or NAME=VALUE for $NAME. "
                              "Bound as text, cast to what it is compared with. Repeatable.")] = None,
    as_of: Annotated[str | None, typer.Option(
        "--as-of", help="Read as of a version number, a tag, or an ISO time (UTC by default): the --run "
                        "runs, or every run (then each must have that version or tag).")] = None,
    project: Annotated[list[str] | None, typer.Option(
        "--project", help="Only runs of this project (repeatable).")] = None,
    run: Annotated[list[str] | None, typer.Option(
        "--run", "-r", metavar="PROJECT/MODEL", help="Only this run (repeatable); --as-of then applies to it.")] = None,
    fmt: FormatOption = None,
    output: OutputOption = None,
    show_versions: Annotated[bool, typer.Option(
        "--show-versions", help="Print the table versions read (JSON, on stderr); pass them back as as_of "
                                "to Store.sql to read the same data again.")] = False,
) -> None:
    from artstore.errors import SqlError, VersionNotFoundError
    from artstore.read.sql import versions_read

    s = get_store(store, storage_option)
    runs = [get_run(s, r) for r in run or []]
    when = parse_as_of(as_of)
    spec: Any = when if not runs or when is None else {f"{r.project}/{r.name}": when for r in runs}
    keys = [f"{r.project}/{r.name}" for r in runs] or None

    def answer(numbers: bool) -> Any:
        return s.sql(query, parse_params(query, param, numbers), as_of=spec, projects=project, runs=keys)

    try:
        try:
            result = answer(numbers=False)
        except SqlError as first:
            if not param:
                raise
            try:  # text had nothing to take its type from (`? + 1`): bind the numbers as numbers
                result = answer(numbers=True)
            except SqlError:
                raise first from None
    except VersionNotFoundError as e:
        if runs or as_of is None:
            raise
        raise VersionNotFoundError(f"{e}; to read one run as of its own tag or version, add --run PROJECT/MODEL") \
            from None
    render(result, fmt, output)
    if show_versions:
        err_console.print(json.dumps(versions_read(result)), highlight=False, soft_wrap=True)
