"""The dashboard side of the HTTP API: static files and the server-sent events stream.

``/`` serves ``dashboard/index.html``; ``/ui/NAME`` serves the other files of that directory
(package data, so the dashboard works with no internet and no build step). ``/api/events`` is a
``text/event-stream`` of the gateway's :class:`~humigraph.gateway.events.EventBus`: one
``id:``/``event: KIND``/``data: JSON`` block per bus event, a comment every
``keepalive`` seconds so proxies and browsers keep the connection, and a ``retry:`` hint so the
browser reconnects by itself. Each stream holds one server thread (``ThreadingHTTPServer``), so
:meth:`EventStreams.close` ends them all when the gateway stops.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
from http.server import BaseHTTPRequestHandler
from importlib import resources
from typing import Any

from .events import EventBus

log = logging.getLogger(__name__)

__all__ = ["EventStreams", "serve_static", "STATIC_PREFIX"]

STATIC_PREFIX = "/ui/"
_NAME_RE = re.compile(r"[A-Za-z0-9_-]+\.(html|css|js|svg|png|ico|json)\Z")
_TYPES = {
    "html": "text/html; charset=utf-8",
    "css": "text/css; charset=utf-8",
    "js": "text/javascript; charset=utf-8",
    "svg": "image/svg+xml",
    "png": "image/png",
    "ico": "image/x-icon",
    "json": "application/json",
}


def _dashboard_file(name: str) -> bytes | None:
    # The name is checked against _NAME_RE first: no "/" and no "..", so nothing outside the
    # package's dashboard directory can be reached.
    f = resources.files("humigraph.gateway").joinpath("dashboard", name)
    try:
        return f.read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None


def serve_static(h: BaseHTTPRequestHandler, path: str) -> bool:
    """Answers ``/``, ``/index.html`` and ``/ui/NAME``; False when ``path`` is none of those."""
    if path in ("/", "/index.html"):
        name = "index.html"
    elif path.startswith(STATIC_PREFIX):
        name = path[len(STATIC_PREFIX) :]
    else:
        return False
    data = _dashboard_file(name) if _NAME_RE.match(name) else None
    if data is None:
        body = json.dumps({"error": f"no such dashboard file: {name}"}).encode()
        _send(h, 404, body, "application/json")
        return True
    _send(h, 200, data, _TYPES[name.rsplit(".", 1)[1]])
    return True


def _send(h: BaseHTTPRequestHandler, code: int, data: bytes, ctype: str) -> None:
    h.send_response(code)
    h.send_header("Content-Type", ctype)
    h.send_header("Content-Length", str(len(data)))
    # The dashboard is small and changes with the gateway's version: always revalidate.
    h.send_header("Cache-Control", "no-cache")
    h.end_headers()
    h.wfile.write(data)


class EventStreams:
    """Runs ``/api/events`` streams and ends them all on :meth:`close`."""

    def __init__(
        self,
        bus: EventBus | None,
        *,
        keepalive: float = 15.0,
        retry_ms: int = 3000,
        poll: float = 0.25,
    ) -> None:
        self.bus = bus
        self.keepalive = keepalive
        self.retry_ms = retry_ms
        self.poll = poll  # how often a stream checks whether the gateway is stopping
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self._active = 0
        self._idle = threading.Condition(self._lock)

    @property
    def active(self) -> int:
        with self._lock:
            return self._active

    def close(self, wait: float = 3.0) -> None:
        """Ends every stream; waits up to ``wait`` s for their threads to let go."""
        self._closing.set()
        deadline = time.monotonic() + wait
        with self._idle:
            while self._active and time.monotonic() < deadline:
                self._idle.wait(max(0.0, deadline - time.monotonic()))

    def serve(self, h: BaseHTTPRequestHandler) -> None:
        """Streams bus events to ``h`` until the client goes away or the gateway stops."""
        if self.bus is None or self._closing.is_set():
            why = "the gateway is stopping" if self._closing.is_set() else "no event bus"
            body = json.dumps({"error": f"live events are not available: {why}"}).encode()
            _send(h, 503, body, "application/json")
            return
        with self._lock:
            self._active += 1
        try:
            with self.bus.subscribe() as sub:
                self._stream(h, sub)
        except OSError:
            pass  # the browser went away (closed tab, reload, network loss) or stopped reading
        finally:
            h.close_connection = True  # a stream is never followed by another request
            with self._idle:
                self._active -= 1
                self._idle.notify_all()

    def _stream(self, h: BaseHTTPRequestHandler, sub: Any) -> None:
        # A client that stops reading must not hold this thread forever: a blocked write times out.
        h.connection.settimeout(30)
        h.send_response(200)
        h.send_header("Content-Type", "text/event-stream; charset=utf-8")
        h.send_header("Cache-Control", "no-cache")
        h.send_header("X-Accel-Buffering", "no")  # nginx in front must not buffer the stream
        h.end_headers()
        # The first block gives the retry hint and the server's clock (the dashboard places
        # readings on the gateway's time, not the phone's).
        hello = {"server_time": time.time(), "keepalive": self.keepalive}
        self._write(h, f"retry: {self.retry_ms}\nevent: hello\ndata: {to_json(hello)}\n\n")
        last_write = time.monotonic()
        reported_drops = 0
        while not self._closing.is_set():
            item = sub.get(self.poll)
            now = time.monotonic()
            if item is None:
                if now - last_write >= self.keepalive:
                    self._write(h, ": keepalive\n\n")
                    last_write = now
                continue
            if sub.dropped != reported_drops:
                # A slow client lost events: tell it, so it reloads its state from the API.
                lost = sub.dropped - reported_drops
                reported_drops = sub.dropped
                self._write(h, f"event: dropped\ndata: {json.dumps({'dropped': lost})}\n\n")
            ident, kind, data = item
            self._write(h, format_event(ident, kind, data))
            last_write = now

    @staticmethod
    def _write(h: BaseHTTPRequestHandler, text: str) -> None:
        h.wfile.write(text.encode())
        h.wfile.flush()


def format_event(ident: int, kind: str, data: Any) -> str:
    """One SSE block; ``data`` is JSON on one line (json.dumps never emits a raw newline)."""
    return f"id: {ident}\nevent: {kind}\ndata: {to_json(data)}\n\n"


def to_json(data: Any) -> str:
    """JSON a browser can parse: NaN and infinities (which JSON lacks) become null."""
    try:
        return json.dumps(data, default=str, allow_nan=False)
    except ValueError:
        return json.dumps(_finite(data), default=str)


def _finite(v: Any) -> Any:
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_finite(x) for x in v]
    return v
