"""What every command shares: the --store and --storage-option options, and error handling.

Commands import artstore's heavy modules (pyarrow, lance, duckdb, openai's types) inside their
bodies, never at module level: `artstore --help` must not pay for them (benchmarks/cli_startup.py).
"""

from __future__ import annotations

import difflib
import errno
import functools
import os
import sys
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from typer.exceptions import TyperException

from artstore.errors import ArtstoreError, InvalidNameError, RunNotFoundError, StoreNotFoundError

if TYPE_CHECKING:
    from artstore.read.run import Run
    from artstore.read.store import Store

console = Console(soft_wrap=True)  # lines are not cut at 80 columns when piped; tables still fit the width
err_console = Console(stderr=True, soft_wrap=True)

# Exit codes (README, "Exit codes"): 0 ok (also when the reader of a pipe stops early, as `| head`
# does), 1 an artstore error (bad input, refused SQL, storage failure), 2 usage (typer), 3 not found
# (store, run, version or tag), 4 an operating-system I/O error (--output into a missing folder, a
# full disk), 130 interrupted (Ctrl-C).
EXIT_ERROR, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_IO, EXIT_INTERRUPTED = 1, 2, 3, 4, 130

StoreOption = Annotated[str, typer.Option(
    "--store", "-s", envvar="ARTSTORE_STORE",
    help="The store: a folder (default .art), file://, s3://bucket/prefix or gs://bucket/prefix.")]
StorageOption = Annotated[list[str] | None, typer.Option(
    "--storage-option", "-o", metavar="KEY=VALUE",
    help="A storage option as Lance spells it (aws_endpoint, aws_region, allow_http, ...). Repeatable.")]
RunArgument = Annotated[str, typer.Argument(metavar="PROJECT/MODEL", help="The run, e.g. email-search/agent-001.")]


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
    from artstore.read.store import open_store

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
        known = [f"{r.project}/{r.name}" for r in store.runs()]
        raise RunNotFoundError(f"no run {ref} in {store.uri}{did_you_mean(ref, known)}; "
                               f"`artstore runs --store {store.uri}` lists them")
    return run


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest of `choices` to a mistyped `word`, else ''."""
    close = difflib.get_close_matches(word, list(choices), n=3, cutoff=0.6)
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Every failure as one line on stderr and a documented exit code, never a traceback."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, TyperException, KeyboardInterrupt):  # usage errors: typer prints them
            raise
        except StoreNotFoundError as e:
            _fail(f"{type(e).__name__}: {e}", EXIT_NOT_FOUND)
        except ArtstoreError as e:
            _fail(f"{type(e).__name__}: {e}", EXIT_ERROR)
        except OSError as e:
            if e.errno == errno.EPIPE:  # the reader went away (`| head`): stop quietly
                quiet_stdout()
                raise typer.Exit(0) from None
            where = f": {e.filename}" if e.filename else ""
            _fail(f"{e.strerror or e}{where}", EXIT_IO)
        except Exception as e:  # a bug: still one line, with the way to see more
            if os.environ.get("ARTSTORE_TRACEBACK"):
                raise
            _fail(f"unexpected {type(e).__name__}: {_one_line(str(e))} (a bug: please report it; "
                  "ARTSTORE_TRACEBACK=1 shows the traceback)", EXIT_ERROR)
    return wrapper


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _fail(message: str, code: int) -> None:
    # One line: long errors (DuckDB's, storage paths) must not be wrapped onto several.
    err_console.print(f"[red]error:[/red] {escape(_one_line(message))}", highlight=False, soft_wrap=True)
    raise typer.Exit(code) from None


def quiet_stdout() -> None:
    """Point standard output at /dev/null, so nothing more is written to a closed pipe (not even
    the interpreter's last flush)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
