"""The page's server: the standard library's ThreadingHTTPServer in a daemon thread, the page's own files (a fixed
list) and the JSON API, with Server-Sent Events for the epochs as they end.

``GET /api/model``, ``POST /api/predict``, ``GET /api/history``, ``GET /api/events`` (see the README). Every answer
to a bad request is a 4xx with ``{"error": "..."}``: a Host header that is not the served host or localhost
(DNS rebinding) 403, an unknown path 404, a body over 1 MiB 413, malformed JSON or a bad drawing 400. No request
makes a 500 or prints a traceback, and the server keeps serving after each.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources

from ..errors import UserError, reason
from .live import Board

MAX_BODY = 1 << 20  # bytes a request body may have
PING_SECONDS = 15.0  # an events stream sends a comment this often, so that proxies and browsers keep it open
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
WILDCARDS = ("", "0.0.0.0", "::")
# The page's files, the only files served: path -> (file in static/, content type).
PAGE_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/panels.js": ("panels.js", "text/javascript; charset=utf-8"),
    "/pad.js": ("pad.js", "text/javascript; charset=utf-8"),
}
API = {"/api/model": "GET", "/api/history": "GET", "/api/events": "GET", "/api/predict": "POST"}  # path -> method
# Nothing the page loads comes from elsewhere, and no other site may frame it.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class RequestError(Exception):
    """A bad request: answered with ``status`` and ``{"error": message}``."""

    def __init__(self, status: HTTPStatus, message: str):
        super().__init__(message)
        self.status = status


class PageServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer for one :class:`Board`, with the page's files read once."""

    daemon_threads = True
    block_on_close = False  # an events stream may stay open: closing the server does not wait for it

    def __init__(self, host: str, port: int, board: Board, ping_seconds: float = PING_SECONDS):
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        self.address_family = family
        self.host, self.board, self.ping_seconds = host, board, ping_seconds  # host: as given, for the Host check
        static = resources.files(__package__) / "static"
        self.files = {path: (static.joinpath(name).read_bytes(), kind) for path, (name, kind) in PAGE_FILES.items()}
        super().__init__(address[:2], Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/"

    def handle_error(self, request, client_address):
        """A connection that broke mid-answer (the browser went away) is not worth a traceback on stderr."""


class Handler(BaseHTTPRequestHandler):
    """One request: the Host check, then a page file or the API; every failure a JSON 4xx."""

    server: PageServer
    server_version = "portable-cnn"
    timeout = 60  # seconds a client may take to send its request

    def do_GET(self):
        self._answer(self._get)

    def do_HEAD(self):
        self._answer(lambda: self._get(head=True))

    def do_POST(self):
        self._answer(self._post)

    def _answer(self, handle) -> None:
        try:
            self._check_host()
            handle()
        except RequestError as error:
            self._json({"error": str(error)}, error.status)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True
        except Exception as error:  # a bug must not cost the page its server: one line on stderr, a 400
            print(f"portable-cnn: {self.command} {self.path}: {reason(error)}", file=sys.stderr)
            self._json({"error": f"the request could not be handled: {reason(error)}"}, HTTPStatus.BAD_REQUEST)

    def _check_host(self) -> None:
        if not host_allowed(self.headers.get("Host"), self.server.host):
            raise RequestError(
                HTTPStatus.FORBIDDEN, "the Host header does not name this server (use the URL it printed)"
            )

    def _path(self, method: str) -> str:
        """The request's path (without a query), once it is a page file or an API path that takes ``method``."""
        path = self.path.split("?", 1)[0]
        wanted = "GET" if path in self.server.files else API.get(path)
        if wanted is None:
            raise RequestError(HTTPStatus.NOT_FOUND, f"nothing at {path}; the page is at /")
        if wanted != method:
            raise RequestError(HTTPStatus.METHOD_NOT_ALLOWED, f"{path} takes {wanted}, not {method}")
        return path

    def _get(self, head: bool = False) -> None:
        path = self._path("GET")
        board = self.server.board
        if path in self.server.files:
            body, kind = self.server.files[path]
            self._send(body, kind, HTTPStatus.OK, head)
        elif path == "/api/model":
            self._json(board.snapshot.describe(), head=head)
        elif path == "/api/history":
            self._json(board.history(), head=head)
        else:
            self._events(board, head)

    def _post(self) -> None:
        self._path("POST")
        request = self._json_body()
        if not isinstance(request, dict) or "pixels" not in request:
            raise RequestError(HTTPStatus.BAD_REQUEST, 'send a JSON object {"pixels": [[...], ...]}')
        try:
            answer = self.server.board.snapshot.explain(request["pixels"])
        except UserError as error:
            raise RequestError(HTTPStatus.BAD_REQUEST, str(error)) from None
        self._json(answer)

    def _json_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raise RequestError(HTTPStatus.LENGTH_REQUIRED, "send the body with a Content-Length, not chunked")
        length = self.headers.get("Content-Length")
        if length is None:
            raise RequestError(HTTPStatus.LENGTH_REQUIRED, "the request needs a Content-Length header")
        try:
            size = int(length)
        except ValueError:
            size = -1
        if size < 0:
            raise RequestError(HTTPStatus.BAD_REQUEST, f"the Content-Length '{length}' is not a size in bytes")
        if size > MAX_BODY:
            self.close_connection = True  # the body is left unread
            raise RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"the body is over {MAX_BODY} bytes")
        body = self.rfile.read(size)
        try:
            return json.loads(body.decode("utf-8"), parse_constant=_refuse_constant)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError, ValueError) as error:
            raise RequestError(HTTPStatus.BAD_REQUEST, f"the body is not valid JSON ({reason(error)})") from None

    def _events(self, board: Board, head: bool) -> None:
        """Server-Sent Events: the epochs after Last-Event-ID (all of them on a first connection), then each one
        as it ends, a comment every ``ping_seconds``, and ``event: done`` when training has ended."""
        last = self.headers.get("Last-Event-ID", "").strip()
        try:
            after = int(last) if last else -1
        except ValueError:
            raise RequestError(HTTPStatus.BAD_REQUEST, f"Last-Event-ID '{last}' is not an epoch number") from None
        self.send_response(HTTPStatus.OK)
        self._headers("text/event-stream; charset=utf-8", {"Cache-Control": "no-store"})
        self.close_connection = True
        if head:
            return
        while True:
            epochs, done = board.news(after, self.server.ping_seconds)
            for entry in epochs:
                self.wfile.write(f"event: epoch\nid: {entry['epoch']}\ndata: {json.dumps(entry)}\n\n".encode())
                after = entry["epoch"]
            if not epochs:
                self.wfile.write(b"event: done\ndata: {}\n\n" if done else b": ping\n\n")
            self.wfile.flush()
            if done and not epochs:
                return

    def _json(self, value, status: HTTPStatus = HTTPStatus.OK, head: bool = False) -> None:
        body = json.dumps(value, allow_nan=False).encode("utf-8")
        self._send(body, "application/json", status, head, {"Cache-Control": "no-store"})

    def _send(self, body: bytes, kind: str, status: HTTPStatus, head: bool = False, extra=None) -> None:
        self.send_response(status)
        self._headers(kind, {"Content-Length": str(len(body)), **(extra or {})})
        if not head:
            self.wfile.write(body)

    def _headers(self, kind: str, extra: dict) -> None:
        for name, value in {"Content-Type": kind, **SECURITY_HEADERS, **extra}.items():
            self.send_header(name, value)
        self.end_headers()

    def send_error(self, code, message=None, explain=None):
        """http.server's own refusals (a malformed request line, an unknown method, headers too long) as JSON 4xx:
        an unknown method is 405, an HTTP version it does not speak 400."""
        status = HTTPStatus(code)
        if status == HTTPStatus.NOT_IMPLEMENTED:
            status = HTTPStatus.METHOD_NOT_ALLOWED
        elif status >= 500:
            status = HTTPStatus.BAD_REQUEST
        self.close_connection = True
        self.request_version = "HTTP/1.0"  # a request line too broken to name its version still gets a status line
        text = message or status.phrase
        if status == HTTPStatus.METHOD_NOT_ALLOWED:
            text = f"{self.command} is not supported: the page uses GET and POST"
        try:
            self._json({"error": text}, status)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass

    def log_message(self, format, *args):
        """No access log: stderr keeps the run's own lines."""


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not allowed")


def host_allowed(header: str | None, served: str) -> bool:
    """Whether a request's Host header names this server: localhost or the served host (an IP address too when the
    server listens on every interface). Anything else may be a DNS-rebinding page on another site."""
    if not header:
        return False
    name = header.strip().lower()
    if name.startswith("["):  # [v6 address]:port
        name = name[1:].split("]", 1)[0]
    elif name.count(":") == 1:
        name = name.split(":", 1)[0]
    if name in LOOPBACK_NAMES or name == served.lower():
        return True
    return served in WILDCARDS and _is_address(name)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable only from this machine."""
    return host.lower() == "localhost" or (_is_address(host) and ipaddress.ip_address(host).is_loopback)


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def start(board: Board, host: str, port: int, ping_seconds: float = PING_SECONDS) -> PageServer:
    """A :class:`PageServer` for ``board`` on ``host:port`` (0: a free port), listening at once and serving from a
    daemon thread as soon as the board has a model (until then requests wait in the listening queue)."""
    try:
        server = PageServer(host, port, board, ping_seconds)
    except OSError as error:
        advice = "choose another --port (0 takes a free one)" if port else "check --host"
        cause = error.strerror or reason(error)
        raise UserError(f"cannot serve the page on {host}:{port}: {cause}; {advice}") from None

    def serve():
        board.wait_for_snapshot()
        server.serve_forever()

    threading.Thread(target=serve, name="portable-cnn page", daemon=True).start()
    return server
