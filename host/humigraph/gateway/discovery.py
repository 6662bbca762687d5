"""Home Assistant MQTT discovery for the gateway's derived entities.

The board publishes its own device config on ``homeassistant/device/<dev>/config`` (temperature,
humidity). The gateway never touches that topic: it publishes a second device config on
``homeassistant/device/<dev>-gw/config`` with the same device identifier
(``humigraph_<dev with _ for ->``), so Home Assistant merges both into one device. Entities:

- forecast sensors: temperature and humidity at +15 and +30 min (from ``<prefix>/<site>/<dev>/forecast``),
  present only while a model is loaded (their horizons come from its card);
- ``fault`` binary sensor (problem) from ``<prefix>/<site>/<dev>/health``, attributes = the payload;
- ``alert`` binary sensor (problem) from the retained ``<prefix>/<site>/<dev>/alert`` summary
  the gateway keeps for each device (rule-based alerts work without a model).

Each site gets a device of its own while a model is loaded, on
``homeassistant/device/humigraph-site-<site>/config``: one binary sensor per site insight
(occupancy: device class ``occupancy``; ventilation: ``window``), on when the insight payload's
``detected`` says yes (the model card's threshold), the probability as an attribute.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from .. import __version__ as VERSION

# Horizons (seconds) that get a Home Assistant sensor, when the model's card has them.
HA_HORIZONS = (900, 1800)


def device_uid(dev: str) -> str:
    """The board's own discovery identifier (firmware/humigraph/ha.py)."""
    return "humigraph_" + dev.replace("-", "_")


def topic(dev: str, ha_prefix: str = "homeassistant") -> str:
    return f"{ha_prefix}/device/{dev}-gw/config"


def alert_topic(prefix: str, site: str, dev: str) -> str:
    return f"{prefix}/{site}/{dev}/alert"


def config(
    dev: str,
    site: str,
    prefix: str,
    horizons_s: Sequence[int] | None,
    expire_after: int,
) -> dict[str, Any]:
    """The discovery payload; ``horizons_s`` None (no model) leaves the forecast sensors out."""
    uid = device_uid(dev)
    base = f"{prefix}/{site}/{dev}"
    cmps: dict[str, Any] = {}
    for i, h in enumerate(horizons_s or ()):
        if h not in HA_HORIZONS:
            continue
        minutes = h // 60
        for key, name, dc, unit in (
            ("t", "Temperature", "temperature", "\u00b0C"),
            ("rh", "Humidity", "humidity", "%"),
        ):
            cmps[f"{uid}_{key}_{minutes}m"] = {
                "p": "sensor",
                "name": f"{name} in {minutes} min",
                "device_class": dc,
                "state_class": "measurement",
                "unit_of_measurement": unit,
                "state_topic": f"{base}/forecast",
                "value_template": f"{{{{ value_json.{key}[{i}] }}}}",
                "unique_id": f"{uid}_gw_{key}_{minutes}m",
                "expire_after": expire_after,
            }
    cmps[f"{uid}_fault"] = {
        "p": "binary_sensor",
        "name": "Sensor fault",
        "device_class": "problem",
        "state_topic": f"{base}/health",
        "value_template": "{{ 'OFF' if value_json.fault == 'ok' else 'ON' }}",
        "json_attributes_topic": f"{base}/health",
        "unique_id": f"{uid}_gw_fault",
        "expire_after": expire_after,
    }
    cmps[f"{uid}_alert"] = {
        "p": "binary_sensor",
        "name": "Alert",
        "device_class": "problem",
        "state_topic": alert_topic(prefix, site, dev),
        "value_template": "{{ 'ON' if value_json.active > 0 else 'OFF' }}",
        "json_attributes_topic": alert_topic(prefix, site, dev),
        "unique_id": f"{uid}_gw_alert",
    }
    return {
        "dev": {"ids": [uid], "name": dev, "mf": "humigraph", "sa": site},
        "o": {"name": "humigraph-gateway", "sw": VERSION},
        "cmps": cmps,
        "qos": 1,
    }


# Home Assistant device classes of the site insights; an insight not listed gets none.
INSIGHT_CLASSES = {"occupancy": "occupancy", "ventilation": "window"}


def site_uid(site: str) -> str:
    return "humigraph_site_" + "".join(c if c.isalnum() else "_" for c in site)


def site_topic(site: str, ha_prefix: str = "homeassistant") -> str:
    # a discovery object id allows letters, digits, "_" and "-"
    object_id = "".join(c if c.isalnum() or c in "_-" else "_" for c in site)
    return f"{ha_prefix}/device/humigraph-site-{object_id}/config"


def site_config(
    site: str, prefix: str, insights: Sequence[str], expire_after: int
) -> dict[str, Any]:
    """The site device: a binary sensor per insight of the loaded model's card."""
    uid = site_uid(site)
    state = f"{prefix}/{site}/insight"
    cmps: dict[str, Any] = {}
    for name in insights:
        cmp: dict[str, Any] = {
            "p": "binary_sensor",
            "name": name.capitalize(),
            "state_topic": state,
            # a payload without "detected" (an older gateway's, retained) reads as off
            "value_template": (
                f"{{{{ 'ON' if value_json.detected is defined and "
                f"value_json.detected.{name} else 'OFF' }}}}"
            ),
            "json_attributes_topic": state,
            "json_attributes_template": (
                f'{{{{ {{"probability": value_json.{name}, "model": value_json.model}} | tojson }}}}'
            ),
            "unique_id": f"{uid}_{name}",
            "expire_after": expire_after,
        }
        if name in INSIGHT_CLASSES:
            cmp["device_class"] = INSIGHT_CLASSES[name]
        cmps[f"{uid}_{name}"] = cmp
    return {
        "dev": {"ids": [uid], "name": f"{site} (site)", "mf": "humigraph", "sa": site},
        "o": {"name": "humigraph-gateway", "sw": VERSION},
        "cmps": cmps,
        "qos": 1,
    }


def payload(*args: Any, **kw: Any) -> bytes:
    return json.dumps(config(*args, **kw), separators=(",", ":")).encode()
