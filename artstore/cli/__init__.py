"""The `artstore` command line: the only place in artstore that prints."""

from __future__ import annotations

import typer

from artstore.cli import art, checkpoints, runs

app = typer.Typer(
    name="artstore",
    help="Query, inspect and maintain artstore runs (trajectories, metrics, checkpoints).",
    no_args_is_help=True,
    add_completion=False,
)
runs.register(app)
art.register(app)
checkpoints.register(app)


def main() -> None:
    app()
