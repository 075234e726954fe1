"""The `artstore` command line: the only place in artstore that prints.

Every command takes --store URI and --storage-option KEY=VALUE. Exit codes (README): 0 ok, 1 an
artstore error (bad input, refused SQL, storage failure), 2 usage, 3 not found (store, run,
version, tag), 4 an operating-system I/O error (--output into a missing folder, a full disk),
130 interrupted. Each command module imports what it needs when it runs, so `--help` is fast.
"""

from __future__ import annotations

import errno
import inspect
import os
import signal
import sys
import threading
from typing import Annotated

import typer

from artstore.cli import (
    art,
    checkpoints,
    maintain,
    plot,
    runs,
    sql,
    trajectory,
    ui,
    validate,
    versions,
)
from artstore.cli.common import EXIT_INTERRUPTED, EXIT_IO, err_console, quiet_stdout
from artstore.cli.plain_params import Group

app = typer.Typer(
    name="artstore",
    cls=Group,  # options read without pydantic (`plain_params`)
    help="Query, inspect and maintain artstore runs (trajectories, metrics, checkpoints).\n\n"
         "Example: artstore sql --store .art \"SELECT model, max(value) FROM metrics WHERE name = 'val/reward' "
         "GROUP BY model\"",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: typer's rich help costs ~0.5 s of imports per call
)


def _version(value: bool) -> None:
    if value:
        from artstore import __version__

        typer.echo(f"artstore {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True, help="Print artstore's version and exit.")] = False) -> None:
    """Query, inspect and maintain artstore runs (trajectories, metrics, checkpoints).

    Example: artstore sql --store .art "SELECT model, max(value) FROM metrics WHERE name = 'val/reward' GROUP BY model"
    """


for module in (runs, versions, sql, plot, trajectory, maintain, validate, art, checkpoints, ui):
    module.register(app)


def _keep_indented(doc: str) -> str:
    """Help text with its indented paragraphs (examples, lists) marked for click not to rewrap
    them (a paragraph starting with a \\b line), so a command in an example stays on one line."""
    paragraphs = inspect.cleandoc(doc).split("\n\n")
    return "\n\n".join("\b\n" + p if p.startswith("  ") else p for p in paragraphs)


for command in app.registered_commands:
    command.help = _keep_indented(command.help or command.callback.__doc__ or "")


def _exit_on_interrupt() -> None:
    """Ctrl-C stops the command at once, even while DuckDB or Lance is busy in native code (a
    Python signal handler would wait for them to return): the C-level handler writes to a pipe
    that a thread waits on. A store is safe to stop at any instant (a killed writer leaves it at
    its last commit), so nothing needs unwinding."""
    if threading.current_thread() is not threading.main_thread():
        return
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)

    def stop(*_: object) -> None:
        err_console.print("interrupted", style="red", highlight=False)
        os._exit(EXIT_INTERRUPTED)

    def watch() -> None:
        while True:  # the pipe carries the number of every signal Python handles: act on SIGINT only
            if os.read(read_fd, 1) == bytes([signal.SIGINT]):
                stop()

    signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    signal.signal(signal.SIGINT, stop)
    threading.Thread(target=watch, name="artstore-interrupt", daemon=True).start()


class _NoPandas:
    """A meta-path finder that makes pandas unimportable (pyarrow and Lance treat it as absent)."""

    @staticmethod
    def find_spec(name: str, path: object = None, target: object = None) -> None:
        if name == "pandas" or name.startswith("pandas."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)


# Commands that never need pandas: where it is installed (the engine extras), importing
# pyarrow.dataset (through Lance) imports it all the same, 0.2-0.4 s of a start-up that must stay
# under a second. Only in the console script's own process, never for a caller of `app`.
NO_PANDAS = ("runs",)


def main() -> None:
    """The console script: run the command, then make sure its output reached standard output."""
    _exit_on_interrupt()
    if sys.argv[1:2] and sys.argv[1] in NO_PANDAS and "pandas" not in sys.modules:
        sys.meta_path.insert(0, _NoPandas())  # type: ignore[arg-type]
    code: int | str | None = 0
    try:
        app()
    except SystemExit as e:
        code = e.code
    try:
        sys.stdout.flush()
    except OSError as e:
        quiet_stdout()
        if e.errno != errno.EPIPE:  # a closed pipe (`| head`) is how a reader says "enough"
            err_console.print(f"error: cannot write standard output: {e.strerror or e}", highlight=False)
            code = EXIT_IO
    sys.exit(code)
