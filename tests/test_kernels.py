"""Which attention kernel ran: fused SDPA on a timm model, 'unfused' with explicit attention, the
column on speed rows and in `tlbench bench`."""

from __future__ import annotations

import json

import torch
from torch import nn
from typer.testing import CliRunner

from tlbench.cli import app
from tlbench.measure.kernels import attention_kernels, kernel_label
from tlbench.measure.throughput import measure_throughput, set_fused_attention
from tlbench.variants import build_variant

FUSED = {"flash", "efficient", "cudnn", "fused"}


def probe(model: nn.Module) -> tuple[str, ...]:
    x = torch.randn(2, 3, *model.patch_embed.img_size)
    with torch.inference_mode():
        return attention_kernels(model.eval(), x)


def test_a_timm_model_runs_a_fused_sdpa_kernel_on_cpu() -> None:
    kinds = probe(build_variant("tiny", position=0.5, num_tokens=4))
    assert kinds and set(kinds) <= FUSED, kinds  # TokenLearner's softmax + matmul is not attention


def test_explicit_attention_is_unfused_and_the_math_fallback_is_named() -> None:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    model = build_variant("tiny")
    assert set_fused_attention(model, False) > 0
    assert probe(model) == ("unfused",)
    set_fused_attention(model, True)
    with sdpa_kernel(SDPBackend.MATH):
        assert probe(model) == ("math",)


def test_a_model_without_attention_is_not_run() -> None:
    calls = []
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 2))
    model.register_forward_hook(lambda *a: calls.append(1))
    assert attention_kernels(model, torch.randn(1, 3, 2, 2)) == () and not calls
    assert kernel_label(()) == "none" and kernel_label(("flash", "math")) == "flash+math"


def test_timing_records_the_kernel() -> None:
    t = measure_throughput(build_variant("tiny"), batch_size=1, device="cpu", threads=1, warmup=0,
                           rounds=1, iters=1)  # fmt: skip
    assert t.attn_kernel in FUSED and t.to_dict()["attn_kernel"] == t.attn_kernel


def test_bench_prints_the_kernel() -> None:
    args = ["bench", "--model", "tiny", "--positions", "0.5", "--tokens", "4", "--batch-size", "1",
            "--rounds", "1", "--threads", "1", "--device", "cpu"]  # fmt: skip
    result = CliRunner().invoke(app, [*args, "--format", "json"])
    assert result.exit_code == 0, result.output
    assert {r["attn_kernel"] for r in json.loads(result.stdout)} <= FUSED
    table = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert table.exit_code == 0, table.output
    assert "attention" in table.stdout and any(k in table.stdout for k in FUSED)
