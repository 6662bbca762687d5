"""Alert rules on synthetic sequences: each kind fires once and clears once (hysteresis, hold
time), thresholds are validated, and the Magnus dew point matches published values."""

from __future__ import annotations

from typing import Any

import pytest
from humigraph.errors import UsageError
from humigraph.gateway.alerts import (
    Alert,
    AlertConfig,
    AlertEngine,
    DeviceView,
    Sample,
    dew_point,
)

T0 = 1764400000.0


@pytest.mark.parametrize(
    ("t", "rh", "dp"),
    [
        # reference dew points (Magnus/Sonntag tables, e.g. the NOAA/Vaisala calculators)
        (20.0, 50.0, 9.3),
        (25.0, 60.0, 16.7),
        (30.0, 70.0, 23.9),
        (10.0, 80.0, 6.7),
        (0.0, 100.0, 0.0),
        (21.0, 100.0, 21.0),
        (-10.0, 50.0, -18.4),
    ],
)
def test_magnus_dew_point_matches_reference_values(t: float, rh: float, dp: float) -> None:
    assert dew_point(t, rh) == pytest.approx(dp, abs=0.1)


def test_dew_point_refuses_zero_humidity() -> None:
    with pytest.raises(ValueError, match="above 0"):
        dew_point(20.0, 0.0)


class Sim:
    """Feeds one device's readings to the engine one interval at a time."""

    def __init__(self, cfg: dict[str, Any] | None = None, interval: float = 10.0) -> None:
        self.engine = AlertEngine(AlertConfig.from_mapping({"min_hold_s": 0, **(cfg or {})}))
        self.interval = interval
        self.readings: list[Sample] = []
        self.now = T0
        self.events: list[dict[str, Any]] = []
        self.others: list[DeviceView] = []

    def step(
        self,
        t: float | None,
        rh: float | None,
        ok: bool = True,
        err: str | None = None,
        status: str | None = "online",
        received: bool = True,
        **view: Any,
    ) -> list[dict[str, Any]]:
        self.now += self.interval
        if received:
            self.readings.append(Sample(self.now, t, rh, ok, err, self.now))
        latest = self.readings[-self.engine.cfg.readings_needed :]
        dv = DeviceView(
            dev="bath-1",
            site="home",
            readings=latest,
            status=status,
            interval_s=self.interval,
            last_received=latest[-1].received if latest else None,
            **view,
        )
        evs = [ev for _, ev in self.engine.evaluate([dv, *self.others], self.now)]
        self.events += evs
        return evs

    def of(self, kind: str) -> list[tuple[str, str]]:
        return [(e["state"], e["level"]) for e in self.events if e["kind"] == kind]


def test_stuck_fires_once_and_clears_once() -> None:
    sim = Sim({"stuck_readings": 5})
    for i in range(4):
        sim.step(21.0 + i / 10, 45.0)
    for _ in range(12):  # identical readings: raised once at the 5th, not again
        sim.step(21.3, 45.0)
    assert sim.of("stuck") == [("raised", "warning")]
    raised = next(e for e in sim.events if e["kind"] == "stuck")
    assert raised["values"]["identical"] == 5 and raised["values"]["t"] == 21.3
    assert "5 times in a row" in raised["message"]
    for i in range(5):
        sim.step(21.4 + i / 10, 46.0)
    assert sim.of("stuck") == [("raised", "warning"), ("cleared", "warning")]
    ids = {e["id"] for e in sim.events if e["kind"] == "stuck"}
    assert len(ids) == 1  # raise and clear name the same alert


def test_min_hold_delays_the_clear() -> None:
    sim = Sim({"stuck_readings": 3, "min_hold_s": 60})
    for _ in range(3):
        sim.step(20.0, 40.0)
    assert sim.of("stuck") == [("raised", "warning")]
    sim.step(20.5, 40.0)  # 10 s after the raise: too early to clear
    assert sim.of("stuck") == [("raised", "warning")]
    for i in range(6):
        sim.step(20.6 + i / 10, 40.0)
    assert sim.of("stuck") == [("raised", "warning"), ("cleared", "warning")]


def test_spike_fires_once_and_clears_when_it_leaves_the_window() -> None:
    sim = Sim({"spike_window": 4})
    for _ in range(3):
        sim.step(21.0, 45.0)
    sim.step(29.0, 45.0)  # +8 °C in 10 s
    sim.step(21.0, 45.0)  # and back
    for _ in range(2):
        sim.step(21.1, 45.0)
    assert sim.of("spike") == [("raised", "info")]
    ev = next(e for e in sim.events if e["kind"] == "spike")
    assert ev["values"]["what"] == "t" and ev["values"]["jump"] in (8.0, -8.0)
    for _ in range(4):
        sim.step(21.2, 45.0)
    assert sim.of("spike") == [("raised", "info"), ("cleared", "info")]


def test_a_jump_across_a_silence_is_not_a_spike() -> None:
    sim = Sim({"spike_max_gap_s": 60})
    sim.step(15.0, 45.0)
    sim.now += 600  # ten minutes without readings
    sim.step(25.0, 45.0)
    assert sim.of("spike") == []


def test_out_of_range_fires_once_and_clears_after_three_good_readings() -> None:
    sim = Sim()
    sim.step(21.0, 45.0)
    sim.step(75.0, 45.0)
    sim.step(76.0, 45.0)
    assert sim.of("out_of_range") == [("raised", "warning")]
    sim.step(21.0, 45.0)
    sim.step(21.0, 45.0)
    assert sim.of("out_of_range") == [("raised", "warning")]  # two good ones are not enough
    sim.step(21.1, 45.0)
    assert sim.of("out_of_range") == [("raised", "warning"), ("cleared", "warning")]


def test_failed_reads_fire_at_the_fraction_and_clear_below_the_lower_one() -> None:
    sim = Sim({"failed_window": 10, "failed_fraction": 0.3, "failed_clear_fraction": 0.1})
    for _ in range(10):
        sim.step(21.0 + len(sim.readings) / 100, 45.0)
    for _ in range(3):
        sim.step(None, None, ok=False, err="timeout")
    assert sim.of("failed_reads") == [("raised", "warning")]
    ev = next(e for e in sim.events if e["kind"] == "failed_reads")
    assert ev["values"]["failed"] == 3 and ev["values"]["errors"] == {"timeout": 3}
    for _ in range(8):  # 2 of the last 10 failed: between the thresholds, still active
        sim.step(21.5 + len(sim.readings) / 100, 45.0)
    assert sim.of("failed_reads") == [("raised", "warning")]
    sim.step(21.9, 45.0)
    sim.step(22.0, 45.0)  # 0 of the last 10
    assert sim.of("failed_reads") == [("raised", "warning"), ("cleared", "warning")]


def test_every_read_failing_is_critical() -> None:
    sim = Sim({"failed_window": 4})
    for _ in range(4):
        sim.step(None, None, ok=False, err="checksum")
    assert sim.of("failed_reads") == [("raised", "critical")]


def test_mould_needs_the_duration_and_clears_below_rh_clear() -> None:
    sim = Sim({"rh_high": 70, "rh_clear": 65, "rh_duration_s": 60})
    for i in range(5):
        sim.step(21.0 + i / 100, 72.0 + i / 10)  # 40 s above: not yet
    assert sim.of("mould") == []
    for i in range(3):
        sim.step(21.1 + i / 100, 73.0 + i / 10)
    assert sim.of("mould") == [("raised", "warning")]
    for i in range(3):
        sim.step(21.2 + i / 100, 67.0 + i / 10)  # below 70 but above 65: hysteresis holds
    assert sim.of("mould") == [("raised", "warning")]
    sim.step(21.3, 64.0)
    assert sim.of("mould") == [("raised", "warning"), ("cleared", "warning")]


def test_condensation_against_the_coldest_neighbour() -> None:
    sim = Sim()
    window = Sample(T0, 12.0, 50.0, True, None, T0)
    sim.others = [
        DeviceView("window-1", "home", readings=[window]),
        DeviceView("hall-1", "home", readings=[Sample(T0, 19.0, 40.0, True, None, T0)]),
    ]
    sim.step(21.0, 50.0)  # dew point 10.2 °C, surface 12 °C: margin 1.8 > 1
    assert sim.of("condensation") == []
    sim.step(21.0, 56.0)  # dew point 11.9: margin 0.1 -> warning
    assert sim.of("condensation") == [("raised", "warning")]
    ev = next(e for e in sim.events if e["kind"] == "condensation")
    assert ev["values"]["surface"] == "coldest neighbour window-1"
    assert ev["values"]["dew_point"] == pytest.approx(dew_point(21.0, 56.0), abs=0.01)
    assert ev["values"]["margin"] == pytest.approx(12.0 - dew_point(21.0, 56.0), abs=0.01)
    sim.step(21.0, 60.0)  # worse (margin < 0) while active: no second event
    sim.step(21.0, 51.0)  # margin 1.6: between 1 and 2, stays active
    assert sim.of("condensation") == [("raised", "warning")]
    sim.step(21.0, 48.0)  # dew point 9.6, margin 2.4 >= 2: clears
    assert sim.of("condensation") == [("raised", "warning"), ("cleared", "warning")]


def test_condensation_against_a_configured_surface_is_critical_below_the_dew_point() -> None:
    sim = Sim({"surface_t": 10.0})
    sim.step(20.0, 70.0)  # dew point 14.4 > 10
    assert sim.of("condensation") == [("raised", "critical")]
    assert "at or above" in sim.events[-1]["message"]


def test_offline_by_last_will_and_by_silence() -> None:
    sim = Sim()
    sim.step(21.0, 45.0)
    sim.step(21.1, 45.0, status="offline")
    assert sim.of("offline") == [("raised", "warning")]
    sim.step(21.2, 45.0, status="online")
    assert sim.of("offline") == [("raised", "warning"), ("cleared", "warning")]
    for _ in range(3):  # 30 s of silence: expire_after = 3 x 10 + 5 = 35 s not yet passed
        sim.step(None, None, received=False)
    assert len(sim.of("offline")) == 2
    sim.step(None, None, received=False)
    assert sim.of("offline")[-1] == ("raised", "warning")
    assert "nothing from bath-1" in sim.events[-1]["message"]
    sim.step(21.3, 45.0)
    assert sim.of("offline")[-1] == ("cleared", "warning")
    assert len(sim.of("offline")) == 4


def test_model_fault_needs_n_steps_and_ignores_ticks_without_inference() -> None:
    sim = Sim({"fault_steps": 3, "fault_min_p": 0.6})
    sim.step(21.0, 45.0, fault=("stuck", 0.9))
    sim.step(21.1, 45.0)  # no inference this tick: the run is neither extended nor broken
    sim.step(21.2, 45.0, fault=("stuck", 0.8))
    assert sim.of("fault") == []
    sim.step(21.3, 45.0, fault=("drift", 0.7))
    assert sim.of("fault") == [("raised", "warning")]
    sim.step(21.4, 45.0, fault=("ok", 0.9))
    sim.step(21.5, 45.0, fault=("ok", 0.9))
    assert sim.of("fault") == [("raised", "warning")]
    sim.step(21.6, 45.0, fault=("ok", 0.9))
    assert sim.of("fault") == [("raised", "warning"), ("cleared", "warning")]


def test_forecast_crossing_a_limit_within_the_horizon() -> None:
    sim = Sim({"forecast_rh_max": 75.0, "forecast_clear_rh": 2.0})
    fc = [(300, 21.0, 70.0), (900, 21.0, 74.0), (1800, 21.0, 77.0), (3600, 21.0, 90.0)]
    sim.step(21.0, 68.0, forecast=fc)
    assert sim.of("forecast_limit") == [("raised", "info")]
    assert "30 min" in sim.events[-1]["message"]
    sim.step(21.0, 68.0, forecast=[(300, 21.0, 72.0), (900, 21.0, 73.5), (1800, 21.0, 74.0)])
    assert sim.of("forecast_limit") == [("raised", "info")]  # within 2 of the limit: holds
    sim.step(21.0, 68.0, forecast=[(300, 21.0, 70.0), (900, 21.0, 71.0), (1800, 21.0, 72.0)])
    assert sim.of("forecast_limit") == [("raised", "info"), ("cleared", "info")]


def test_a_horizon_beyond_30_minutes_does_not_count() -> None:
    sim = Sim({"forecast_rh_max": 75.0})
    sim.step(21.0, 60.0, forecast=[(1800, 21.0, 70.0), (3600, 21.0, 90.0)])
    assert sim.of("forecast_limit") == []


def test_restored_alerts_are_not_raised_again() -> None:
    sim = Sim({"stuck_readings": 3})
    sim.engine.restore([Alert("bath-1:stuck:1", "home", "bath-1", "stuck", "warning", "m", T0, {})])
    for _ in range(5):
        sim.step(20.0, 40.0)
    assert sim.of("stuck") == []
    sim.step(20.5, 40.0)
    assert sim.of("stuck") == [("cleared", "warning")]
    assert sim.events[-1]["id"] == "bath-1:stuck:1"


def test_disabled_kinds_stay_silent() -> None:
    sim = Sim({"stuck_readings": 3, "disabled": ["stuck"]})
    for _ in range(5):
        sim.step(20.0, 40.0)
    assert sim.of("stuck") == []


def test_event_payload_shape() -> None:
    sim = Sim({"stuck_readings": 2})
    sim.step(20.0, 40.0)
    (ev,) = sim.step(20.0, 40.0)
    assert set(ev) == {
        "v",
        "id",
        "state",
        "level",
        "kind",
        "dev",
        "site",
        "message",
        "ts",
        "values",
    }
    assert ev["v"] == 1 and ev["dev"] == "bath-1" and ev["site"] == "home"


@pytest.mark.parametrize(
    ("cfg", "match"),
    [
        ({"rh_hi": 70}, r"alerts\.rh_hi: unknown key"),
        ({"rh_high": "70"}, r"alerts\.rh_high: expected a number"),
        ({"rh_high": True}, r"alerts\.rh_high: expected a number"),
        ({"rh_clear": 75}, r"alerts\.rh_clear: must be below rh_high"),
        ({"stuck_readings": 2.5}, r"alerts\.stuck_readings: expected a whole number"),
        ({"failed_clear_fraction": 0.5}, r"failed_clear_fraction: must be >= 0 and below"),
        ({"condensation_clear_margin_c": 0.5}, r"condensation_clear_margin_c: must be above"),
        ({"disabled": ["nope"]}, r"alerts\.disabled: expected a list of alert kinds"),
        ({"min_hold_s": None}, r"alerts\.min_hold_s: expected a number, got None"),
    ],
)
def test_bad_thresholds_are_refused_with_the_key(cfg: dict[str, Any], match: str) -> None:
    with pytest.raises(UsageError, match=match):
        AlertConfig.from_mapping(cfg)


def test_optional_limits_accept_none() -> None:
    cfg = AlertConfig.from_mapping({"forecast_t_max": None, "surface_t": 12})
    assert cfg.forecast_t_max is None and cfg.surface_t == 12
