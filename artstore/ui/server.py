"""The web app of `artstore ui`: a FastAPI app over one Store, read-only.

Every page is a static front end (`static/`: HTML, JS, CSS, and plotly.min.js from the plotly
package, so it works offline) calling JSON endpoints, one module per page: `runs`, `charts`,
`rollouts` and `scenarios`, `checkpoints`, `versions`, `sqlbox`. The endpoints use only read
APIs of the store (Store.sql, Run.logs/read_table/history/checkpoints/versions/retention_plan):
nothing is ever written.

An artstore error becomes a JSON body {"error": type, "message": text} with status 404 (no such
run, store, version or tag) or 400 (anything else the user can fix: a bad name, a refused query).
"""

from __future__ import annotations

import functools
import gzip
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from artstore import (
    ArtstoreError,
    RunNotFoundError,
    StorageError,
    Store,
    StoreNotFoundError,
    VersionNotFoundError,
)
from artstore.ui import charts, checkpoints, rollouts, runs, scenarios, sqlbox, versions

STATIC = Path(__file__).parent / "static"
_NOT_FOUND = (RunNotFoundError, StoreNotFoundError, VersionNotFoundError)


def plotly_js() -> Path:
    """plotly.min.js as the plotly wheel ships it (no CDN: the UI works offline)."""
    return Path(str(resources.files("plotly") / "package_data" / "plotly.min.js"))


@functools.cache
def _plotly_gzip() -> bytes:
    # Compressed once per process: gzip of its 4.8 MB costs ~0.2 s, on every request through the
    # middleware (measured); sent already compressed, the middleware leaves it alone.
    return gzip.compress(plotly_js().read_bytes(), 6)


def create_app(store: Store) -> FastAPI:
    """The app serving `store`: pages at /, JSON at /api/..."""
    app = FastAPI(title="artstore ui", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.store = store
    app.add_middleware(GZipMiddleware, minimum_size=2000)
    for module in (runs, charts, rollouts, scenarios, checkpoints, versions, sqlbox):
        app.include_router(module.router)

    @app.exception_handler(ArtstoreError)
    def artstore_error(request: Request, exc: ArtstoreError) -> JSONResponse:
        code = 404 if isinstance(exc, _NOT_FOUND) else 500 if isinstance(exc, StorageError) else 400
        return JSONResponse({"error": type(exc).__name__, "message": str(exc)}, status_code=code)

    @app.get("/api/store")
    def get_store() -> dict[str, Any]:
        return {"uri": store.uri}

    @app.get("/static/plotly.min.js")
    def get_plotly(request: Request) -> Response:
        cache = {"Cache-Control": "public, max-age=86400", "Vary": "Accept-Encoding"}
        if "gzip" in request.headers.get("accept-encoding", ""):
            return Response(_plotly_gzip(), media_type="text/javascript",
                            headers={**cache, "Content-Encoding": "gzip"})
        return FileResponse(plotly_js(), media_type="text/javascript", headers=cache)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/")
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    return app


def serve(store: Store, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve `store` until interrupted (uvicorn, no access log)."""
    import uvicorn

    uvicorn.run(create_app(store), host=host, port=port, log_level="warning", access_log=False)
