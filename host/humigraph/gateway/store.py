"""The gateway's store: SQLite in WAL mode, versioned migrations, one row per ``(dev, boot, seq)``.

The ingest worker is the only writer (:meth:`Store.write_batch`, one transaction per batch); the
HTTP API reads through its own connections (:func:`open_reader`), which WAL lets run alongside.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import GatewayError
from .validate import Meta, Quarantined, Reading, Record, Status

# Each entry upgrades the schema by one version (PRAGMA user_version); never edit a shipped one.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE readings (
        dev TEXT NOT NULL, boot INTEGER NOT NULL, seq INTEGER NOT NULL,
        site TEXT NOT NULL,
        ts REAL,                 -- as published (null before the board's first NTP sync)
        placed_ts REAL NOT NULL, -- ts, or placed from `up` and the boot's clock anchor
        up INTEGER NOT NULL, t REAL, rh REAL, ok INTEGER NOT NULL, err TEXT, sensor TEXT NOT NULL,
        received REAL NOT NULL,
        UNIQUE (dev, boot, seq)
    );
    CREATE INDEX readings_dev_time ON readings (dev, placed_ts);
    CREATE TABLE boots (
        dev TEXT NOT NULL, boot INTEGER NOT NULL,
        min_seq INTEGER NOT NULL, max_seq INTEGER NOT NULL, n INTEGER NOT NULL,
        anchor REAL,             -- wall clock at up=0, from the first reading with a ts
        PRIMARY KEY (dev, boot)
    );
    CREATE TABLE devices (
        dev TEXT PRIMARY KEY, site TEXT NOT NULL,
        status TEXT,             -- 'online' | 'offline' | null (never heard)
        meta TEXT,               -- the last meta JSON
        sensor TEXT, last_seen REAL
    );
    CREATE TABLE quarantine (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        topic TEXT NOT NULL, payload BLOB NOT NULL, reason TEXT NOT NULL, detail TEXT NOT NULL,
        ts REAL NOT NULL
    );
    """,
)


@dataclass
class BatchResult:
    stored: int = 0
    duplicates: int = 0
    quarantined: dict[str, int] = field(default_factory=dict)
    status: int = 0
    meta: int = 0


def sqlite_path(db: str) -> Path:
    """``sqlite:///PATH`` (or a plain path) -> PATH."""
    if db.startswith("sqlite:///"):
        rest = db[len("sqlite:///") :]
        return Path("/" + rest.lstrip("/")) if db.startswith("sqlite:////") else Path(rest)
    if "://" in db:
        raise GatewayError(
            f"db: only sqlite:///PATH is supported for now (PostgreSQL is not yet), got {db!r}"
        )
    return Path(db)


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), timeout=30, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 30000")
    return conn


def open_reader(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 30000")
    return conn


def migrate(conn: sqlite3.Connection) -> int:
    """Applies the missing migrations, each in its own transaction; returns the schema version."""
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version > len(MIGRATIONS):
        raise GatewayError(
            f"the database schema is version {version}, newer than this gateway "
            f"({len(MIGRATIONS)}): upgrade humigraph"
        )
    for i in range(version, len(MIGRATIONS)):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for stmt in MIGRATIONS[i].split(";"):
                if stmt.strip():
                    conn.execute(stmt)
            conn.execute(f"PRAGMA user_version = {i + 1}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return len(MIGRATIONS)


class Store:
    """The writer side of the database (one thread at a time)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.conn = _connect(self.path)
            mode = self.conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise GatewayError(f"{self.path}: SQLite refused WAL mode ({mode})")
            # FULL: a committed batch survives a power cut, not only a crash; only then is it acked.
            self.conn.execute("PRAGMA synchronous = FULL")
            self.version = migrate(self.conn)
        except (sqlite3.Error, OSError) as e:
            raise GatewayError(f"cannot open the database {self.path}: {e}") from e

    def close(self) -> None:
        self.conn.close()

    def write_batch(self, records: Iterable[Record], now: float | None = None) -> BatchResult:
        """Writes the records in one transaction (committed when this returns)."""
        now = time.time() if now is None else now
        res = BatchResult()
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        try:
            for r in records:
                if isinstance(r, Reading):
                    if self._reading(r, now):
                        res.stored += 1
                    else:
                        res.duplicates += 1
                elif isinstance(r, Quarantined):
                    c.execute(
                        "INSERT INTO quarantine (topic, payload, reason, detail, ts) VALUES (?,?,?,?,?)",
                        (r.topic, r.payload, r.reason, r.detail, now),
                    )
                    res.quarantined[r.reason] = res.quarantined.get(r.reason, 0) + 1
                elif isinstance(r, Status):
                    self._device(r.dev, r.site, now)
                    c.execute(
                        "UPDATE devices SET status = ? WHERE dev = ?",
                        ("online" if r.online else "offline", r.dev),
                    )
                    res.status += 1
                elif isinstance(r, Meta):
                    self._device(r.dev, r.site, now)
                    c.execute(
                        "UPDATE devices SET meta = ?, sensor = COALESCE(?, sensor) WHERE dev = ?",
                        (json.dumps(r.meta), _str_or_none(r.meta.get("sensor")), r.dev),
                    )
                    res.meta += 1
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise
        return res

    def _device(self, dev: str, site: str, now: float) -> None:
        self.conn.execute(
            "INSERT INTO devices (dev, site, last_seen) VALUES (?,?,?) "
            "ON CONFLICT (dev) DO UPDATE SET site = excluded.site, last_seen = excluded.last_seen",
            (dev, site, now),
        )

    def _reading(self, r: Reading, now: float) -> bool:
        c = self.conn
        row = c.execute(
            "SELECT min_seq, max_seq, n, anchor FROM boots WHERE dev = ? AND boot = ?",
            (r.dev, r.boot),
        ).fetchone()
        anchor = row[3] if row else None
        if r.ts is not None:
            placed = r.ts
            if anchor is None:
                anchor = r.ts - r.up / 1000.0
        elif anchor is not None:
            placed = anchor + r.up / 1000.0
        else:
            placed = now
        cur = c.execute(
            "INSERT OR IGNORE INTO readings (dev, boot, seq, site, ts, placed_ts, up, t, rh, ok, "
            "err, sensor, received) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (r.dev, r.boot, r.seq, r.site, r.ts, placed, r.up, r.t, r.rh, int(r.ok), r.err,
             r.sensor, now),
        )  # fmt: skip
        if cur.rowcount == 0:
            return False
        if row is None:
            c.execute(
                "INSERT INTO boots (dev, boot, min_seq, max_seq, n, anchor) VALUES (?,?,?,?,1,?)",
                (r.dev, r.boot, r.seq, r.seq, anchor),
            )
        else:
            c.execute(
                "UPDATE boots SET min_seq = MIN(min_seq, ?), max_seq = MAX(max_seq, ?), "
                "n = n + 1, anchor = ? WHERE dev = ? AND boot = ?",
                (r.seq, r.seq, anchor, r.dev, r.boot),
            )
        self._device(r.dev, r.site, now)
        c.execute("UPDATE devices SET sensor = ? WHERE dev = ?", (r.sensor, r.dev))
        return True


def _str_or_none(v: Any) -> str | None:
    return v if isinstance(v, str) else None


# ------------------------------------------------------------------------------------------
# queries (any connection: the writer's or a reader's)


def gaps_total(conn: sqlite3.Connection) -> int:
    """Readings missing between the first and last seq seen, summed over every (dev, boot)."""
    row = conn.execute("SELECT COALESCE(SUM(max_seq - min_seq + 1 - n), 0) FROM boots").fetchone()
    return int(row[0])


def gaps_by_dev(conn: sqlite3.Connection) -> dict[str, int]:
    rows = conn.execute("SELECT dev, SUM(max_seq - min_seq + 1 - n) FROM boots GROUP BY dev")
    return {dev: int(g) for dev, g in rows}


def devices(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    gaps = gaps_by_dev(conn)
    out = []
    for dev, site, status, meta, sensor, last_seen in conn.execute(
        "SELECT dev, site, status, meta, sensor, last_seen FROM devices ORDER BY site, dev"
    ):
        m = json.loads(meta) if meta else {}
        out.append(
            {
                "dev": dev,
                "site": site,
                "online": None if status is None else status == "online",
                "last_seen": last_seen,
                "sensor": sensor,
                "fw": m.get("fw"),
                "buffered": m.get("buffered"),
                "gaps": gaps.get(dev, 0),
            }
        )
    return out


def readings(
    conn: sqlite3.Connection,
    dev: str,
    since: float | None = None,
    until: float | None = None,
    limit: int = 1000,
) -> list[dict[str, Any]]:
    """Oldest first, by placed time, then boot and seq."""
    q = "SELECT dev, boot, seq, placed_ts, t, rh, ok, err FROM readings WHERE dev = ?"
    args: list[Any] = [dev]
    if since is not None:
        q += " AND placed_ts >= ?"
        args.append(since)
    if until is not None:
        q += " AND placed_ts <= ?"
        args.append(until)
    q += " ORDER BY placed_ts, boot, seq LIMIT ?"
    args.append(limit)
    return [
        {"dev": d, "boot": b, "seq": s, "ts": ts, "t": t, "rh": rh, "ok": bool(ok), "err": err}
        for d, b, s, ts, t, rh, ok, err in conn.execute(q, args)
    ]


def counts(conn: sqlite3.Connection) -> dict[str, int]:
    return {
        "readings": int(conn.execute("SELECT COUNT(*) FROM readings").fetchone()[0]),
        "quarantined": int(conn.execute("SELECT COUNT(*) FROM quarantine").fetchone()[0]),
        "devices": int(conn.execute("SELECT COUNT(*) FROM devices").fetchone()[0]),
    }
