"""The `artstore` command line: the only place in artstore that prints.

Every command takes --store URI and --storage-option KEY=VALUE. Exit codes: 0 ok, 1 an artstore
error (bad input, refused SQL, storage failure), 2 usage, 3 not found (store, run, version, tag).
"""

from __future__ import annotations

import typer

from artstore.cli import art, checkpoints, maintain, runs, sql, ui, versions

app = typer.Typer(
    name="artstore",
    help="Query, inspect and maintain artstore runs (trajectories, metrics, checkpoints).\n\n"
         "Example: artstore sql --store .art \"SELECT model, max(value) FROM metrics WHERE name = 'val/reward' "
         "GROUP BY model\"",
    no_args_is_help=True,
    add_completion=False,
)
runs.register(app)
versions.register(app)
sql.register(app)
maintain.register(app)
art.register(app)
checkpoints.register(app)
ui.register(app)


def main() -> None:
    app()
