"""The HTTP plumbing every fake shares: a threaded server on a free loopback port handing each
request, as a :class:`Request`, to one function and writing back its :class:`Reply`, so a fake is
only its provider's behaviour. Built on https://docs.python.org/3/library/http.server.html.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

JSON = "application/json"


@dataclass(frozen=True)
class Request:
    """One request: ``query`` holds each parameter's first value, ``headers`` lower-case names,
    ``target`` the request target as sent (path and query string)."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    target: str

    def json(self) -> Any:
        """The body parsed as JSON (None when empty); ValueError when it is not JSON."""
        return json.loads(self.body) if self.body else None


@dataclass
class Reply:
    """One answer. ``body``: bytes and str are sent as they are, None as nothing (and then no
    Content-Type), anything else as JSON. ``headers`` follow Content-Type and Content-Length."""

    status: int
    body: Any = None
    content_type: str = JSON
    headers: dict[str, str] = field(default_factory=dict)

    def data(self) -> bytes:
        """The body's bytes."""
        if self.body is None:
            return b""
        if isinstance(self.body, bytes):
            return self.body
        if isinstance(self.body, str):
            return self.body.encode()
        return json.dumps(self.body).encode()


@contextmanager
def serving(handle: Callable[[Request], Reply], *, server_version: str = "") -> Iterator[str]:
    """Serve ``handle`` on 127.0.0.1 (GET, POST, PUT, PATCH and DELETE) and yield the base URL
    ``http://127.0.0.1:<port>``; on exit the server stops and its thread is joined.
    ``server_version`` names the ``Server`` header's product, as the real server does."""

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            split = urlsplit(self.path)
            request = Request(
                method=self.command,
                path=split.path,
                query={k: v[0] for k, v in parse_qs(split.query).items()},
                headers={k.lower(): v for k, v in self.headers.items()},
                body=self.rfile.read(int(self.headers.get("Content-Length") or 0)),
                target=self.path,
            )
            reply = handle(request)
            data = reply.data()
            self.send_response(reply.status)
            if reply.body is not None:
                self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(data)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve  # noqa: N815

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: no access log in the tests' output."""

    if server_version:
        Handler.server_version = server_version
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
