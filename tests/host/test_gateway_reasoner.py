"""The reasoner on a tiny INT8 model and a real store: payload shapes, retained publishes, storage,
hot reload, a bad model file keeping the old one, no model at all, and the API routes."""

from __future__ import annotations

import json
import logging
import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from humigraph.gateway import derived
from humigraph.gateway.alerts import Alert
from humigraph.gateway.events import EventBus
from humigraph.gateway.metrics import Metrics
from humigraph.gateway.reasoner import Reasoner
from humigraph.gateway.store import Store
from humigraph.gateway.validate import Meta, Reading, Status
from humigraph.model.card import INSIGHTS, ModelCard

NOW = 1764400000.0
DEVS = ("bath-1", "hall-1", "kitchen-1")


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two tiny models with the real I/O contract and different ids (they need TensorFlow)."""
    pytest.importorskip("tensorflow")
    from support.tiny_model import build_tiny_model

    base = tmp_path_factory.mktemp("models")
    a = build_tiny_model(base / "a", ModelCard(model_id="tiny-a"), seed=0)
    b = build_tiny_model(base / "b", ModelCard(model_id="tiny-b"), seed=1)
    return a, b


def install(src: Path, dst: Path, **card_fields: Any) -> None:
    """Copies a model and its card to ``dst`` (as an operator would deploy a new one), with
    ``card_fields`` changed in the card."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    card = json.loads(src.with_suffix(".json").read_text())
    dst.with_suffix(".json").write_text(json.dumps({**card, **card_fields}))
    shutil.copyfile(src, dst)


def installed(tiny_models: tuple[Path, Path], tmp_path: Path, **card_fields: Any) -> Path:
    """The tiny INT8 model installed at ``tmp_path/m.tflite`` (see install)."""
    model = tmp_path / "m.tflite"
    install(tiny_models[0], model, **card_fields)
    return model


def readings(dev: str, n: int = 200, interval: float = 10.0, stuck: bool = False) -> list[Any]:
    out = []
    for i in range(n):
        ts = NOW - (n - 1 - i) * interval
        t = 21.0 if stuck else 20.0 + DEVS.index(dev) + (i % 7) / 10
        rh = 45.0 if stuck else 40.0 + (i % 5)
        out.append(Reading("home", dev, 1, i, ts, i * 10000, t, rh, True, None, "dht22"))
    return out


class Published:
    def __init__(self) -> None:
        self.messages: list[tuple[str, dict[str, Any], bool]] = []

    def __call__(self, topic: str, payload: bytes, retain: bool) -> None:
        self.messages.append((topic, json.loads(payload) if payload else None, retain))

    def on(self, topic: str) -> list[tuple[dict[str, Any], bool]]:
        return [(p, r) for t, p, r in self.messages if t == topic]


@pytest.fixture
def store(db: str) -> Iterator[Store]:
    s = Store(db)
    records: list[Any] = []
    for dev in DEVS:
        records += readings(dev, stuck=dev == "bath-1")
        records.append(Status("home", dev, True))
        records.append(Meta("home", dev, {"interval": 10, "fw": "0.1.0"}))
    s.write_batch(records, now=NOW)
    yield s
    s.close()


def make(store: Store, model: Path | None, **kw: Any) -> tuple[Reasoner, Published, EventBus]:
    pub, bus = Published(), EventBus()
    kw.setdefault("alerts", {"stuck_readings": 20, "min_hold_s": 0})
    r = Reasoner(
        store, model=model, publish=pub, events=bus, metrics=Metrics(), clock=lambda: NOW, **kw
    )
    return r, pub, bus


def test_forecast_health_insight_are_published_retained_and_stored(
    store: Store, tiny_models: tuple[Path, Path], tmp_path: Path
) -> None:
    model = tmp_path / "models" / "humigraph-int8.tflite"
    install(tiny_models[0], model)
    r, pub, bus = make(store, model, infer_interval=60)
    sub = bus.subscribe()
    r.tick(NOW)
    assert r.status()["enabled"] and r.status()["model_id"] == "tiny-a"
    for dev in DEVS:
        ((fc, retained),) = pub.on(f"humigraph/home/{dev}/forecast")
        assert retained
        assert set(fc) == {"v", "dev", "site", "ts", "model", "horizons", "t", "rh"}
        assert fc["v"] == 1 and fc["dev"] == dev and fc["site"] == "home"
        assert fc["model"] == "tiny-a" and fc["horizons"] == [300, 900, 1800] and fc["ts"] == NOW
        assert len(fc["t"]) == 3 and len(fc["rh"]) == 3
        assert all(isinstance(v, float) for v in fc["t"] + fc["rh"])
        assert all(0.0 <= v <= 100.0 for v in fc["rh"])
        ((h, retained),) = pub.on(f"humigraph/home/{dev}/health")
        assert retained
        assert set(h) == {
            "v",
            "dev",
            "site",
            "ts",
            "model",
            "fault",
            "probs",
            "neighbours",
            "router",
        }
        assert list(h["probs"]) == ["ok", "stuck", "spike", "drift", "noise", "dropout"]
        assert h["fault"] == max(h["probs"], key=h["probs"].get)
        assert sum(h["probs"].values()) == pytest.approx(1.0, abs=0.05)
        # the other devices with a non-zero weight (the random tiny model may quantize them to 0)
        assert len(h["neighbours"]) <= 2
        assert all(n["dev"] in DEVS and n["dev"] != dev for n in h["neighbours"])
        weights = [n["weight"] for n in h["neighbours"]]
        assert weights == sorted(weights, reverse=True)
        assert set(h["router"]) == {"self", "neighbours"}
        with closing(store.reader()) as conn:
            assert derived.latest_forecast(conn, dev) == fc
            assert derived.latest_health(conn, dev) == h
    ((ins, retained),) = pub.on("humigraph/home/insight")
    assert retained
    assert set(ins) == {
        "v", "site", "ts", "model", "occupancy", "ventilation", "detected", "router", "graph"
    }  # fmt: skip
    assert 0.0 <= ins["occupancy"] <= 1.0 and 0.0 <= ins["ventilation"] <= 1.0
    # no insight_threshold in the card: yes from 0.5 (int8 probabilities are k/256, never 0.5±1e-4)
    assert ins["detected"] == {k: ins[k] >= 0.5 for k in ("occupancy", "ventilation")}
    assert sorted(ins["router"]) == sorted(DEVS)
    assert ins["graph"]["nodes"] == sorted(DEVS)
    for e in ins["graph"]["edges"]:
        assert e["from"] in DEVS and e["to"] in DEVS and e["from"] != e["to"]
        assert e["weight"] >= r.edge_threshold
    with closing(store.reader()) as conn:
        assert derived.latest_insight(conn, "home") == ins
    kinds = []
    while (ev := sub.get(0.01)) is not None:
        kinds.append(ev[1])
    assert kinds.count("forecast") == 3 and kinds.count("health") == 3
    assert kinds.count("insight") == 1
    text = r.metrics.render(queue_depth=0, gaps=0, connected=True)
    assert "humigraph_inference_seconds_count 1" in text
    assert 'humigraph_model_info{model="tiny-a",backend="ai_edge_litert",step_s="60"} 1' in text


def test_inference_runs_once_per_interval(
    store: Store, tiny_models: tuple[Path, Path], tmp_path: Path
) -> None:
    model = installed(tiny_models, tmp_path)
    r, pub, _ = make(store, model, infer_interval=60)
    for dt in (0, 10, 20, 59):
        r.tick(NOW + dt)
    assert len(pub.on("humigraph/home/insight")) == 1
    r.tick(NOW + 60)
    assert len(pub.on("humigraph/home/insight")) == 2
    with closing(store.reader()) as conn:
        n = conn.execute("SELECT COUNT(*) FROM forecasts WHERE dev = 'hall-1'").fetchone()[0]
    assert n == 2  # history is kept, the API serves the latest


def test_hot_reload_and_a_bad_file_keeps_the_old_model(
    store: Store, tiny_models: tuple[Path, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model = tmp_path / "models" / "humigraph-int8.tflite"
    install(tiny_models[0], model)
    r, pub, _ = make(store, model, infer_interval=1)
    r.tick(NOW)
    assert pub.on("humigraph/home/insight")[-1][0]["model"] == "tiny-a"
    install(tiny_models[1], model)
    r.tick(NOW + 1)
    assert pub.on("humigraph/home/insight")[-1][0]["model"] == "tiny-b"
    assert r.watcher.reloads == 1
    caplog.set_level(logging.WARNING, logger="humigraph.gateway.reasoner")
    model.write_bytes(b"this is not a flatbuffer" * 10)
    r.tick(NOW + 2)
    st = r.status()
    assert st["enabled"] and st["model_id"] == "tiny-b"  # the old one still runs
    assert st["error"] and str(model) in st["error"]
    assert "keeping" in caplog.text
    assert pub.on("humigraph/home/insight")[-1][0]["model"] == "tiny-b"
    assert pub.on("humigraph/home/insight")[-1][0]["ts"] == NOW + 2
    install(tiny_models[0], model)  # fixed: loaded again
    r.tick(NOW + 3)
    assert r.status()["model_id"] == "tiny-a" and r.status()["error"] is None


def test_no_model_still_runs_the_rules(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="humigraph.gateway.reasoner")
    r, pub, bus = make(store, None)
    sub = bus.subscribe()
    r.tick(NOW)
    assert "reasoning off: no model configured" in caplog.text
    assert not r.status()["enabled"] and r.model_info() is None
    assert not any(t.endswith(("/forecast", "/health", "/insight")) for t, _, _ in pub.messages)
    ((ev, retained),) = pub.on("humigraph/home/alerts")
    assert not retained
    assert ev["kind"] == "stuck" and ev["dev"] == "bath-1" and ev["state"] == "raised"
    ((summary, retained),) = pub.on("humigraph/home/bath-1/alert")
    assert retained and summary["active"] == 1 and summary["level"] == "warning"
    assert [e[1] for e in iter(lambda: sub.get(0.01), None)] == ["alert"]
    with closing(store.reader()) as conn:
        (row,) = derived.alerts(conn, active=True)
    assert row["id"] == ev["id"] and row["active"] and row["cleared"] is None
    r.tick(NOW + 10)
    assert len(pub.on("humigraph/home/alerts")) == 1  # once


def test_a_missing_model_is_picked_up_when_it_appears(
    store: Store, tiny_models: tuple[Path, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="humigraph.gateway.reasoner")
    model = tmp_path / "later" / "humigraph-int8.tflite"
    r, pub, _ = make(store, model, infer_interval=1)
    r.tick(NOW)
    assert "not found" in caplog.text and not r.status()["enabled"]
    assert "no such model file" in (r.status()["error"] or "")
    install(tiny_models[0], model)
    r.tick(NOW + 1)
    assert r.status()["enabled"]
    assert pub.on("humigraph/home/insight")


def test_an_inference_error_is_counted_not_raised(
    store: Store, tiny_models: tuple[Path, Path], tmp_path: Path
) -> None:
    model = installed(tiny_models, tmp_path)
    r, pub, _ = make(store, model, infer_interval=1)
    r.tick(NOW)
    rt = r.watcher.runtime

    def broken(**kw: Any) -> Any:
        raise RuntimeError("interpreter exploded")

    rt.run = broken
    r.tick(NOW + 1)
    r.tick(NOW + 2)
    assert r.inference_errors == 2
    assert "humigraph_inference_errors_total 2" in r.metrics.render(
        queue_depth=0, gaps=0, connected=True
    )
    assert pub.on("humigraph/home/alerts")  # the rules still ran (bath-1 is stuck)


def test_restart_does_not_raise_the_same_alert_again(store: Store) -> None:
    r, pub, _ = make(store, None)
    r.tick(NOW)
    assert len(pub.on("humigraph/home/alerts")) == 1
    r2, pub2, _ = make(store, None)
    r2.tick(NOW + 10)
    assert pub2.on("humigraph/home/alerts") == []
    assert len(r2.engine.active) == 1


def test_home_assistant_discovery_merges_with_the_board_device(
    store: Store, tiny_models: tuple[Path, Path], tmp_path: Path
) -> None:
    model = installed(tiny_models, tmp_path)
    r, pub, _ = make(store, model, infer_interval=60)
    r.tick(NOW)
    ((cfg, retained),) = pub.on("homeassistant/device/kitchen-1-gw/config")
    assert retained
    assert pub.on("homeassistant/device/kitchen-1/config") == []  # the board's own topic
    assert cfg["dev"]["ids"] == ["humigraph_kitchen_1"]  # as firmware/humigraph/ha.py
    cmps = cfg["cmps"]
    sensors = {k: v for k, v in cmps.items() if v["p"] == "sensor"}
    assert sorted(v["name"] for v in sensors.values()) == [
        "Humidity in 15 min",
        "Humidity in 30 min",
        "Temperature in 15 min",
        "Temperature in 30 min",
    ]
    t15 = next(v for v in sensors.values() if v["name"] == "Temperature in 15 min")
    assert t15["state_topic"] == "humigraph/home/kitchen-1/forecast"
    assert t15["value_template"] == "{{ value_json.t[1] }}"  # horizons [300, 900, 1800]
    binary = {v["name"]: v for v in cmps.values() if v["p"] == "binary_sensor"}
    assert binary["Sensor fault"]["state_topic"] == "humigraph/home/kitchen-1/health"
    assert binary["Alert"]["state_topic"] == "humigraph/home/kitchen-1/alert"
    assert len({v["unique_id"] for v in cmps.values()}) == len(cmps)
    r.tick(NOW + 10)
    assert len(pub.on("homeassistant/device/kitchen-1-gw/config")) == 1  # not every tick


def _render(template: str, payload: dict[str, Any]) -> str:
    """A Home Assistant MQTT template, rendered as Home Assistant does (Jinja2, ``value_json``)."""
    jinja2 = pytest.importorskip("jinja2")
    return jinja2.Environment().from_string(template).render(value_json=payload)


@pytest.mark.parametrize("threshold", [0.01, 0.99])
def test_home_assistant_site_device_says_what_the_insight_detected(
    store: Store, tiny_models: tuple[Path, Path], tmp_path: Path, threshold: float
) -> None:
    model = installed(tiny_models, tmp_path, insight_threshold=dict.fromkeys(INSIGHTS, threshold))
    r, pub, _ = make(store, model, infer_interval=60)
    r.tick(NOW)
    ((cfg, retained),) = pub.on("homeassistant/device/humigraph-site-home/config")
    assert retained and cfg["dev"]["ids"] == ["humigraph_site_home"]
    cmps = cfg["cmps"]
    assert {v["name"]: v.get("device_class") for v in cmps.values()} == {
        "Occupancy": "occupancy",
        "Ventilation": "window",
    }
    assert len({v["unique_id"] for v in cmps.values()}) == 2
    ((ins, _),) = pub.on("humigraph/home/insight")
    for name, c in (("occupancy", cmps["humigraph_site_home_occupancy"]),
                    ("ventilation", cmps["humigraph_site_home_ventilation"])):  # fmt: skip
        assert c["p"] == "binary_sensor" and c["state_topic"] == "humigraph/home/insight"
        # the tiny model's probabilities lie between 0.01 and 0.99 (as in the test above)
        assert _render(c["value_template"], ins) == ("ON" if threshold < 0.5 else "OFF")
        assert json.loads(_render(c["json_attributes_template"], ins)) == {
            "probability": ins[name],
            "model": "tiny-a",
        }
        # an older gateway's retained insight, without "detected", reads as off
        old = {k: v for k, v in ins.items() if k != "detected"}
        assert _render(c["value_template"], old) == "OFF"
    r.tick(NOW + 60)
    assert len(pub.on("homeassistant/device/humigraph-site-home/config")) == 1  # not every tick


def test_without_a_model_the_site_device_is_removed_once(store: Store) -> None:
    """A previous run with a model may have left the site's device retained on the broker."""
    r, pub, _ = make(store, None)
    r.tick(NOW)
    r.tick(NOW + 10)
    assert pub.on("homeassistant/device/humigraph-site-home/config") == [(None, True)]


def test_home_assistant_device_templates_render(
    store: Store, tiny_models: tuple[Path, Path], tmp_path: Path
) -> None:
    model = installed(tiny_models, tmp_path)
    r, pub, _ = make(store, model, infer_interval=60)
    r.tick(NOW)
    ((cfg, _),) = pub.on("homeassistant/device/kitchen-1-gw/config")
    ((fc, _),) = pub.on("humigraph/home/kitchen-1/forecast")
    ((health, _),) = pub.on("humigraph/home/kitchen-1/health")
    ((alert, _),) = pub.on("humigraph/home/kitchen-1/alert")
    by_topic = {
        "humigraph/home/kitchen-1/forecast": fc,
        "humigraph/home/kitchen-1/health": health,
        "humigraph/home/kitchen-1/alert": alert,
    }
    for c in cfg["cmps"].values():
        out = _render(c["value_template"], by_topic[c["state_topic"]])
        if c["p"] == "binary_sensor":
            assert out in ("ON", "OFF")
        else:
            assert float(out) in fc["t"] + fc["rh"]


def test_api_routes(store: Store, tiny_models: tuple[Path, Path], tmp_path: Path) -> None:
    model = installed(tiny_models, tmp_path)
    r, pub, _ = make(store, model, infer_interval=60)
    r.tick(NOW)
    info = r.model_info()
    with closing(store.reader()) as conn:
        code, body = derived.route("/api/sites", {}, conn, info)
        assert code == 200
        (site,) = body
        assert site["site"] == "home" and site["devices"] == sorted(DEVS)
        assert site["insight"]["model"] == "tiny-a"
        assert site["model"] == {"id": "tiny-a", "backend": "ai_edge_litert", "step_s": 60}
        code, fc = derived.route("/api/forecast", {"dev": ["hall-1"]}, conn, info)
        assert code == 200 and fc == pub.on("humigraph/home/hall-1/forecast")[0][0]
        code, err = derived.route("/api/forecast", {"dev": ["nobody"]}, conn, info)
        assert code == 404 and "no forecast for 'nobody' yet" in err["error"]
        code, err = derived.route("/api/health", {"dev": ["nobody"]}, conn, None)
        assert code == 404 and "no model is loaded" in err["error"]
        with pytest.raises(derived.BadRequest, match="dev is required"):
            derived.route("/api/forecast", {}, conn, info)
        code, ins = derived.route("/api/insight", {"site": ["home"]}, conn, info)
        assert code == 200 and ins["site"] == "home"
        code, alerts = derived.route("/api/alerts", {"active": ["1"]}, conn, info)
        assert code == 200 and [a["kind"] for a in alerts] == ["stuck"]
        assert set(alerts[0]) == {
            "id", "level", "kind", "dev", "site", "message", "since", "active", "cleared",
            "values",
        }  # fmt: skip
        code, none = derived.route("/api/alerts", {"active": ["0"], "site": ["home"]}, conn, info)
        assert code == 200 and none == []
        with pytest.raises(derived.BadRequest, match="limit must be between"):
            derived.route("/api/alerts", {"limit": ["0"]}, conn, info)
        code, gaps = derived.route("/api/gaps", {}, conn, info)
        assert code == 200 and [g["dev"] for g in gaps] == sorted(DEVS)
        assert all(g["gaps"] == 0 and g["boots"][0]["stored"] == 200 for g in gaps)


def test_gaps_count_missing_sequence_numbers(tmp_path: Path) -> None:
    s = Store(tmp_path / "gw.db")
    recs = [r for r in readings("hall-1", n=10) if r.seq not in (3, 4, 7)]
    s.write_batch(recs, now=NOW)
    conn = sqlite3.connect(tmp_path / "gw.db")
    (g,) = derived.gaps(conn)
    assert g["gaps"] == 3 and g["boots"] == [
        {"boot": 1, "min_seq": 0, "max_seq": 9, "stored": 7, "missing": 3}
    ]
    conn.close()
    s.close()


def test_history_older_than_the_retention_is_pruned(store: Store) -> None:
    old, recent = NOW - 8 * 86400, NOW - 86400
    with store.transaction() as conn:
        for ts in (old, recent):
            p = {"v": 1, "dev": "hall-1", "site": "home", "ts": ts, "model": "m"}
            derived.save_outputs(conn, [p], [p], {"v": 1, "site": "home", "ts": ts, "model": "m"})
        a = Alert("hall-1:spike:1", "home", "hall-1", "spike", "info", "m", old - 10, {})
        derived.save_alert_events(conn, [(a, {"state": "raised"})])
        derived.save_alert_events(conn, [(a, {"state": "cleared", "ts": old, "message": "c"})])
    r, _, _ = make(store, None, history_days=7)
    r.tick(NOW)
    with closing(store.reader()) as conn:
        for table in ("forecasts", "health", "insights"):
            rows = conn.execute(f"SELECT ts FROM {table}").fetchall()
            assert [t for (t,) in rows] == [recent], table
        assert [a["id"] for a in derived.alerts(conn)] == ["bath-1:stuck:" + str(int(NOW * 1000))]


def test_silence_counts_from_the_gateway_start(tmp_path: Path) -> None:
    """After the gateway was down an hour, boards are not offline until they stay silent."""
    s = Store(tmp_path / "gw.db")
    s.write_batch([*readings("hall-1", n=20), Status("home", "hall-1", True)], now=NOW - 3600)
    r, pub, _ = make(s, None)
    r.tick(NOW)
    # no meta: default_interval_s (60 s) gives expire_after = 3 x 60 + 5 = 185 s from the start
    r.tick(NOW + 184)
    assert pub.on("humigraph/home/alerts") == []
    r.tick(NOW + 186)
    ((ev, _),) = pub.on("humigraph/home/alerts")
    assert ev["kind"] == "offline" and ev["values"]["silence_s"] == 186.0
    s.close()


def test_time_scale_puts_a_faster_world_on_the_models_grid(
    store: Store, tiny_models: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The demo's world runs 30x faster than the clock: the model's 60 s step is 2 s of readings."""
    import humigraph.gateway.reasoner as reasoner_mod

    seen: list[tuple[float, list[int]]] = []
    real_window = reasoner_mod.window

    def spy(series: Any, end: float, card: Any) -> Any:
        seen.append((card.step_s, [len(s[0]) for s in series]))
        return real_window(series, end, card)

    monkeypatch.setattr(reasoner_mod, "window", spy)
    model = installed(tiny_models, tmp_path)
    for scale, step, per_dev in ((1.0, 60, 192), (30.0, 2, 7)):
        r, pub, _ = make(store, model, infer_interval=60, time_scale=scale)
        r.tick(NOW)
        assert seen[-1] == (step, [per_dev] * len(DEVS))  # readings every 10 s in the window
        ((fc, _),) = pub.on(f"humigraph/home/{DEVS[0]}/forecast")
        assert fc["horizons"] == [300, 900, 1800]  # still the model's horizons
    with pytest.raises(ValueError, match="time_scale"):
        make(store, model, time_scale=0)


@pytest.mark.parametrize("threshold, faulty", [(0.0, True), (0.9999, False)])
def test_health_follows_the_cards_fault_rule(
    store: Store, tiny_models: tuple[Path, Path], tmp_path: Path, threshold: float, faulty: bool
) -> None:
    """The gateway decides a sensor's class as evaluate scores it: ``ok`` unless the fault
    classes together pass the card's ``fault_threshold``."""
    model = installed(tiny_models, tmp_path, fault_threshold=threshold)
    r, pub, _ = make(store, model, infer_interval=60)
    r.tick(NOW)
    for dev in DEVS:
        ((h, _),) = pub.on(f"humigraph/home/{dev}/health")
        assert (h["fault"] != "ok") is faulty
        if faulty:  # the most probable of the fault classes
            rest = {k: v for k, v in h["probs"].items() if k != "ok"}
            assert h["fault"] == max(rest, key=rest.get)


@pytest.mark.parametrize("threshold", [0.01, 0.99])
def test_insight_says_yes_by_the_cards_insight_threshold(
    store: Store, tiny_models: tuple[Path, Path], tmp_path: Path, threshold: float
) -> None:
    """``detected`` in the insight payload is the card's rule, as evaluate scores it; the
    probabilities are published unchanged."""
    model = installed(tiny_models, tmp_path, insight_threshold=dict.fromkeys(INSIGHTS, threshold))
    r, pub, _ = make(store, model, infer_interval=60)
    r.tick(NOW)
    ((ins, _),) = pub.on("humigraph/home/insight")
    for name in ("occupancy", "ventilation"):  # int8 probabilities are k/256: none near 0.01, 0.99
        assert ins["detected"][name] is (ins[name] >= threshold)
        # the tiny model's probabilities lie between the two thresholds: the rule flips the answer
        assert ins["detected"][name] is (threshold < 0.5)


def test_a_silent_board_gets_a_forecast_but_no_fault_verdict(
    store: Store, tiny_models: tuple[Path, Path], tmp_path: Path
) -> None:
    """hall-1 stops reading at NOW; the others go on. Two steps (120 s) later the model still
    forecasts hall-1 but no longer judges its sensor: no health, no fault alert (the offline
    rule speaks for it), while the boards still reading are judged as before."""
    model = installed(tiny_models, tmp_path, fault_threshold=0.0)  # every sensor judged is faulty
    later = [
        Reading("home", dev, 1, 200 + k, NOW + 10 * k, 0, 21.0 + k / 100, 45.0, True, None, "dht22")
        for k in range(1, 31)
        for dev in ("bath-1", "kitchen-1")
    ]
    store.write_batch(later, now=NOW + 300)
    rules = {"min_hold_s": 0, "fault_steps": 3, "fault_min_p": 0.01}
    r, pub, _ = make(store, model, infer_interval=60, alerts=rules)
    for dt in (60, 120, 180, 240, 300):
        r.tick(NOW + dt)
    health = {dev: [p["ts"] for p, _ in pub.on(f"humigraph/home/{dev}/health")] for dev in DEVS}
    assert health["hall-1"] == [NOW + 60]  # silent 60 s: still judged; 120 s: not any more
    assert health["bath-1"] == health["kitchen-1"] == [NOW + dt for dt in (60, 120, 180, 240, 300)]
    assert len(pub.on("humigraph/home/hall-1/forecast")) == 5
    alerts = [(p["dev"], p["kind"]) for p, _ in pub.on("humigraph/home/alerts")]
    assert ("bath-1", "fault") in alerts and ("kitchen-1", "fault") in alerts
    assert ("hall-1", "fault") not in alerts and ("hall-1", "offline") in alerts


def test_a_board_reading_less_often_than_the_models_grid_gets_no_fault_verdict(
    tmp_path: Path, tiny_models: tuple[Path, Path]
) -> None:
    """A deep-sleep board reading every 5 minutes is forecast but not judged; one reading every
    10 s or every 60 s (the model's step) is."""
    s = Store(tmp_path / "gw.db")
    records: list[Any] = []
    for dev, every in (("bath-1", 300.0), ("hall-1", 60.0), ("kitchen-1", 10.0)):
        n = int(1800 // every) + 1
        records += readings(dev, n=n, interval=every)
        records.append(Status("home", dev, True))
    s.write_batch(records, now=NOW)
    r, pub, _ = make(s, tiny_models[0], infer_interval=60)
    r.tick(NOW + 30)  # bath-1's last read is 30 s old: not silent, but sparse
    assert pub.on("humigraph/home/bath-1/health") == []
    assert len(pub.on("humigraph/home/bath-1/forecast")) == 1
    for dev in ("hall-1", "kitchen-1"):
        assert len(pub.on(f"humigraph/home/{dev}/health")) == 1
    s.close()


def test_a_model_trained_on_deep_sleep_boards_judges_them_up_to_its_cards_interval(
    tmp_path: Path, tiny_models: tuple[Path, Path]
) -> None:
    """A card with max_read_interval_s 600 (training thinned boards to one read every 2-10
    minutes): a board read every 5 minutes is judged, one read every 15 minutes is not, and a
    board with one read announcing 10 minutes is judged (its meta speaks for its spacing)."""
    model = installed(tiny_models, tmp_path, max_read_interval_s=600.0)
    s = Store(tmp_path / "gw.db")
    records: list[Any] = []
    for dev, every, n in (("bath-1", 300.0, 7), ("hall-1", 900.0, 3), ("kitchen-1", 10.0, 1)):
        records += readings(dev, n=n, interval=every)
        records.append(Status("home", dev, True))
    records.append(Meta("home", "kitchen-1", {"interval": 600, "fw": "0.1.0"}))
    s.write_batch(records, now=NOW)
    r, pub, _ = make(s, model, infer_interval=60)
    r.tick(NOW + 30)
    assert len(pub.on("humigraph/home/bath-1/health")) == 1
    assert len(pub.on("humigraph/home/kitchen-1/health")) == 1
    assert pub.on("humigraph/home/hall-1/health") == []
    assert len(pub.on("humigraph/home/hall-1/forecast")) == 1
    s.close()


def test_a_board_announcing_an_interval_longer_than_the_window_gets_no_fault_verdict(
    tmp_path: Path, tiny_models: tuple[Path, Path]
) -> None:
    """A deep-sleep board reading every 40 minutes has one read in the model's 32-minute window,
    so the spacing of its reads cannot show it is sparse: its meta's interval does. The same
    single read from a board announcing 10 s (it has just started) is judged."""
    s = Store(tmp_path / "gw.db")
    records: list[Any] = []
    for dev, announced in (("bath-1", 2400), ("hall-1", 10), ("kitchen-1", 10)):
        n = 1 if dev != "kitchen-1" else 180
        records += readings(dev, n=n, interval=10.0)
        records.append(Meta("home", dev, {"interval": announced, "fw": "0.1.0"}))
        records.append(Status("home", dev, True))
    s.write_batch(records, now=NOW)
    r, pub, _ = make(s, tiny_models[0], infer_interval=60)
    r.tick(NOW + 30)
    assert pub.on("humigraph/home/bath-1/health") == []
    assert len(pub.on("humigraph/home/bath-1/forecast")) == 1
    for dev in ("hall-1", "kitchen-1"):
        assert len(pub.on(f"humigraph/home/{dev}/health")) == 1
    s.close()
