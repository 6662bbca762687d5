"""What the gateway concludes, stored: forecasts, health, insights (history; latest by ``ts``) and
alerts; plus the reasoner's reads of the ingest tables, and the HTTP routes over all of it.

SQL is portable between SQLite and PostgreSQL: ``?`` placeholders (rewritten to ``%s`` for
psycopg), TEXT/INTEGER/REAL columns, ``ON CONFLICT ... DO UPDATE``. The tables are created by the
derived-data migration in ``store.MIGRATIONS``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from . import store as st
from .alerts import Alert, Sample

MAX_ALERTS = 10000

ROUTES = ("/api/sites", "/api/forecast", "/api/health", "/api/insight", "/api/alerts", "/api/gaps")


def _run(conn: Any, sql: str, args: Sequence[Any] = ()) -> Any:
    return st.execute(conn, sql, args)  # ``?`` placeholders on either backend


# -- the reasoner's reads ------------------------------------------------------------------------


def device_rows(conn: Any) -> list[dict[str, Any]]:
    """Every known device: ``{"dev", "site", "status", "meta", "last_seen"}``."""
    out = []
    for dev, site, status, meta, last_seen in _run(
        conn, "SELECT dev, site, status, meta, last_seen FROM devices ORDER BY site, dev"
    ):
        try:
            m = json.loads(meta) if meta else {}
        except ValueError:
            m = {}
        out.append(
            {
                "dev": dev,
                "site": site,
                "status": status,
                "meta": m if isinstance(m, dict) else {},
                "last_seen": last_seen,
            }
        )
    return out


def readings_between(conn: Any, dev: str, since: float, until: float) -> list[Sample]:
    """``since < placed_ts <= until``, oldest first."""
    rows = _run(
        conn,
        "SELECT placed_ts, t, rh, ok, err, received FROM readings "
        "WHERE dev = ? AND placed_ts > ? AND placed_ts <= ? ORDER BY placed_ts, boot, seq",
        (dev, since, until),
    )
    return [Sample(ts, t, rh, bool(ok), err, rec) for ts, t, rh, ok, err, rec in rows]


def latest_readings(conn: Any, dev: str, n: int) -> list[Sample]:
    """The device's ``n`` latest readings by placed time, oldest first."""
    rows = _run(
        conn,
        "SELECT placed_ts, t, rh, ok, err, received FROM readings WHERE dev = ? "
        "ORDER BY placed_ts DESC, boot DESC, seq DESC LIMIT ?",
        (dev, n),
    ).fetchall()
    return [Sample(ts, t, rh, bool(ok), err, rec) for ts, t, rh, ok, err, rec in reversed(rows)]


# -- writes --------------------------------------------------------------------------------------


def save_outputs(
    conn: Any,
    forecasts: Sequence[Mapping[str, Any]],
    health: Sequence[Mapping[str, Any]],
    insight: Mapping[str, Any] | None,
) -> None:
    """One inference's payloads (as published); call inside ``Store.transaction()``."""
    for table, rows in (("forecasts", forecasts), ("health", health)):
        for p in rows:
            _run(
                conn,
                f"INSERT INTO {table} (dev, site, ts, model, payload) VALUES (?,?,?,?,?) "
                "ON CONFLICT (dev, ts) DO UPDATE SET model = excluded.model, "
                "payload = excluded.payload",
                (p["dev"], p["site"], p["ts"], p["model"], json.dumps(p)),
            )
    if insight is not None:
        _run(
            conn,
            "INSERT INTO insights (site, ts, model, payload) VALUES (?,?,?,?) "
            "ON CONFLICT (site, ts) DO UPDATE SET model = excluded.model, "
            "payload = excluded.payload",
            (insight["site"], insight["ts"], insight["model"], json.dumps(insight)),
        )


def save_alert_events(conn: Any, events: Sequence[tuple[Alert, Mapping[str, Any]]]) -> None:
    """Raised alerts are inserted, cleared ones marked; call inside ``Store.transaction()``."""
    for a, ev in events:
        if ev["state"] == "raised":
            _run(
                conn,
                "INSERT INTO alerts (id, site, dev, kind, level, message, since, cleared, "
                "clear_message, vals) VALUES (?,?,?,?,?,?,?,NULL,NULL,?) "
                "ON CONFLICT (id) DO NOTHING",
                (a.id, a.site, a.dev, a.kind, a.level, a.message, a.since,
                 json.dumps(a.values)),
            )  # fmt: skip
        else:
            _run(
                conn,
                "UPDATE alerts SET cleared = ?, clear_message = ? WHERE id = ?",
                (ev["ts"], ev["message"], a.id),
            )


def prune(conn: Any, before: float) -> int:
    """Drops forecast, health and insight history and cleared alerts older than ``before``."""
    n = 0
    for table in ("forecasts", "health", "insights"):
        n += _run(conn, f"DELETE FROM {table} WHERE ts < ?", (before,)).rowcount or 0
    n += _run(conn, "DELETE FROM alerts WHERE cleared < ?", (before,)).rowcount or 0
    return n


# -- reads (API and restore) ---------------------------------------------------------------------


def _latest(conn: Any, table: str, key: str, value: str) -> dict[str, Any] | None:
    row = _run(
        conn, f"SELECT payload FROM {table} WHERE {key} = ? ORDER BY ts DESC LIMIT 1", (value,)
    ).fetchone()
    return json.loads(row[0]) if row else None


def latest_forecast(conn: Any, dev: str) -> dict[str, Any] | None:
    return _latest(conn, "forecasts", "dev", dev)


def latest_health(conn: Any, dev: str) -> dict[str, Any] | None:
    return _latest(conn, "health", "dev", dev)


def latest_insight(conn: Any, site: str) -> dict[str, Any] | None:
    return _latest(conn, "insights", "site", site)


def _alert(row: Sequence[Any]) -> Alert:
    id_, site, dev, kind, level, message, since, cleared, vals = row
    return Alert(id_, site, dev, kind, level, message, since, json.loads(vals), cleared)


_ALERT_COLS = "id, site, dev, kind, level, message, since, cleared, vals"


def active_alerts(conn: Any) -> list[Alert]:
    rows = _run(conn, f"SELECT {_ALERT_COLS} FROM alerts WHERE cleared IS NULL ORDER BY since")
    return [_alert(r) for r in rows]


def alerts(
    conn: Any, *, active: bool | None = None, site: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    """Newest first: ``[{"id", "level", "kind", "dev", "site", "message", "since", "active",
    "cleared", "values"}]``."""
    q = f"SELECT {_ALERT_COLS} FROM alerts WHERE 1 = 1"
    args: list[Any] = []
    if active is not None:
        q += " AND cleared IS NULL" if active else " AND cleared IS NOT NULL"
    if site is not None:
        q += " AND site = ?"
        args.append(site)
    q += " ORDER BY since DESC, id LIMIT ?"
    args.append(limit)
    out = []
    for r in _run(conn, q, args):
        a = _alert(r)
        out.append(
            {
                "id": a.id,
                "level": a.level,
                "kind": a.kind,
                "dev": a.dev,
                "site": a.site,
                "message": a.message,
                "since": a.since,
                "active": a.active,
                "cleared": a.cleared,
                "values": a.values,
            }
        )
    return out


def sites(conn: Any, model: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    by_site: dict[str, list[str]] = {}
    for d in device_rows(conn):
        by_site.setdefault(d["site"], []).append(d["dev"])
    return [
        {
            "site": s,
            "devices": devs,
            "insight": latest_insight(conn, s),
            "model": dict(model) if model else None,
        }
        for s, devs in sorted(by_site.items())
    ]


def gaps(conn: Any) -> list[dict[str, Any]]:
    """Per device: missing sequence numbers in total and per boot (late replays fill them)."""
    site_of = {d["dev"]: d["site"] for d in device_rows(conn)}
    per: dict[str, dict[str, Any]] = {}
    for dev, boot, lo, hi, n in _run(
        conn, "SELECT dev, boot, min_seq, max_seq, n FROM boots ORDER BY dev, boot"
    ):
        missing = int(hi - lo + 1 - n)
        d = per.setdefault(dev, {"dev": dev, "site": site_of.get(dev), "gaps": 0, "boots": []})
        d["gaps"] += missing
        d["boots"].append(
            {"boot": boot, "min_seq": lo, "max_seq": hi, "stored": n, "missing": missing}
        )
    return [per[k] for k in sorted(per)]


# -- HTTP routes -----------------------------------------------------------------------------


class BadRequest(Exception):
    pass


def _one(q: Mapping[str, list[str]], key: str, what: str) -> str:
    from .validate import ID_RE

    v = q.get(key, [""])[0]
    if not ID_RE.match(v):
        raise BadRequest(f"{key} is required: {what} (1-32 of a-z 0-9 _ -)")
    return v


def route(
    path: str, q: Mapping[str, list[str]], conn: Any, model: Mapping[str, Any] | None
) -> tuple[int, Any]:
    """``(status, JSON body)`` for one of :data:`ROUTES`; raises :class:`BadRequest`."""
    if path == "/api/sites":
        return 200, sites(conn, model)
    if path in ("/api/forecast", "/api/health"):
        dev = _one(q, "dev", "a device id")
        what = path.rsplit("/", 1)[1]
        body = latest_forecast(conn, dev) if what == "forecast" else latest_health(conn, dev)
        if body is None:
            why = (
                "no model is loaded (see /healthz 'reasoning')"
                if not model
                else "the reasoner has not run over it yet (it needs readings in the last window)"
            )
            return 404, {"error": f"no {what} for {dev!r} yet: {why}"}
        return 200, body
    if path == "/api/insight":
        site = _one(q, "site", "a site id")
        body = latest_insight(conn, site)
        if body is None:
            return 404, {"error": f"no insight for site {site!r} yet"}
        return 200, body
    if path == "/api/alerts":
        active = None
        if "active" in q:
            v = q["active"][0]
            if v not in ("0", "1", "true", "false"):
                raise BadRequest("active must be 1 (active only) or 0 (cleared only)")
            active = v in ("1", "true")
        site = _one(q, "site", "a site id") if "site" in q else None
        limit = 100
        if "limit" in q:
            try:
                limit = int(q["limit"][0])
            except ValueError:
                raise BadRequest("limit must be an integer") from None
            if not 1 <= limit <= MAX_ALERTS:
                raise BadRequest(f"limit must be between 1 and {MAX_ALERTS}")
        return 200, alerts(conn, active=active, site=site, limit=limit)
    if path == "/api/gaps":
        return 200, gaps(conn)
    return 404, {"error": f"no such endpoint: {path}"}
