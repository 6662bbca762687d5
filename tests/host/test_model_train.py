"""A tiny reasoning model trains a few steps, resumes, fine-tunes, quantizes to pure INT8 and runs
through humigraph.runtime (TensorFlow needed: the [train] extra)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from humigraph.errors import ModelError  # noqa: E402
from humigraph.model.card import ModelCard, forecast_compand  # noqa: E402
from humigraph.model.data_types import Windows  # noqa: E402
from humigraph.model.features import encode  # noqa: E402

# companded like the cards `humigraph train` writes
CARD = ModelCard(model_id="tiny", nodes=8, history=16, forecast_compand=forecast_compand(2.0))


def synthetic_windows(n: int, seed: int, labels: bool = True) -> Windows:
    """Sites of 2..6 nodes sharing a random walk; node 0 of every third window is stuck (labelled
    class 1), targets are the shared walk's next moves."""
    rng = np.random.default_rng(seed)
    card = CARD
    h, k = card.history, len(card.horizons_s)
    x = np.zeros((n, card.nodes, h, len(card.features)), np.float32)
    mask = np.zeros((n, card.nodes), np.float32)
    y_fc = np.zeros((n, card.nodes, k, 2), np.float32)
    y_fault = np.zeros((n, card.nodes), np.int64)
    for i in range(n):
        m = int(rng.integers(2, 7))
        walk = np.cumsum(rng.normal(0, 0.05, h + 30))
        t = 21 + rng.normal(0, 1, (m, 1)) + walk[None, :h] + rng.normal(0, 0.02, (m, h))
        rh = 45 + rng.normal(0, 5, (m, 1)) - 3 * walk[None, :h]
        if i % 3 == 0:
            t[0, h // 2 :] = t[0, h // 2]
            y_fault[i, 0] = 1
        enc = encode(t, rh, np.ones((m, h)), np.zeros((m, h)), card)
        x[i], mask[i] = enc.x, enc.mask
        for j, hs in enumerate((5, 15, 30)):
            y_fc[i, :m, j, 0] = walk[h - 1 + hs] - walk[h - 1]
            y_fc[i, :m, j, 1] = -3 * (walk[h - 1 + hs] - walk[h - 1]) / 5
    fm = np.repeat(mask[..., None], k, axis=-1)
    return Windows(
        x=x,
        node_mask=mask,
        y_forecast=y_fc,
        y_forecast_mask=fm,
        y_fault=y_fault,
        y_fault_mask=mask.copy() if labels else np.zeros_like(mask),
        y_insight=(rng.random((n, 2)) > 0.5).astype(np.float32),
        y_insight_mask=np.ones((n, 2), np.float32) if labels else np.zeros((n, 2), np.float32),
        last=np.zeros((n, card.nodes, 2), np.float32),
        rec=np.zeros(n, np.int64),
        end_ts=np.arange(n, dtype=np.float64),
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from humigraph.model.arch import ArchConfig
    from humigraph.model.train import TrainConfig, train

    out = tmp_path_factory.mktemp("train")
    cfg = TrainConfig(epochs=2, batch=16, steps_per_epoch=4, progress=False, seed=3)
    tr, va = synthetic_windows(96, 0), synthetic_windows(32, 1)
    arch = ArchConfig(hidden=8, key=4, embed=2)
    res = train(lambda epoch: tr, va, CARD, out, cfg, arch=arch)
    return {"out": out, "res": res, "cfg": cfg, "arch": arch, "tr": tr, "va": va}


def test_source_balance_weighs_each_source_alike_in_its_own_scale() -> None:
    from humigraph.model.train import SourceBalance, target_scales

    big = synthetic_windows(30, 5)
    small = big.take(np.arange(10))
    small.y_forecast = small.y_forecast * 0.2  # a calm source: its changes a fifth of the other's
    w = Windows.concat([big, small])
    w.source = np.array([0] * 30 + [2] * 10)  # type: ignore[attr-defined]  (SPEC index)
    bal = SourceBalance(w)
    assert bal.weights == pytest.approx({0: 40 / 60, 2: 40 / 20})
    scale, weight = bal.batch(w, np.array([0, 35]))
    np.testing.assert_allclose(scale[0], target_scales(big), rtol=1e-6)
    np.testing.assert_allclose(scale[1], target_scales(small), rtol=1e-6)
    np.testing.assert_allclose(scale[1], 0.2 * target_scales(big.take(np.arange(10))), rtol=1e-5)
    assert weight.tolist() == pytest.approx([40 / 60, 40 / 20])
    assert float(np.mean(bal.batch(w, np.arange(40))[1])) == pytest.approx(1.0)
    # a factor per source tilts the balance (train --source-weight); sources without one keep 1
    tilted = SourceBalance(w, factors=(1.0, 1.0, 2.0))
    assert tilted.weights == pytest.approx({0: 40 / 60, 2: 2 * 40 / 20})
    assert SourceBalance(w, factors=(3.0,)).weights == pytest.approx({0: 3 * 40 / 60, 2: 40 / 20})
    # windows without a source (hand-made, or balance off): one scale for all, weight 1
    for plain in (SourceBalance(big), SourceBalance(w, enabled=False)):
        scale, weight = plain.batch(w, np.array([0, 35]))
        np.testing.assert_allclose(scale[1], plain.global_scale)
        assert weight.tolist() == [1.0, 1.0]


def test_insight_classes_weigh_alike_within_each_source_when_asked() -> None:
    from humigraph.model.train import SourceBalance, _batch, insight_class_weights

    w = synthetic_windows(40, 9)
    w.source = np.array([0] * 20 + [1] * 20)  # type: ignore[attr-defined]
    w.y_insight[:, 0] = 0.0
    w.y_insight[:5, 0] = 1.0  # source 0: occupied 5 windows of 20
    w.y_insight[20:38, 0] = 1.0  # source 1: 18 of 20, but 35.. are unlabelled and do not count
    w.y_insight[:, 1] = 0.0  # ventilation: never seen, nothing to balance
    w.y_insight_mask[35:, :] = 0.0
    cw = insight_class_weights(w.take(np.arange(20)))
    assert cw[:, 0].tolist() == pytest.approx([20 / 30, 20 / 10])  # no, yes: half the total each
    assert cw[:, 1].tolist() == [1.0, 1.0]
    # source 1 has 15 labelled windows, 15 yes: one class only, nothing to balance
    assert insight_class_weights(w.take(np.arange(20, 40)))[:, 0].tolist() == [1.0, 1.0]
    w.y_insight[33, 0] = 0.0  # now 14 yes, 1 no: the no would weigh 7.5, capped
    assert insight_class_weights(w.take(np.arange(20, 40)), cap=2.0)[:, 0].tolist() == (
        pytest.approx([2.0, 15 / 28])
    )
    idx = np.array([0, 10, 33, 34])
    kw = dict(balance=SourceBalance(w), permute=False, card=CARD)
    on = _batch(w, idx, None, balance_insight=True, **kw)["insight_w"]
    assert on[:, 0].tolist() == pytest.approx([2.0, 2 / 3, 2.0, 15 / 28])
    assert (on[:, 1] == 1.0).all()
    assert (_batch(w, idx, None, **kw)["insight_w"] == 1.0).all()  # off by default


def test_batches_start_healthy_boards_late_and_leave_faulty_ones_whole() -> None:
    from humigraph.model.train import SourceBalance, _batch

    w = synthetic_windows(60, 7)  # node 0 of every third window is stuck (labelled)
    present = CARD.features.index("present")
    idx = np.arange(len(w))
    kw = dict(balance=SourceBalance(w), permute=False, card=CARD)
    b = _batch(w, idx, np.random.default_rng(0), late=1.0, **kw)
    started = (b["x"][..., 0, present] <= 0) & (w.node_mask > 0)  # no read in the first step
    assert started.any(axis=1).all()  # every window: one board or the whole site
    assert not started[w.y_fault == 1].any()  # a labelled fault keeps its history
    one = started.sum(axis=1) == 1
    assert 0.4 < one.mean() < 0.95  # mostly one board; now and then every healthy board
    untouched = ~started[..., None, None] & (w.node_mask[..., None, None] > 0)
    assert np.array_equal(np.where(untouched, b["x"], 0), np.where(untouched, w.x, 0))
    assert np.array_equal(b["y_forecast"], w.y_forecast)  # the targets stay
    # off by default, and never without a generator (validation batches)
    for late, rng in ((0.0, np.random.default_rng(0)), (1.0, None)):
        assert np.array_equal(_batch(w, idx, rng, late=late, **kw)["x"], w.x)


def test_batches_weigh_healthy_boards_on_a_steep_climb() -> None:
    from humigraph.model.features import STEEP_RH, steep_nodes
    from humigraph.model.train import SourceBalance, _batch

    h = CARD.history
    ramp = np.linspace(0, 1, h)
    t = np.full((4, h), 21.0)
    rh = 45.0 + np.stack([
        (STEEP_RH + 5) * ramp,  # a shower: healthy, steep
        (STEEP_RH - 5) * ramp,  # a slower climb
        (STEEP_RH + 5) * ramp,  # as steep, but labelled a fault below
        np.zeros(h),
    ])  # fmt: skip
    t[3] += 4.0 * ramp  # the oven: 4 °C in the window
    enc = encode(t, rh, np.ones((4, h)), np.zeros((4, h)), CARD)
    w = synthetic_windows(1, 0)
    w.x[0], w.node_mask[0] = enc.x, enc.mask
    w.y_fault[0] = 0
    w.y_fault[0, 2] = 3
    assert steep_nodes(w.x, CARD)[0, :5].tolist() == [True, False, True, True, False]
    kw = dict(balance=SourceBalance(w), permute=False, card=CARD)
    b = _batch(w, np.array([0]), None, steep_ok_weight=4.0, **kw)
    assert b["fault_w"][0, :5].tolist() == [4.0, 1.0, 1.0, 4.0, 1.0]  # the fault keeps its weight
    assert (_batch(w, np.array([0]), None, **kw)["fault_w"] == 1.0).all()  # off by default


def test_epochs_whose_windows_differ_in_number_train(tmp_path: Path) -> None:
    """Thinned boards end their recordings earlier, so an epoch may bring fewer windows."""
    from humigraph.model.arch import ArchConfig
    from humigraph.model.train import TrainConfig, train

    tr, va = synthetic_windows(64, 0), synthetic_windows(16, 1)
    cfg = TrainConfig(epochs=2, batch=16, progress=False, seed=3)
    res = train(
        lambda epoch: tr if epoch == 1 else tr.take(np.arange(40)),
        va, CARD, tmp_path, cfg, arch=ArchConfig(hidden=8, key=4, embed=2),
    )  # fmt: skip
    assert res.epochs_run == 2


def test_training_writes_a_savedmodel_and_resumes(trained: dict) -> None:
    from humigraph.model.train import TrainConfig, train

    res, out = trained["res"], trained["out"]
    assert res.epochs_run == 2 and len(res.history) == 2
    assert (res.savedmodel / "saved_model.pb").is_file()
    card = json.loads((res.savedmodel / "humigraph-card.json").read_text())
    assert card["training"]["best_epoch"] in (1, 2)
    assert all(np.isfinite(r["val_loss"]) for r in res.history)
    # same out dir, one more epoch: continues after epoch 2 instead of starting over
    cfg = TrainConfig(**{**trained["cfg"].__dict__, "epochs": 3})
    again = train(lambda epoch: trained["tr"], trained["va"], CARD, out, cfg, arch=trained["arch"])
    assert again.epochs_run == 3
    assert [r["epoch"] for r in again.history] == [1, 2, 3]
    assert again.history[:2] == res.history


def test_fine_tune_from_a_savedmodel_with_forecast_labels_only(
    trained: dict, tmp_path: Path
) -> None:
    from humigraph.model.arch import load_model
    from humigraph.model.train import TrainConfig, train

    base = load_model(trained["res"].savedmodel)
    unlabelled = synthetic_windows(48, 5, labels=False)
    cfg = TrainConfig(epochs=1, batch=16, steps_per_epoch=2, progress=False, lr=1e-4)
    res = train(unlabelled, unlabelled, CARD, tmp_path, cfg, init=trained["res"].savedmodel)
    assert np.isfinite(res.best_val)
    assert res.history[0]["val_fault"] == 0.0  # masked out: no labels, no loss
    tuned = load_model(res.savedmodel)
    w0, w1 = base.get_weights(), tuned.get_weights()
    assert w0.keys() == w1.keys()
    moved = max(float(np.abs(w0[k] - w1[k]).max()) for k in w0)
    assert 0 < moved < 0.05  # started from the base model and moved a little


def test_a_card_with_the_reads_feature_builds_and_runs_its_model() -> None:
    from humigraph.model.arch import ArchConfig, SiteModel
    from humigraph.model.card import FEATURES

    card = ModelCard(nodes=8, history=16, features=(*FEATURES, "reads"))
    model = SiteModel(card, ArchConfig(hidden=8, key=4, embed=2))
    t = 21 + np.cumsum(np.full((3, 16), 0.1), axis=1)
    enc = encode(t, t + 20, np.ones((3, 16)), np.zeros((3, 16)), card, reads=np.ones((3, 16)))
    out = model.forward(enc.x[None], enc.mask[None])
    assert out["fault"].shape == (1, 8, len(card.fault_classes))
    assert np.isfinite(out["fault"].numpy()).all()


def test_quantize_roundtrip_through_the_runtime(trained: dict, tmp_path: Path) -> None:
    from humigraph.model.quantize import check_int8, convert, fp32_path_for
    from humigraph.runtime import Runtime

    cal = synthetic_windows(200, 7)
    out = tmp_path / "tiny-int8.tflite"
    int8, fp32, ops, corrected, symmetric = convert(trained["res"].savedmodel, cal, out)
    assert fp32 == fp32_path_for(out) == tmp_path / "tiny-fp32.tflite"
    assert corrected is not None and corrected["windows"] == 200 and corrected["layers"] > 0
    # the messages' BATCH_MATMUL operand got zero point 0 and a step no more than half again
    (sym,) = symmetric
    assert sym["step_before"] < sym["step_after"] <= 1.5 * sym["step_before"]
    from humigraph.runtime import interpreter_class

    it = interpreter_class()[0](model_path=str(int8))  # not allocated: no DELEGATE nodes yet
    details = {d["index"]: d for d in it.get_tensor_details()}
    bmm = [op for op in it._get_ops_details() if op["op_name"] == "BATCH_MATMUL"]
    assert len(bmm) == 2  # the similarity's and the messages'
    assert all(details[op["inputs"][1]]["quantization"][1] == 0 for op in bmm)
    assert ops and all(d == "int8" for op in ops for d in op["outputs"] if op["op"] != "QUANTIZE")
    assert [op["op"] for op in ops].count("SOFTMAX") == 2  # the adjacency's and the fault head's
    CARD.save(int8.with_suffix(".json"))
    CARD.save(fp32.with_suffix(".json"))
    rq, rf = Runtime(int8), Runtime(fp32)
    assert rq.input_dtypes["x"] == np.int8 and rf.input_dtypes["x"] == np.float32
    w = synthetic_windows(8, 9)
    for i in range(len(w)):
        q = rq.run(x=w.x[i : i + 1], node_mask=w.node_mask[i : i + 1])
        f = rf.run(x=w.x[i : i + 1], node_mask=w.node_mask[i : i + 1])
        for name, shape in CARD.output_shapes.items():
            assert q[name].shape == f[name].shape == shape
        live = w.node_mask[i] > 0
        np.testing.assert_allclose(q["router"][0][live].sum(-1), 1.0, atol=0.02)
        np.testing.assert_allclose(q["fault"][0][live].sum(-1), 1.0, atol=0.03)
        adj = f["adjacency"][0]
        assert np.all(adj[:, ~live] == 0) and np.all(np.diag(adj) == 0)
        # INT8 close to float where the model has something to say
        assert np.abs(q["forecast"] - f["forecast"])[0][live].mean() < 0.05
        assert np.abs(q["fault"] - f["fault"])[0][live].mean() < 0.05
    with pytest.raises(ModelError, match="stayed float"):
        check_int8(fp32)
    # the runtime hands out the change (the losses' units), not the companded output
    from humigraph.model.arch import load_model

    model = load_model(trained["res"].savedmodel)
    o = model.forward(w.x, w.node_mask)
    change = o["change"].numpy()
    np.testing.assert_allclose(change, CARD.forecast_change(o["forecast"].numpy()), atol=1e-5)
    assert not np.allclose(change, o["forecast"].numpy(), atol=1e-3)
    for i in range(len(w)):
        f = rf.run(x=w.x[i : i + 1], node_mask=w.node_mask[i : i + 1])
        np.testing.assert_allclose(f["forecast"][0], change[i], atol=1e-4)


def _linear_bias_shift(int8: Path, fp32: Path, w: Windows) -> list[np.ndarray]:
    """Per FULLY_CONNECTED layer of ``int8``, the mean over ``w`` of its linear part (int8 weights
    and bias, dequantized) minus the float twin's on the same input, in steps of the int8 bias."""
    from humigraph.model.bias_correction import (
        _fc_ops,
        _interpreter,
        _quantized_inputs,
        _real_rows,
    )

    q, f = _interpreter(int8, keep=True), _interpreter(fp32, keep=False)
    qt = {d["index"]: d for d in q.get_tensor_details()}
    ft = {d["index"]: d for d in f.get_tensor_details()}
    float_ops = _fc_ops(f)
    layers = []
    for op in _fc_ops(q):
        wt, bt = qt[op["inputs"][1]], qt[op["inputs"][2]]
        ws = np.asarray(wt["quantization_parameters"]["scales"])[:, None]
        wq = q.get_tensor(wt["index"]) * ws
        twin = [
            o for o in float_ops
            if tuple(ft[o["inputs"][1]]["shape"]) == wq.shape
            and np.abs(f.get_tensor(ft[o["inputs"][1]]["index"]) - wq).max() <= ws.max() / 2 + 1e-6
        ]  # fmt: skip
        assert len(twin) == 1
        wf = f.get_tensor(ft[twin[0]["inputs"][1]]["index"])
        bf = f.get_tensor(ft[twin[0]["inputs"][2]]["index"])
        bscale = np.asarray(bt["quantization_parameters"]["scales"])
        bq = q.get_tensor(bt["index"]) * bscale
        layers.append((op, wq - wf, bq - bf, bscale, []))
    for i in range(len(w)):
        _quantized_inputs(q, w.x[i : i + 1], w.node_mask[i : i + 1], 4.0)
        q.invoke()
        for op, dw, db, _, rows in layers:
            t = qt[op["inputs"][0]]
            scale, zero = t["quantization"]
            x = (q.get_tensor(t["index"]).astype(np.float64) - zero) * scale
            rows.append(_real_rows(x, w.node_mask[i]) @ dw.T + db)
    return [np.concatenate(rows).mean(axis=0) / bscale for _, _, _, bscale, rows in layers]


def test_bias_correction_takes_out_the_mean_shift_of_rounded_weights(
    trained: dict, tmp_path: Path
) -> None:
    """Each layer's linear part, INT8 against float on the calibration windows: the converter's
    rounding leaves a mean shift of several bias steps on some output channel; corrected, every
    channel is within one step (the bias's own rounding and the float bias's)."""
    from humigraph.model.quantize import convert

    cal = synthetic_windows(200, 7)
    raw = convert(
        trained["res"].savedmodel, cal, tmp_path / "raw-int8.tflite", bias_correction=False
    )
    fixed = convert(trained["res"].savedmodel, cal, tmp_path / "fixed-int8.tflite")
    assert raw.bias_correction is None
    assert fixed.bias_correction is not None and fixed.bias_correction["layers"] > 0
    before = _linear_bias_shift(raw.int8, raw.fp32, cal)
    after = _linear_bias_shift(fixed.int8, fixed.fp32, cal)
    assert len(before) == len(after) == fixed.bias_correction["layers"]
    assert max(float(np.abs(b).max()) for b in before) > 3.0
    for a in after:
        assert np.abs(a).max() <= 1.0 + 1e-6


def test_a_sigmoid_adjacency_trains_and_leaves_one_softmax_in_the_int8_graph(
    tmp_path: Path,
) -> None:
    """``train --adjacency sigmoid`` (not the default): each pair's own LOGISTIC instead of a
    SOFTMAX over the row, so only the fault head's SOFTMAX stays outside XNNPACK."""
    from humigraph.model.arch import ArchConfig, SiteModel, load_model
    from humigraph.model.quantize import convert
    from humigraph.model.train import TrainConfig, train
    from humigraph.runtime import Runtime

    with pytest.raises(ModelError, match="adjacency 'relu': use one of softmax, sigmoid"):
        SiteModel(CARD, ArchConfig(hidden=8, key=4, embed=2, adjacency="relu"))
    arch = ArchConfig(hidden=8, key=4, embed=2, adjacency="sigmoid")
    cfg = TrainConfig(epochs=1, batch=16, steps_per_epoch=3, progress=False, seed=2)
    tr, va = synthetic_windows(64, 0), synthetic_windows(16, 1)
    res = train(lambda epoch: tr, va, CARD, tmp_path / "m", cfg, arch=arch)
    assert load_model(res.savedmodel).arch.adjacency == "sigmoid"
    int8, fp32, ops, _, _ = convert(
        res.savedmodel, synthetic_windows(200, 7), tmp_path / "s.tflite"
    )
    kinds = [op["op"] for op in ops]
    assert kinds.count("SOFTMAX") == 1  # the fault head's; the softmax model has two
    CARD.save(int8.with_suffix(".json"))
    w, rt = synthetic_windows(4, 9), Runtime(int8)
    for i in range(len(w)):
        adj = rt.run(x=w.x[i : i + 1], node_mask=w.node_mask[i : i + 1])["adjacency"][0]
        live = w.node_mask[i] > 0
        assert np.all(adj[:, ~live] == 0) and np.all(np.diag(adj) == 0)
        assert adj.min() >= 0 and adj.max() <= 1


def test_quantize_needs_200_calibration_windows(trained: dict, tmp_path: Path) -> None:
    from humigraph.model.quantize import convert

    with pytest.raises(ModelError, match="at least 200"):
        convert(trained["res"].savedmodel, synthetic_windows(20, 7), tmp_path / "m-int8.tflite")


def test_load_model_names_what_is_missing(tmp_path: Path) -> None:
    from humigraph.model.arch import load_model

    with pytest.raises(ModelError, match="no such SavedModel"):
        load_model(tmp_path / "nope")
    (tmp_path / "sm").mkdir()
    with pytest.raises(ModelError, match="humigraph-arch.json missing"):
        load_model(tmp_path / "sm")


def test_cli_train_refuses_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from humigraph.errors import HumigraphError, UsageError
    from humigraph.model import commands

    parser = argparse.ArgumentParser()
    commands.register(parser.add_subparsers())
    args = parser.parse_args(["train", "--data", "nosuch:thing", "--epochs", "0"])
    with pytest.raises(UsageError, match="--epochs"):
        args.func(args)
    args = parser.parse_args(["train", "--data", "nosuch:thing", "--sleep-fraction", "1.5"])
    with pytest.raises(UsageError, match="--sleep-fraction"):
        args.func(args)
    args = parser.parse_args(["train", "--data", "nosuch:thing", "--sleep-fault-share", "-0.1"])
    with pytest.raises(UsageError, match="--sleep-fault-share"):
        args.func(args)
    args = parser.parse_args(["train", "--data", "nosuch:thing", "--sleep-fault-periods", "90"])
    with pytest.raises(UsageError, match="--sleep-fault-periods: .90.0. are not thinning periods"):
        args.func(args)
    args = parser.parse_args(["train", "--data", "nosuch:thing", "--sleep-periods", "30", "0"])
    with pytest.raises(UsageError, match=r"--sleep-periods must be > 0 seconds, got \[0.0\]"):
        args.func(args)
    # the fault periods are checked against --sleep-periods, not the defaults: 30 passes here
    # and the bad --data is what fails
    args = parser.parse_args(
        ["train", "--data", "nosuch:thing", "--sleep-periods", "30", "90",
         "--sleep-fault-periods", "30"]
    )  # fmt: skip
    with pytest.raises(HumigraphError, match="nosuch:thing"):
        args.func(args)
    args = parser.parse_args(["train", "--data", "nosuch:thing", "--steep-ok-weight", "0"])
    with pytest.raises(UsageError, match="--steep-ok-weight must be > 0"):
        args.func(args)
    args = parser.parse_args(["train", "--data", "nosuch:thing"])
    with pytest.raises(HumigraphError, match="nosuch:thing"):
        args.func(args)


def test_train_source_weight_option() -> None:
    from humigraph.errors import UsageError
    from humigraph.model.commands import parse_source_weights

    specs = ["world:1-12?days=1", "room-climate:data/rc", "uci-occupancy:data/uci"]
    assert parse_source_weights([], specs) == (1.0, 1.0, 1.0)
    assert parse_source_weights(["room-climate=2"], specs) == (1.0, 2.0, 1.0)
    assert parse_source_weights(["world=0.5", "uci-occupancy=3"], specs) == (0.5, 1.0, 3.0)
    with pytest.raises(UsageError, match=r"no --data SPEC of kind 'csv'.*room-climate"):
        parse_source_weights(["csv=2"], specs)
    for bad in ("room-climate=0", "room-climate=x", "=2", "room-climate"):
        with pytest.raises(UsageError, match="KIND=W"):
            parse_source_weights([bad], specs)


def test_train_target_scale_option() -> None:
    from humigraph.errors import UsageError
    from humigraph.model.commands import parse_target_scale

    assert parse_target_scale(["t=1", "rh=5"]) == {"t": 1.0, "rh": 5.0}
    got = parse_target_scale(["t=0.5,1,1", "rh=2.5,5,5"])
    assert got == {"t": [0.5, 1.0, 1.0], "rh": [2.5, 5.0, 5.0]}
    assert ModelCard(target_scale=got).scale_array()[0].tolist() == [0.5, 2.5]
    for bad in ("t", "t=", "t=0", "t=a,b", "=1"):
        with pytest.raises(UsageError, match="--target-scale"):
            parse_target_scale([bad])
    with pytest.raises(ModelError, match="2 scales for 3 horizons"):
        ModelCard(target_scale=parse_target_scale(["t=1,2", "rh=5"])).validate("--target-scale")


def test_quantize_fault_threshold_option(tmp_path: Path) -> None:
    import argparse

    from humigraph.errors import UsageError
    from humigraph.model import commands

    parser = argparse.ArgumentParser()
    commands.register(parser.add_subparsers())

    def pick(value: str, *extra: str) -> object:
        args = parser.parse_args(["quantize", "--model", "m", "--calibration", "c", "--out", "o",
                                  "--fault-threshold", value, *extra])  # fmt: skip
        return commands._fault_threshold(args, tmp_path / "o.tflite", [], print)

    assert pick("none") == (None, None)
    assert pick("0.8") == (0.8, None)
    assert pick("auto") == (None, None)  # no training recordings: nothing to choose on
    for bad in ("1.5", "high"):
        with pytest.raises(UsageError, match="--fault-threshold"):
            pick(bad)
    for bad in ("0", "1", "80"):
        with pytest.raises(UsageError, match="--false-alarm-confidence must be between 0 and 1"):
            pick("auto", "--false-alarm-confidence", bad)


def test_quantize_command_writes_models_cards_report_and_plots(
    trained: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse

    from humigraph.model import commands
    from humigraph.model.card import load_card
    from humigraph.model.latency import describe_cpu
    from humigraph.runtime import Runtime, list_ops

    parser = argparse.ArgumentParser()
    commands.register(parser.add_subparsers())
    out = tmp_path / "m-int8.tflite"
    args = parser.parse_args(
        [
            "quantize",
            "--model",
            str(trained["res"].savedmodel),
            "--calibration",
            "world:1-2?days=0.3&rooms=3",
            "--out",
            str(out),
            "--stride",
            "1",
            "--calibration-windows",
            "200",
            "--eval-windows",
            "80",
            "-q",
        ]  # fmt: skip
    )
    assert args.func(args) == 0
    fp32 = tmp_path / "m-fp32.tflite"
    card, card_f = load_card(out), load_card(fp32)
    assert card.quantization == "int8" and card_f.quantization == "float32"
    m = card.metrics
    assert m["files"]["int8"]["bytes"] == out.stat().st_size
    assert m["evaluation"]["calibration_windows"] == 200
    assert set(m["parity"]) == {"forecast", "fault", "insight", "adjacency", "router"}
    assert all(v["mae"] >= 0 and v["max"] >= v["mae"] for v in m["parity"].values())
    assert m["latency"]["int8"]["median_ms"] > 0 and m["latency"]["fp32"]["median_ms"] > 0
    # XNNPACK takes the whole float graph; of the int8 one it leaves the SOFTMAXes to TFLite's
    # own kernels, and the report says so. Both BATCH_MATMULs run in XNNPACK: the keys' operand
    # is tanh-bounded (zero point 0), the messages' made symmetric (symmetric_operands.py)
    assert m["latency"]["fp32"]["outside_delegate"] == {}
    assert m["latency"]["int8"]["outside_delegate"] == {"SOFTMAX": 2}
    assert m["evaluation"]["symmetric_operands"][0]["step_after"] > 0
    assert m["latency"]["int8"]["delegate_partitions"] >= 1
    cpu = m["latency"]["cpu"]  # which CPU timed them: the int8/float ratio depends on it
    assert cpu["cpus"] >= 1 and isinstance(cpu["features"], list)
    assert m["ops_list"] == [f"{o['op']}:{'/'.join(o['outputs'])}" for o in list_ops(out)]
    (held_out,) = m["evaluate"].values()
    assert held_out["int8"]["windows"] > 0 and "fp32" in held_out
    assert m["router_fault"]["t_mae_faulted"] > 0
    # the fault rule: chosen on the training recordings, the same in both cards, scored by evaluate
    ft = m["fault_threshold"]
    assert ft["chosen"] == card.fault_threshold == card_f.fault_threshold
    assert [r["threshold"] for r in ft["training_sweep"]][0] is None
    assert ft["confidence"] == 0.8
    for row in ft["training_sweep"]:  # the rates the rule was chosen on, and what they count
        for k, days, rate in zip(row["false_alarm_episodes"], row["node_days"],
                                 row["false_alarms_per_node_day"], strict=True):  # fmt: skip
            assert days > 0 and rate == pytest.approx(k / days, rel=1e-3)
    assert held_out["int8"]["faults"]["fault_threshold"] == card.fault_threshold
    # the insight rule likewise: per insight, the threshold of the best mean balanced accuracy
    # among those that cost no source anything against 0.5
    it = m["insight_threshold"]
    assert it["chosen"] == card.insight_threshold == card_f.insight_threshold
    assert set(it["chosen"]) == {"occupancy", "ventilation"}  # the world has both labels
    for name, rows in it["training_sweep"].items():
        (half,) = [r["balanced_accuracy"] for r in rows if r["threshold"] == 0.5]
        fair = [
            r for r in rows
            if all(a >= b for a, b in zip(r["balanced_accuracy"], half, strict=True))
        ]  # fmt: skip
        (chosen,) = [r for r in rows if r["threshold"] == it["chosen"][name]]
        assert chosen in fair
        best = max(float(np.mean(r["balanced_accuracy"])) for r in fair)
        assert float(np.mean(chosen["balanced_accuracy"])) == pytest.approx(best, abs=1e-4)
    for name in ("occupancy", "ventilation"):
        assert held_out["int8"][name]["threshold"] == card.insight_threshold[name]
    for name in m["plots"].values():
        assert (tmp_path / name).stat().st_size > 1000
    md = out.with_suffix(".md").read_text()
    assert card.model_id in md and "Parity: INT8 against float32" in md
    assert "| SOFTMAX x2 |" in md  # the ops XNNPACK leaves outside, in the Files table
    assert f"Timed on: {describe_cpu(cpu)}, {cpu['cpus']} CPUs." in md
    spacing = f"at most {card.judged_spacing_s():g} s apart"  # the gateway's limit, from the card
    assert spacing in md and "called faulty (60 / 120 / 300 / 600 s between reads)" in md
    Runtime(out).run(
        x=np.zeros(card.input_shapes["x"]), node_mask=np.ones(card.input_shapes["node_mask"])
    )
    assert "fault macro-F1 INT8" in capsys.readouterr().out


def test_cli_fine_tunes_on_a_single_recording_split_in_time(trained: dict, tmp_path: Path) -> None:
    """A gateway store of one site is one recording: --init fine-tuning validates on its last
    20 % instead of refusing for lack of held-out recordings."""
    import argparse

    from humigraph.model import commands
    from humigraph.model.arch import load_model

    parser = argparse.ArgumentParser()
    commands.register(parser.add_subparsers())
    out = tmp_path / "ft"
    args = parser.parse_args(
        [
            "train",
            "--data",
            "world:3?days=0.3&rooms=3",
            "--init",
            str(trained["res"].savedmodel),
            "--out",
            str(out),
            "--epochs",
            "1",
            "--steps-per-epoch",
            "2",
            "--stride",
            "4",
            "-q",
        ]  # fmt: skip
    )
    assert args.func(args) == 0
    tuned = load_model(out / "savedmodel")
    assert tuned.card.nodes == CARD.nodes and tuned.card.history == CARD.history
    assert tuned.card.training["init"] == str(trained["res"].savedmodel)
    assert tuned.card.training["val_windows"] > 0
    # trained with deep-sleep boards (the default), so the gateway may judge boards this sparse
    assert tuned.card.max_read_interval_s == 600.0


def _tiny_train_card(out: Path, flags: list[str]) -> ModelCard:
    """``humigraph train`` with ``flags`` for a few steps of a tiny model: its card."""
    import argparse

    from humigraph.model import commands
    from humigraph.model.arch import load_model

    parser = argparse.ArgumentParser()
    commands.register(parser.add_subparsers())
    args = parser.parse_args(
        ["train", "--data", "world:3?days=0.3&rooms=3", "--out", str(out), *flags,
         "--epochs", "1", "--steps-per-epoch", "2", "--stride", "4", "--hidden", "8", "-q"]
    )  # fmt: skip
    assert args.func(args) == 0
    return load_model(out / "savedmodel").card


def test_cli_train_puts_the_reads_feature_on_the_card_unless_no_reads(tmp_path: Path) -> None:
    from humigraph.model.card import FEATURES

    for flag, features in (([], (*FEATURES, "reads")), (["--no-reads"], FEATURES)):
        out = tmp_path / (flag[0] if flag else "default")
        assert _tiny_train_card(out, flag).features == features


def test_cli_train_balances_insight_classes_only_when_asked(tmp_path: Path) -> None:
    for flags, on in (([], False), (["--balance-insight"], True)):
        card = _tiny_train_card(tmp_path / str(on), flags)
        assert card.training["config"]["balance_insight"] is on


def test_cli_train_card_says_the_sparsest_reads_it_was_trained_on(tmp_path: Path) -> None:
    """max_read_interval_s, which the gateway judges boards by, is the longest period training
    thinned boards or whole sites to; with both off there is none."""
    for name, flags, longest in (
        ("sites", ["--sleep-fraction", "0", "--site-sleep-fraction", "0.5",
                   "--site-sleep-periods", "20", "45"], 45.0),
        ("none", ["--sleep-fraction", "0"], None),
    ):  # fmt: skip
        assert _tiny_train_card(tmp_path / name, flags).max_read_interval_s == longest


def test_time_split_cuts_every_series_at_one_instant() -> None:
    from humigraph.model.commands import time_split
    from humigraph.model.data import load

    (rec,) = load("world:4?days=0.2&rooms=2")
    (early,), (late,) = time_split(rec, 0.8)
    cut = rec.start + 0.8 * rec.duration_s
    for i in range(len(rec.nodes)):
        assert early.ts[i].max() < cut <= late.ts[i].min()
        assert len(early.ts[i]) + len(late.ts[i]) == len(rec.ts[i])
        assert len(early.t[i]) == len(early.ts[i]) and len(late.truth_t[i]) == len(late.ts[i])
        assert early.faults[i][0].max() < cut <= late.faults[i][0].min()
    assert early.occupancy[0].max() < cut <= late.occupancy[0].min()
    assert early.name != late.name
