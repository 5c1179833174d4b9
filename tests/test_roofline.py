"""Roofline and fastest-timing settings: bytes moved, time shares, roofs, pure low precision,
compile (slow: inductor builds C++), and no graph break in any reducer's forward."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from tlbench.cli import app
from tlbench.config import from_dict
from tlbench.errors import ConfigError
from tlbench.measure.roofline import (
    Peaks,
    bytes_moved,
    classify,
    measure_peaks,
    roofline_metrics,
    time_breakdown,
)
from tlbench.measure.throughput import EAGER_SUFFIX, time_interleaved
from tlbench.variants import build_sharing, make_variants

pytestmark = pytest.mark.usefixtures("one_thread")
runner = CliRunner()


def test_bytes_moved_counts_weights_once_and_activations_per_image() -> None:
    # linear 8 -> 4: addmm reads bias (16 B) and weight (128 B) once per pass, and per image
    # its input row (32 B), writing the output row (16 B); the transpose of the weight is a view
    lin = nn.Linear(8, 4)
    with torch.inference_mode():
        fixed, per_image = bytes_moved(lin, torch.randn(5, 8))
        # autocast: activations at 2 bytes, weights read in fp32 and their bf16 copy written + read
        fixed_bf16, per_image_bf16 = bytes_moved(lin, torch.randn(5, 8), autocast=torch.bfloat16)
    assert (fixed, per_image) == (144.0, 48.0)
    assert (fixed_bf16, per_image_bf16) == (288.0, 24.0)


def test_bytes_moved_of_pure_bf16_weights_is_half() -> None:
    lin = nn.Linear(8, 4).to(torch.bfloat16)
    with torch.inference_mode():
        assert bytes_moved(lin, torch.randn(5, 8, dtype=torch.bfloat16)) == (72.0, 24.0)


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("aten::addmm", "matmul"),
        ("aten::mkldnn_convolution", "matmul"),
        ("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x256x64", "matmul"),
        ("aten::_scaled_dot_product_flash_attention_for_cpu", "attention"),
        ("flash_fwd_kernel", "attention"),
        ("cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_3", "attention"),
        ("aten::gelu", "other"),
        ("triton_poi_fused_add_native_layer_norm_0", "other"),
        ("aten::copy_", "other"),
    ],
)
def test_profiler_names_are_classified(name: str, kind: str) -> None:
    assert classify(name) == kind


def test_time_shares_sum_to_one_and_a_model_without_attention_has_none() -> None:
    mlp = nn.Sequential(nn.Linear(64, 256), nn.GELU(), nn.Linear(256, 64))
    with torch.inference_mode():
        b = time_breakdown(mlp, torch.randn(16, 64), passes=2)
    assert b.attention == 0 and b.matmul > 0
    assert math.isclose(b.matmul + b.attention + b.other, 1.0) and min(b.matmul, b.other) >= 0


def test_peaks_are_measured_in_the_dtype_asked() -> None:
    p = measure_peaks(torch.device("cpu"), torch.bfloat16, n=64)
    assert p.dtype == "bfloat16" and p.matmul_n == 64 and p.tflops > 0 and p.gbs > 0


def test_roofline_metrics_arithmetic() -> None:
    peaks = Peaks(tflops=100.0, gbs=1000.0, dtype="bfloat16", matmul_n=8192)
    m = roofline_metrics(images_per_s=1000.0, gflops=10.0, bytes_per_image=1e8, peaks=peaks)
    assert math.isclose(m["achieved_tflops"], 20.0)  # 1000 img/s x 2 x 10 GMAC
    assert math.isclose(m["arith_intensity"], 200.0)  # 20 GFLOP / 0.1 GB
    assert math.isclose(m["roof_tflops"], 100.0 * 0 + min(100.0, 1000.0 * 200.0 / 1e3))
    assert math.isclose(m["mfu"], 0.2)


def test_pure_bf16_timing_records_dtype_roofline_and_casts_the_weights() -> None:
    variants = make_variants("tiny", [0.5], [4])
    models = build_sharing(variants)
    out = time_interleaved(models, batch_size=2, device="cpu", dtype="bfloat16-pure", rounds=2,
                           threads=1, roofline=True)  # fmt: skip
    assert next(models["baseline"].parameters()).dtype == torch.bfloat16
    for t in out.values():
        assert (
            t.dtype == "bfloat16-pure"
            and not t.compiled
            and t.compile_mode == ""
            and not t.cuda_graphs
        )
        assert t.peak_tflops > 0 and t.peak_gbs > 0 and t.bytes_per_image > 0
        shares = (t.time_share_matmul, t.time_share_attention, t.time_share_other)
        assert math.isclose(sum(shares), 1.0)
    # fewer tokens after the reducer: fewer activation bytes per image
    assert out["p0.5-s4"].bytes_per_image < out["baseline"].bytes_per_image


def test_cuda_graphs_twice_is_refused() -> None:
    models = build_sharing(make_variants("tiny", [0.5], [4]))
    with pytest.raises(ConfigError, match="captures CUDA graphs itself"):
        time_interleaved(
            models, device="cpu", compile=True, compile_mode="reduce-overhead", cuda_graphs=True
        )


def test_cuda_graphs_are_recorded_off_on_a_cpu() -> None:
    models = build_sharing(make_variants("tiny", [0.5], [4]))
    out = time_interleaved(
        models, batch_size=2, device="cpu", rounds=1, threads=1, cuda_graphs=True
    )
    assert not any(t.cuda_graphs for t in out.values())


def test_speed_config_takes_the_new_knobs_and_refuses_bad_ones() -> None:
    cfg = from_dict({"speed": {"dtype": "bfloat16-pure", "compile": True, "compile_mode": "max-autotune",
                               "cuda_graphs": True, "channels_last": True, "roofline": False}}).speed  # fmt: skip
    assert (cfg.dtype, cfg.compile_mode, cfg.cuda_graphs, cfg.roofline) == (
        "bfloat16-pure",
        "max-autotune",
        True,
        False,
    )
    default = from_dict({}).speed  # the committed results' meaning: eager float32
    assert (default.dtype, default.compile, default.compile_mode, default.cuda_graphs) == (
        "float32",
        False,
        "default",
        False,
    )
    with pytest.raises(ConfigError, match="compile_mode must be one of"):
        from_dict({"speed": {"compile_mode": "fast"}})
    with pytest.raises(ConfigError, match="dtype must be one of"):
        from_dict({"speed": {"dtype": "int8"}})


@pytest.mark.parametrize(
    "args",
    [["--compile-mode", "fast"], ["--compile-gain"], ["--dtype", "bf16"]],
)
def test_bench_refuses_bad_speed_options_in_one_line(args: list[str]) -> None:
    result = runner.invoke(app, ["bench", "--model", "tiny", "--device", "cpu", *args])
    assert result.exit_code == 2 and "error:" in result.output and "Traceback" not in result.output


def test_a_sweep_writes_roofline_rows_and_figure(tmp_path: Path) -> None:
    from tlbench import load_results
    from tlbench.config import load_sweep
    from tlbench.study.sweep import run_sweep

    cfg = load_sweep(None, ["name='roof'", "model.name='tiny'", "grid.positions=[0.5]", "grid.tokens=[4]",
                            "compute.enabled=false", "quality.enabled=false", "speed.device='cpu'",
                            "speed.rounds=2", "speed.batch_size=2"])  # fmt: skip
    res = run_sweep(cfg, out=tmp_path)
    df = load_results(res.run_dir)
    speed = df[df["stage"] == "speed"]
    want = {"efficiency", "mfu", "achieved_tflops", "arith_intensity", "peak_tflops", "peak_gbs",
            "time_share_matmul", "time_share_attention", "time_share_other"}  # fmt: skip
    for variant in ("baseline", "p0.5-s4"):
        assert want <= set(speed[speed["variant"] == variant]["metric"])
    assert set(speed["compile"]) == {"eager"} and not speed["cuda_graphs"].any()
    base_eff = speed[(speed["variant"] == "baseline") & (speed["metric"] == "efficiency")]["value"]
    assert list(base_eff) == [1.0]
    assert (res.run_dir / "figures" / "roofline.png").is_file() and (
        res.run_dir / "figures" / "roofline.pdf"
    ).is_file()


def _reducer_cases() -> list[tuple[str, dict, dict]]:
    from tlbench.reducers import REDUCERS

    cases = [(m, {"r": 2} if m == "tome_r" else {}, {}) for m in sorted(REDUCERS)]
    return cases + [("tokenlearner", {}, {"fuser": True}), ("tokenlearner", {}, {"version": "1.0"})]


@pytest.mark.parametrize(("method", "params", "kw"), _reducer_cases())
def test_no_graph_break_in_any_reducer(method: str, params: dict, kw: dict) -> None:
    """torch.compile(fullgraph=True) needs one graph: dynamo's explain over every registered
    method on the tiny model (no inductor, so it is fast) finds no break."""
    import torch._dynamo as dynamo

    variants = make_variants("tiny", [0.5], [4], method=method, params=params or None, **kw)
    model = build_sharing(variants)[variants[1].name]
    x = torch.randn(2, 3, 32, 32)
    dynamo.reset()
    with torch.inference_mode():
        explained = dynamo.explain(model)(x)
        torch.manual_seed(0)  # the random method draws from the global generator
        eager = model(x)
        torch.manual_seed(0)
        graph = torch.compile(model, fullgraph=True, backend="eager")(x)
    dynamo.reset()
    assert explained.graph_break_count == 0, [str(b.reason) for b in explained.break_reasons]
    assert explained.graph_count == 1
    torch.testing.assert_close(graph, eager)


@pytest.mark.slow
def test_compile_on_the_cpu_with_inductor_and_its_gain() -> None:
    """inductor with the system C++ compiler: every model compiled in the same mode, each also
    timed eager in the same rounds; the outputs of compiled and eager agree."""
    from tlbench.measure.bench import bench_variants

    records = bench_variants("tiny", [0.5], [4], device="cpu", batch_size=2, rounds=2, threads=1,
                             compile=True, compile_gain=True)  # fmt: skip
    for r in records:
        assert r["compiled"] and r["compile_mode"] == "default"
        assert (
            r["compile_gain"] > 0
            and r["compile_gain_low"] <= r["compile_gain"] <= r["compile_gain_high"]
        )
        assert r["eager_images_per_s"] > 0 and r["mfu"] > 0
    models = build_sharing(make_variants("tiny", [0.5], [4]))
    x = torch.randn(2, 3, 32, 32)
    out = time_interleaved(models, batch_size=2, device="cpu", rounds=1, threads=1, compile=True,
                           also_eager=True, compile_mode="max-autotune-no-cudagraphs")  # fmt: skip
    assert set(out) == {"baseline", "p0.5-s4", "baseline" + EAGER_SUFFIX, "p0.5-s4" + EAGER_SUFFIX}
    assert (
        out["baseline"].compile_mode == "max-autotune-no-cudagraphs"
        and not out["baseline@eager"].compiled
    )
    with torch.inference_mode():
        m = models["p0.5-s4"]
        torch.testing.assert_close(torch.compile(m)(x), m(x), rtol=1e-4, atol=1e-5)
