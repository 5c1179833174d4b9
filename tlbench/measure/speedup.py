"""One model's timing record, and speedups from paired timings: a median of per-round latency ratios with a bootstrap interval.

Models are timed in the same rounds, so a speedup is the median of per-round ratios (baseline /
other), and same-round pairs cancel drift; its interval is a percentile bootstrap of that median
over whole rounds. Past pyperf's 10% rule (half-width > 10% of the value) it is flagged unreliable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Timing:
    """One model's speed; latencies are per batch (one forward pass)."""

    images_per_s: float  # batch_size / median latency
    latency_ms: float  # median over rounds
    latency_ms_p10: float  # spread over rounds
    latency_ms_p90: float
    batch_size: int
    device: str  # 'cpu' or 'cuda'
    device_name: str  # CPU model or GPU name
    dtype: str  # 'float32', the autocast dtype, or '<dtype>-pure' (weights and input cast)
    compiled: bool
    tf32: bool  # TF32 matmuls on (CUDA only; always False on CPU)
    attention: str  # 'fused' (SDPA on every timm Attention module) or 'none' (no such module)
    torch_version: str
    threads: int
    warmup: int
    rounds: int  # rounds actually run (adaptive mode decides at run time)
    iters: int
    round_ms: tuple[float, ...] = field(default=(), repr=False)  # ms per batch, one per round
    attn_kernel: str = ""  # attention kernel(s) that ran: 'flash', 'math', 'unfused' (kernels.py)
    host: str = ""  # the machine (cluster node) that timed it
    gpu: str | None = None  # which GPU (device_slot); None on a CPU
    compile_mode: str = ""  # torch.compile mode when compiled, else ''
    cuda_graphs: bool = False  # the forward was captured once and replayed as a CUDA graph
    channels_last: bool = False  # NHWC input and patch-embed weights
    # roofline (time_interleaved(roofline=True); measure/roofline.py), else None:
    peak_tflops: float | None = None  # the device's best matmul in the compute dtype, this run
    peak_gbs: float | None = None  # its best copy bandwidth, GB/s
    bytes_fixed: float | None = None  # bytes per pass that do not grow with the batch (weights)
    bytes_per_image: float | None = None  # ... and per image; at batch B: fixed / B + per image
    time_share_matmul: float | None = None  # of the timed latency, from one profiled pass
    time_share_attention: float | None = None
    time_share_other: float | None = None

    @property
    def bytes_at_batch(self) -> float | None:
        """Bytes moved per image at this timing's batch size."""
        if self.bytes_per_image is None or self.bytes_fixed is None:
            return None
        return self.bytes_fixed / self.batch_size + self.bytes_per_image

    def to_dict(self, rounds: bool = False) -> dict[str, Any]:
        """Flat dict; the per-round latencies only when asked."""
        d = asdict(self)
        if not rounds:
            del d["round_ms"]
        return d


TARGET_CI = 0.05  # adaptive rounds stop when every speedup's relative CI half-width is below this
# pyperf warns when the std exceeds 10% of the mean; a CI half-width beyond 10% of the speedup
# means the number cannot tell a real 1.1x from noise, so it is flagged
UNRELIABLE = 0.10
MIN_PAIRS = 3  # fewer paired rounds give no usable interval: never reliable, never "tight"
BOOTSTRAP = 2000  # resamples of the round indices


def paired_speedup(baseline: Timing, other: Timing) -> float:
    """Median over rounds of baseline latency / other latency (same-round pairs cancel drift)."""
    return float(np.median(_ratios(baseline.round_ms, other.round_ms)))


@dataclass(frozen=True)
class Speedup:
    """Median per-round latency ratio (baseline / other) with a bootstrap confidence interval."""

    value: float  # median of the per-round ratios, as `paired_speedup`
    low: float  # percentile-bootstrap interval of that median (95% unless asked otherwise)
    high: float
    rounds: int  # paired rounds behind it
    reliable: bool  # at least MIN_PAIRS rounds and relative half-width <= UNRELIABLE

    @property
    def half_width(self) -> float:
        """Relative half-width of the interval, (high - low) / (2 * value)."""
        return (self.high - self.low) / (2 * self.value)


def ratio_interval(
    ratios: Sequence[float], confidence: float = 0.95, resamples: int = BOOTSTRAP, seed: int = 0
) -> Speedup:
    """Median of paired ratios with a percentile-bootstrap interval over the rounds.

    Rounds are resampled whole (with replacement), so the interval reflects round-to-round noise
    on the machine; a fixed seed makes it a pure function of the ratios. `reliable` is judged on
    the interval at the given confidence.
    """
    r = np.asarray(ratios, dtype=float)
    if r.ndim != 1 or r.size == 0:
        raise ValueError("need at least one round of paired ratios")
    value = float(np.median(r))
    idx = np.random.default_rng(seed).integers(0, r.size, size=(resamples, r.size))
    tail = 50 * (1 - confidence)  # percent in each tail
    low, high = np.percentile(np.median(r[idx], axis=1), [tail, 100 - tail])
    # the percentile bootstrap of a median is discrete; keep low <= value <= high regardless
    low, high = min(float(low), value), max(float(high), value)
    half = (high - low) / (2 * value)
    return Speedup(value, low, high, int(r.size), r.size >= MIN_PAIRS and half <= UNRELIABLE)


def speedup_interval(baseline: Timing, other: Timing, confidence: float = 0.95) -> Speedup:
    """`paired_speedup` with its bootstrap interval and a reliability flag."""
    return ratio_interval(_ratios(baseline.round_ms, other.round_ms), confidence)


def widest_interval(times: Mapping[str, Sequence[float]], reference: str) -> float:
    """Largest relative CI half-width of any model's speedup against `reference`.

    `times` maps name -> per-round latencies. Infinite below MIN_PAIRS rounds (nothing can be
    said yet); 0.0 when there is nothing to compare.
    """
    others = [ms for name, ms in times.items() if name != reference]
    if len(times[reference]) < MIN_PAIRS:
        return float("inf") if others else 0.0
    return max((ratio_interval(_ratios(times[reference], ms)).half_width for ms in others),
               default=0.0)  # fmt: skip


def needs_more_rounds(
    times: Mapping[str, Sequence[float]], reference: str, target_ci: float = TARGET_CI
) -> bool:
    """The adaptive stopping rule: True while some speedup's relative half-width > target_ci."""
    return widest_interval(times, reference) > target_ci


def _ratios(baseline_ms: Sequence[float], other_ms: Sequence[float]) -> np.ndarray:
    if len(baseline_ms) != len(other_ms):
        raise ValueError("timings are not paired: different numbers of rounds")
    return np.divide(baseline_ms, other_ms)
