"""The reasoning side end to end: real Mosquitto, the gateway with a tiny INT8 model, injected
readings. Forecast, health and insight appear on MQTT (retained) and in the API; a stuck sensor
raises an alert that clears when its readings move again; Home Assistant discovery is published."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from humigraph.gateway.service import Gateway
from humigraph.model.card import ModelCard
from support.collector import Collector, Message
from support.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

DEVS = ("bath-1", "hall-1", "kitchen-1")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("tensorflow")
    from support.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("model"), ModelCard(model_id="tiny-e2e"))


def reading(dev: str, seq: int, ts: float, t: float, rh: float) -> bytes:
    return json.dumps(
        {"v": 1, "dev": dev, "boot": 1, "seq": seq, "ts": ts, "up": seq * 10000, "t": t,
         "rh": rh, "ok": True, "err": None, "sensor": "dht22"}
    ).encode()  # fmt: skip


def get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            body = r.read().decode()
            return r.status, (json.loads(body) if "json" in r.headers["Content-Type"] else body)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read().decode())


def alert_events(c: Collector, kind: str, dev: str) -> list[dict[str, Any]]:
    return [
        d
        for m in c.on("humigraph/home/alerts")
        if (d := m.json())["kind"] == kind and d["dev"] == dev
    ]


def test_forecasts_health_insight_and_a_stuck_alert_end_to_end(
    broker: Any, tiny_model: Path, tmp_path: Path
) -> None:
    model = tmp_path / "models" / "humigraph-int8.tflite"
    model.parent.mkdir()
    model.write_bytes(tiny_model.read_bytes())
    model.with_suffix(".json").write_bytes(tiny_model.with_suffix(".json").read_bytes())
    watch = Collector(broker.port, ["humigraph/#", "homeassistant/#"])
    gw = Gateway(
        broker.url,
        f"sqlite:///{tmp_path / 'gw.db'}",
        http="127.0.0.1:0",
        model=model,
        infer_interval=1.0,
        alerts={"stuck_readings": 5, "min_hold_s": 0},
    )
    try:
        gw.start()
        wait_until(lambda: gw.connected, 10, "the gateway to connect")
        time.sleep(0.3)  # SUBACK
        now = time.time()
        seqs = dict.fromkeys(DEVS, 0)

        def send(dev: str, ts: float, t: float, rh: float) -> None:
            watch.publish(f"humigraph/home/{dev}/state", reading(dev, seqs[dev], ts, t, rh))
            seqs[dev] += 1

        for dev in DEVS:
            watch.publish(f"humigraph/home/{dev}/status", b"online", retain=True)
            watch.publish(f"humigraph/home/{dev}/meta", b'{"interval": 10}', retain=True)
        for i in range(60):  # ten minutes of history; bath-1 stuck over its last 10 readings
            ts = now - (59 - i) * 10
            for k, dev in enumerate(DEVS):
                stuck = dev == "bath-1" and i >= 50
                t = 21.5 if stuck else 20.0 + k + (i % 7) / 10
                rh = 50.0 if stuck else 40.0 + (i % 5)
                send(dev, ts, t, rh)

        host, port = gw.http_address or ("", 0)
        url = f"http://{host}:{port}"

        for dev in DEVS:
            fc = watch.wait_for(
                lambda ms, d=dev: [m for m in ms if m.topic == f"humigraph/home/{d}/forecast"],
                30,
                f"a forecast of {dev}",
            )[-1].json()
            assert fc["model"] == "tiny-e2e" and fc["horizons"] == [300, 900, 1800]
            assert len(fc["t"]) == len(fc["rh"]) == 3
            h = watch.wait_for(
                lambda ms, d=dev: [m for m in ms if m.topic == f"humigraph/home/{d}/health"],
                10,
                f"the health of {dev}",
            )[-1].json()
            assert h["fault"] in h["probs"] and set(h["router"]) == {"self", "neighbours"}
        ins = watch.wait_for(
            lambda ms: [m for m in ms if m.topic == "humigraph/home/insight"], 10, "an insight"
        )[-1].json()
        assert ins["graph"]["nodes"] == sorted(DEVS)
        assert 0 <= ins["occupancy"] <= 1 and 0 <= ins["ventilation"] <= 1
        assert set(ins["detected"]) == {"occupancy", "ventilation"}
        site_topic = "homeassistant/device/humigraph-site-home/config"
        site = watch.wait_for(
            lambda ms: [m for m in ms if m.topic == site_topic], 10, "the site's HA device"
        )[-1]
        assert len(site.json()["cmps"]) == 2  # occupancy, ventilation

        # retained: a client connecting now gets the latest of each
        late = Collector(broker.port, ["humigraph/home/+/forecast", "humigraph/home/insight"])
        try:
            got: list[Message] = late.wait_for(
                lambda ms: (
                    (r := [m for m in ms if m.retain]) and len({m.topic for m in r}) >= 4 and r
                ),
                10,
                "the retained payloads",
            )
            assert all(m.qos == 1 for m in got)
            assert {m.topic for m in got} == {
                *(f"humigraph/home/{d}/forecast" for d in DEVS),
                "humigraph/home/insight",
            }
        finally:
            late.close()

        # the API serves what was published
        code, fc = get(url + "/api/forecast?dev=hall-1")
        assert code == 200 and fc["dev"] == "hall-1" and fc["model"] == "tiny-e2e"
        code, h = get(url + "/api/health?dev=kitchen-1")
        assert code == 200 and h["dev"] == "kitchen-1"
        code, err = get(url + "/api/forecast?dev=nobody")
        assert code == 404 and "nobody" in err["error"]
        code, ins = get(url + "/api/insight?site=home")
        assert code == 200 and ins["site"] == "home"
        code, sites = get(url + "/api/sites")
        assert code == 200 and sites[0]["site"] == "home"
        assert sites[0]["devices"] == sorted(DEVS)
        assert sites[0]["model"]["id"] == "tiny-e2e" and sites[0]["model"]["step_s"] == 60
        code, health = get(url + "/healthz")
        assert health["reasoning"]["enabled"] and health["reasoning"]["model_id"] == "tiny-e2e"
        assert health["reasoning"]["infer_interval"] == 1.0
        code, gaps = get(url + "/api/gaps")
        assert code == 200 and all(g["gaps"] == 0 for g in gaps)
        code, text = get(url + "/metrics")
        count = next(
            ln for ln in text.splitlines() if ln.startswith("humigraph_inference_seconds_count")
        )
        assert int(count.split()[1]) >= 1

        # the stuck sensor: raised once on MQTT, listed as active in the API
        raised = watch.wait_for(
            lambda ms: alert_events(watch, "stuck", "bath-1"), 20, "the stuck alert"
        )
        assert [e["state"] for e in raised] == ["raised"]
        assert raised[0]["level"] == "warning" and raised[0]["values"]["identical"] >= 5
        code, active = get(url + "/api/alerts?active=1")
        stuck = [a for a in active if a["kind"] == "stuck"]
        assert code == 200 and [a["dev"] for a in stuck] == ["bath-1"]
        assert stuck[0]["id"] == raised[0]["id"] and stuck[0]["active"]
        summary = watch.wait_for(
            lambda ms: [m for m in ms if m.topic == "humigraph/home/bath-1/alert"],
            10,
            "the alert summary",
        )[-1].json()
        assert summary["active"] >= 1

        # bath-1 moves again: cleared once
        for i in range(3):
            send("bath-1", time.time() + i * 0.01, 21.6 + i / 10, 50.5)
        events = watch.wait_for(
            lambda ms: (
                len(alert_events(watch, "stuck", "bath-1")) >= 2
                and alert_events(watch, "stuck", "bath-1")
            ),
            20,
            "the stuck alert to clear",
        )
        time.sleep(2.5)  # a few more passes: nothing fires again
        events = alert_events(watch, "stuck", "bath-1")
        assert [e["state"] for e in events] == ["raised", "cleared"]
        assert events[1]["id"] == events[0]["id"]
        code, cleared = get(url + "/api/alerts?active=0&site=home")
        ids = [a["id"] for a in cleared if a["kind"] == "stuck"]
        assert ids == [events[0]["id"]]
        assert next(a for a in cleared if a["id"] == ids[0])["cleared"] is not None

        # Home Assistant: a second device config beside the board's, same identifiers
        ha = watch.wait_for(
            lambda ms: [m for m in ms if m.topic == "homeassistant/device/bath-1-gw/config"],
            10,
            "the discovery config",
        )[-1].json()
        assert ha["dev"]["ids"] == ["humigraph_bath_1"]
        assert any(c["name"] == "Temperature in 30 min" for c in ha["cmps"].values())
    finally:
        gw.stop()
        watch.close()
