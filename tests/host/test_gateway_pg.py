"""The gateway on PostgreSQL: versioned migrations in schema_version, a connection lost and
regained, the HTTP API reading through PostgreSQL, and (e2e) a real Mosquitto stream stored once.

Every test runs in its own throwaway database on the local server and skips with the reason when
that server is not reachable (tests/support/pg.py).
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from humigraph.errors import GatewayError
from humigraph.gateway import store as st
from humigraph.gateway.service import Gateway
from humigraph.gateway.store import Store
from humigraph.gateway.validate import Reading, Status
from support.pg import temp_database


@pytest.fixture
def pg() -> Iterator[str]:
    with temp_database() as dsn:
        yield dsn


def rd(seq: int, dev: str = "kitchen-1") -> Reading:
    return Reading("home", dev, 1, seq, 1764400000.0 + seq, seq * 1000, 21.0, 45.0, True, None,
                   "dht22")  # fmt: skip


def test_schema_version_table_and_pg_types(pg: str) -> None:
    s = Store(pg)
    try:
        assert s.dialect == "postgresql" and s.placeholder == "%s"
        rows = s.execute("SELECT version FROM schema_version ORDER BY version").fetchall()
        assert [r[0] for r in rows] == list(range(1, len(st.MIGRATIONS) + 1))
        types = dict(
            s.execute(
                "SELECT table_name || '.' || column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = 'public'"
            ).fetchall()
        )
        assert types["readings.seq"] == "bigint"
        assert types["readings.ts"] == "double precision"
        assert types["quarantine.payload"] == "bytea"
        ident = s.execute(
            "SELECT is_identity FROM information_schema.columns "
            "WHERE table_name = 'quarantine' AND column_name = 'id'"
        ).fetchone()
        assert ident[0] == "YES"
    finally:
        s.close()


def test_a_newer_schema_is_refused(pg: str) -> None:
    Store(pg).close()
    import psycopg

    with psycopg.connect(pg, autocommit=True) as conn:
        conn.execute("INSERT INTO schema_version (version, applied) VALUES (99, 0)")
    with pytest.raises(GatewayError, match="newer"):
        Store(pg)


def test_two_gateways_migrating_at_once_apply_each_migration_once(pg: str) -> None:
    stores: list[Store] = []
    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            stores.append(Store(pg))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=open_one) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors and len(stores) == 3
    n = stores[0].execute("SELECT COUNT(*) FROM schema_version").fetchone()[0]
    assert n == len(st.MIGRATIONS)
    for s in stores:
        s.close()


def test_the_writer_reconnects_after_losing_its_connection(pg: str) -> None:
    import psycopg

    s = Store(pg)
    try:
        s.write_batch([rd(1)])
        pid = s.execute("SELECT pg_backend_pid()").fetchone()[0]
        with psycopg.connect(pg, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(st.DB_ERRORS):  # the batch in flight fails (and is not acked) ...
            s.write_batch([rd(2)])
        res = s.write_batch([rd(2), rd(3)])  # ... and the retry goes through a new connection
        assert res.stored == 2
        assert [r["seq"] for r in st.readings(s.conn, "kitchen-1")] == [1, 2, 3]
    finally:
        s.close()


def test_the_http_api_reads_through_postgresql(pg: str) -> None:
    with Gateway("mqtt://127.0.0.1:1", pg, http="127.0.0.1:0") as gw:
        assert gw.store is not None
        gw.store.write_batch([Status("home", "kitchen-1", True), rd(1), rd(2), rd(4)])
        host, port = gw.http_address or ("", 0)

        def get(path: str) -> Any:
            with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=10) as r:
                body = r.read().decode()
                return json.loads(body) if path.startswith(("/api", "/healthz")) else body

        health = get("/healthz")
        assert health["readings"] == 3 and health["schema"] == len(st.MIGRATIONS)
        devs = get("/api/devices")
        assert [(d["dev"], d["online"], d["gaps"]) for d in devs] == [("kitchen-1", True, 1)]
        rows = get("/api/readings?dev=kitchen-1&since=1764400002")
        assert [r["seq"] for r in rows] == [2, 4]
        assert "humigraph_gaps_total 1" in get("/metrics").splitlines()


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_a_stream_through_mosquitto_is_stored_once_on_postgresql(pg: str, broker: Any) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    n_dev, n = 5, 200
    with Gateway(broker.url, pg, http=None, flood_rate=0) as gw:
        deadline = time.monotonic() + 10
        while not gw.connected and time.monotonic() < deadline:
            time.sleep(0.05)
        assert gw.connected
        time.sleep(0.3)  # SUBACK
        pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="pg-publisher")
        pub.max_inflight_messages_set(100)
        pub.connect("127.0.0.1", broker.port)
        pub.loop_start()
        try:
            infos = []
            for seq in range(n):
                for d in range(n_dev):
                    dev = f"node-{d}"
                    body = {"v": 1, "dev": dev, "boot": 1, "seq": seq, "ts": 1764400000.0 + seq,
                            "up": seq * 1000, "t": 20.5, "rh": 40.0, "ok": True, "err": None,
                            "sensor": "dht22"}  # fmt: skip
                    infos.append(pub.publish(f"humigraph/home/{dev}/state", json.dumps(body), 1))
            for seq in range(n - 20, n):  # a replay: duplicates
                body = {"v": 1, "dev": "node-0", "boot": 1, "seq": seq, "ts": 1764400000.0 + seq,
                        "up": seq * 1000, "t": 20.5, "rh": 40.0, "ok": True, "err": None,
                        "sensor": "dht22"}  # fmt: skip
                infos.append(pub.publish("humigraph/home/node-0/state", json.dumps(body), 1))
            for i in infos:
                i.wait_for_publish(30)
        finally:
            pub.loop_stop()
            pub.disconnect()
        deadline = time.monotonic() + 30
        while gw.metrics.readings_stored + gw.metrics.duplicates < n * n_dev + 20:
            assert time.monotonic() < deadline, gw.metrics.snapshot()
            time.sleep(0.1)
        assert gw.store is not None
        conn = gw.store.reader()
        try:
            rows = st.execute(
                conn, "SELECT dev, COUNT(*), COUNT(DISTINCT seq) FROM readings GROUP BY dev"
            ).fetchall()
            assert sorted(tuple(r) for r in rows) == [(f"node-{d}", n, n) for d in range(n_dev)]
            assert st.gaps_total(conn) == 0
        finally:
            conn.close()
        assert (gw.metrics.readings_stored, gw.metrics.duplicates) == (n * n_dev, 20)
