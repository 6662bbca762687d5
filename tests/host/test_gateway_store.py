"""Gateway store: WAL, migrations, dedupe on (dev, boot, seq), gap accounting, quarantine.

The behaviour tests run on both backends: SQLite in a temp dir and PostgreSQL in a throwaway
database on the local server (skipped with the reason when that server is not reachable).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from humigraph.errors import GatewayError
from humigraph.gateway import store as st
from humigraph.gateway.store import Store
from humigraph.gateway.validate import Meta, Quarantined, Reading, Status


@pytest.fixture
def s(db: str) -> Iterator[Store]:
    store = Store(db)
    yield store
    store.close()


def rd(
    seq: int, boot: int = 1, dev: str = "kitchen-1", ts: float | None = 1764400000.0, up: int = 0
) -> Reading:
    t = None if ts is None else ts + seq
    return Reading("home", dev, boot, seq, t, up, 21.0 + seq / 10, 45.0, True, None, "dht22")


def test_wal_and_schema_version(tmp_path: Path) -> None:
    s = Store(tmp_path / "gw.db")
    assert s.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert s.version == len(st.MIGRATIONS)
    s.close()
    s = Store(tmp_path / "gw.db")  # reopening applies nothing twice
    assert s.conn.execute("PRAGMA user_version").fetchone()[0] == len(st.MIGRATIONS)
    s.close()


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "gw.db")
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(GatewayError, match="newer"):
        Store(tmp_path / "gw.db")


def test_each_identity_is_stored_once(s: Store) -> None:
    res = s.write_batch([rd(1), rd(2), rd(1)])
    assert (res.stored, res.duplicates) == (2, 1)
    res = s.write_batch([rd(2), rd(3), rd(1, boot=2)])
    assert (res.stored, res.duplicates) == (2, 1)
    assert st.counts(s.conn)["readings"] == 4
    out = st.readings(s.conn, "kitchen-1")
    assert [(r["boot"], r["seq"]) for r in out] == [(1, 1), (2, 1), (1, 2), (1, 3)]
    assert st.gaps_total(s.conn) == 0


def test_gaps_are_counted_and_late_replays_fill_them(s: Store) -> None:
    s.write_batch([rd(1), rd(2), rd(6)])
    assert st.gaps_total(s.conn) == 3
    s.write_batch([rd(1, dev="bedroom-2"), rd(3, dev="bedroom-2")])
    assert st.gaps_by_dev(s.conn) == {"kitchen-1": 3, "bedroom-2": 1}
    s.write_batch([rd(4), rd(3), rd(5)])  # the board's buffer replayed late
    assert st.gaps_by_dev(s.conn) == {"kitchen-1": 0, "bedroom-2": 1}
    seqs = [r["seq"] for r in st.readings(s.conn, "kitchen-1")]
    assert seqs == [1, 2, 3, 4, 5, 6]  # placed at their own ts, not at arrival


def test_readings_without_ts_are_placed_from_uptime(s: Store) -> None:
    s.write_batch([rd(1, ts=1764400000.0, up=10_000)])  # ts 1764400001 at 10 s of uptime
    s.write_batch(
        [Reading("home", "kitchen-1", 1, 2, None, 20_000, 20.0, 40.0, True, None, "dht22")]
    )
    ts = [r["ts"] for r in st.readings(s.conn, "kitchen-1")]
    assert ts[1] - ts[0] == pytest.approx(10.0)


def test_readings_query_filters(s: Store) -> None:
    s.write_batch([rd(i) for i in range(10)])
    out = st.readings(s.conn, "kitchen-1", since=1764400003, until=1764400006, limit=2)
    assert [r["seq"] for r in out] == [3, 4]
    assert set(out[0]) == {"dev", "boot", "seq", "ts", "t", "rh", "ok", "err"}
    assert st.readings(s.conn, "nobody") == []


def test_quarantine_keeps_topic_raw_bytes_and_reason(s: Store) -> None:
    res = s.write_batch([Quarantined("humigraph/x/y/state", b"\xff\x00", "not_json", "bad")])
    assert res.quarantined == {"not_json": 1}
    row = s.conn.execute("SELECT topic, payload, reason, detail FROM quarantine").fetchone()
    assert row == ("humigraph/x/y/state", b"\xff\x00", "not_json", "bad")


def test_devices_status_meta_and_gaps(s: Store) -> None:
    s.write_batch(
        [
            Status("home", "kitchen-1", True),
            Meta(
                "home", "kitchen-1", {"fw": "0.1.0", "buffered": 4, "sensor": "dht22", "rssi": -61}
            ),
            rd(1),
            rd(3),
        ]
    )
    s.write_batch([Status("home", "bedroom-2", False)])
    devs = {d["dev"]: d for d in st.devices(s.conn)}
    k = devs["kitchen-1"]
    assert (k["site"], k["online"], k["fw"], k["buffered"], k["sensor"], k["gaps"]) == (
        "home", True, "0.1.0", 4, "dht22", 1,
    )  # fmt: skip
    assert k["last_seen"] > 0 and k["rssi"] == -61
    assert devs["bedroom-2"]["online"] is False and devs["bedroom-2"]["gaps"] == 0


def test_a_failed_batch_leaves_nothing(s: Store) -> None:
    unbindable = Quarantined(object(), b"", "bad_topic", "x")  # type: ignore[arg-type]
    with pytest.raises(st.DB_ERRORS):
        s.write_batch([rd(1), unbindable])
    assert st.counts(s.conn)["readings"] == 0
    assert s.write_batch([rd(1)]).stored == 1


def test_sqlite_urls() -> None:
    assert st.sqlite_path("sqlite:////var/lib/humigraph/g.db") == Path("/var/lib/humigraph/g.db")
    assert st.sqlite_path("sqlite:///data/g.db") == Path("data/g.db")
    with pytest.raises(GatewayError, match="postgresql://"):
        st.sqlite_path("mysql://localhost/humigraph")
    pg = st.parse_db("postgresql://gw:secret@db.lan/humigraph")
    assert (pg.dialect, pg.dsn) == ("postgresql", "postgresql://gw:secret@db.lan/humigraph")
    assert "secret" not in str(pg)  # logs and errors never show the password
    assert st.parse_db("sqlite:///data/g.db").path == Path("data/g.db")


def test_reopening_applies_no_migration_twice(db: str) -> None:
    first = Store(db)
    assert first.version == len(st.MIGRATIONS) == st.schema_version(first.conn)
    first.write_batch([rd(1)])
    first.close()
    again = Store(db)
    assert again.version == st.schema_version(again.conn) == len(st.MIGRATIONS)
    assert st.counts(again.conn)["readings"] == 1
    again.close()


def test_a_reader_sees_what_the_writer_committed(s: Store) -> None:
    s.write_batch([rd(1), rd(2), Status("home", "kitchen-1", True)])
    conn = s.reader()
    try:
        assert st.counts(conn) == {"readings": 2, "quarantined": 0, "devices": 1}
        assert [r["seq"] for r in st.readings(conn, "kitchen-1")] == [1, 2]
        with pytest.raises(st.DB_ERRORS):  # read-only
            st.execute(conn, "DELETE FROM readings")
    finally:
        conn.close()


def test_batch_result_lists_what_changed_for_the_event_bus(s: Store) -> None:
    s.write_batch([rd(1)])
    res = s.write_batch([rd(1), rd(2), rd(2), Status("home", "kitchen-1", False), rd(3)])
    assert (res.stored, res.duplicates) == (2, 2)
    assert [(r.seq, placed) for r, placed in res.stored_readings] == [
        (2, 1764400002.0), (3, 1764400003.0),
    ]  # fmt: skip
    assert res.updates == [Status("home", "kitchen-1", False)]


def test_other_writers_use_the_transaction_and_portable_sql(s: Store) -> None:
    """What the reasoner does with its own tables: ? placeholders, one transaction."""
    with s.transaction():
        s.execute("CREATE TABLE notes (k TEXT PRIMARY KEY, v TEXT)")
    with s.transaction() as conn:
        cur = conn.cursor()
        cur.executemany(s.sql("INSERT INTO notes (k, v) VALUES (?, ?)"), [("a", "50%"), ("b", "?")])
        cur.close()
        s.execute("INSERT OR IGNORE INTO notes (k, v) VALUES (?, ?)", ("a", "again"))
    with pytest.raises(RuntimeError), s.transaction():
        s.execute("INSERT INTO notes (k, v) VALUES (?, ?)", ("c", "rolled back"))
        raise RuntimeError
    rows = s.execute("SELECT k, v FROM notes WHERE v LIKE '%' ORDER BY k").fetchall()
    assert [tuple(r) for r in rows] == [("a", "50%"), ("b", "?")]
    assert s.placeholder == ("?" if s.dialect == "sqlite" else "%s")


def test_seq_and_boot_use_the_full_u32_range(s: Store) -> None:
    big = 2**32 - 1
    res = s.write_batch([rd(big - 1, boot=big), rd(big, boot=big), rd(big, boot=big)])
    assert (res.stored, res.duplicates) == (2, 1)
    assert [r["seq"] for r in st.readings(s.conn, "kitchen-1")] == [big - 1, big]


def test_pg_ddl_translation() -> None:
    ddl = st.translate_ddl(
        "CREATE TABLE q (id INTEGER PRIMARY KEY AUTOINCREMENT, n INTEGER, x REAL, b BLOB)",
        "postgresql",
    )
    assert ddl == (
        "CREATE TABLE q (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, n BIGINT, "
        "x DOUBLE PRECISION, b BYTEA)"
    )
    assert st.translate("INSERT OR IGNORE INTO t (a) VALUES (?)", "postgresql") == (
        "INSERT INTO t (a) VALUES (%s) ON CONFLICT DO NOTHING"
    )
    assert st.translate("SELECT '?%' || ? FROM t WHERE a LIKE 'x%'", "postgresql") == (
        "SELECT '?%%' || %s FROM t WHERE a LIKE 'x%%'"
    )
    assert st.translate("SELECT ?", "sqlite") == "SELECT ?"
