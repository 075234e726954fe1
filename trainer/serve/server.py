"""uvicorn in a background thread of this process, on 127.0.0.1 and a free port.

    server = ThreadedServer(app).start()     # returns once it accepts connections
    server.base_url                          # "http://127.0.0.1:PORT/v1"
    server.stop()

In process (not a subprocess) so the server samples from the very model the trainer updates:
an adapter trained a moment ago is served at once, with no file round trip.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import uvicorn

import artstore as art

START_TIMEOUT_S = 30.0


class ThreadedServer:
    """One uvicorn server for `app` in a daemon thread."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0):
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                                lifespan="off", timeout_graceful_shutdown=5)  # fmt: skip
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None
        self.host = host
        self.port = port

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def start(self) -> ThreadedServer:
        """Start serving; returns when the socket listens (BackendError if it does not in 30 s)."""
        self._thread = threading.Thread(target=self._server.run, name="artstore-serve", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise art.BackendError(f"the inference server on {self.host} did not start; "
                                       "is the port free? (port 0 picks a free one)")
            time.sleep(0.01)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        """Stop accepting, finish the requests in flight, and join the thread."""
        if self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._thread = None
