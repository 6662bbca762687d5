"""Gateway validation: topics and reading payloads -> a record to store, or a quarantine reason."""

from __future__ import annotations

import json
from typing import Any

import pytest
from humigraph.gateway.store import Store
from humigraph.gateway.validate import (
    REASONS,
    Meta,
    Quarantined,
    Reading,
    Status,
    classify,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

TOPIC = "humigraph/home/kitchen-1/state"


def reading(**over: Any) -> dict[str, Any]:
    d: dict[str, Any] = {
        "v": 1, "dev": "kitchen-1", "boot": 17, "seq": 1042, "ts": 1764400000.125,
        "up": 3600123, "t": 21.4, "rh": 45.2, "ok": True, "err": None, "sensor": "dht22",
    }  # fmt: skip
    d.update(over)
    return d


def enc(d: Any) -> bytes:
    return json.dumps(d).encode()


def test_the_firmware_payload_is_a_reading() -> None:
    raw = b'{"v":1,"dev":"kitchen-1","boot":17,"seq":1042,"ts":1764400000.125,"up":3600123,"t":21.4,"rh":45.2,"ok":true,"err":null,"sensor":"dht22"}'
    r = classify(TOPIC, raw)
    assert r == Reading(
        "home", "kitchen-1", 17, 1042, 1764400000.125, 3600123, 21.4, 45.2, True, None, "dht22"
    )


def test_a_failed_read_and_a_reading_before_ntp_are_readings() -> None:
    r = classify(TOPIC, enc(reading(ok=False, t=None, rh=None, err="timeout", ts=None)))
    assert isinstance(r, Reading) and r.err == "timeout" and r.ts is None and r.t is None


def test_spoofed_dev_is_quarantined() -> None:
    raw = enc(reading(dev="bedroom-2"))
    r = classify(TOPIC, raw)
    assert isinstance(r, Quarantined)
    assert r.reason == "dev_mismatch" and r.payload == raw and r.topic == TOPIC
    assert "bedroom-2" in r.detail


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\xff\xfe", "not_json"),
        (b"{", "not_json"),
        (b'{"v":1,"t":NaN}', "not_json"),
        (b"[1,2]", "not_object"),
        (b"x" * 5000, "too_large"),
        (enc(reading(v=2)), "bad_version"),
        (enc(reading(v=True)), "bad_version"),
        (enc(reading(seq="7")), "bad_type"),
        (enc(reading(seq=True)), "bad_type"),
        (enc(reading(seq=-1)), "out_of_range"),
        (enc(reading(boot=2**32)), "out_of_range"),
        (enc(reading(t=120.0)), "out_of_range"),
        (enc(reading(rh=-3)), "out_of_range"),
        (enc(reading(ts=12.0)), "out_of_range"),
        (enc(reading(ok="yes")), "bad_type"),
        (enc(reading(sensor="bme280")), "bad_type"),
        (enc(reading(err="timeout")), "inconsistent"),
        (enc(reading(ok=False, err="timeout")), "inconsistent"),
        (enc(reading(ok=False, t=None, rh=None, err="melted")), "bad_type"),
        (enc({k: v for k, v in reading().items() if k != "up"}), "bad_type"),
    ],
)
def test_bad_payloads_are_quarantined_with_a_reason(payload: bytes, reason: str) -> None:
    r = classify(TOPIC, payload)
    assert isinstance(r, Quarantined) and r.reason == reason, r


@pytest.mark.parametrize(
    "topic",
    [
        "other/home/kitchen-1/state",
        "humigraph/home/state",
        "humigraph/home/kitchen-1/state/x",
        "humigraph/Home/kitchen-1/state",
        "humigraph/home/kitchen-1/cmd",
        "humigraph/home//state",
    ],
)
def test_bad_topics_are_quarantined(topic: str) -> None:
    r = classify(topic, enc(reading()))
    assert isinstance(r, Quarantined) and r.reason == "bad_topic"


def test_unknown_site_when_sites_are_configured() -> None:
    assert isinstance(classify(TOPIC, enc(reading()), sites={"home"}), Reading)
    r = classify(TOPIC, enc(reading()), sites={"office"})
    assert isinstance(r, Quarantined) and r.reason == "unknown_site"


def test_status_and_meta() -> None:
    assert classify("humigraph/home/kitchen-1/status", b"online") == Status(
        "home", "kitchen-1", True
    )
    assert classify("humigraph/home/kitchen-1/status", b"offline") == Status(
        "home", "kitchen-1", False
    )
    bad = classify("humigraph/home/kitchen-1/status", b"maybe")
    assert isinstance(bad, Quarantined) and bad.reason == "bad_status"
    m = classify("humigraph/home/kitchen-1/meta", b'{"fw":"0.1.0","buffered":3}')
    assert m == Meta("home", "kitchen-1", {"fw": "0.1.0", "buffered": 3})


def test_custom_prefix() -> None:
    r = classify("site7/x/home/kitchen-1/state", enc(reading()), prefix="site7/x")
    assert isinstance(r, Reading)


# -- property: random traffic never crashes the validator or the store --------------------------

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=8,
)
_field_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(),
    st.text(max_size=12),
    _json_values,
)
_mutated_readings = st.builds(
    lambda base, over, drop: enc({k: v for k, v in {**base, **over}.items() if k not in drop}),
    st.just(reading()),
    st.dictionaries(st.sampled_from(sorted(reading())), _field_values, max_size=3),
    st.sets(st.sampled_from(sorted(reading())), max_size=2),
)
_payloads = st.one_of(
    st.binary(max_size=64),
    _json_values.map(enc),
    _mutated_readings,
    st.just(enc(reading())),
)
_segments = st.one_of(
    st.sampled_from(["home", "kitchen-1", "state", "status", "meta", "", "+", "#", "A"]),
    st.text(max_size=10),
)
_topics = st.one_of(
    st.lists(_segments, min_size=0, max_size=6).map(lambda p: "/".join(["humigraph", *p])),
    st.text(max_size=40),
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(msgs=st.lists(st.tuples(_topics, _payloads), min_size=1, max_size=8))
def test_random_traffic_never_crashes_and_each_refusal_has_a_reason(
    msgs: list[tuple[str, bytes]], tmp_path_factory: pytest.TempPathFactory
) -> None:
    store = _store(tmp_path_factory)
    records = [classify(t, p) for t, p in msgs]
    for r in records:
        assert isinstance(r, (Reading, Status, Meta, Quarantined))
        if isinstance(r, Quarantined):
            assert r.reason in REASONS and r.detail
        if isinstance(r, Reading):
            assert -40 <= (r.t if r.t is not None else 0) <= 80
    valid = classify("humigraph/home/control-0/state", enc(reading(dev="control-0", seq=999_999)))
    assert isinstance(valid, Reading)
    res = store.write_batch([*records, valid])  # valid traffic in the same batch is unaffected
    quarantined = [r for r in records if isinstance(r, Quarantined)]
    assert sum(res.quarantined.values()) == len(quarantined)
    n_q = store.conn.execute("SELECT COUNT(*) FROM quarantine WHERE reason != ''").fetchone()[0]
    assert n_q >= len(quarantined)
    row = store.conn.execute(
        "SELECT t FROM readings WHERE dev='control-0' AND boot=17 AND seq=999999"
    ).fetchone()
    assert row == (21.4,)


_STORES: dict[int, Store] = {}


def _store(factory: pytest.TempPathFactory) -> Store:
    key = id(factory)
    if key not in _STORES:
        _STORES[key] = Store(factory.mktemp("prop") / "gw.db")
    return _STORES[key]
