"""The committed INT8 model (models/) through humigraph.runtime: pure INT8, matches its card, keeps
the parity its card records, and the runtime never needs TensorFlow."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from humigraph.errors import ModelError
from humigraph.model.card import load_card
from humigraph.runtime import Runtime

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "models"
INT8 = MODELS / "humigraph-int8.tflite"
FP32 = MODELS / "humigraph-fp32.tflite"


@pytest.fixture(scope="module")
def committed() -> tuple[Runtime, Runtime]:
    assert INT8.is_file() and FP32.is_file(), "models/ is missing its models: make train quantize"
    return Runtime(INT8), Runtime(FP32)


def test_committed_model_is_pure_int8_and_small(committed: tuple[Runtime, Runtime]) -> None:
    rq, _ = committed
    assert {np.dtype(d) for d in rq.input_dtypes.values()} == {np.dtype(np.int8)}
    ops = rq.ops()
    assert ops, "the runtime lists no ops"
    floats = [(op, dt) for op, dt in ops if dt.startswith("float")]
    assert not floats, f"ops computing in float: {floats}"
    assert INT8.stat().st_size < 256 * 1024


def test_committed_model_matches_its_card(committed: tuple[Runtime, Runtime]) -> None:
    from humigraph.model.quantize import list_ops, model_id

    rq, rf = committed
    card = rq.card
    assert card.quantization == "int8" and rf.card.quantization == "float32"
    assert card.model_id == model_id(INT8), "card written for other model bytes"
    assert rf.card.model_id == model_id(FP32)
    assert card.extra["float_model_id"] == rf.card.model_id
    m = card.metrics
    assert m["files"]["int8"]["bytes"] == INT8.stat().st_size
    assert m["files"]["fp32"]["bytes"] == FP32.stat().st_size
    assert m["ops_list"] == [f"{o['op']}:{'/'.join(o['outputs'])}" for o in list_ops(INT8)]
    x = np.zeros(card.input_shapes["x"], np.float32)
    mask = np.zeros(card.input_shapes["node_mask"], np.float32)
    mask[0, :3] = 1
    out = rq.run(x=x, node_mask=mask)
    assert {k: v.shape for k, v in out.items()} == card.output_shapes
    md = INT8.with_suffix(".md").read_text()
    assert card.model_id in md
    for name in m["plots"].values():
        assert (MODELS / name).is_file() and name in md


def test_committed_int8_keeps_the_parity_its_card_records(
    committed: tuple[Runtime, Runtime],
) -> None:
    from humigraph.model.report import fixed_parity

    rq, rf = committed
    recorded = rq.card.metrics["parity_fixed"]["outputs"]
    now = fixed_parity(rq, rf, rq.card)["outputs"]
    assert now.keys() == recorded.keys()
    for name, rec in recorded.items():
        assert now[name]["mae"] <= rec["mae"] * 1.05 + 1e-6, name
        assert now[name]["max"] <= rec["max"] * 1.05 + 1e-6, name


def test_runtime_does_not_import_tensorflow() -> None:
    pytest.importorskip("ai_edge_litert")
    code = (
        "import sys, numpy as np\n"
        "from humigraph.runtime import Runtime\n"
        f"rt = Runtime({str(INT8)!r})\n"
        "c = rt.card\n"
        "out = rt.run(x=np.zeros(c.input_shapes['x'], np.float32),"
        " node_mask=np.ones(c.input_shapes['node_mask'], np.float32))\n"
        "assert rt.backend == 'ai_edge_litert', rt.backend\n"
        "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'\n"
        # humigraph bench model runs where only a TFLite runtime is installed (a Jetson)
        "from humigraph.bench_model import run_model_bench\n"
        f"run_model_bench({str(INT8)!r}, {str(FP32)!r}, rounds=1, runs=10, probe=True)\n"
        "assert 'tensorflow' not in sys.modules, 'bench model imported tensorflow'\n"
        "print('ok', sorted(out))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("ok")


def test_runtime_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no such model file"):
        Runtime(tmp_path / "nope.tflite")
    lone = tmp_path / "lone.tflite"
    lone.write_bytes(INT8.read_bytes())
    with pytest.raises(ModelError, match="model card missing"):
        Runtime(lone)
    with pytest.raises(ModelError, match="no TFLite runtime"):
        Runtime(INT8, prefer="no-such-backend")
    rt = Runtime(INT8)
    with pytest.raises(ModelError, match="'node_mask' missing"):
        rt.run(x=np.zeros(rt.card.input_shapes["x"], np.float32))


def test_card_and_model_disagreeing_is_refused(tmp_path: Path) -> None:
    card = json.loads(INT8.with_suffix(".json").read_text())
    card["history"] = card["history"] * 2
    path = tmp_path / "m.tflite"
    path.write_bytes(INT8.read_bytes())
    path.with_suffix(".json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match="card says"):
        Runtime(path)
    assert load_card(path).history == card["history"]


def test_evaluate_cli_prints_the_design_keys(capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from humigraph.model import commands

    parser = argparse.ArgumentParser()
    commands.register(parser.add_subparsers())
    args = parser.parse_args(
        [
            "evaluate",
            "--model",
            str(INT8),
            "--data",
            "world:5?days=0.15&rooms=4",
            "--json",
            "--max-windows",
            "60",
        ]  # fmt: skip
    )
    assert args.func(args) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["model"] == INT8.name and res["windows"] > 0
    for h in ("300", "900", "1800"):
        for tgt in ("t", "rh"):
            row = res["forecast"][h][tgt]
            assert row["mae"] >= 0 and row["persistence"] >= 0 and "linear" in row
    assert 0 <= res["faults"]["macro_f1"] <= 1
    assert "false_alarms_per_node_day" in res["faults"]
    assert set(res["occupancy"]) >= {"balanced_accuracy", "f1", "base_rate"}
    assert res["ventilation"] is not None
    assert 0 <= res["adjacency_auc"] <= 1  # world data has the true coupling graph


def test_bench_model_times_int8_and_float_side_by_side(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("ai_edge_litert")
    from humigraph.cli import main

    assert main(["bench", "model", "--model", str(INT8), "--rounds", "2", "--runs", "20"]) == 0
    text = capsys.readouterr().out
    assert "INT8/float" in text and "machine:" in text and "\nCPU: " in text
    assert main(["bench", "model", "--rounds", "1", "--runs", "20", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["baseline"].endswith("humigraph-fp32.tflite") and r["runs_per_round"] == 20
    assert r["cpu"]["cpus"] >= 1 and set(r["cpu"]) >= {"name", "family", "model", "features"}
    (row,) = r["rounds"]
    assert row["int8_ms"] > 0 and row["fp32_ms"] > 0
    assert row["ratio"] == pytest.approx(row["int8_ms"] / row["fp32_ms"], abs=1e-3)
    assert r["delegate"]["fp32"] == {}  # XNNPACK takes the whole float graph
    assert r["fp32_ms_range"] == [row["fp32_ms"], row["fp32_ms"]]
    assert main(["bench", "model", "--runs", "5"]) == 2
    assert "--runs >= 10" in capsys.readouterr().err


def test_bench_model_probe_times_the_graph_with_every_op_delegated(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--probe: the committed INT8 file's two SOFTMAXes (outside XNNPACK) swapped, each alone
    and both, timed beside float32 in the same calls; with both swapped nothing stays out."""
    pytest.importorskip("ai_edge_litert")
    from humigraph.cli import main

    assert main(["bench", "model", "--probe", "--rounds", "1", "--runs", "20", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert [p["swapped"] for p in r["probes"]] == [
        "op 78 SOFTMAX [1x64x64]",
        "op 107 SOFTMAX [1x64x6]",
        "all SOFTMAX",
    ]
    assert r["delegate"]["int8"] == {"SOFTMAX": 2}
    one, other, both = r["probes"]
    assert one["outside_delegate"] == other["outside_delegate"] == {"SOFTMAX": 1}
    assert both["outside_delegate"] == {}
    assert all(p["ratio_median"] > 0 for p in r["probes"])
    assert main(["bench", "model", "--probe", "--rounds", "1", "--runs", "20"]) == 0
    assert "all SOFTMAX swapped: INT8/float" in capsys.readouterr().out


def test_bench_model_probe_refuses_a_file_it_cannot_patch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("ai_edge_litert")
    from humigraph.cli import main

    bad = tmp_path / "bad.tflite"  # a card beside it, but no flatbuffer
    bad.write_bytes(b"\0" * 64)
    (tmp_path / "bad.json").write_text((MODELS / "humigraph-int8.json").read_text())
    args = ["bench", "model", "--probe", "--model", str(bad), "--float-model", str(FP32)]
    assert main([*args, "--rounds", "1", "--runs", "10"]) == 1
    err = capsys.readouterr().err
    assert "not a TFLite flatbuffer" in err and "Traceback" not in err


def test_bench_model_table_says_when_the_machine_changed_speed() -> None:
    from humigraph.bench_model import table

    def result(fp32_ms: list[float]) -> dict[str, object]:
        rounds = [{"int8_ms": f * 1.05, "fp32_ms": f, "ratio": 1.05} for f in fp32_ms]
        return {
            "machine": "x86_64", "cpu": {}, "model": "a", "baseline": "b",
            "runs_per_round": 10, "rounds": rounds, "int8_ms_median": 0.2,
            "fp32_ms_median": 0.19, "ratio_median": 1.05, "ratio_range": [1.05, 1.05],
            "fp32_ms_range": [min(fp32_ms), max(fp32_ms)], "delegate": {"int8": {}, "fp32": {}},
        }  # fmt: skip

    assert "unsteady" not in table(result([0.21, 0.22, 0.21]))
    text = table(result([0.21, 0.35, 0.38]))  # the Zen 3's two speeds within one run
    assert "unsteady: float32's rounds took 0.21-0.38 ms" in text


def test_delegate_probe_swaps_softmax_for_logistic_in_place(tmp_path: Path) -> None:
    pytest.importorskip("ai_edge_litert")
    from ai_edge_litert.interpreter import Interpreter, OpResolverType
    from humigraph.model.delegate_probe import ProbeError, softmax_ops, swap_for_logistic

    buf = INT8.read_bytes()
    ops = softmax_ops(buf)
    assert [(o.index, o.shape) for o in ops] == [(78, (1, 64, 64)), (107, (1, 64, 6))]
    swapped = swap_for_logistic(buf, ops[:1])
    assert len(swapped) == len(buf) and swapped != buf  # one opcode index patched in place
    assert [o.index for o in softmax_ops(swapped)] == [107]

    def op_names(model: bytes) -> list[str]:
        # without XNNPACK, so that every op is listed by its own name
        plain = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        it = Interpreter(model_content=model, experimental_op_resolver_type=plain)
        it.allocate_tensors()
        return [o["op_name"] for o in it._get_ops_details() if o["op_name"] != "DELEGATE"]

    before, after = op_names(buf), op_names(swap_for_logistic(buf, ops))
    assert after.count("SOFTMAX") == 0 and before.count("SOFTMAX") == 2
    assert after.count("LOGISTIC") == before.count("LOGISTIC") + 2
    with pytest.raises(ProbeError, match="not a TFLite flatbuffer"):
        softmax_ops(b"not a model at all")
    with pytest.raises(ProbeError, match="damaged"):
        softmax_ops(buf[:4] + b"TFL3" + b"\xff" * 8)  # a root table far outside the file
    with pytest.raises(ProbeError, match="not a SOFTMAX"):
        swap_for_logistic(swapped, ops[:1])  # already swapped


X86_CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC
flags\t\t: fpu avx2 avx512f avx512_vnni avx512_bf16

processor\t: 1
model name\t: another
"""

ARM_CPUINFO = """processor\t: 0
BogoMIPS\t: 62.50
Features\t: fp asimd evtstrm aes asimddp
CPU implementer\t: 0x41
CPU part\t: 0xd42
"""


def test_cpu_summary_names_the_cpu_that_timed_the_models() -> None:
    """bench model and the card say which CPU timed INT8 against float: the ratio is the
    CPU's (0.87x on a Zen 4 EPYC, 1.02x on a Zen 5, 1.13x on an Intel Xeon)."""
    from humigraph.model.latency import cpu_summary, describe_cpu

    x86 = cpu_summary(X86_CPUINFO)
    assert (x86["name"], x86["family"], x86["model"]) == ("AMD EPYC", 25, 17)
    assert x86["features"] == ["avx2", "avx512f", "avx512_vnni", "avx512_bf16"]
    assert describe_cpu(x86) == (
        "AMD EPYC, family 25 model 17 (avx2 avx512f avx512_vnni avx512_bf16)"
    )
    arm = cpu_summary(ARM_CPUINFO)  # a Jetson Orin's Cortex-A78AE: no model name, a CPU part
    assert arm["family"] is None and arm["part"] == "0xd42" and arm["features"] == ["asimddp"]
    assert "part 0xd42 (asimddp)" in describe_cpu(arm)
    bare = cpu_summary("")  # no /proc/cpuinfo (not Linux): nothing invented
    assert bare["family"] is None and bare["features"] == []
    assert describe_cpu(bare).endswith("(no int8 extension listed)")
