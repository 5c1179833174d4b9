"""Throughput: record structure and units, interleaving, OOM back-off, bench records, CLI errors.

Times are never asserted; only structure, units, call order and positivity.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from tlbench.bench import RECORD_KEYS, bench_variants
from tlbench.cli import app
from tlbench.errors import ConfigError
from tlbench.models import build_variant
from tlbench.throughput import (
    Timing,
    find_batch_size,
    measure_throughput,
    paired_speedup,
    time_interleaved,
)

# 1 thread: the CPUs are shared, and two OpenMP threads stall when one is preempted
FAST: dict[str, Any] = {"device": "cpu", "threads": 1, "warmup": 1, "rounds": 2, "iters": 1}


class Logger(nn.Module):
    """Logs (name, batch size) per call; checks the input is random, not zeros."""

    def __init__(self, name: str, log: list[tuple[str, int]]) -> None:
        super().__init__()
        self.name, self.log = name, log

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.std() > 0
        self.log.append((self.name, x.shape[0]))
        return x.mean(dim=(1, 2, 3))


class OOMAbove(nn.Module):
    """Raises CUDA's out-of-memory error for batches larger than `limit`, on any device."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit, self.tried = limit, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.tried.append(x.shape[0])
        if x.shape[0] > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return x.mean(dim=(1, 2, 3))


def test_timing_record_structure_and_units() -> None:
    t = measure_throughput(build_variant("tiny"), batch_size=2, **FAST)
    assert isinstance(t, Timing)
    assert (t.batch_size, t.device, t.dtype, t.attention) == (2, "cpu", "float32", "fused")
    assert (t.threads, t.rounds, t.iters, t.compiled, t.tf32) == (1, 2, 1, False, False)
    assert t.latency_ms > 0 and t.images_per_s > 0
    assert t.images_per_s == pytest.approx(t.batch_size * 1000 / t.latency_ms)  # ms per batch
    assert t.latency_ms_p10 <= t.latency_ms <= t.latency_ms_p90
    assert len(t.round_ms) == t.rounds and t.device_name and t.torch_version == torch.__version__
    d = t.to_dict()
    assert "round_ms" not in d and len(t.to_dict(rounds=True)["round_ms"]) == 2
    json.dumps(d)
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.batch_size = 3  # type: ignore[misc]


def test_attention_is_fused_for_timing() -> None:
    model = build_variant("tiny", position=0.5, num_tokens=4)
    for m in model.modules():
        if hasattr(m, "fused_attn"):
            m.fused_attn = False  # as a model counted with explicit attention would be
    measure_throughput(model, batch_size=1, **FAST)
    flags = [m.fused_attn for m in model.modules() if hasattr(m, "fused_attn")]
    assert flags and all(flags)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_cpu_autocast_dtypes(dtype: str) -> None:
    t = measure_throughput(build_variant("tiny"), batch_size=2, dtype=dtype, **FAST)
    assert t.dtype == dtype and t.images_per_s > 0


def test_models_are_interleaved_in_rounds() -> None:
    log: list[tuple[str, int]] = []
    models = {n: Logger(n, log) for n in "ABC"}
    out = time_interleaved(models, input_size=(3, 4, 4), batch_size=2, device="cpu", threads=1,
                           warmup=1, rounds=3, iters=2)  # fmt: skip
    assert list(out) == ["A", "B", "C"]
    warm, timed = [n for n, _ in log[:3]], [n for n, _ in log[3:]]
    assert warm == ["A", "B", "C"]
    assert timed == ["A", "A", "B", "B", "C", "C"] * 3
    assert {b for _, b in log} == {2}


@pytest.mark.parametrize(
    ("limit", "start", "tried"),
    [
        (40, 256, [256, 192, 128, 96, 64, 48, 32]),  # timm's decay_batch_step sequence
        (256, 256, [256]),
        (5, 8, [8, 6, 4]),
        (1, 3, [3, 2, 1]),
    ],
)
def test_batch_search_backs_off_on_oom(limit: int, start: int, tried: list[int]) -> None:
    model = OOMAbove(limit)
    assert find_batch_size(lambda b: model(torch.randn(b, 1, 1, 1)), start) == tried[-1]
    assert model.tried == tried


def test_batch_search_gives_up_with_config_error() -> None:
    with pytest.raises(ConfigError, match="batch size 1"):
        find_batch_size(lambda b: OOMAbove(0)(torch.randn(b, 1, 1, 1)), 4)


def test_batch_search_propagates_other_errors() -> None:
    def broken(b: int) -> None:
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    with pytest.raises(RuntimeError, match="shapes"):
        find_batch_size(broken, 8)


def test_auto_batch_size_is_largest_that_fits_every_model() -> None:
    models = {"big": OOMAbove(5), "small": OOMAbove(100)}
    out = time_interleaved(models, input_size=(3, 4, 4), batch_size="auto", **FAST)
    assert {t.batch_size for t in out.values()} == {4}  # CPU search starts at 8: 8, 6, 4


def test_paired_speedup_is_median_of_round_ratios() -> None:
    def timing(round_ms: tuple[float, ...]) -> Timing:
        return Timing(1.0, 1.0, 1.0, 1.0, 1, "cpu", "x", "float32", False, False, "fused", "2",
                      1, 0, len(round_ms), 1, round_ms)  # fmt: skip

    a, b = timing((10.0, 20.0, 40.0)), timing((5.0, 5.0, 40.0))
    assert paired_speedup(a, b) == pytest.approx(2.0)  # ratios 2, 4, 1


def test_bench_variants_records() -> None:
    rows = bench_variants("tiny", [0.25, 0.5], [4], batch_size=2, **FAST)
    assert [r["variant"] for r in rows] == ["baseline", "p0.25-s4", "p0.5-s4"]
    for r in rows:
        assert tuple(r) == RECORD_KEYS
        assert r["images_per_s"] > 0 and r["latency_ms"] > 0 and r["speedup"] > 0
        assert r["efficiency"] == pytest.approx(r["speedup"] / r["flops_speedup"])
    base, early, mid = rows
    assert (base["speedup"], base["flops_speedup"], base["block_index"]) == (1.0, 1.0, None)
    assert early["flops_speedup"] > mid["flops_speedup"] > 1  # earlier reduction saves more
    assert early["gflops"] == pytest.approx(base["gflops"] / early["flops_speedup"])
    json.dumps(rows)


def test_cli_bench_json() -> None:
    args = ["bench", "--model", "tiny", "--positions", "0.5", "--tokens", "4", "--batch-size", "2",
            "--rounds", "2", "--threads", "1", "--device", "cpu", "--format", "json"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["variant"] for r in rows] == ["baseline", "p0.5-s4"]


BAD_INPUT = [
    ["--device", "tpu"],
    ["--batch-size", "0"],
    ["--batch-size", "big"],
    ["--dtype", "int8"],
    ["--positions", "a,b"],
    ["--positions", "1.5"],
    ["--tokens", "x"],
    ["--rounds", "0"],
    ["--threads", "0"],
    ["--format", "xml"],
    ["--model", "vit_b61"],
]
if not torch.cuda.is_available():
    BAD_INPUT.append(["--device", "cuda"])


@pytest.mark.parametrize("extra", BAD_INPUT, ids=lambda a: " ".join(a))
def test_cli_bench_bad_input(extra: list[str]) -> None:
    result = CliRunner().invoke(app, ["bench", "--model", "tiny", "--device", "cpu", *extra])
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert "Traceback" not in result.output


@pytest.mark.gpu
def test_cuda_timing_with_batch_search() -> None:
    t = measure_throughput(build_variant("tiny"), device="cuda", dtype="bfloat16", batch_size="auto",
                           warmup=2, rounds=2, iters=2)  # fmt: skip
    assert t.device == "cuda" and t.dtype == "bfloat16" and t.batch_size >= 1
    assert t.images_per_s > 0 and "cpu" not in t.device_name.lower()
