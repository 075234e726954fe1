"""`artstore ui`: serve the read-only web app over a store (see artstore.ui)."""

from __future__ import annotations

from typing import Annotated

import typer

from artstore.cli.common import StorageOption, StoreOption, console, get_store, handle_errors


def register(app: typer.Typer) -> None:
    app.command("ui")(ui)


@handle_errors
def ui(
    store: StoreOption = ".art",
    storage_option: StorageOption = None,
    port: Annotated[int, typer.Option("--port", "-p", help="Port to listen on.")] = 8000,
    host: Annotated[str, typer.Option("--host", help="Address to bind (keep 127.0.0.1 unless you mean to share it).")] = "127.0.0.1",
) -> None:
    """Browse the store in a web browser: runs, metric charts, rollouts, checkpoints, versions, SQL.

    Read-only: nothing is written to the store. Needs the ui extra (pip install 'artstore[ui]').

    Examples:

        artstore ui --store .art

        artstore ui --store s3://team-runs/art -o aws_region=us-east-1 --port 8080
    """
    s = get_store(store, storage_option)
    try:
        from artstore.ui.server import serve
    except ImportError as e:
        console.print(f"[red]error:[/red] artstore ui needs the ui extra ({e.name} is missing): pip install 'artstore[ui]'")
        raise typer.Exit(1) from None
    console.print(f"artstore ui: {s.uri} at http://{host}:{port} (Ctrl-C stops it)", highlight=False, soft_wrap=True)
    serve(s, host=host, port=port)
