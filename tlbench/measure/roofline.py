"""Roofline: how close each variant runs to the device's limits, and where its time goes.

Three measurements, each taken under the settings of the timing itself (device, dtype, threads):
- the device's roofs, measured once per run on the device: the best dense matmul rate in the
  compute dtype (`peak_tflops`) and the best copy bandwidth (`peak_gbs`);
- the bytes an image moves (`bytes_moved`): every aten op of one forward pass reads its tensor
  inputs and writes its outputs once (views move nothing). That is the traffic of the unfused
  (eager) op sequence: weights once per batch, activations per image, and autocast's casts; a
  fused (compiled) run moves less, so its true intensity is at least this one;
- the time shares (`time_breakdown`): one profiled forward pass of exactly what was timed,
  split into matmul (GEMMs, the patch convolution), fused attention (SDPA kernels) and the rest
  (element-wise work, norms, copies, launch gaps and Python overhead: whatever is not the first
  two), each over the profiled pass's wall time.
A variant's arithmetic intensity is FLOPs / bytes (FLOPs = 2 x fvcore MACs); its achieved FLOP/s
against min(peak, bandwidth x intensity) says whether it is compute-bound, memory-bound or
neither (overhead-bound: far below both roofs).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from tlbench import results
from tlbench.backbones.vit import model_info
from tlbench.core import Variant
from tlbench.measure.flops import analytic_flops
from tlbench.measure.kernels import _quiet_native_stderr
from tlbench.measure.speedup import speedup_interval

# Square matmul sizes for the peak: large enough to reach the plateau, small enough for seconds.
PEAK_N = {"cuda": 8192, "cpu": 1024}
COPY_BYTES = {"cuda": 1 << 30, "cpu": 64 << 20}  # per copy; reads as much as it writes
PEAK_REPS = {"cuda": (3, 10), "cpu": (2, 10)}  # warm-up, timed repetitions (best one counts)

# CPU: profiler op names (self time); CUDA: kernel names. Attention is checked before matmul:
# flash kernels contain 'gemm'-like substrings on some builds.
ATTENTION = re.compile(r"scaled_dot_product|flash|fmha|attention|sdpa|_attn_|mha", re.I)
MATMUL = re.compile(
    r"^aten::(mm|addmm|bmm|baddbmm|matmul|linear|_?convolution|conv\dd|mkldnn_convolution|"
    r"_mkldnn_linear|mkldnn_linear)$|^mkldnn::|gemm|gemv|cutlass|xmma|cublas|wgmma|triton_tem|"
    r"_mm_|convolution|convolve|conv[23]d",
    re.I,
)


@dataclass(frozen=True)
class Peaks:
    """The device's roofs in one dtype, measured on it."""

    tflops: float  # best dense n x n x n matmul, 2 n^3 FLOPs per product
    gbs: float  # best copy bandwidth, bytes read + written per second / 1e9
    dtype: str  # the matmul's dtype
    matmul_n: int


@dataclass(frozen=True)
class Breakdown:
    """Shares of one forward pass's time; they sum to 1."""

    matmul: float
    attention: float
    other: float


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _best_seconds(fn: Callable[[], object], device: torch.device, warmup: int, reps: int) -> float:
    """The fastest of `reps` timed calls after `warmup` untimed ones: the roof is what the device
    can do, so on a shared machine the best repetition is the estimate, not the median."""
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(reps):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def measure_peaks(device: torch.device, dtype: torch.dtype, n: int | None = None) -> Peaks:
    """Matmul peak and copy bandwidth of `device` in `dtype`, under the caller's thread setting."""
    kind = "cuda" if device.type == "cuda" else "cpu"
    n = n or PEAK_N[kind]
    warm, reps = PEAK_REPS[kind]
    gen = torch.Generator().manual_seed(0)
    a, b = (torch.randn(n, n, generator=gen).to(device=device, dtype=dtype) for _ in range(2))
    out = torch.empty(n, n, device=device, dtype=dtype)
    t_mm = _best_seconds(lambda: torch.mm(a, b, out=out), device, warm, reps)
    numel = COPY_BYTES[kind] // 4
    src = torch.ones(numel, device=device, dtype=torch.float32)
    dst = torch.empty_like(src)
    t_copy = _best_seconds(lambda: dst.copy_(src), device, warm, reps)
    return Peaks(tflops=2 * n**3 / t_mm / 1e12, gbs=2 * numel * 4 / t_copy / 1e9,
                 dtype=str(dtype).removeprefix("torch."), matmul_n=n)  # fmt: skip


def best_peaks(a: Peaks, b: Peaks) -> Peaks:
    """The higher roof of two measurements (before and after the timing: a shared machine's load
    can only lower a measured peak)."""
    return Peaks(max(a.tflops, b.tflops), max(a.gbs, b.gbs), a.dtype, a.matmul_n)


def _nbytes(t: torch.Tensor) -> int:
    """Bytes a kernel touches reading `t`: its elements, but no more than its storage holds (an
    expanded bias is read once)."""
    n = t.numel() * t.element_size()
    try:
        return min(n, t.untyped_storage().nbytes())
    except (RuntimeError, NotImplementedError):  # tensors without storage (e.g. some wrappers)
        return n


class _ByteCounter(TorchDispatchMode):
    """Sums the bytes every non-view aten op reads (tensor inputs) and writes (outputs)."""

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        if not getattr(func, "is_view", False):
            ins, _ = tree_flatten((args, kwargs or {}))
            outs, _ = tree_flatten(out)
            self.total += sum(_nbytes(t) for t in ins if isinstance(t, torch.Tensor))
            self.total += sum(_nbytes(t) for t in outs if isinstance(t, torch.Tensor))
        return out


def count_bytes(model: nn.Module, x: torch.Tensor) -> int:
    """Bytes one eager forward pass of `model` on `x` moves (see the module docstring). Runs under
    the caller's settings (inference mode, autocast), which decide the dtypes and the casts."""
    counter = _ByteCounter()
    with counter:
        model(x)
    return counter.total


def bytes_moved(
    model: nn.Module, x: torch.Tensor, autocast: torch.dtype | None = None
) -> tuple[float, float]:
    """(bytes per pass that do not grow with the batch, bytes per image): from passes at batch 1
    and 2, since traffic is linear in the batch (weights once per pass, activations per image).
    Per image at batch B: fixed / B + per_image.

    `autocast`: the run autocasts to this dtype. Counting under autocast fails inside a dispatch
    mode (mixed dtypes in einsum), so the pass runs without it and is rescaled, to first order:
    activations at the autocast dtype's size; weights read in float32, written and read again as
    their autocast copy.
    """
    with torch.autocast(x.device.type, enabled=False):
        x1 = x[:1].float() if autocast is not None else x[:1]
        one = count_bytes(model, x1)
        two = count_bytes(model, x1.expand(2, *x.shape[1:]).contiguous())
    per_image, fixed = float(two - one), float(2 * one - two)
    if autocast is not None:
        size = torch.finfo(autocast).bits // 8
        per_image, fixed = per_image * size / 4, fixed * (4 + 2 * size) / 4
    return fixed, per_image


def _is_kernel(evt: Any) -> bool:
    return evt.device_type == torch.autograd.DeviceType.CUDA


def classify(name: str) -> str:
    """'attention', 'matmul' or 'other' for a profiler op or kernel name."""
    if ATTENTION.search(name):
        return "attention"
    return "matmul" if MATMUL.search(name) else "other"


def time_breakdown(
    run: Callable[[torch.Tensor], object], x: torch.Tensor, passes: int = 5
) -> Breakdown:
    """Shares of matmul, attention and the rest of a forward pass of `run` (the timed callable:
    compiled, graphed or eager), summed over `passes` profiled passes. On a shared machine a
    pre-emption lands in whichever op was running, with a chance proportional to its duration, so
    sums stay unbiased (a minimum or median per category is not: on a busy CPU every pass's wall
    time holds pre-emptions while one category's least time may hold none). On CUDA the kernels'
    device time counts; on a CPU each op's self time. The wall time is the whole, so launch gaps
    and Python overhead land in `other`."""

    device = x.device
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    samples = []  # (matmul us, attention us, wall us) per pass
    for _ in range(passes):
        _sync(device)
        with _quiet_native_stderr(), torch.profiler.profile(activities=activities) as prof:
            t0 = time.perf_counter()
            run(x)
            _sync(device)
            wall_us = (time.perf_counter() - t0) * 1e6
        with _quiet_native_stderr():
            events = list(prof.events())
        spent = {"matmul": 0.0, "attention": 0.0, "other": 0.0}
        for evt in events:
            if device.type == "cuda":
                if _is_kernel(evt):
                    spent[classify(evt.name)] += evt.time_range.elapsed_us()
            elif evt.device_type == torch.autograd.DeviceType.CPU:
                spent[classify(evt.name)] += evt.self_cpu_time_total
        samples.append(
            (
                spent["matmul"],
                spent["attention"],
                max(wall_us, spent["matmul"] + spent["attention"]),
            )
        )
    mm, attn, wall = (float(v) for v in np.sum(np.array(samples), axis=0))
    mm, attn = mm / max(wall, 1e-9), attn / max(wall, 1e-9)
    return Breakdown(matmul=mm, attention=attn, other=max(0.0, 1.0 - mm - attn))


def roofline_metrics(
    images_per_s: float, gflops: float, bytes_per_image: float, peaks: Peaks
) -> dict[str, float]:
    """Achieved TFLOP/s, arithmetic intensity (FLOP/byte), the roof at that intensity and MFU
    (achieved / measured matmul peak) of one variant; `gflops` in fvcore's MACs."""
    flops = 2 * gflops * 1e9  # per image
    achieved = images_per_s * flops / 1e12
    intensity = flops / bytes_per_image
    roof = min(peaks.tflops, peaks.gbs * intensity / 1e3)
    return {"achieved_tflops": achieved, "arith_intensity": intensity, "roof_tflops": roof,
            "mfu": achieved / peaks.tflops}  # fmt: skip


def roofline_rows(variant: Any, timing: Any, timings: dict[str, Any], img_size: int | None,
                  extra: dict[str, Any]) -> list[dict[str, Any]]:  # fmt: skip
    """A sweep's roofline rows for one timed variant (throughput.Timing with roofline fields):
    mfu, achieved_tflops, arith_intensity, the roofs, the time shares and, with a baseline in
    the same timing, efficiency = speedup / FLOP-implied speedup. FLOPs: the analytic count."""

    info = model_info(variant.model, img_size)
    gflops = analytic_flops(info, variant) / 1e9
    peaks = Peaks(tflops=timing.peak_tflops, gbs=timing.peak_gbs, dtype=timing.dtype, matmul_n=0)
    metrics = roofline_metrics(timing.images_per_s, gflops, timing.bytes_at_batch, peaks)
    base = timings.get("baseline")
    if base is not None:
        base_gflops = analytic_flops(info, Variant(variant.model, None, None, None)) / 1e9
        speedup = 1.0 if variant.is_baseline else speedup_interval(base, timing).value
        metrics["efficiency"] = speedup / (base_gflops / gflops)
    metrics.update(peak_tflops=timing.peak_tflops, peak_gbs=timing.peak_gbs,
                   time_share_matmul=timing.time_share_matmul,
                   time_share_attention=timing.time_share_attention,
                   time_share_other=timing.time_share_other)  # fmt: skip
    return [
        results.make_row(variant, "speed", k, v, **extra)
        for k, v in metrics.items()
        if k in results.METRICS
    ]
