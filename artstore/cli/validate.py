"""`artstore validate`: check runs for damage (tables missing or short of what the logs name)."""

from __future__ import annotations

from typing import Annotated

import typer

from artstore.cli.common import (
    EXIT_ERROR,
    StorageOption,
    StoreOption,
    err_console,
    get_run,
    get_store,
    handle_errors,
)


def register(app: typer.Typer) -> None:
    app.command("validate")(validate)


@handle_errors
def validate(
    run: Annotated[str | None, typer.Argument(metavar="[PROJECT/MODEL]", help="The run to check (default: every run).")
                   ] = None,
    store: StoreOption = ".art",
    storage_option: StorageOption = None,
) -> None:
    """Check every run (or one) against its committed logs and Lance's consistency check.

    A run is damaged when its logs cannot be read, a table the logs name rows of is missing or
    holds fewer of them, or a data file a table needs is gone. Prints one line per run: `ok` on
    stdout, `DAMAGED` with the reason on stderr.

    Exit codes: 0 every run checked is sound; 1 at least one run is damaged; 2 usage; 3 no such
    store or run.

    Examples:

        artstore validate --store .art

        artstore validate email-search/agent-001 --store s3://team-runs/art
    """
    from artstore.errors import ArtstoreError

    s = get_store(store, storage_option)
    runs = s.runs() if run is None else [get_run(s, run)]
    damaged = 0
    for r in runs:
        try:
            checked = r.validate()
        except ArtstoreError as e:
            damaged += 1
            err_console.print(f"DAMAGED {r.project}/{r.name}: {e}", style="red", highlight=False, soft_wrap=True)
        else:
            typer.echo(f"ok {r.project}/{r.name} ({', '.join(checked)})")
    if damaged:
        err_console.print(f"{damaged} of {len(runs)} run(s) damaged", highlight=False)
        raise typer.Exit(EXIT_ERROR)
