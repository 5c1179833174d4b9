"""Throughput: record structure and units, interleaving, OOM back-off, speedup intervals, adaptive
rounds, bench records, CLI errors.

Times are never asserted; only structure, units, call order and positivity. The one real-clock
ratio checked is that of a model with itself (its 99.9% interval contains 1.0). The adaptive loop
is driven by a fake clock (each model advances it by a scripted cost), so its stops are exact.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from tlbench.cli import app
from tlbench.errors import ConfigError
from tlbench.measure import throughput
from tlbench.measure.bench import RECORD_KEYS, bench_variants
from tlbench.measure.throughput import (
    SCHEDULES,
    UNRELIABLE,
    Speedup,
    Timing,
    find_batch_size,
    measure_throughput,
    needs_more_rounds,
    paired_speedup,
    ratio_interval,
    speedup_interval,
    time_interleaved,
    widest_interval,
)
from tlbench.variants import build_variant

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


class Clocked(nn.Module):
    """Advances a fake clock by its costs in turn (ms), so the measured latencies are scripted."""

    def __init__(self, clock: list[float], costs_ms: Sequence[float]) -> None:
        super().__init__()
        self.clock, self.costs, self.calls = clock, costs_ms, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.clock[0] += self.costs[self.calls % len(self.costs)] / 1e3
        self.calls += 1
        return x.mean(dim=(1, 2, 3))


def clocked(monkeypatch: pytest.MonkeyPatch, **costs_ms: Sequence[float]) -> dict[str, nn.Module]:
    """Models on a fake `perf_counter` in throughput.py only; warm-up and settle passes tick too."""
    clock = [0.0]
    monkeypatch.setattr(throughput, "time", SimpleNamespace(perf_counter=lambda: clock[0]))
    return {name: Clocked(clock, c) for name, c in costs_ms.items()}


def timing(round_ms: Sequence[float]) -> Timing:
    return Timing(1.0, 1.0, 1.0, 1.0, 1, "cpu", "x", "float32", False, False, "fused", "2",
                  1, 0, len(round_ms), 1, tuple(round_ms))  # fmt: skip


ADAPT: dict[str, Any] = {"input_size": (3, 4, 4), "batch_size": 1, "device": "cpu", "threads": 1,
                         "warmup": 0, "iters": 1, "roofline": False}  # fmt: skip


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


def test_models_are_interleaved_in_rounds_of_alternating_order() -> None:
    log: list[tuple[str, int]] = []
    models = {n: Logger(n, log) for n in "ABC"}
    out = time_interleaved(models, input_size=(3, 4, 4), batch_size=2, device="cpu", threads=1,
                           warmup=1, rounds=3, iters=2, roofline=False)  # fmt: skip
    assert list(out) == ["A", "B", "C"]
    warm, timed = [n for n, _ in log[:3]], [n for n, _ in log[3:]]
    assert warm == ["A", "B", "C"]
    forward, backward = ["A", "A", "B", "B", "C", "C"], ["C", "C", "B", "B", "A", "A"]
    assert timed == forward + backward + forward  # no model always goes first
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
    a, b = timing((10.0, 20.0, 40.0)), timing((5.0, 5.0, 40.0))
    assert paired_speedup(a, b) == pytest.approx(2.0)  # ratios 2, 4, 1


def test_bootstrap_is_deterministic_and_contains_the_median() -> None:
    ratios = np.random.default_rng(1).lognormal(0.3, 0.2, size=15)
    s = ratio_interval(ratios)
    assert s == ratio_interval(ratios) and isinstance(s, Speedup)
    assert s.value == pytest.approx(np.median(ratios)) and s.rounds == 15
    assert s.low <= s.value <= s.high and s.low < s.high
    base, other = timing(ratios * 10), timing([10.0] * 15)
    assert speedup_interval(base, other) == speedup_interval(base, other)
    assert speedup_interval(base, other).value == pytest.approx(paired_speedup(base, other))


def test_constant_ratios_give_a_zero_width_reliable_interval() -> None:
    s = speedup_interval(timing([10.0, 20.0, 30.0, 40.0]), timing([5.0, 10.0, 15.0, 20.0]))
    assert (s.value, s.low, s.high, s.rounds, s.reliable) == (2.0, 2.0, 2.0, 4, True)
    assert s.half_width == 0.0


def test_scattered_ratios_are_unreliable() -> None:
    s = ratio_interval([0.5, 3.0, 1.0, 5.36, 0.8, 2.0, 4.0, 0.6])
    assert not s.reliable and s.half_width > UNRELIABLE
    assert s.low <= s.value <= s.high


@pytest.mark.parametrize("n", [1, 2])
def test_fewer_than_three_rounds_is_never_reliable(n: int) -> None:
    s = ratio_interval([2.0] * n)
    assert s.half_width == 0.0 and not s.reliable
    assert needs_more_rounds({"base": [2.0] * n, "v": [1.0] * n}, "base", 0.05)


def test_stopping_rule_stops_when_tight_and_continues_when_wide() -> None:
    base = [10.0, 11.0, 9.0, 10.5, 9.5, 10.0]
    tight = [b / 1.5 * (1 + 0.001 * (-1) ** i) for i, b in enumerate(base)]  # ratios 1.5 ± 0.1%
    wide = [b / r for b, r in zip(base, [0.5, 3.0, 1.0, 5.36, 0.8, 2.0], strict=True)]
    assert not needs_more_rounds({"base": base, "v": tight}, "base", 0.05)
    assert needs_more_rounds({"base": base, "v": tight, "w": wide}, "base", 0.05)
    assert widest_interval({"base": base, "v": tight}, "base") < 0.01
    assert not needs_more_rounds({"base": base}, "base", 0.05)  # nothing to compare
    assert not needs_more_rounds({"v": tight, "base": base}, "base", 0.05)  # reference by name


def test_explicit_rounds_are_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    models = clocked(monkeypatch, a=[0.5, 2.0], b=[1.0])  # ratios 0.5, 2: never tight
    out = time_interleaved(models, rounds=7, max_rounds=3, time_cap_s=0.0, **ADAPT)
    assert [t.rounds for t in out.values()] == [7, 7]
    assert [m.calls for m in models.values()] == [7, 7]  # no warm-up, no settle pass


def test_adaptive_stops_at_the_minimum_when_tight(monkeypatch: pytest.MonkeyPatch) -> None:
    msgs: list[str] = []
    models = clocked(monkeypatch, a=[2.0], b=[1.0], c=[4.0])
    out = time_interleaved(models, progress=msgs.append, **ADAPT)
    assert {t.rounds for t in out.values()} == {SCHEDULES["cpu"].min_rounds}
    assert speedup_interval(out["a"], out["b"]).value == pytest.approx(2.0)
    assert not any("adaptive" in m for m in msgs)


def test_adaptive_runs_to_max_rounds_when_wide(monkeypatch: pytest.MonkeyPatch) -> None:
    msgs: list[str] = []
    models = clocked(monkeypatch, a=[0.5, 2.0, 1.0], b=[1.0])  # the scattered one is the reference
    out = time_interleaved(models, max_rounds=12, time_cap_s=100.0, progress=msgs.append, **ADAPT)
    assert out["a"].rounds == out["b"].rounds == 12 == len(out["b"].round_ms)
    assert "round 12 (adaptive, widest interval ±" in msgs[-1]
    s = speedup_interval(out["a"], out["b"])
    assert s.rounds == 12 and not s.reliable


def test_adaptive_stops_at_the_time_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    models = clocked(monkeypatch, a=[5.0, 20.0], b=[10.0])  # rounds of 15 or 30 ms, never tight
    out = time_interleaved(models, max_rounds=100, time_cap_s=0.25, **ADAPT)
    round_s = [(a + b) / 1e3 for a, b in zip(out["a"].round_ms, out["b"].round_ms, strict=True)]
    assert sum(round_s[:-1]) < 0.25 <= sum(round_s)  # stopped at the first round past the cap
    assert SCHEDULES["cpu"].min_rounds < out["a"].rounds < 100


def test_adaptive_minimum_is_capped_by_max_rounds(monkeypatch: pytest.MonkeyPatch) -> None:
    out = time_interleaved(clocked(monkeypatch, a=[0.5, 2.0], b=[1.0]), max_rounds=2, **ADAPT)
    assert out["a"].rounds == 2


@pytest.mark.parametrize(
    "bad", [{"reference": "nope"}, {"max_rounds": 0}, {"target_ci": 0.0}, {"time_cap_s": -1.0}]
)
def test_adaptive_settings_are_checked(bad: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        time_interleaved({"a": nn.Identity()}, **ADAPT, **bad)


def test_identical_models_speedup_interval_contains_one() -> None:
    model = build_variant("tiny")  # the same module timed under two names
    never_tight = {"target_ci": 1e-6, "time_cap_s": 0.5, "max_rounds": 30}  # run to a cap
    out = time_interleaved({"a": model, "b": model}, batch_size=1, device="cpu", threads=1,
                           warmup=1, iters=1, **never_tight)  # fmt: skip
    assert SCHEDULES["cpu"].min_rounds <= out["a"].rounds <= 30
    # a 95% interval misses the truth in 1 run of 20 by design; test the wider 99.9% one
    s = speedup_interval(out["a"], out["b"], confidence=0.999)
    assert s.low <= 1.0 <= s.high
    assert speedup_interval(out["a"], out["b"]).value == s.value


def test_bench_records_carry_the_speedup_interval() -> None:
    rows = bench_variants("tiny", [0.5], [4], batch_size=2, device="cpu", threads=1, warmup=1,
                          iters=1, time_cap_s=0.2, max_rounds=8)  # fmt: skip
    base, variant = rows
    for r in rows:
        assert tuple(r) == RECORD_KEYS
        assert r["speedup_low"] <= r["speedup"] <= r["speedup_high"]
        assert isinstance(r["speedup_reliable"], bool)
        assert SCHEDULES["cpu"].min_rounds <= r["rounds"] <= 8
    assert (base["speedup_low"], base["speedup_high"], base["speedup_reliable"]) == (1.0, 1.0, True)
    json.dumps(rows)


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
    assert t.gpu is not None and t.gpu.startswith(("GPU-", "cuda:")) and t.host
    assert t.images_per_s > 0 and "cpu" not in t.device_name.lower()
