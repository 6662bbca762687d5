"""The gateway's store: SQLite (WAL) or PostgreSQL, versioned migrations, one row per ``(dev, boot, seq)``.

Both backends share one schema, written once in portable SQL (:data:`MIGRATIONS`) and translated
per dialect when applied (:func:`translate_ddl`). The schema version lives in ``PRAGMA user_version``
on SQLite and in a ``schema_version`` table on PostgreSQL.

The ingest worker writes through :meth:`Store.write_batch` (one transaction per batch). Other
writers in the gateway (the reasoner) use :meth:`Store.transaction` and :meth:`Store.sql`, which
serialise them with the ingest worker on the one writer connection. The HTTP API reads through its
own connections (:func:`open_reader`); the query functions below take any connection of either
backend and write their SQL with ``?`` placeholders.
"""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import GatewayError
from .validate import Meta, Quarantined, Reading, Record, Status

SQLITE = "sqlite"
POSTGRESQL = "postgresql"

# Each entry upgrades the schema by one version; never edit a shipped one, append a new one.
# Portable SQL: INTEGER (64-bit on both), REAL (double), BLOB, TEXT, INTEGER PRIMARY KEY
# AUTOINCREMENT; no semicolons inside comments or literals (statements are split on them).
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
    # 2: what the reasoner concludes (gateway/derived.py): payloads as published, history by ts
    """
    CREATE TABLE forecasts (
        dev TEXT NOT NULL, site TEXT NOT NULL, ts REAL NOT NULL, model TEXT NOT NULL,
        payload TEXT NOT NULL,   -- the JSON published on <prefix>/<site>/<dev>/forecast
        PRIMARY KEY (dev, ts)
    );
    CREATE TABLE health (
        dev TEXT NOT NULL, site TEXT NOT NULL, ts REAL NOT NULL, model TEXT NOT NULL,
        payload TEXT NOT NULL,
        PRIMARY KEY (dev, ts)
    );
    CREATE TABLE insights (
        site TEXT NOT NULL, ts REAL NOT NULL, model TEXT NOT NULL, payload TEXT NOT NULL,
        PRIMARY KEY (site, ts)
    );
    CREATE TABLE alerts (
        id TEXT PRIMARY KEY, site TEXT NOT NULL, dev TEXT NOT NULL, kind TEXT NOT NULL,
        level TEXT NOT NULL, message TEXT NOT NULL,
        since REAL NOT NULL, cleared REAL,  -- cleared is null while the alert is active
        clear_message TEXT, vals TEXT NOT NULL
    );
    CREATE INDEX alerts_since ON alerts (since);
    CREATE INDEX alerts_active ON alerts (cleared, site);
    CREATE INDEX forecasts_ts ON forecasts (ts);
    CREATE INDEX health_ts ON health (ts);
    CREATE INDEX insights_ts ON insights (ts)
    """,
    # 3: messages each board sent above its flood limit (quarantined with reason 'flood')
    """
    ALTER TABLE devices ADD COLUMN flood_dropped INTEGER NOT NULL DEFAULT 0
    """,
)


# seconds: how stale devices.last_seen may be while a board keeps publishing
LAST_SEEN_RESOLUTION = 1.0


def _db_errors() -> tuple[type[BaseException], ...]:
    try:
        import psycopg
    except ImportError:
        return (sqlite3.Error,)
    return (sqlite3.Error, psycopg.Error)


# What a database failure raises, on either backend (the HTTP API answers 503 on these).
DB_ERRORS: tuple[type[BaseException], ...] = _db_errors()


@dataclass(frozen=True)
class DbUrl:
    """A parsed ``--db``: SQLite (``path``) or PostgreSQL (``dsn``, a libpq URL)."""

    dialect: str
    path: Path | None = None
    dsn: str | None = None

    def __str__(self) -> str:
        if self.dialect == SQLITE:
            return str(self.path)
        return _hide_password(self.dsn or "")


def _hide_password(dsn: str) -> str:
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", dsn)


def parse_db(db: str | Path | DbUrl) -> DbUrl:
    """``sqlite:///rel``, ``sqlite:////abs``, a plain path, or ``postgresql://...`` -> DbUrl."""
    if isinstance(db, DbUrl):
        return db
    if isinstance(db, Path):
        return DbUrl(SQLITE, path=db)
    if db.startswith(("postgresql://", "postgres://")):
        return DbUrl(POSTGRESQL, dsn=db)
    return DbUrl(SQLITE, path=sqlite_path(db))


def sqlite_path(db: str) -> Path:
    """``sqlite:///PATH`` (or a plain path) -> PATH."""
    if db.startswith("sqlite:///"):
        rest = db[len("sqlite:///") :]
        return Path("/" + rest.lstrip("/")) if db.startswith("sqlite:////") else Path(rest)
    if "://" in db:
        raise GatewayError(
            f"db: expected sqlite:///PATH, sqlite:////ABSOLUTE/PATH or "
            f"postgresql://USER@HOST/DATABASE, got {_hide_password(db)!r}"
        )
    if not db:
        raise GatewayError("db: empty; expected sqlite:///PATH or postgresql://...")
    return Path(db)


# ------------------------------------------------------------------------------------------
# dialects


def dialect_of(conn: Any) -> str:
    return SQLITE if isinstance(conn, sqlite3.Connection) else POSTGRESQL


_PG_TYPES = (
    (re.compile(r"\bINTEGER\s+PRIMARY\s+KEY\s+AUTOINCREMENT\b", re.I),
     "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"),
    (re.compile(r"\bINTEGER\b", re.I), "BIGINT"),  # SQLite's INTEGER is 64-bit: seq goes to 2**32-1
    (re.compile(r"\bREAL\b", re.I), "DOUBLE PRECISION"),
    (re.compile(r"\bBLOB\b", re.I), "BYTEA"),
)  # fmt: skip
_OR_IGNORE = re.compile(r"\bINSERT\s+OR\s+IGNORE\b", re.I)


def split_statements(script: str) -> list[str]:
    """A migration script -> its statements, comments removed."""
    text = re.sub(r"--[^\n]*", "", script)
    return [s.strip() for s in text.split(";") if s.strip()]


def translate_ddl(stmt: str, dialect: str) -> str:
    """Portable (SQLite-flavoured) DDL -> the dialect's."""
    if dialect == SQLITE:
        return stmt
    for pattern, repl in _PG_TYPES:
        stmt = pattern.sub(repl, stmt)
    return translate(stmt, dialect)


def translate(query: str, dialect: str) -> str:
    """A statement with ``?`` placeholders -> the dialect's (``%s`` for psycopg, ``%`` escaped).

    ``INSERT OR IGNORE`` becomes ``INSERT ... ON CONFLICT DO NOTHING`` on PostgreSQL. Quoted
    literals and identifiers are left alone.
    """
    if dialect == SQLITE:
        return query
    out: list[str] = []
    quote: str | None = None
    for ch in query:
        if quote:
            out.append("%%" if ch == "%" else ch)
            if ch == quote:
                quote = None
        elif ch in ("'", '"'):
            quote = ch
            out.append(ch)
        elif ch == "?":
            out.append("%s")
        elif ch == "%":
            out.append("%%")
        else:
            out.append(ch)
    text = "".join(out)
    if _OR_IGNORE.search(text):
        text = _OR_IGNORE.sub("INSERT", text)
        if not re.search(r"\bON\s+CONFLICT\b", text, re.I):
            text = text.rstrip().rstrip(";") + " ON CONFLICT DO NOTHING"
    return text


def execute(conn: Any, query: str, args: Sequence[Any] = ()) -> Any:
    """``conn.execute`` with ``?`` placeholders on either backend; returns the cursor."""
    if isinstance(conn, sqlite3.Connection):
        return conn.execute(query, args)
    return conn.execute(translate(query, POSTGRESQL), tuple(args))


# ------------------------------------------------------------------------------------------
# connections and migrations


def _connect_sqlite(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), timeout=30, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 30000")
    return conn


def _connect_pg(dsn: str, *, read_only: bool = False) -> Any:
    try:
        import psycopg
    except ImportError as e:
        raise GatewayError(
            "db: PostgreSQL needs psycopg 3: pip install 'humigraph[postgres]'"
        ) from e
    try:
        # autocommit: transactions are explicit (Store.transaction), readers never sit idle in one
        conn = psycopg.connect(dsn, autocommit=True, connect_timeout=10)
    except psycopg.Error as e:
        raise GatewayError(f"cannot connect to the database {_hide_password(dsn)}: {e}") from e
    if read_only:
        conn.execute("SET default_transaction_read_only = on")
    return conn


def open_reader(db: str | Path | DbUrl) -> Any:
    """A new read-only connection of either backend (close it when done)."""
    url = parse_db(db)
    if url.dialect == POSTGRESQL:
        return _connect_pg(url.dsn or "", read_only=True)
    conn = sqlite3.connect(
        f"file:{url.path}?mode=ro", uri=True, timeout=30, check_same_thread=False
    )
    conn.execute("PRAGMA busy_timeout = 30000")
    return conn


def _migrate_sqlite(conn: sqlite3.Connection) -> int:
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    _check_version(version)
    for i in range(version, len(MIGRATIONS)):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for stmt in split_statements(MIGRATIONS[i]):
                conn.execute(stmt)
            conn.execute(f"PRAGMA user_version = {i + 1}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return len(MIGRATIONS)


def _migrate_pg(conn: Any) -> int:
    # One migrator at a time (two gateways starting on one database): a transaction-scoped lock.
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(4857011)")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version "
            "(version BIGINT PRIMARY KEY, applied DOUBLE PRECISION NOT NULL)"
        )
        row = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()
        version = int(row[0])
        _check_version(version)
        for i in range(version, len(MIGRATIONS)):
            # A savepoint per migration: DDL is transactional on PostgreSQL, all or nothing.
            with conn.transaction():
                for stmt in split_statements(MIGRATIONS[i]):
                    conn.execute(translate_ddl(stmt, POSTGRESQL), ())
                conn.execute(
                    "INSERT INTO schema_version (version, applied) VALUES (%s, %s)",
                    (i + 1, time.time()),
                )
    return len(MIGRATIONS)


def _check_version(version: int) -> None:
    if version > len(MIGRATIONS):
        raise GatewayError(
            f"the database schema is version {version}, newer than this gateway "
            f"({len(MIGRATIONS)}): upgrade humigraph"
        )


def migrate(conn: Any) -> int:
    """Applies the missing migrations, each in its own transaction; returns the schema version."""
    if isinstance(conn, sqlite3.Connection):
        return _migrate_sqlite(conn)
    return _migrate_pg(conn)


def schema_version(conn: Any) -> int:
    if isinstance(conn, sqlite3.Connection):
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    return int(conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()[0])


# ------------------------------------------------------------------------------------------
# the writer


@dataclass
class BatchResult:
    stored: int = 0
    duplicates: int = 0
    quarantined: dict[str, int] = field(default_factory=dict)
    status: int = 0
    meta: int = 0
    # What the batch changed, in order, for the live event bus: stored readings with the time
    # they were placed at, and the status and meta records.
    stored_readings: list[tuple[Reading, float]] = field(default_factory=list)
    updates: list[Status | Meta] = field(default_factory=list)


class Store:
    """The writer side of the database: one connection, used by one thread at a time.

    ``conn`` is the DB-API connection (``sqlite3`` or ``psycopg``), ``dialect`` says which;
    write SQL with ``?`` placeholders and pass it through :meth:`sql`, inside
    :meth:`transaction`.
    """

    def __init__(self, db: str | Path | DbUrl) -> None:
        self.url = parse_db(db)
        self.dialect = self.url.dialect
        self.lock = threading.RLock()
        # (dev, boot) -> [min_seq, max_seq, n, anchor]: this writer's view of the boots table
        self._boots: dict[tuple[str, int], list[Any]] = {}
        self._boots_known: set[str] = set()
        # dev -> (last_seen, site, sensor) as last written to devices by _readings
        self._dev_written: dict[str, tuple[float, str, str]] = {}
        if self.dialect == SQLITE:
            self.path: Path | None = self.url.path
            self.conn: Any = self._open_sqlite(self.url.path or Path())
        else:
            self.path = None
            self.conn = _connect_pg(self.url.dsn or "")
            try:
                self.version = migrate(self.conn)
            except DB_ERRORS as e:
                self.conn.close()
                raise GatewayError(f"cannot migrate the database {self.url}: {e}") from e

    def _open_sqlite(self, path: Path) -> sqlite3.Connection:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = _connect_sqlite(path)
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise GatewayError(f"{path}: SQLite refused WAL mode ({mode})")
            # FULL: a committed batch survives a power cut, not only a crash; only then is it acked.
            conn.execute("PRAGMA synchronous = FULL")
            self.version = migrate(conn)
        except (sqlite3.Error, OSError) as e:
            raise GatewayError(f"cannot open the database {path}: {e}") from e
        return conn

    # -- for every writer ------------------------------------------------------------------------

    @property
    def placeholder(self) -> str:
        return "?" if self.dialect == SQLITE else "%s"

    def sql(self, query: str) -> str:
        """A statement written with ``?`` placeholders -> this backend's text."""
        return translate(query, self.dialect)

    def execute(self, query: str, args: Sequence[Any] = ()) -> Any:
        """Runs one ``?``-placeholder statement on the writer connection; returns the cursor."""
        return execute(self.conn, query, args)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Any]:
        """``with store.transaction() as conn:`` commits on exit, rolls back on an exception."""
        with self.lock:
            if self.dialect == POSTGRESQL and self.conn.closed:
                # The server restarted or the link dropped: a fresh connection, and the failed
                # batch is retried by the caller (nothing was acknowledged).
                self.conn = _connect_pg(self.url.dsn or "")
            if self.dialect == SQLITE:
                self.conn.execute("BEGIN IMMEDIATE")
                try:
                    yield self.conn
                except BaseException:
                    self.conn.execute("ROLLBACK")
                    raise
                self.conn.execute("COMMIT")
            else:
                with self.conn.transaction():
                    yield self.conn

    def reader(self) -> Any:
        """A new read-only connection to the same database."""
        return open_reader(self.url)

    def close(self) -> None:
        with self.lock:
            self.conn.close()

    # -- ingest ----------------------------------------------------------------------------------

    def write_batch(self, records: Iterable[Record], now: float | None = None) -> BatchResult:
        """Writes the records in one transaction (committed when this returns)."""
        now = time.time() if now is None else now
        res = BatchResult()
        try:
            with self.transaction():
                self._apply(records, now, res)
        except BaseException:
            self._boots.clear()  # they may hold what was just rolled back
            self._boots_known.clear()
            self._dev_written.clear()
            raise
        return res

    def _apply(self, records: Iterable[Record], now: float, res: BatchResult) -> None:
        """The batch's writes (inside its transaction)."""
        readings: list[Reading] = []
        quarantined: list[tuple[Any, ...]] = []
        flooded: dict[tuple[str, str], int] = {}
        for r in records:
            if isinstance(r, Reading):
                readings.append(r)
            elif isinstance(r, Quarantined):
                quarantined.append((r.topic, r.payload, r.reason, r.detail, now))
                res.quarantined[r.reason] = res.quarantined.get(r.reason, 0) + 1
                if r.reason == "flood":
                    site_dev = topic_site_dev(r.topic)
                    flooded[site_dev] = flooded.get(site_dev, 0) + 1
            elif isinstance(r, Status):
                self._device(r.dev, r.site, now)
                self.execute(
                    "UPDATE devices SET status = ? WHERE dev = ?",
                    ("online" if r.online else "offline", r.dev),
                )
                res.status += 1
                res.updates.append(r)
            elif isinstance(r, Meta):
                self._device(r.dev, r.site, now)
                self.execute(
                    "UPDATE devices SET meta = ?, sensor = COALESCE(?, sensor) WHERE dev = ?",
                    (json.dumps(r.meta), _str_or_none(r.meta.get("sensor")), r.dev),
                )
                res.meta += 1
                res.updates.append(r)
        if quarantined:
            self._many(
                "INSERT INTO quarantine (topic, payload, reason, detail, ts) VALUES (?,?,?,?,?)",
                quarantined,
            )
        if readings:
            self._readings(readings, now, res)
        for (site, dev), n in flooded.items():
            self._device(dev, site, now)
            self.execute(
                "UPDATE devices SET flood_dropped = flood_dropped + ? WHERE dev = ?", (n, dev)
            )

    def _many(self, query: str, rows: list[tuple[Any, ...]]) -> int:
        """executemany; returns the rows changed (both drivers sum rowcount over the rows)."""
        cur = self.conn.cursor()
        try:
            cur.executemany(self.sql(query), rows)
            return int(cur.rowcount)
        finally:
            cur.close()

    def _device(self, dev: str, site: str, now: float, sensor: str | None = None) -> None:
        self.execute(
            "INSERT INTO devices (dev, site, last_seen, sensor) VALUES (?,?,?,?) "
            "ON CONFLICT (dev) DO UPDATE SET site = excluded.site, last_seen = excluded.last_seen, "
            "sensor = COALESCE(excluded.sensor, devices.sensor)",
            (dev, site, now, sensor),
        )

    def _boot_states(self, keys: Iterable[tuple[str, int]]) -> dict[tuple[str, int], list[Any]]:
        """``[min_seq, max_seq, n, anchor]`` of each (dev, boot) already stored, from a cache
        that this writer keeps in step with its own commits (loaded per device on a miss)."""
        cache = self._boots
        # a device once loaded has all its boots here: a key it lacks is a new boot
        missing = {dev for dev, _ in keys if dev not in self._boots_known}
        if missing:
            if len(cache) > 200_000:  # years of reboots: start over rather than grow
                cache.clear()
                self._boots_known.clear()
                missing = {dev for dev, _ in keys}
            devs = sorted(missing)
            for i in range(0, len(devs), 500):
                part = devs[i : i + 500]
                q = (
                    "SELECT dev, boot, min_seq, max_seq, n, anchor FROM boots WHERE dev IN ("
                    + ",".join("?" * len(part))
                    + ")"
                )
                for dev, boot, lo, hi, n, anchor in self.execute(q, part):
                    cache[(dev, int(boot))] = [int(lo), int(hi), int(n), anchor]
            self._boots_known.update(missing)
        return cache

    def _readings(self, readings: list[Reading], now: float, res: BatchResult) -> None:
        """Inserts readings with a few statements per batch, whatever its size.

        A (dev, boot) group whose seqs are all above the boot's max_seq (and distinct) cannot hold
        a duplicate: the live case, inserted with the batch's one executemany. Anything else (a
        replay after an outage) goes row by row so that each duplicate is known.
        """
        groups: dict[tuple[str, int], list[Reading]] = {}
        for r in readings:
            groups.setdefault((r.dev, r.boot), []).append(r)
        insert = (
            "INSERT OR IGNORE INTO readings (dev, boot, seq, site, ts, placed_ts, up, t, rh, ok, "
            "err, sensor, received) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)"
        )
        insert_sql = self.sql(insert)
        states = self._boot_states(groups)
        bulk: list[tuple[Any, ...]] = []
        boot_rows: list[tuple[Any, ...]] = []
        last: dict[str, tuple[str, str, str]] = {}  # dev -> (dev, site, sensor) of its last one
        for key, group in groups.items():
            state = states.get(key)
            anchor = state[3] if state else None
            if anchor is None:
                first = next((r for r in group if r.ts is not None), None)
                if first is not None and first.ts is not None:
                    anchor = first.ts - first.up / 1000.0
            rows = []
            placed_of: list[float] = []
            for r in group:
                if r.ts is not None:
                    placed = r.ts
                elif anchor is not None:
                    placed = anchor + r.up / 1000.0
                else:
                    placed = now
                placed_of.append(placed)
                rows.append(
                    (r.dev, r.boot, r.seq, r.site, r.ts, placed, r.up, r.t, r.rh, int(r.ok),
                     r.err, r.sensor, now)
                )  # fmt: skip
            seqs = [r.seq for r in group]
            fresh = (state is None or min(seqs) > state[1]) and len(set(seqs)) == len(seqs)
            if fresh:
                bulk += rows
                stored = list(range(len(group)))
            else:
                stored = [
                    i
                    for i, values in enumerate(rows)
                    if self.conn.execute(insert_sql, values).rowcount
                ]
            res.duplicates += len(group) - len(stored)
            if not stored:
                continue
            res.stored += len(stored)
            res.stored_readings += [(group[i], placed_of[i]) for i in stored]
            lo = min(group[i].seq for i in stored)
            hi = max(group[i].seq for i in stored)
            boot_rows.append((key[0], key[1], lo, hi, len(stored), anchor))
            if state is None:
                states[key] = [lo, hi, len(stored), anchor]
            else:
                state[:] = [min(state[0], lo), max(state[1], hi), state[2] + len(stored),
                            state[3] if state[3] is not None else anchor]  # fmt: skip
            r_last = group[stored[-1]]
            last[r_last.dev] = (r_last.dev, r_last.site, r_last.sensor)
        if bulk and self._many(insert, bulk) != len(bulk):
            # another writer stored some of them: this batch rolls back and is retried, with
            # the cache reloaded from the database
            raise GatewayError("readings: rows appeared that this writer did not store; retrying")
        if boot_rows:
            least, greatest = ("MIN", "MAX") if self.dialect == SQLITE else ("LEAST", "GREATEST")
            self._many(
                "INSERT INTO boots (dev, boot, min_seq, max_seq, n, anchor) VALUES (?,?,?,?,?,?) "
                f"ON CONFLICT (dev, boot) DO UPDATE SET "
                f"min_seq = {least}(boots.min_seq, excluded.min_seq), "
                f"max_seq = {greatest}(boots.max_seq, excluded.max_seq), "
                "n = boots.n + excluded.n, anchor = COALESCE(boots.anchor, excluded.anchor)",
                boot_rows,
            )
        # devices.last_seen moves at most once a second per board: at thousands of readings a
        # second that spares a row write per board and batch (site or sensor changes go at once)
        seen = self._dev_written
        changed = [
            (dev, site, now, sensor)
            for dev, site, sensor in last.values()
            if (w := seen.get(dev)) is None
            or now - w[0] >= LAST_SEEN_RESOLUTION
            or w[1:] != (site, sensor)
        ]
        if changed:
            self._many(
                "INSERT INTO devices (dev, site, last_seen, sensor) VALUES (?,?,?,?) "
                "ON CONFLICT (dev) DO UPDATE SET site = excluded.site, "
                "last_seen = excluded.last_seen, sensor = excluded.sensor",
                changed,
            )
            for dev, site, t, sensor in changed:
                seen[dev] = (t, site, sensor)


def topic_site_dev(topic: str) -> tuple[str, str]:
    """``<prefix>/<site>/<dev>/<kind>`` -> (site, dev); flood records always have valid topics."""
    parts = topic.rsplit("/", 3)
    return (parts[1], parts[2]) if len(parts) == 4 else ("", "")


def _str_or_none(v: Any) -> str | None:
    return v if isinstance(v, str) else None


# ------------------------------------------------------------------------------------------
# queries (any connection of either backend: the writer's or a reader's)


def gaps_total(conn: Any) -> int:
    """Readings missing between the first and last seq seen, summed over every (dev, boot)."""
    row = execute(conn, "SELECT COALESCE(SUM(max_seq - min_seq + 1 - n), 0) FROM boots").fetchone()
    return int(row[0])


def gaps_by_dev(conn: Any) -> dict[str, int]:
    rows = execute(conn, "SELECT dev, SUM(max_seq - min_seq + 1 - n) FROM boots GROUP BY dev")
    return {dev: int(g) for dev, g in rows}


def devices(conn: Any) -> list[dict[str, Any]]:
    gaps = gaps_by_dev(conn)
    out = []
    for dev, site, status, meta, sensor, last_seen, flood in execute(
        conn,
        "SELECT dev, site, status, meta, sensor, last_seen, flood_dropped FROM devices "
        "ORDER BY site, dev",
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
                "rssi": m.get("rssi"),
                "gaps": gaps.get(dev, 0),
                "flood_dropped": int(flood),
            }
        )
    return out


def readings(
    conn: Any,
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
        for d, b, s, ts, t, rh, ok, err in execute(conn, q, args)
    ]


def counts(conn: Any) -> dict[str, int]:
    def one(q: str) -> int:
        return int(execute(conn, q).fetchone()[0])

    return {
        "readings": one("SELECT COUNT(*) FROM readings"),
        "quarantined": one("SELECT COUNT(*) FROM quarantine"),
        "devices": one("SELECT COUNT(*) FROM devices"),
    }
