"""The gateway's read-only HTTP API (stdlib ``ThreadingHTTPServer``).

``/healthz``, ``/api/devices``, ``/api/readings?dev=&since=&until=&limit=``, ``/metrics``;
the reasoner's ``/api/sites``, ``/api/forecast?dev=``, ``/api/health?dev=``, ``/api/insight?site=``,
``/api/alerts?active=&site=&limit=`` and ``/api/gaps`` (derived.py).
Each request reads through its own read-only SQLite connection (WAL lets it run beside the writer).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from . import derived
from . import store as st
from .events import EventBus
from .validate import ID_RE
from .web import EventStreams, serve_static

log = logging.getLogger(__name__)

MAX_LIMIT = 10000


class _BadRequest(Exception):
    pass


def _float_arg(q: dict[str, list[str]], key: str) -> float | None:
    if key not in q:
        return None
    try:
        return float(q[key][0])
    except ValueError:
        raise _BadRequest(f"{key} must be a number (UTC seconds)") from None


class ApiServer:
    """Serves the API in a background thread; ``status()`` gives the live part of /healthz."""

    def __init__(
        self,
        db_path: Path | st.DbUrl,  # either backend: st.open_reader takes both
        host: str,
        port: int,
        *,
        status: Callable[[], dict[str, Any]],
        metrics_text: Callable[[sqlite3.Connection], str],
        events: EventBus | None = None,
    ) -> None:
        self.db_path = db_path
        self.streams = EventStreams(events)  # /api/events (server-sent events), see web.py
        self.status = status
        self.metrics_text = metrics_text
        api = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "humigraph-gateway"

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("%s " + format, self.address_string(), *args)

            def do_GET(self) -> None:
                api._handle(self)

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.httpd.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, name="gateway-http", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self.streams.close()  # each open event stream holds a server thread: end them first
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread:
            self._thread.join(5)

    # -- requests ------------------------------------------------------------------------------

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        url = urlsplit(h.path)
        q = parse_qs(url.query)
        try:
            if url.path == "/healthz":
                body = self.status()
                with self._reader() as conn:
                    body.update(st.counts(conn))
                self._send(h, 200, body)
            elif url.path == "/api/devices":
                with self._reader() as conn:
                    self._send(h, 200, st.devices(conn))
            elif url.path == "/api/readings":
                self._send(h, 200, self._readings(q))
            elif url.path == "/metrics":
                with self._reader() as conn:
                    text = self.metrics_text(conn)
                self._send_raw(h, 200, text.encode(), "text/plain; version=0.0.4; charset=utf-8")
            elif url.path == "/api/events":
                self.streams.serve(h)
            elif url.path in derived.ROUTES:  # what the reasoner concluded (derived.py)
                with self._reader() as conn:
                    code, body = derived.route(url.path, q, conn, self._model_info())
                self._send(h, code, body)
            elif not serve_static(h, url.path):  # the dashboard: / and /ui/NAME
                self._send(h, 404, {"error": f"no such endpoint: {url.path}"})
        except (_BadRequest, derived.BadRequest) as e:
            self._send(h, 400, {"error": str(e)})
        except st.DB_ERRORS as e:  # SQLite or PostgreSQL
            log.warning("HTTP %s: database error: %s", url.path, e)
            self._send(h, 503, {"error": f"database unavailable: {e}"})

    def _model_info(self) -> dict[str, Any] | None:
        r = self.status().get("reasoning") or {}
        if not r.get("enabled"):
            return None
        return {"id": r.get("model_id"), "backend": r.get("backend"), "step_s": r.get("step_s")}

    def _readings(self, q: dict[str, list[str]]) -> list[dict[str, Any]]:
        dev = q.get("dev", [""])[0]
        if not ID_RE.match(dev):
            raise _BadRequest("dev is required: a device id (1-32 of a-z 0-9 _ -)")
        since, until = _float_arg(q, "since"), _float_arg(q, "until")
        limit = 1000
        if "limit" in q:
            try:
                limit = int(q["limit"][0])
            except ValueError:
                raise _BadRequest("limit must be an integer") from None
            if not 1 <= limit <= MAX_LIMIT:
                raise _BadRequest(f"limit must be between 1 and {MAX_LIMIT}")
        with self._reader() as conn:
            return st.readings(conn, dev, since, until, limit)

    class _Conn:
        def __init__(self, path: Path) -> None:
            self.conn = st.open_reader(path)

        def __enter__(self) -> sqlite3.Connection:
            return self.conn

        def __exit__(self, *exc: object) -> None:
            self.conn.close()

    def _reader(self) -> ApiServer._Conn:
        return ApiServer._Conn(self.db_path)

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, code: int, body: Any) -> None:
        ApiServer._send_raw(h, code, json.dumps(body).encode(), "application/json")

    @staticmethod
    def _send_raw(h: BaseHTTPRequestHandler, code: int, data: bytes, ctype: str) -> None:
        h.send_response(code)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)
