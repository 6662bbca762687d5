"""The gateway: store + MQTT ingest + HTTP API, started and stopped together."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Collection, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from ..errors import GatewayError
from . import store as st
from .alerts import AlertConfig
from .api import ApiServer
from .events import EventBus
from .ingest import FloodLimit, Ingest, TlsFiles
from .metrics import Metrics
from .reasoner import Reasoner

log = logging.getLogger(__name__)

_BROKER_RE = re.compile(r"(mqtts?)://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)(?::(\d{1,5}))?/?\Z")
_HTTP_RE = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})\Z")
_PREFIX_RE = re.compile(r"[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*\Z")


def parse_broker_url(url: str) -> tuple[str, int]:
    """``mqtt://HOST[:PORT]`` -> (host, port); port 1883 by default (8883 for ``mqtts://``)."""
    m = _BROKER_RE.match(url or "")
    port = int(m.group(3) or (8883 if m.group(1) == "mqtts" else 1883)) if m else 0
    if not m or not 0 < port < 65536:
        raise GatewayError(
            "broker: expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT] for TLS "
            f"(e.g. mqtt://127.0.0.1:1883), got {url!r}"
        )
    return m.group(2).strip("[]"), port


def check_prefix(prefix: str) -> str:
    if not _PREFIX_RE.match(prefix or ""):
        raise GatewayError(f"prefix: expected a topic prefix like 'humigraph', got {prefix!r}")
    return prefix


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
        batch_max: int = 5000,
        batch_wait: float = 0.02,
        username: str | None = None,
        password: str | None = None,
        tls: bool = False,
        tls_ca: str | Path | None = None,
        tls_cert: str | Path | None = None,
        tls_key: str | Path | None = None,
        flood_factor: float = 10.0,
        flood_rate: float = 5.0,
        flood_burst: int = 100,
        model: str | Path | None = None,
        alerts: Mapping[str, object] | None = None,
        infer_interval: float | None = None,
        time_scale: float = 1.0,
    ) -> None:
        """``tls``: connect with TLS (implied by an ``mqtts://`` URL or a CA file); ``flood_*``:
        the per-board rate limit (see :class:`~humigraph.gateway.ingest.FloodLimit`; rate 0 turns
        it off); ``model`` and ``alerts``: the reasoning model and the alert thresholds table."""
        self.host, self.port = parse_broker_url(broker)
        self.prefix = check_prefix(prefix)
        self.db_url = st.parse_db(db)
        self.db_path = self.db_url.path  # None on PostgreSQL
        self.tls = (
            TlsFiles.of(tls_ca, tls_cert, tls_key)
            if tls or broker.startswith("mqtts://") or tls_ca is not None
            else None
        )
        self.flood = FloodLimit(factor=flood_factor, rate=flood_rate, burst=flood_burst)
        self.model_path = Path(model) if model is not None else None
        self.alert_config: dict[str, object] = dict(alerts or {})
        # validated now: a wrong threshold stops the start with the key named (alerts.py)
        self.alert_thresholds = AlertConfig.from_mapping(self.alert_config)
        if infer_interval is not None and not 0.1 <= infer_interval <= 86400:
            raise GatewayError(
                f"infer-interval: expected 0.1 to 86400 seconds, got {infer_interval!r}"
            )
        self.infer_interval = infer_interval
        if not time_scale > 0:
            raise GatewayError(f"time-scale: expected a positive factor, got {time_scale!r}")
        self.time_scale = time_scale  # the demo's world runs faster than the clock (Reasoner)
        self.reasoner: Reasoner | None = None
        self.events = EventBus()  # live events for the dashboard's stream (events.py)
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
        self.store = st.Store(self.db_url)
        try:
            if self.http_addr:
                try:
                    self.api = ApiServer(
                        self.db_url,
                        *self.http_addr,
                        status=self.status,
                        metrics_text=self.metrics_text,
                        events=self.events,
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
                tls=self.tls,
                flood=self.flood,
                events=self.events,
            )
            self.ingest.start()
            self.reasoner = Reasoner(
                self.store,
                model=self.model_path,
                metrics=self.metrics,
                publish=self._publish,
                events=self.events,
                prefix=self.prefix,
                alerts=self.alert_thresholds,
                infer_interval=self.infer_interval,
                time_scale=self.time_scale,
            )
            self.reasoner.start()
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
            self.db_url,
            self.http_address,
        )
        return self

    def stop(self) -> None:
        if self.reasoner:  # first: it publishes through the ingest's client and uses the store
            self.reasoner.stop()
            self.reasoner = None
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
        return self.ingest.depth() if self.ingest else 0

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
            "reasoning": self.reasoner.status() if self.reasoner else {"enabled": False},
        }

    def _publish(self, topic: str, payload: bytes, retain: bool) -> None:
        """The reasoner's output: QoS 1 on the ingest's connection (paho queues while down).

        While the broker is away, forecasts, health and insights are not queued: the next pass
        publishes fresh ones (and they are stored meanwhile); alerts, alert summaries and the
        discovery configs are queued, since they are sent only when they change."""
        if not self.ingest:
            return
        if not self.connected and topic.endswith(("/forecast", "/health", "/insight")):
            return
        self.ingest.client.publish(topic, payload, qos=1, retain=retain)

    def metrics_text(self, conn: Any) -> str:
        return self.metrics.render(
            queue_depth=self.queue_depth(), gaps=st.gaps_total(conn), connected=self.connected
        )
