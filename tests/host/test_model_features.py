"""The model card and the feature encoding shared by training and the gateway (numpy only)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from humigraph.errors import ModelError
from humigraph.model.card import FEATURES, ModelCard, card_path, load_card
from humigraph.model.features import (
    decode_forecast,
    denormalize,
    encode,
    late_start,
    normalize,
    resample,
    unclip,
    window,
)


def test_resample_bins_means_and_failures() -> None:
    # 3 steps of 60 s ending at 180: (0,60], (60,120], (120,180]
    ts = np.array([10.0, 60.0, 70.0, 100.0, 130.0])
    t = np.array([20.0, 22.0, 30.0, np.nan, 25.0])
    rh = np.array([40.0, 42.0, 50.0, np.nan, 45.0])
    ok = np.array([True, True, True, False, True])
    g = resample(ts, t, rh, ok, end=180.0, step=60.0, n=3)
    assert g.t[0] == pytest.approx(21.0)  # 60.0 belongs to the step ending at 60
    assert g.rh[1] == pytest.approx(50.0)
    assert g.present.tolist() == [1.0, 1.0, 1.0]
    assert g.fail.tolist() == [0.0, 0.5, 0.0]
    # range of the good reads in each step; a single read has none
    assert g.t_range.tolist() == [2.0, 0.0, 0.0] and g.rh_range.tolist() == [2.0, 0.0, 0.0]


def test_resample_ignores_readings_outside_the_window() -> None:
    ts = np.array([-5.0, 0.0, 181.0])
    g = resample(ts, np.ones(3), np.ones(3), np.ones(3, bool), end=180, step=60, n=3)
    assert g.present.tolist() == [0.0, 0.0, 0.0]
    assert np.isnan(g.t).all() and not g.t_range.any()


def test_encode_fills_gaps_and_masks_empty_nodes() -> None:
    card = ModelCard(history=4)
    t = np.array([[np.nan, 20.0, np.nan, 22.0], [np.nan] * 4])
    rh = np.array([[np.nan, 40.0, np.nan, 60.0], [np.nan] * 4])
    present = np.isfinite(t).astype(float)
    enc = encode(t, rh, present, np.zeros_like(t), card)
    assert enc.x.shape == (64, 4, len(card.features)) and enc.mask.tolist()[:3] == [1.0, 0.0, 0.0]
    f = {name: enc.x[0, :, i] for i, name in enumerate(card.features)}
    # leading gap back-filled, inner gap carried forward
    assert f["t"] * 5.0 + 21.0 == pytest.approx([20.0, 20.0, 20.0, 22.0], abs=1e-5)
    assert f["dt"] == pytest.approx([-2.0, -2.0, -2.0, 0.0])
    assert f["drh"] == pytest.approx([-4.0, -4.0, -4.0, 0.0])
    assert f["present"].tolist() == [0.0, 1.0, 0.0, 1.0]
    assert not enc.x[1:].any()
    assert enc.last_t[0] == 22.0 and enc.last_rh[0] == 60.0


def test_still_marks_exact_repeats_of_present_steps_only() -> None:
    card = ModelCard(history=5)
    t = np.array([[20.0, 20.0, np.nan, 20.0, 20.01]])
    rh = np.array([[40.0, 40.0, np.nan, 40.0, 40.0]])
    present = np.isfinite(t).astype(float)
    enc = encode(t, rh, present, np.zeros_like(t), card)
    still = enc.x[0, :, card.features.index("still")]
    # step 1 repeats step 0; steps 2-3 border a gap (no evidence); step 4 moved by 0.01 °C
    assert still.tolist() == [0.0, 1.0, 0.0, 0.0, 0.0]


def test_spread_is_the_wider_range_in_change_units_and_window_carries_it() -> None:
    card = ModelCard(history=2, step_s=60)
    # node 0: six reads per step, one spike of +3 °C in the first step; node 1: one read per step
    ts0 = np.arange(5.0, 120.0, 10.0)
    t0 = np.full(len(ts0), 20.0)
    t0[2] = 23.0
    series = [
        (ts0, t0, np.full(len(ts0), 40.0), np.ones(len(ts0), bool)),
        (np.array([30.0, 90.0]), np.array([20.0, 21.0]), np.array([40.0, 41.0]), [1, 1]),
    ]
    enc = window(series, 120.0, card)
    spread = enc.x[:, :, card.features.index("spread")]
    scale = card.normalization["dt"]["scale"]
    assert spread[0].tolist() == pytest.approx([3.0 / scale, 0.0])
    assert not spread[1].any()


def test_reads_is_the_share_of_a_full_step_and_only_on_cards_that_list_it() -> None:
    card = ModelCard(history=2, step_s=60, features=(*FEATURES, "reads"))
    card.validate()
    ok6 = np.ones(12, bool)
    ok6[7:9] = False  # two of the second step's six reads failed
    series = [
        (np.arange(5.0, 120.0, 10.0), np.full(12, 20.0), np.full(12, 40.0), ok6),  # every 10 s
        (np.array([30.0, 90.0]), np.array([20.0, 21.0]), np.array([40.0, 41.0]), [1, 1]),  # 60 s
        (np.arange(2.0, 120.0, 2.0), np.full(59, 20.0), np.full(59, 40.0), np.ones(59, bool)),
    ]
    g = resample(*series[0], end=120.0, step=60.0, n=2)
    assert g.reads.tolist() == [6.0, 4.0]
    enc = window(series, 120.0, card)
    reads = enc.x[:, :, card.features.index("reads")]
    assert reads[0] == pytest.approx([1.0, 4 / 6])
    assert reads[1] == pytest.approx([1 / 6, 1 / 6])  # one read a step: no spread to show
    assert reads[2].tolist() == [1.0, 1.0]  # a read every 2 s is no fuller than every 10 s
    assert not reads[3:].any()
    # without counts (a hand-made grid) every present step counts as full
    t = np.array([[20.0, np.nan]])
    enc = encode(t, t + 20, np.isfinite(t).astype(float), np.zeros((1, 2)), card)
    assert enc.x[0, :, card.features.index("reads")].tolist() == [1.0, 0.0]
    # the cards before it have no such column
    assert window(series, 120.0, ModelCard(history=2)).x.shape[-1] == len(FEATURES)


def test_window_and_decode_round_trip() -> None:
    card = ModelCard(history=3, step_s=60)
    series = [
        (
            np.array([30.0, 90.0, 150.0]),
            np.array([20.0, 21, 22]),
            np.array([40.0, 41, 42]),
            [1, 1, 1],
        ),
        (np.array([150.0]), np.array([18.0]), np.array([55.0]), [1]),
    ]
    enc = window(series, 180.0, card)
    assert enc.mask[:2].tolist() == [1.0, 1.0]
    out = np.zeros((1, 64, 3, 2), np.float32)
    out[0, 0, 2] = [0.5, -1.0]  # +0.5 * 1.0 °C, -1.0 * 5 %RH at +30 min
    abs_ = decode_forecast(out, enc.last_t, enc.last_rh, card)
    assert abs_.shape == (2, 3, 2)
    assert abs_[0, 2].tolist() == pytest.approx([22.5, 37.0])
    assert abs_[1, 0].tolist() == pytest.approx([18.0, 55.0])


def test_per_horizon_target_scale_decodes_each_horizon_with_its_own_scale() -> None:
    card = ModelCard(history=3, step_s=60, target_scale={"t": [0.25, 0.5, 1.0], "rh": 5.0})
    assert card.scale_array().tolist() == [[0.25, 5.0], [0.5, 5.0], [1.0, 5.0]]
    out = np.zeros((1, 64, 3, 2), np.float32)
    out[0, 0] = [[0.5, 0.1], [0.5, 0.1], [0.5, 0.1]]
    abs_ = decode_forecast(out, np.array([20.0]), np.array([40.0]), card)
    assert abs_[0, :, 0].tolist() == pytest.approx([20.125, 20.25, 20.5])
    assert abs_[0, :, 1].tolist() == pytest.approx([40.5] * 3)
    # the old single-number form is the same scale at every horizon
    assert ModelCard().scale_array().tolist() == [[1.0, 5.0]] * 3


def test_per_horizon_target_scale_survives_the_card_file_and_old_cards_load(tmp_path) -> None:
    model = tmp_path / "m.tflite"
    model.write_bytes(b"")
    ModelCard(target_scale={"t": [0.5, 1.0, 1.0], "rh": [2.5, 5.0, 5.0]}).save(card_path(model))
    back = load_card(model)
    assert back.scale_array().tolist() == [[0.5, 2.5], [1.0, 5.0], [1.0, 5.0]]
    d = json.loads(card_path(model).read_text())
    assert d["target_scale"] == {"t": [0.5, 1.0, 1.0], "rh": [2.5, 5.0, 5.0]}
    d["target_scale"] = {"t": 1.0, "rh": 5.0}  # a card written before per-horizon scales
    card_path(model).write_text(json.dumps(d))
    assert load_card(model).scale_array().tolist() == [[1.0, 5.0]] * 3
    for bad, why in (
        ({"t": [0.5, 1.0], "rh": 5.0}, "2 scales for 3 horizons"),
        ({"t": [0.5, 0.0, 1.0], "rh": 5.0}, "positive number"),
        ({"t": 1.0}, "target_scale.rh"),
    ):
        d["target_scale"] = bad
        card_path(model).write_text(json.dumps(d))
        with pytest.raises(ModelError, match=why):
            load_card(model)


def test_normalize_and_denormalize_invert_each_other() -> None:
    card = ModelCard()
    change = np.array([-2.0, -0.01, 0.0, 0.5])
    z = normalize("dt", change, card)
    assert z == pytest.approx(change / card.normalization["dt"]["scale"])
    assert denormalize("dt", z, card) == pytest.approx(change)
    assert denormalize("t", normalize("t", np.array([18.5]), card), card) == pytest.approx([18.5])


def test_input_clip_bounds_every_feature_on_the_host_and_unclip_inverts_it() -> None:
    card = ModelCard(history=2, input_clip=4.0)
    card.validate()
    # a 10 °C jump: dt = -20 in the card's units, far past the clip
    t, rh = np.array([[20.0, 30.0]]), np.array([[40.0, 40.0]])
    enc = encode(t, rh, np.ones_like(t), np.zeros_like(t), card)
    dt = enc.x[0, :, card.features.index("dt")]
    raw = -10.0 / card.normalization["dt"]["scale"]
    assert dt[0] == pytest.approx(4.0 * np.tanh(raw / 4.0)) and abs(dt[0]) < 4.0
    # levels near the centre pass almost unchanged; unclip restores them for the baselines
    t_col = enc.x[0, :, card.features.index("t")]
    assert unclip(t_col, card) == pytest.approx((t[0] - 21.0) / 5.0, abs=1e-5)
    assert (unclip(enc.x, ModelCard(history=2)) == enc.x).all()  # no clip: unchanged
    with pytest.raises(ModelError, match="input_clip"):
        ModelCard(input_clip=0).validate()


def test_encode_refuses_a_site_larger_than_the_model() -> None:
    card = ModelCard(nodes=2, history=2)
    with pytest.raises(ValueError, match="3 nodes"):
        encode(np.ones((3, 2)), np.ones((3, 2)), np.ones((3, 2)), np.zeros((3, 2)), card)


def test_card_round_trip_and_errors(tmp_path) -> None:
    model = tmp_path / "m.tflite"
    model.write_bytes(b"")
    with pytest.raises(ModelError, match="model card missing"):
        load_card(model)
    card = ModelCard(model_id="x-1", metrics={"mae": 0.1})
    card.save(card_path(model))
    back = load_card(model)
    assert back.model_id == "x-1" and back.horizons_s == (300, 900, 1800)
    assert back.output_shapes["forecast"] == (1, 64, 3, 2)
    d = json.loads(card_path(model).read_text())
    d["step_s"] = 0
    card_path(model).write_text(json.dumps(d))
    with pytest.raises(ModelError, match="step_s"):
        load_card(model)


def test_card_and_features_do_not_import_tensorflow() -> None:
    code = (
        "import sys, humigraph.model.card, humigraph.model.features, humigraph.runtime; "
        "print('tensorflow' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_late_start_is_the_window_of_a_board_that_started_then() -> None:
    # three boards reading every 10 s with failed reads, repeats and a silent stretch; boards 1
    # and 2 restarted at a step boundary: the encoded window equals late_start of the full one
    card = ModelCard(history=16, input_clip=4.0, features=(*FEATURES, "reads"))
    rng = np.random.default_rng(3)
    end = 100_000.0
    ts = end - 16 * 60 + 10.0 * np.arange(96)
    series = []
    for i in range(3):
        t = np.round(21 + np.cumsum(rng.normal(0, 0.05, len(ts))), 1)
        rh = np.round(45 + np.cumsum(rng.normal(0, 0.2, len(ts))), 1)
        t[36:66] = t[36]  # a stuck stretch over steps 6-10: "still" steps
        rh[36:66] = rh[36]
        ok = rng.random(len(ts)) > 0.15
        if i == 2:
            ok[24:42] = False  # step 4 and 5 only failed reads, step 6 partly
        series.append((ts, t, rh, ok))
    full = window(series, end, card)
    for first in (1, 4, 9):
        cut = end - (card.history - first) * card.step_s
        late = [s if i == 0 else tuple(a[s[0] > cut] for a in s) for i, s in enumerate(series)]
        want = window(late, end, card)
        x = full.x.copy()
        assert late_start(x, [1, 2], first, card) == [1, 2]
        np.testing.assert_allclose(x, want.x, atol=1e-6)
        assert np.array_equal(want.mask, full.mask)
    # no good read after the start: nothing to carry back, the window is left alone
    x = full.x.copy()
    x[1, 3:, card.features.index("present")] = 0.0
    assert late_start(x, [1], 3, card) == [] and late_start(x, [0], 0, card) == []
