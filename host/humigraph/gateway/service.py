"""The gateway: store + MQTT ingest + HTTP API, started and stopped together."""

from __future__ import annotations

import logging
import re
import sqlite3
import time
from collections.abc import Collection
from pathlib import Path
from types import TracebackType
from typing import Any

from ..errors import GatewayError
from . import store as st
from .api import ApiServer
from .ingest import Ingest
from .metrics import Metrics

log = logging.getLogger(__name__)

_BROKER_RE = re.compile(r"mqtt://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)(?::(\d{1,5}))?/?\Z")
_HTTP_RE = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})\Z")
_PREFIX_RE = re.compile(r"[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*\Z")


def parse_broker_url(url: str) -> tuple[str, int]:
    """``mqtt://HOST[:PORT]`` -> (host, port); port 1883 by default."""
    m = _BROKER_RE.match(url or "")
    port = int(m.group(2) or 1883) if m else 0
    if not m or not 0 < port < 65536:
        raise GatewayError(
            f"broker: expected mqtt://HOST[:PORT] (e.g. mqtt://127.0.0.1:1883), got {url!r}"
        )
    return m.group(1).strip("[]"), port


def parse_http(addr: str) -> tuple[str, int]:
    """``HOST:PORT`` -> (host, port); port 0 picks a free one."""
    m = _HTTP_RE.match(addr or "")
    if not m or not 0 <= int(m.group(2)) < 65536:
        raise GatewayError(f"http: expected HOST:PORT (e.g. 127.0.0.1:8080), got {addr!r}")
    return m.group(1).strip("[]"), int(m.group(2))


class Gateway:
    """``with Gateway("mqtt://127.0.0.1:1883", "sqlite:////var/lib/humigraph/gateway.db") as gw:``"""

    def __init__(
        self,
        broker: str,
        db: str | Path,
        *,
        http: str | None = "127.0.0.1:8080",
        prefix: str = "humigraph",
        client_id: str = "humigraph-gateway",
        sites: Collection[str] | None = None,
        batch_max: int = 1000,
        batch_wait: float = 0.02,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.host, self.port = parse_broker_url(broker)
        if not _PREFIX_RE.match(prefix):
            raise GatewayError(f"prefix: expected a topic prefix like 'humigraph', got {prefix!r}")
        self.prefix = prefix
        self.db_path = st.sqlite_path(str(db))
        self.http_addr = parse_http(http) if http else None
        self.client_id = client_id
        self.username, self.password = username, password
        if not 0 <= batch_wait <= 10:
            raise GatewayError(f"batch-wait: expected 0 to 10 seconds, got {batch_wait!r}")
        if not 1 <= batch_max <= 100_000:
            raise GatewayError(f"batch-max: expected 1 to 100000, got {batch_max!r}")
        self.sites = sites
        self.batch_max = batch_max
        self.batch_wait = batch_wait
        self.metrics = Metrics()
        self.started = 0.0
        self.store: st.Store | None = None
        self.ingest: Ingest | None = None
        self.api: ApiServer | None = None

    @property
    def http_address(self) -> tuple[str, int] | None:
        return self.api.address if self.api else None

    def start(self) -> Gateway:
        self.store = st.Store(self.db_path)
        try:
            if self.http_addr:
                try:
                    self.api = ApiServer(
                        self.db_path,
                        *self.http_addr,
                        status=self.status,
                        metrics_text=self.metrics_text,
                    )
                except OSError as e:
                    raise GatewayError(f"http: cannot listen on {self.http_addr}: {e}") from e
            self.ingest = Ingest(
                self.store,
                self.metrics,
                self.host,
                self.port,
                prefix=self.prefix,
                client_id=self.client_id,
                sites=self.sites,
                batch_max=self.batch_max,
                batch_wait=self.batch_wait,
                username=self.username,
                password=self.password,
            )
            self.ingest.start()
            if self.api:
                self.api.start()
        except BaseException:
            self.stop()
            raise
        self.started = time.time()
        log.info(
            "gateway: broker %s:%d, database %s, http %s",
            self.host,
            self.port,
            self.db_path,
            self.http_address,
        )
        return self

    def stop(self) -> None:
        if self.api:
            self.api.stop()
            self.api = None
        if self.ingest:
            self.ingest.stop()
            self.ingest = None
        if self.store:
            self.store.close()
            self.store = None

    def __enter__(self) -> Gateway:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- live state ----------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return bool(self.ingest and self.ingest.connected)

    def queue_depth(self) -> int:
        return self.ingest.q.qsize() if self.ingest else 0

    def status(self) -> dict[str, Any]:
        ingest = self.ingest
        return {
            "ok": bool(ingest and ingest.healthy()),
            "broker": "connected" if self.connected else "disconnected",
            "broker_refused": ingest.refused if ingest else None,
            "store_error": str(ingest.error) if ingest and ingest.error else None,
            "queue_depth": self.queue_depth(),
            "uptime": round(time.time() - self.started, 3) if self.started else 0.0,
            "schema": self.store.version if self.store else None,
        }

    def metrics_text(self, conn: sqlite3.Connection) -> str:
        return self.metrics.render(
            queue_depth=self.queue_depth(), gaps=st.gaps_total(conn), connected=self.connected
        )
