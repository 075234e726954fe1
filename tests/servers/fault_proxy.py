"""A fault-injecting HTTP/1.1 proxy (stdlib, threaded) to put in front of an S3 server.

Requests are forwarded faithfully (method, path with query, headers in order with the Host the
client sent, body streamed), so SigV4 signatures still verify upstream. The mode is set at
runtime from the test thread:

- ``pass_through()``: forward everything (the start mode);
- ``fail_next(n, status=503)``: answer the next ``n`` requests with an S3 error, then forward;
- ``drop_next(n)``: reset the connection (no response) on the next ``n`` requests;
- ``delay(seconds)``: wait ``seconds`` before forwarding each request, until changed;
- ``fail_all(status=503)``: answer every request with an S3 error (a persistent fault);
- ``call_once(matches, action)``: run ``action()`` once, before forwarding the first request
  for which ``matches(method, path)`` is true (e.g. kill the server while a commit is in flight).

Bounded: at most ``max_connections`` client connections are served at once, idle connections
time out after ``io_timeout`` seconds, and ``stop()`` closes every open connection.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import socket
import struct
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from ._process import LOCALHOST
from ._s3 import S3Bucket

log = logging.getLogger(__name__)

_CHUNK = 64 * 1024  # bytes per read when streaming bodies
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authenticate",
        "proxy-authorization",
    }
)
_ERROR_CODES = {500: "InternalError", 503: "SlowDown"}


class FaultProxy:
    """The proxy; ``endpoint`` is what clients use instead of ``upstream``."""

    def __init__(self, upstream: str, max_connections: int = 64, io_timeout: float = 30.0) -> None:
        url = urllib.parse.urlsplit(upstream)
        if url.scheme != "http" or url.hostname is None:
            raise ValueError(f"upstream must be http://host:port, not {upstream!r}")
        self.upstream = (url.hostname, url.port or 80)
        self.io_timeout = io_timeout
        self._lock = threading.Lock()
        self._mode = "pass"
        self._remaining: int | None = None  # None: no limit
        self._status = 503
        self._delay_s = 0.0
        self.requests = 0  # requests seen, faulted or not
        self.faults = 0  # requests answered with an error or dropped
        self.seen: list[tuple[str, str]] | None = None  # set to a list: (method, path) of each request is added
        self._once: tuple[Callable[[str, str], bool], Callable[[], None]] | None = None
        self._server = _Server((LOCALHOST, 0), _Handler, self, max_connections)
        self.endpoint = f"http://{LOCALHOST}:{self._server.server_address[1]}"
        self._thread: threading.Thread | None = None

    # -- modes -------------------------------------------------------------------------------

    def pass_through(self) -> None:
        self._set("pass", None)

    def fail_next(self, n: int, status: int = 503) -> None:
        self._set("status", n, status=status)

    def drop_next(self, n: int) -> None:
        self._set("drop", n)

    def delay(self, seconds: float) -> None:
        self._set("pass", None, delay_s=seconds)

    def fail_all(self, status: int = 503) -> None:
        self._set("status", None, status=status)

    def call_once(self, matches: Callable[[str, str], bool], action: Callable[[], None]) -> None:
        with self._lock:
            self._once = (matches, action)

    def _take_once(self, method: str, path: str) -> Callable[[], None] | None:
        """The `call_once` action, taken, when this request matches it."""
        with self._lock:
            if self._once is None or not self._once[0](method, path):
                return None
            action, self._once = self._once[1], None
            return action

    def _set(self, mode: str, n: int | None, status: int = 503, delay_s: float = 0.0) -> None:
        with self._lock:
            self._mode, self._remaining, self._status, self._delay_s = mode, n, status, delay_s

    def _next_action(self, method: str = "", path: str = "") -> tuple[str, int, float]:
        """Count one request and say what to do with it: (mode, status, delay seconds)."""
        with self._lock:
            self.requests += 1
            if self.seen is not None:
                self.seen.append((method, path))
            mode, status, delay_s = self._mode, self._status, self._delay_s
            if mode != "pass":
                self.faults += 1
                if self._remaining is not None:
                    self._remaining -= 1
                    if self._remaining <= 0:
                        self._mode, self._remaining = "pass", None
            return mode, status, delay_s

    # -- life cycle --------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"fault-proxy-{self.endpoint}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting, close open connections, wait (5 s at most) for handler threads."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()
        self._server.close_all()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # stop() joins its own way, with a bound

    def __init__(self, addr, handler, proxy: FaultProxy, max_connections: int) -> None:
        self.proxy = proxy
        self._slots = threading.BoundedSemaphore(max_connections)
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(addr, handler)

    def process_request(self, request, client_address):
        # Bound the threads: past max_connections, wait a little, then refuse the connection.
        if not self._slots.acquire(timeout=self.proxy.io_timeout):
            self.shutdown_request(request)
            return
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._open_lock:
                self._open.discard(request)
            self._slots.release()

    def handle_error(self, request, client_address) -> None:
        # A client or upstream hanging up mid-request is expected here; keep stderr quiet.
        log.debug("connection from %s ended with an error", client_address, exc_info=True)

    def close_all(self) -> None:
        with self._open_lock:
            socks = list(self._open)
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as S3 clients expect
    server: _Server

    def setup(self) -> None:
        self.timeout = self.server.proxy.io_timeout  # idle keep-alive connections end
        super().setup()

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def _handle(self) -> None:
        proxy = self.server.proxy
        mode, status, delay_s = proxy._next_action(self.command, self.path)
        action = proxy._take_once(self.command, self.path)
        if action is not None:
            action()
        if mode == "drop":
            # SO_LINGER 0: close() sends RST, the client sees a reset, not a clean EOF.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            return
        if mode == "status":
            self._discard_body()
            self._send_error(status)
            return
        if delay_s > 0:
            time.sleep(delay_s)
        self._forward()

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = do_PATCH = do_OPTIONS = _handle

    # -- bodies --------------------------------------------------------------------------------

    def _is_chunked(self) -> bool:
        return "chunked" in self.headers.get("Transfer-Encoding", "").lower()

    def _body_chunks(self):
        """Yield the request body as it arrives (Content-Length or chunked framing)."""
        if self._is_chunked():
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers: dropped
                    return
                yield self.rfile.read(size)
                self.rfile.readline()  # CRLF after each chunk
        else:
            left = int(self.headers.get("Content-Length") or 0)
            while left > 0:
                data = self.rfile.read(min(_CHUNK, left))
                if not data:
                    raise ConnectionError("client closed mid-body")
                left -= len(data)
                yield data

    def _discard_body(self) -> None:
        for _ in self._body_chunks():
            pass

    def _send_error(self, status: int) -> None:
        code = _ERROR_CODES.get(status, "InternalError")
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{code}</Code><Message>injected by fault proxy</Message></Error>"
        ).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    # -- forwarding ----------------------------------------------------------------------------

    def _forward(self) -> None:
        host, port = self.server.proxy.upstream
        up = http.client.HTTPConnection(host, port, timeout=self.server.proxy.io_timeout)
        try:
            try:
                up.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                for k, v in self.headers.items():  # order and Host kept: signatures verify
                    if k.lower() not in _HOP_BY_HOP:
                        up.putheader(k, v)
                chunked = self._is_chunked()
                if chunked:
                    up.putheader("Transfer-Encoding", "chunked")
                up.endheaders()
                for data in self._body_chunks():
                    up.send(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)
                if chunked:
                    up.send(b"0\r\n\r\n")
                resp = up.getresponse()
            except (OSError, http.client.HTTPException) as e:
                log.debug("upstream failed before a response: %s", e)
                self.close_connection = True
                self._send_error(502)
                return
            self._relay(resp)
        finally:
            up.close()

    def _relay(self, resp: http.client.HTTPResponse) -> None:
        self.send_response_only(resp.status, resp.reason)
        length = resp.getheader("Content-Length")
        no_body = self.command == "HEAD" or resp.status in (204, 304) or resp.status < 200
        for k, v in resp.getheaders():
            if k.lower() not in _HOP_BY_HOP:
                self.send_header(k, v)
        # No length and a body: re-frame as chunked so the connection can stay open.
        rechunk = length is None and not no_body
        if rechunk:
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if no_body:
            return
        while data := resp.read(_CHUNK):
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data) if rechunk else data)
        if rechunk:
            self.wfile.write(b"0\r\n\r\n")


@dataclass
class FaultyS3Bucket(S3Bucket):
    """An `S3Bucket` whose ``endpoint`` is the proxy; ``proxy`` sets the fault mode."""

    proxy: FaultProxy | None = None
