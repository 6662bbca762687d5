"""humigraph evaluate: metrics on known inputs, baselines, and evaluate() on a tiny INT8 model."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
from humigraph.errors import ModelError, UsageError
from humigraph.model.baselines import (
    baseline_report,
    fit_baselines,
    forecast_baselines,
    linear_trend,
)
from humigraph.model.card import FAULT_CLASSES, ModelCard
from humigraph.model.data import Recording, make_windows
from humigraph.model.evaluate import (
    balanced_accuracy,
    binary_scores,
    choose_fault_threshold,
    choose_insight_threshold,
    evaluate,
    f1_binary,
    fault_threshold_sweep,
    format_table,
    macro_f1,
    per_class_scores,
    poisson_rate_upper,
    print_table,
    roc_auc,
)

T0 = 1_764_374_400.0


# ---------------------------------------------------------------- metrics


def test_balanced_accuracy_and_f1_by_hand() -> None:
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    p = np.array([1, 1, 1, 0, 1, 0, 0, 0, 0, 0])
    # recall(1) = 3/4, recall(0) = 5/6
    assert balanced_accuracy(y, p) == pytest.approx((3 / 4 + 5 / 6) / 2)
    # precision 3/4, recall 3/4
    assert f1_binary(y, p) == pytest.approx(0.75)
    assert f1_binary(np.zeros(3), np.zeros(3)) == 0.0
    s = binary_scores(y, p)
    assert s["base_rate"] == 0.4 and s["n"] == 10
    assert balanced_accuracy(np.ones(4), np.array([1, 1, 0, 0])) == 0.5  # one class: its recall


def test_per_class_and_macro_f1_by_hand() -> None:
    y = np.array([0, 0, 0, 1, 1, 2])
    p = np.array([0, 0, 1, 1, 2, 2])
    pc = per_class_scores(y, p, FAULT_CLASSES)
    assert pc["ok"] == {"precision": 1.0, "recall": round(2 / 3, 4), "f1": 0.8, "support": 3}
    assert pc["stuck"]["precision"] == 0.5 and pc["stuck"]["recall"] == 0.5
    assert pc["spike"]["f1"] == round(2 / 3, 4) and pc["dropout"]["support"] == 0
    # classes 0, 1, 2 present: F1 0.8, 0.5, 2/3
    assert macro_f1(y, p) == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert math.isnan(macro_f1(np.array([]), np.array([])))


def test_roc_auc_by_hand_with_ties() -> None:
    assert roc_auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])) == pytest.approx(0.75)
    assert roc_auc(np.array([0, 1]), np.array([0.5, 0.5])) == pytest.approx(0.5)
    assert roc_auc(np.array([1, 0]), np.array([0.9, 0.1])) == 1.0
    assert roc_auc(np.array([1, 1]), np.array([0.2, 0.3])) is None


# ---------------------------------------------------------------- baselines


def ramp(name: str, slope: float, n_steps: int = 90) -> Recording:
    k = np.arange(n_steps, dtype=float)
    ts = T0 + 60.0 * k
    occ = (np.arange(n_steps) % 40 >= 20).astype(np.int64)
    return Recording(
        name=name,
        site="s",
        nodes=["a", "b"],
        ts=[ts, ts.copy()],
        t=[20 + slope * k, 21 + slope * k],
        rh=[40 + 5 * slope * k, 41 + 5 * slope * k],
        ok=[np.ones(n_steps, bool)] * 2,
        occupancy=(ts, occ),
    )


def test_linear_baseline_is_exact_on_a_ramp_and_persistence_is_not() -> None:
    card = ModelCard()
    w = make_windows([ramp("r", 0.01)], card)
    lin = linear_trend(w, card)
    m = w.y_forecast_mask > 0
    assert np.abs(lin - w.y_forecast)[m].max() < 1e-4
    rep = baseline_report(w, w, card)
    assert rep["forecast"]["300"]["t"]["persistence"] == pytest.approx(0.05, abs=1e-5)
    assert rep["forecast"]["1800"]["rh"]["linear"] == pytest.approx(0.0, abs=1e-3)


def test_ridge_learns_the_slope_from_training_windows() -> None:
    card = ModelCard()
    train = make_windows([ramp(f"r{i}", s) for i, s in enumerate((0.01, -0.02, 0.03))], card)
    test = make_windows([ramp("t", 0.015)], card)
    fitted = fit_baselines(train, card)
    pred = forecast_baselines(test, card, fitted)["ridge"]
    m = test.y_forecast_mask > 0
    err = np.abs(pred - test.y_forecast)[m].mean()
    assert err < 0.2 * np.abs(test.y_forecast[m]).mean()


def test_pooled_sources_weigh_alike_and_pull_the_ridge_toward_each_other() -> None:
    from humigraph.model.baselines import _alike

    w = _alike([10, 30, 0])
    assert len(w) == 40 and w[:10].sum() == pytest.approx(w[10:].sum())
    assert w.mean() == pytest.approx(1.0)
    assert _alike([25]) is None
    card = ModelCard()
    ramps = make_windows([ramp(f"r{i}", s) for i, s in enumerate((0.01, -0.02, 0.03))], card)
    # a second, larger source whose trends turn back, as the simulator's DHT22 jitter does
    # beside Room-Climate's smooth rooms
    slopes = (0.02, -0.01, 0.01, -0.03) * 3
    back = make_windows([ramp(f"b{i}", s) for i, s in enumerate(slopes)], card)
    back.y_forecast = -back.y_forecast
    test = make_windows([ramp("t", 0.015)], card)
    m = test.y_forecast_mask > 0
    alone = forecast_baselines(test, card, fit_baselines(ramps, card))["ridge"]
    pooled = forecast_baselines(test, card, fit_baselines(ramps, card, pooled=[back]))["ridge"]
    truth = np.abs(test.y_forecast[m]).mean()
    assert np.abs(alone - test.y_forecast)[m].mean() < 0.2 * truth
    # by rows the turning source would win (twelve recordings against three) and the ridge
    # would forecast the turn; weighed alike, the pooled ridge keeps a part of the trend
    assert np.abs(pooled[m]).mean() < 0.4 * np.abs(alone[m]).mean()
    kept = float(np.mean(pooled[m] * alone[m])) / float(np.mean(alone[m] ** 2))
    assert 0.0 < kept < 0.5
    assert np.abs(pooled - test.y_forecast)[m].mean() > 0.5 * truth


def test_baselines_cli_pools_other_specs(capsys: pytest.CaptureFixture[str]) -> None:
    from humigraph.model.baselines import main

    spec, other = "world:1-3?days=1&rooms=3", "world:4-5?days=1&rooms=3"
    assert main(["--data", spec, "--pool", other, "--stride", "30", "--pool-stride", "30"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["data"] == spec and rep["pooled_with"] == [other]
    assert rep["forecast"]["300"]["t"]["ridge"] is not None
    assert set(rep["forecast"]["300"]["t"]) == {"persistence", "linear", "ridge"}


def test_baselines_cli_names_a_bad_spec_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from humigraph.model.baselines import main

    assert main(["--data", "world:1?days=1&rooms=3", "--pool", "bogus:x"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "'bogus:x': unknown data SPEC" in err


# ---------------------------------------------------------------- evaluate() on a real .tflite


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("tensorflow")
    from support.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny"))


def test_evaluate_world_returns_every_key(tiny: Path) -> None:
    res = evaluate(tiny, "world:3?days=1&rooms=3", max_windows=40, seed=1)
    json.dumps(res)  # JSON-ready
    assert res["model"] == "tiny-int8.tflite" and res["data"] == "world:3?days=1&rooms=3"
    assert 0 < res["windows"] <= 40
    assert set(res["forecast"]) == {"300", "900", "1800"}
    for entry in res["forecast"].values():
        for tgt in ("t", "rh"):
            assert set(entry[tgt]) == {"mae", "persistence", "linear", "ridge"}
            assert all(isinstance(entry[tgt][k], float) for k in ("mae", "persistence", "linear"))
    f = res["faults"]
    assert 0.0 <= f["macro_f1"] <= 1.0 and f["false_alarms_per_node_day"] >= 0.0
    assert set(f["per_class"]) == set(FAULT_CLASSES)
    assert set(f["per_class"]["stuck"]) == {"precision", "recall", "f1", "support"}
    assert sum(s["support"] for s in f["per_class"].values()) == f["node_windows"] > 0
    assert sum(s["support"] for k, s in f["per_class"].items() if k != "ok") > 0  # injected
    after = f["after_start"]
    assert after["minutes"] == [1, 3, 5, 10, 20]
    for variant in ("one_board", "whole_site"):
        assert all(0.0 <= r <= 1.0 for r in after[variant]["false_fault_rate"])
        assert min(after[variant]["node_windows"]) > 0
    assert "healthy boards called faulty after they start reading" in format_table(res)
    sparse = f["sparse_reads"]
    assert sparse["period_s"] == [60, 120, 300, 600]
    assert all(0.0 <= r <= 1.0 for r in sparse["one_board"]["false_fault_rate"])
    assert "healthy boards reading once per period called faulty" in format_table(res)
    steep = f["steep_ok"]  # a 3-room world day has no shower: None, or a rate
    assert steep is None or 0.0 <= steep["false_fault_rate"] <= 1.0
    for name in ("occupancy", "ventilation"):
        assert {"balanced_accuracy", "f1", "base_rate"} <= set(res[name])
    assert res["adjacency_auc"] is not None and 0.0 <= res["adjacency_auc"] <= 1.0
    # the same seed gives the same numbers
    again = evaluate(tiny, "world:3?days=1&rooms=3", max_windows=40, seed=1)
    assert again["faults"] == res["faults"] and again["forecast"] == res["forecast"]


def test_evaluate_fits_the_baselines_on_the_training_side_when_given(tiny: Path) -> None:
    # the held-out ramp's slope is one the training ramps span: a ridge fitted on them predicts
    # it closely, where cross-fitting on two held-out ramps of opposite slope cannot
    train = [ramp(f"r{i}", s) for i, s in enumerate((0.01, -0.02, 0.03, 0.02))]
    held_out = [ramp("a", 0.015), ramp("b", -0.015)]
    fitted = evaluate(tiny, held_out, baseline_train=train, seed=1)
    crossed = evaluate(tiny, held_out, seed=1)
    assert fitted["baselines_fitted_on"] == "fitted on the training split (4 recording(s))"
    assert crossed["baselines_fitted_on"].startswith("cross-fitted")
    f, c = fitted["forecast"]["900"]["t"], crossed["forecast"]["900"]["t"]
    assert f["ridge"] < 0.2 * f["persistence"] < c["ridge"]
    assert "ridge and GBT baselines fitted on the training split" in format_table(fitted)


def test_evaluate_takes_a_stride_from_the_caller_and_the_cli(
    tiny: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from humigraph.cli import main

    every = evaluate(tiny, "world:3?days=1&rooms=3", baselines=False)
    third = evaluate(tiny, "world:3?days=1&rooms=3", baselines=False, stride=3)
    assert (every["stride_steps"], third["stride_steps"]) == (1, 3)
    assert third["windows"] == math.ceil(every["windows"] / 3)
    with pytest.raises(UsageError, match="stride must be >= 1"):
        evaluate(tiny, "world:3?days=1&rooms=3", stride=0)
    args = ["evaluate", "--model", str(tiny), "--data", "world:3?days=1&rooms=3"]
    assert main([*args, "--split", "all", "--stride", "3", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert (res["stride_steps"], res["windows"]) == (3, third["windows"])


def test_evaluate_without_ground_truth_gives_nulls(tiny: Path) -> None:
    recs = [ramp("a", 0.01), ramp("b", -0.01)]
    recs[0].occupancy = recs[1].occupancy = None
    res = evaluate(tiny, recs, baselines=False)
    assert res["occupancy"] is None and res["ventilation"] is None
    assert res["adjacency_auc"] is None
    assert res["forecast"]["300"]["t"]["persistence"] == pytest.approx(0.05, abs=1e-4)
    assert "ridge" not in res["forecast"]["300"]["t"]
    text = format_table(res)
    assert "occupancy: no labels in the data" in text and "+5 min t" in text
    buf = io.StringIO()
    print_table(res, file=buf)
    assert buf.getvalue().strip() == text


def test_false_alarms_count_episodes_per_node_day() -> None:
    from humigraph.model.evaluate import _false_alarms

    card = ModelCard()
    w = make_windows([ramp("r", 0.01)], card)  # 59 windows a minute apart, 2 nodes
    pred = np.zeros(w.y_fault.shape, np.int64)
    pred[5:10, 0] = FAULT_CLASSES.index("noise")  # one episode of 5 windows
    pred[20, 0] = FAULT_CLASSES.index("stuck")  # a second one
    pred[30, 5] = 1  # padding: ignored
    node_days = len(w) * 2 * 60 / 86400
    assert _false_alarms(pred, w, card, stride=1) == pytest.approx(2 / node_days, rel=1e-3)
    # windows labelled faulty are not false alarms
    w.y_fault_mask[:, 0] = 1
    w.y_fault[:, 0] = FAULT_CLASSES.index("noise")
    assert _false_alarms(pred, w, card, stride=1) == 0.0


def test_steep_ok_scores_healthy_boards_on_a_steep_climb_apart_from_the_rest() -> None:
    from humigraph.model.evaluate import _steep_ok

    card = ModelCard(fault_threshold=0.5)
    rec = ramp("r", 0.01)
    rec.rh[0] = 40 + 1.0 * np.arange(90.0)  # a shower: 1 %RH a minute, 31 %RH over a window
    w = make_windows([rec], card)
    stuck = FAULT_CLASSES.index("stuck")
    pred = np.zeros(w.node_mask.shape, np.int64)
    pred[:, 0] = stuck  # the climbing board called stuck in every window
    pred[::4, 1] = stuck  # the calm one in a quarter of them
    res = _steep_ok(pred, w, card)
    assert res == {
        "false_fault_rate": 1.0,
        "node_windows": len(w),
        "others_false_fault_rate": round(math.ceil(len(w) / 4) / len(w), 5),
    }
    table = format_table({"faults": {"steep_ok": res}})
    assert "healthy boards on a steep climb (a shower) called faulty: 1.000 of" in table
    from humigraph.model.report import _sparse_lines  # the model card's sentence

    assert f"called faulty in 1 of {len(w)} node-windows" in " ".join(
        _sparse_lines({"steep_ok": res})
    )
    # a board labelled faulty is no false alarm, and without a steep healthy board: None
    w.y_fault_mask[:, 0] = 1
    w.y_fault[:, 0] = stuck
    assert _steep_ok(pred, w, card) is None


def test_after_start_judges_the_boards_that_started_late_and_only_them() -> None:
    from humigraph.model.evaluate import _after_start

    card = ModelCard(fault_threshold=0.5)
    w = make_windows([ramp("r", 0.01)], card)  # 2 healthy nodes
    present = card.features.index("present")
    seen: list[np.ndarray] = []

    class Absent:
        """Calls a node 'drift' when its first step has no read."""

        def run(self, x: np.ndarray, node_mask: np.ndarray) -> dict[str, np.ndarray]:
            seen.append(x[0, :2, :, present].copy())
            p = np.zeros((1, card.nodes, len(card.fault_classes)))
            late = x[0, :, 0, present] <= 0
            p[0, :, 0] = np.where(late, 0.1, 0.9)
            p[0, :, FAULT_CLASSES.index("drift")] = np.where(late, 0.9, 0.1)
            return {"fault": p}

    res = _after_start(Absent(), w, card)
    assert res["minutes"] == [1, 3, 5, 10, 20] and res["windows"] == len(w)
    for variant, nodes in (("one_board", 1), ("whole_site", 2)):
        assert res[variant]["false_fault_rate"] == [1.0] * 5
        assert res[variant]["node_windows"] == [nodes * len(w)] * 5
    # the board that started 3 minutes before the end has reads in its last 3 steps only
    one_board_3min = seen[len(w) : 2 * len(w)]
    assert all((x.sum(axis=0) > 0).sum() >= 1 for x in one_board_3min)
    assert all(((x > 0).sum(axis=1) == 3).sum() == 1 for x in one_board_3min)
    # labelled faults are not judged; a window without a healthy board is skipped
    w.y_fault_mask[:] = 1
    w.y_fault[:, :] = FAULT_CLASSES.index("noise")
    assert _after_start(Absent(), w, card) is None


def test_sparse_reads_judges_thinned_boards_where_the_gateway_would() -> None:
    from humigraph.model.evaluate import _sparse_reads

    card = ModelCard(fault_threshold=0.5)
    present = card.features.index("present")
    recs = [ramp("r", 0.01), ramp("q", -0.01)]  # reads every 60 s

    class Gaps:
        """Calls a node 'drift' when any step of its window has no read."""

        def run(self, x: np.ndarray, node_mask: np.ndarray) -> dict[str, np.ndarray]:
            gaps = (x[0, :, :, present] <= 0).any(axis=1)
            p = np.zeros((1, card.nodes, len(card.fault_classes)))
            p[0, :, 0] = np.where(gaps, 0.1, 0.9)
            p[0, :, FAULT_CLASSES.index("drift")] = np.where(gaps, 0.9, 0.1)
            return {"fault": p}

    res = _sparse_reads(Gaps(), recs, card, stride=1, max_windows=None, seed=0)
    assert res["period_s"] == [60, 120, 300, 600]
    for variant in ("one_board", "whole_site"):
        # at 1 min the ramps keep every read (they read every 60 s): no gap, no 'drift'
        assert res[variant]["false_fault_rate"] == [0.0, 1.0, 1.0, 1.0]
    one, site = res["one_board"]["node_windows"], res["whole_site"]["node_windows"]
    # windows judged: a read in the last two steps, i.e. all of them at 1 and 2 min, 2 in 5 and
    # 2 in 10
    n_windows = 2 * (90 - card.history + 1)
    assert one[0] == one[1] == n_windows
    assert 0.3 * n_windows < one[2] < 0.5 * n_windows and 0.1 * n_windows < one[3] < 0.3 * n_windows
    # every board thinned: twice as many judged, less the last windows (the recordings end with
    # their last reads)
    assert all(2 * o - 8 <= s <= 2 * o for o, s in zip(one, site, strict=True))


def test_evaluate_refuses_recordings_too_short(tiny: Path) -> None:
    from humigraph.errors import UsageError

    with pytest.raises(UsageError, match="no window of 1920 s"):
        evaluate(tiny, [ramp("short", 0.01, n_steps=20)])


# ---------------------------------------------------------------- the fault decision rule


def test_fault_decision_is_ok_unless_the_fault_probability_passes_the_threshold() -> None:
    probs = np.array(
        [
            [0.40, 0.30, 0.30, 0, 0, 0],  # argmax ok; p(fault) 0.6
            [0.20, 0.10, 0.70, 0, 0, 0],  # argmax spike; p(fault) 0.8
            [0.05, 0.15, 0.10, 0.5, 0.1, 0.1],  # p(fault) 0.95
        ]
    )
    assert ModelCard().fault_decision(probs).tolist() == [0, 2, 3]  # no threshold: argmax
    assert ModelCard(fault_threshold=0.5).fault_decision(probs).tolist() == [1, 2, 3]
    assert ModelCard(fault_threshold=0.85).fault_decision(probs).tolist() == [0, 0, 3]
    with pytest.raises(ModelError, match="fault_threshold"):
        ModelCard(fault_threshold=1.5).validate()


def test_insight_decision_uses_the_cards_threshold_per_insight() -> None:
    probs = np.array([[0.55, 0.12], [0.45, 0.30]])  # [windows, (occupancy, ventilation)]
    assert ModelCard().insight_decision(probs).tolist() == [[True, False], [False, False]]
    card = ModelCard(insight_threshold={"ventilation": 0.2})  # occupancy stays at 0.5
    assert card.insight_decision(probs).tolist() == [[True, False], [False, True]]
    card = ModelCard.from_json({**card.to_json(), "insight_threshold": {"occupancy": 0.6}})
    assert card.insight_decision(probs).tolist() == [[False, False], [False, False]]
    with pytest.raises(ModelError, match=r"insight_threshold\.ventilation.*\(0, 1\)"):
        ModelCard(insight_threshold={"ventilation": 1.0}).validate()
    with pytest.raises(ModelError, match=r"insight_threshold\.people.*names no insight"):
        ModelCard(insight_threshold={"people": 0.3}).validate()


def test_forecast_compand_is_undone_by_forecast_change_and_keeps_the_clip_range() -> None:
    from humigraph.model.card import forecast_compand

    comp = forecast_compand(2.0)
    card = ModelCard(forecast_compand=comp)
    change = np.array([-2.0, -0.5, -0.01, 0.0, 0.03, 0.2, 1.7, 2.0])
    out = comp["gain"] * np.arcsinh(change / comp["knee"])
    np.testing.assert_allclose(card.forecast_change(out), change, atol=1e-5)
    assert abs(out[-1] - 2.0) < 1e-5  # ±clip still means ±clip
    # an output step stands for 0.3 of the change it did uncompanded near 0, 3 times it at ±2
    step = 1e-3
    near0 = card.forecast_change(np.array([step]))[0] / step
    edge = (2.0 - card.forecast_change(np.array([2.0 - step]))[0]) / step
    assert 0.29 < near0 < 0.31 and 2.9 < edge < 3.1
    np.testing.assert_array_equal(ModelCard().forecast_change(out), out.astype(np.float32))
    again = ModelCard.from_json(card.to_json())
    assert again.forecast_compand == comp
    with pytest.raises(ModelError, match=r"forecast_compand\.knee.*positive"):
        ModelCard(forecast_compand={"knee": 0.0, "gain": 0.7}).validate()
    with pytest.raises(ModelError, match=r"forecast_compand must be null or"):
        ModelCard(forecast_compand={"knee": 0.2}).validate()


def test_max_read_interval_round_trips_sets_the_judged_spacing_and_must_be_positive() -> None:
    card = ModelCard(max_read_interval_s=600.0)
    assert ModelCard.from_json(card.to_json()).max_read_interval_s == 600.0
    assert ModelCard.from_json(ModelCard().to_json()).max_read_interval_s is None
    # the gateway's limit: the card's interval and half a step, else 1.5 steps; with the clock
    # run 10x faster (--time-scale 10) the card's seconds shrink with the step
    assert card.judged_spacing_s() == 630.0 and ModelCard().judged_spacing_s() == 90.0
    assert card.judged_spacing_s(6.0) == 63.0
    for bad in (0, -60, "600", True):
        with pytest.raises(ModelError, match=r"max_read_interval_s must be null or positive"):
            ModelCard(max_read_interval_s=bad).validate()  # type: ignore[arg-type]


def test_choose_insight_threshold_takes_the_best_mean_that_costs_no_source() -> None:
    sweep = {
        "occupancy": [
            {"threshold": 0.3, "balanced_accuracy": [0.80, 0.95, 0.70]},
            {"threshold": 0.5, "balanced_accuracy": [0.85, 0.85, 0.70]},
            {"threshold": 0.6, "balanced_accuracy": [0.86, 0.85, 0.70]},
            {"threshold": 0.7, "balanced_accuracy": [0.95, 0.70, 0.75]},  # best mean, costs one
        ],
        "ventilation": [
            {"threshold": 0.1, "balanced_accuracy": [0.80, 0.77]},  # equal mean, farther from 0.5
            {"threshold": 0.15, "balanced_accuracy": [0.82, 0.75]},
            {"threshold": 0.5, "balanced_accuracy": [0.63, 0.50]},
        ],
    }
    assert choose_insight_threshold(sweep) == {"occupancy": 0.6, "ventilation": 0.15}
    sweep["occupancy"].pop(2)  # nothing better that costs no source: 0.5 stays
    assert choose_insight_threshold(sweep)["occupancy"] == 0.5


def test_choose_fault_threshold_meets_the_goal_on_every_source_then_best_f1() -> None:
    sweep = [
        {"threshold": None, "macro_f1": [0.9, 0.9], "false_alarms_per_node_day": [5.0, 0.5]},
        {"threshold": 0.7, "macro_f1": [0.85, 0.8], "false_alarms_per_node_day": [1.0, 0.2]},
        {"threshold": 0.8, "macro_f1": [0.8, 0.8], "false_alarms_per_node_day": [0.5, 0.1]},
        {"threshold": 0.9, "macro_f1": [0.7, 0.6], "false_alarms_per_node_day": [0.1, 0.0]},
    ]
    assert choose_fault_threshold(sweep, goal=1.0) == 0.7
    assert choose_fault_threshold(sweep, goal=6.0) is None  # argmax already meets it
    assert choose_fault_threshold(sweep, goal=0.01) == 0.9  # none does: the fewest alarms


def test_poisson_rate_upper_is_garwoods_bound() -> None:
    # 0.5 * chi2.ppf(c, 2 (k + 1)) / T, from scipy, for a few (k, T, c)
    cases = [(0, 6.0, 0.8, 0.26824), (3, 6.0, 0.8, 0.91918), (50, 100.0, 0.8, 0.56891),
             (1000, 100.0, 0.8, 10.27534), (3, 6.0, 0.95, 1.29227)]  # fmt: skip
    for k, days, conf, want in cases:
        assert poisson_rate_upper(k, days, conf) == pytest.approx(want, rel=1e-4)
    assert poisson_rate_upper(2, 0.0, 0.8) == math.inf
    with pytest.raises(UsageError, match="confidence"):
        poisson_rate_upper(2, 5.0, 1.0)


def test_choose_fault_threshold_with_confidence_asks_more_of_a_briefly_seen_source() -> None:
    # 4 alarms in 6 node-days may well be a rate over 1 (bound 1.12), 50 in 100 hardly (0.57);
    # at 0.9 the briefly seen source has 1 alarm (bound 0.50)
    def row(thr: float | None, f1: float, episodes: list[int], days: list[float]) -> dict:
        return {"threshold": thr, "macro_f1": [f1, f1],
                "false_alarms_per_node_day": [k / d for k, d in zip(episodes, days, strict=True)],
                "false_alarm_episodes": episodes, "node_days": days}  # fmt: skip

    long = [row(0.8, 0.9, [50, 50], [100.0, 100.0]), row(0.9, 0.8, [10, 10], [100.0, 100.0])]
    assert choose_fault_threshold(long, goal=1.0, confidence=0.8) == 0.8
    short = [row(0.8, 0.9, [50, 4], [100.0, 6.0]), row(0.9, 0.8, [10, 1], [100.0, 6.0])]
    assert choose_fault_threshold(short, goal=1.0) == 0.8  # the plain rate passes both
    assert choose_fault_threshold(short, goal=1.0, confidence=0.8) == 0.9


def test_evaluate_scores_the_cards_rule_and_the_sweep_matches_it(tiny: Path, tmp_path) -> None:
    import shutil

    from humigraph.model.card import card_path, load_card

    recs = [ramp("a", 0.01), ramp("b", -0.01)]
    plain = evaluate(tiny, recs, max_windows=30, seed=2, baselines=False)["faults"]
    assert plain["fault_threshold"] is None and "argmax" not in plain
    sweep = fault_threshold_sweep(tiny, [recs], max_windows=30, seed=2, thresholds=(0.3,))
    assert [r["threshold"] for r in sweep] == [None, 0.3]
    assert sweep[0]["macro_f1"] == [plain["macro_f1"]]
    assert sweep[0]["false_alarms_per_node_day"] == [plain["false_alarms_per_node_day"]]
    # the same model with a rule in its card: scored by the rule, argmax beside it
    model = tmp_path / tiny.name
    shutil.copy(tiny, model)
    card = load_card(tiny)
    card.fault_threshold = 0.3
    card.save(card_path(model))
    ruled = evaluate(model, recs, max_windows=30, seed=2, baselines=False)["faults"]
    assert ruled["fault_threshold"] == 0.3
    assert ruled["argmax"] == {
        "macro_f1": plain["macro_f1"],
        "false_alarms_per_node_day": plain["false_alarms_per_node_day"],
    }
    assert ruled["macro_f1"] == sweep[1]["macro_f1"][0]
    assert ruled["false_alarms_per_node_day"] == sweep[1]["false_alarms_per_node_day"][0]
    assert "ok unless p(fault) > 0.3" in format_table({"faults": ruled})
