"""Topic and payload validation: every MQTT message becomes a record to store or a quarantine entry.

Nothing here raises on bad input: :func:`classify` turns any ``(topic, payload)`` into a
:class:`Reading`, :class:`Status`, :class:`Meta` or :class:`Quarantined` (with a short ``reason``
label, used as the metric label, and a readable ``detail``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

ID_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}\Z")
KINDS = ("state", "status", "meta")
SENSORS = ("dht11", "dht22", "am2302")
ERRORS = ("timeout", "checksum", "implausible", "not_ready")
MAX_PAYLOAD = 4096
# Plausible UTC seconds: 2000-01-01 .. 2100-01-01.
TS_MIN, TS_MAX = 946684800.0, 4102444800.0
T_MIN, T_MAX = -40.0, 80.0  # the DHT22 range (the DHT11's is narrower)
RH_MIN, RH_MAX = 0.0, 100.0
U32 = 2**32 - 1

# Every reason label a message can be quarantined with (the `reason` label of the metric).
REASONS = (
    "bad_topic",
    "unknown_site",
    "too_large",
    "not_json",
    "not_object",
    "bad_version",
    "dev_mismatch",
    "bad_type",
    "out_of_range",
    "inconsistent",
    "bad_status",
)


@dataclass(frozen=True)
class Reading:
    site: str
    dev: str
    boot: int
    seq: int
    ts: float | None
    up: int
    t: float | None
    rh: float | None
    ok: bool
    err: str | None
    sensor: str


@dataclass(frozen=True)
class Status:
    site: str
    dev: str
    online: bool


@dataclass(frozen=True)
class Meta:
    site: str
    dev: str
    meta: dict[str, Any]


@dataclass(frozen=True)
class Quarantined:
    topic: str
    payload: bytes
    reason: str
    detail: str


Record = Reading | Status | Meta | Quarantined


class _Invalid(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def parse_topic(
    topic: str, prefix: str = "humigraph", sites: Collection[str] | None = None
) -> tuple[str, str, str]:
    """``<prefix>/<site>/<dev>/<kind>`` -> (site, dev, kind); raises ``_Invalid`` otherwise."""
    head = prefix + "/"
    if not topic.startswith(head):
        raise _Invalid("bad_topic", f"topic does not start with {head!r}")
    parts = topic[len(head) :].split("/")
    if len(parts) != 3:
        raise _Invalid("bad_topic", "expected <prefix>/<site>/<dev>/<state|status|meta>")
    site, dev, kind = parts
    if not ID_RE.match(site) or not ID_RE.match(dev):
        raise _Invalid("bad_topic", "site and dev must be 1-32 of a-z 0-9 _ -")
    if kind not in KINDS:
        raise _Invalid("bad_topic", f"kind {kind!r} is not one of {', '.join(KINDS)}")
    if sites is not None and site not in sites:
        raise _Invalid("unknown_site", f"site {site!r} is not configured")
    return site, dev, kind


def _int(d: dict[str, Any], key: str, lo: int, hi: int) -> int:
    v = d.get(key)
    if isinstance(v, bool) or not isinstance(v, int):
        raise _Invalid("bad_type", f"{key} must be an integer, got {type(v).__name__}")
    if not lo <= v <= hi:
        raise _Invalid("out_of_range", f"{key}={v} is outside {lo}..{hi}")
    return v


def _num(d: dict[str, Any], key: str, lo: float, hi: float, nullable: bool) -> float | None:
    v = d.get(key)
    if v is None:
        if nullable:
            return None
        raise _Invalid("bad_type", f"{key} must be a number, got null")
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise _Invalid("bad_type", f"{key} must be a number, got {type(v).__name__}")
    f = float(v)
    if not math.isfinite(f) or not lo <= f <= hi:
        raise _Invalid("out_of_range", f"{key}={v!r} is outside {lo}..{hi}")
    return f


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


def _decode(payload: bytes) -> Any:
    if len(payload) > MAX_PAYLOAD:
        raise _Invalid("too_large", f"payload is {len(payload)} bytes (limit {MAX_PAYLOAD})")
    try:
        return json.loads(payload.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise _Invalid("not_json", f"payload is not UTF-8 JSON: {str(e)[:80]}") from None


def parse_reading(site: str, dev: str, payload: bytes) -> Reading:
    d = _decode(payload)
    if not isinstance(d, dict):
        raise _Invalid("not_object", "a reading must be a JSON object")
    v = d.get("v")
    if isinstance(v, bool) or v != 1:
        raise _Invalid("bad_version", f"unsupported payload version {v!r} (expected 1)")
    pdev = d.get("dev")
    if pdev != dev:
        raise _Invalid("dev_mismatch", f"payload dev {str(pdev)[:40]!r} != topic dev {dev!r}")
    boot = _int(d, "boot", 0, U32)
    seq = _int(d, "seq", 0, U32)
    up = _int(d, "up", 0, U32)
    ts = _num(d, "ts", TS_MIN, TS_MAX, nullable=True)
    ok = d.get("ok")
    if not isinstance(ok, bool):
        raise _Invalid("bad_type", "ok must be true or false")
    sensor = d.get("sensor")
    if sensor not in SENSORS:
        raise _Invalid("bad_type", f"sensor must be one of {', '.join(SENSORS)}")
    err = d.get("err")
    if ok:
        t = _num(d, "t", T_MIN, T_MAX, nullable=False)
        rh = _num(d, "rh", RH_MIN, RH_MAX, nullable=False)
        if err is not None:
            raise _Invalid("inconsistent", "ok is true but err is set")
    else:
        t = rh = None
        if d.get("t") is not None or d.get("rh") is not None:
            raise _Invalid("inconsistent", "ok is false but t or rh is set")
        if err not in ERRORS:
            raise _Invalid("bad_type", f"err must be one of {', '.join(ERRORS)} when ok is false")
    return Reading(site, dev, boot, seq, ts, up, t, rh, ok, err, sensor)


def classify(
    topic: str, payload: bytes, prefix: str = "humigraph", sites: Collection[str] | None = None
) -> Record:
    """Any message -> the record to store. Never raises on bad input."""
    try:
        site, dev, kind = parse_topic(topic, prefix, sites)
        if kind == "state":
            return parse_reading(site, dev, payload)
        if kind == "status":
            if payload in (b"online", b"offline"):
                return Status(site, dev, payload == b"online")
            raise _Invalid("bad_status", "status must be 'online' or 'offline'")
        meta = _decode(payload)
        if not isinstance(meta, dict):
            raise _Invalid("not_object", "meta must be a JSON object")
        return Meta(site, dev, meta)
    except _Invalid as e:
        return Quarantined(topic, bytes(payload), e.reason, e.detail)
