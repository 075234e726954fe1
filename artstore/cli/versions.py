"""Commands about versions: list a run's versions, and tag one."""

from __future__ import annotations

from typing import Annotated

import pyarrow as pa
import typer

from artstore.cli.common import (
    StorageOption,
    StoreOption,
    console,
    get_run,
    get_store,
    handle_errors,
)
from artstore.cli.output import Format, FormatOption, OutputOption, render
from artstore.cli.runs import RunArgument


def register(app: typer.Typer) -> None:
    app.command("versions")(versions)
    app.command("tag")(tag)


@handle_errors
def versions(run: RunArgument, store: StoreOption = ".art", storage_option: StorageOption = None,
             fmt: FormatOption = Format.table, output: OutputOption = None) -> None:
    """List a run's versions (one per commit of its logs table), oldest first, with their tags.

    Any of them can be read back: `artstore sql --as-of N "..."`.

    Example:

        artstore versions email-search/agent-001
    """
    listed = get_run(get_store(store, storage_option), run).versions()
    table = pa.table({
        "version": pa.array([v["version"] for v in listed], pa.int64()),
        "timestamp": pa.array([v["timestamp"] for v in listed], pa.timestamp("us", tz="UTC")),
        "tags": pa.array([v["tags"] for v in listed], pa.list_(pa.string())),
    })
    render(table, fmt, output, title=f"versions of {run}")


@handle_errors
def tag(
    run: RunArgument,
    name: Annotated[str, typer.Argument(help="The tag, e.g. release-1 (a simple name).")],
    version: Annotated[int | None, typer.Option("--version", "-v", help="The version to tag (default: latest).")] = None,
    store: StoreOption = ".art",
    storage_option: StorageOption = None,
) -> None:
    """Name a version of a run. Tagged versions are never cleaned up; moving a tag re-points it.

    Examples:

        artstore tag email-search/agent-001 paper-figures

        artstore tag email-search/agent-001 before-fix --version 41
    """
    tagged = get_run(get_store(store, storage_option), run).tag(name, version)
    console.print(f"tagged version {tagged} of {run} as {name!r}")
