"""What every command shares: the --store and --storage-option options, and error handling."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from artstore.errors import ArtstoreError, InvalidNameError, RunNotFoundError, StoreNotFoundError
from artstore.read.run import Run
from artstore.read.store import Store, open_store

console = Console()
err_console = Console(stderr=True)

# Exit codes: 0 ok, 1 artstore error (bad input, refused SQL, storage), 2 usage (typer), 3 not found
# (store, run, version or tag).
EXIT_ERROR, EXIT_NOT_FOUND = 1, 3

StoreOption = Annotated[str, typer.Option(
    "--store", "-s", envvar="ARTSTORE_STORE",
    help="The store: a folder (default .art), file://, s3://bucket/prefix or gs://bucket/prefix.")]
StorageOption = Annotated[list[str] | None, typer.Option(
    "--storage-option", "-o", metavar="KEY=VALUE",
    help="A storage option as Lance spells it (aws_endpoint, aws_region, allow_http, ...). Repeatable.")]


def parse_options(pairs: list[str] | None) -> dict[str, str]:
    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise typer.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--storage-option")
        k, v = pair.split("=", 1)
        out[k.strip()] = v
    return out


def get_store(store: str, storage_option: list[str] | None, must_exist: bool = True) -> Store:
    """The store named on the command line; a local one must exist unless the command creates it."""
    s = open_store(store or os.environ.get("ARTSTORE_STORE", ".art"), parse_options(storage_option))
    if must_exist and s.location.is_local and not os.path.isdir(s.uri):
        raise StoreNotFoundError(f"no store at {s.uri}; give one with --store PATH (or set ARTSTORE_STORE)")
    return s


def get_run(store: Store, ref: str, must_exist: bool = True) -> Run:
    """PROJECT/MODEL -> Run."""
    if ref.count("/") != 1:
        raise InvalidNameError("run", f"{ref!r}: name a run as PROJECT/MODEL, e.g. email-search/agent-001")
    project, name = ref.split("/")
    run = store.run(project, name)
    if must_exist and not run.exists():
        raise RunNotFoundError(f"no run {ref} in {store.uri}; `artstore runs --store {store.uri}` lists them")
    return run


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Print artstore errors as one clear line and exit non-zero, instead of a traceback."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except StoreNotFoundError as e:
            _fail(e)
            raise typer.Exit(EXIT_NOT_FOUND) from None
        except ArtstoreError as e:
            _fail(e)
            raise typer.Exit(EXIT_ERROR) from None
    return wrapper


def _fail(e: ArtstoreError) -> None:
    # One line: long errors (DuckDB's, storage paths) must not be wrapped onto several.
    err_console.print(f"[red]error:[/red] {type(e).__name__}: {escape(str(e))}", highlight=False, soft_wrap=True)
