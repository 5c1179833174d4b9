"""Wall-clock speed: warm-up, synchronised timing, models interleaved in rounds.

Timing follows timm `benchmark.py` (perf_counter read after a CUDA sync, inference_mode, one fixed
random batch on the device) and adds what a comparison needs:
- all models run in the same rounds, so drift on a shared machine hits them alike, and the order
  alternates (A B C, C B A, ...): under load the first model of a round ran slower, and a 95%
  interval for one tiny model timed under two names missed 1.0 in 9 of 40 runs (alternating: 1);
- `speedup` is the median of per-round ratios against a model timed in the same run, with a
  bootstrap confidence interval (speedup.py);
- by default rounds are added until every interval is tight (or a time cap is hit): a fixed few
  rounds on a loaded machine reported a variant with 1.03x the baseline's FLOPs as 5.36x faster.
Compute only; progress goes to a callback.
"""

from __future__ import annotations

import contextlib
import gc
import os
import platform
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from tlbench.config import COMPILE_MODES, SpeedConfig, with_knobs
from tlbench.errors import ConfigError
from tlbench.measure.kernels import attention_kernels, kernel_label
from tlbench.measure.roofline import best_peaks, bytes_moved, measure_peaks, time_breakdown

# re-exported: the speedup statistics lived here, and callers import them from this module
from tlbench.measure.speedup import UNRELIABLE as UNRELIABLE
from tlbench.measure.speedup import Speedup as Speedup
from tlbench.measure.speedup import Timing, widest_interval
from tlbench.measure.speedup import needs_more_rounds as needs_more_rounds
from tlbench.measure.speedup import paired_speedup as paired_speedup
from tlbench.measure.speedup import ratio_interval as ratio_interval
from tlbench.measure.speedup import speedup_interval as speedup_interval

Progress = Callable[[str], None]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# Pure low precision: weights and input cast, no autocast (timm benchmark.py's --precision
# bfloat16): no per-op casts, half the weight traffic; autocast keeps fp32 weights and norms.
PURE = {"bfloat16-pure": torch.bfloat16, "float16-pure": torch.float16}
EAGER_SUFFIX = "@eager"  # time_interleaved(also_eager=True): the eager twin of each compiled model


@dataclass(frozen=True)
class Schedule:
    """Per-device defaults; each field can be overridden per call."""

    batch_size: int  # where the 'auto' out-of-memory search starts (on CPU it fits at once)
    warmup: int  # untimed forward passes per model before the first round
    min_rounds: int  # timed rounds before the adaptive stopping rule is first consulted
    iters: int  # forward passes per model per round (pipelined, one sync at each end)
    time_cap_s: float  # adaptive rounds stop once the timed rounds have taken this long in total
    max_rounds: int  # ... or after this many rounds, tight or not


# CPU: one warm-up pass suffices (the 'auto' batch check adds another); a vit_b16 sweep
# (baseline + 4 positions, S=8) takes a few minutes on 2 cores.
# CUDA: start high and let the search back off; 10 warm-up passes as timm.
SCHEDULES = {
    "cpu": Schedule(batch_size=8, warmup=1, min_rounds=5, iters=1, time_cap_s=60.0, max_rounds=50),
    "cuda": Schedule(batch_size=1024, warmup=10, min_rounds=10, iters=10, time_cap_s=60.0,
                     max_rounds=200),
}  # fmt: skip


def resolve_device(name: str) -> torch.device:
    """'auto' (CUDA when present, else CPU), 'cpu', 'cuda' or 'cuda:N'."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name != "cpu" and not (name == "cuda" or name.startswith("cuda:")):
        raise ConfigError(f"--device must be auto, cpu or cuda; got {name!r}")
    if name != "cpu" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device: cannot parse {name!r}") from None
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"device {name!r} requested but this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def resolve_dtype(name: str) -> torch.dtype:
    """'float32' (no autocast), 'bfloat16' or 'float16' (autocast), or 'bfloat16-pure' /
    'float16-pure' (weights and input in that dtype): the dtype the matmuls run in."""
    if name not in DTYPES and name not in PURE:
        raise ConfigError(f"--dtype must be one of {', '.join([*DTYPES, *PURE])}; got {name!r}")
    return DTYPES.get(name) or PURE[name]


def check_compile_mode(mode: str) -> str:
    """One of COMPILE_MODES."""
    if mode not in COMPILE_MODES:
        raise ConfigError(f"--compile-mode must be one of {', '.join(COMPILE_MODES)}; got {mode!r}")
    return mode


def parse_batch_size(value: int | str) -> int | str:
    """A positive int (or its string), or 'auto'."""
    if isinstance(value, str) and value.strip() == "auto":
        return "auto"
    try:
        b = int(value)
    except ValueError:
        b = 0
    if b < 1:
        raise ConfigError(f"--batch-size must be an integer >= 1 or 'auto'; got {value!r}")
    return b


def check_counts(rounds: int | None, iters: int | None, warmup: int | None) -> None:
    """rounds and iters >= 1, warmup >= 0 (None: the device default)."""
    for name, value, least in (("rounds", rounds, 1), ("iters", iters, 1), ("warmup", warmup, 0)):
        if value is not None and value < least:
            raise ConfigError(f"--{name} must be >= {least}; got {value}")


def device_slot(device: torch.device) -> str | None:
    """Which GPU, stable across jobs and processes: its UUID (CUDA_VISIBLE_DEVICES renumbers the
    GPUs a job sees, so an index says little on a cluster); None on a CPU."""
    if device.type != "cuda":
        return None
    uuid = getattr(torch.cuda.get_device_properties(device), "uuid", None)
    return f"GPU-{uuid}" if uuid is not None else f"cuda:{device.index or torch.cuda.current_device()}"


def device_name(device: torch.device) -> str:
    """GPU name, or the CPU model from /proc/cpuinfo (platform.processor() elsewhere)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "cpu"


def set_fused_attention(model: nn.Module, enabled: bool = True) -> int:
    """Set `fused_attn` on every timm Attention-like module; returns how many were set.

    timm reads the global flag once at construction, so a model built (or counted) with explicit
    attention keeps it unless each module is switched (peers-and-pitfalls.md §1.2).
    """
    mods = [m for m in model.modules() if hasattr(m, "fused_attn")]
    for m in mods:
        m.fused_attn = enabled
    return len(mods)


def is_oom(err: BaseException) -> bool:
    """CUDA out-of-memory, or an allocator failure reported as a RuntimeError."""
    if isinstance(err, torch.cuda.OutOfMemoryError):
        return True
    msg = str(err).lower()
    markers = ("out of memory", "can't allocate", "alloc_failed")  # CUDA, CPU, cuBLAS
    return isinstance(err, RuntimeError) and any(m in msg for m in markers)


def find_batch_size(try_batch: Callable[[int], object], start: int) -> int:
    """Largest batch in timm's decay sequence from `start` (256, 192, 128, 96, ...) that runs.

    `try_batch(b)` runs the workload at batch b; out-of-memory errors step down, anything else
    propagates. Device-agnostic, so the back-off is testable on CPU.
    """
    from timm.utils.decay_batch import decay_batch_step

    b = start
    while b >= 1:
        try:
            try_batch(b)
            return b
        except RuntimeError as e:  # torch.cuda.OutOfMemoryError is a RuntimeError
            if not is_oom(e):
                raise
        # outside the except block, so the traceback no longer pins the failed allocation
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        b = decay_batch_step(b)
    raise ConfigError(f"out of memory even at batch size 1 (search started at {start})")


@contextlib.contextmanager
def _settings(device: torch.device, threads: int, tf32: bool) -> Iterator[None]:
    """Set CPU threads and TF32 for the measurement; restore them afterwards."""
    old_threads, old_tf32 = torch.get_num_threads(), torch.backends.cuda.matmul.allow_tf32
    old_cudnn = torch.backends.cudnn.allow_tf32
    torch.set_num_threads(threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
    try:
        yield
    finally:
        torch.set_num_threads(old_threads)
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old_tf32, old_cudnn


def _all_cores() -> int:
    if hasattr(os, "sched_getaffinity"):  # respects taskset / container CPU sets
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def input_size_of(model: nn.Module) -> tuple[int, ...]:
    """(C, H, W) a timm ViT expects, from its patch embedding; (C, F, H, W) for a video ViT."""
    pe = getattr(model, "patch_embed", None)
    if pe is None:
        raise ConfigError("cannot infer the input size of this model; pass input_size=(C, H, W)")
    h, w = pe.img_size
    frames = getattr(pe, "num_frames", None)
    return (pe.proj.in_channels, *([frames] if frames else []), h, w)


def time_interleaved(
    models: Mapping[str, nn.Module],
    speed: SpeedConfig | None = None,
    *,
    input_size: tuple[int, ...] | None = None,
    also_eager: bool = False,
    reference: str | None = None,
    progress: Progress | None = None,
    **knobs: Any,
) -> dict[str, Timing]:
    """Time several models on one random batch, interleaved: warm-up, then rounds A B C, C B A.

    Models are put in eval mode, moved to the device and switched to fused attention in place,
    so that the baseline and every variant use the same kernel; which kernel SDPA picked is
    observed in one profiled pass per model before any timing (`Timing.attn_kernel`, on the eager
    model even with `compile`). Count FLOPs before calling this, on the eager modules: `compile`
    wraps them here, after counting.

    Args:
        models: name -> model; all take the same input. Order is the order within even rounds;
            odd rounds run it reversed, so that no model always goes first.
        speed: the settings (config.SpeedConfig: batch size, device, dtype, compile, threads,
            warm-up, rounds or the adaptive rule, TF32); `knobs` replace its fields.
            rounds=None adds rounds until every speedup against `reference` has a relative CI
            half-width <= target_ci, or time_cap_s or max_rounds is reached.
        input_size: (C, H, W); default from the first model's patch embedding.
        also_eager: with `speed.compile`, time each model twice in the same rounds, compiled under
            its name and eager as name + EAGER_SUFFIX: what compile buys, with an interval.
            (The record's other new fields: `compile_mode`, the same for every model; `dtype`
            '<dtype>-pure' casts the models and the input in place; `cuda_graphs`, CUDA only,
            captures each forward once and times replays; `channels_last`; `roofline` measures
            the device's matmul peak and bandwidth, each model's bytes moved and time shares.)
        reference: the model speedups are taken against (default: the first).
        progress: called with a short status line before each stage.

    Returns:
        name -> Timing, in the order of `models`.
    """
    speed = with_knobs(speed or SpeedConfig(), "speed", **knobs)
    s = speed
    device, dtype, compile, tf32, threads = s.device, s.dtype, s.compile, s.tf32, s.threads
    warmup, rounds, iters, target_ci = s.warmup, s.rounds, s.iters, s.target_ci
    time_cap_s, max_rounds, batch_size = s.time_cap_s, s.max_rounds, s.batch_size
    compile_mode, cuda_graphs, channels_last, roofline = s.compile_mode, s.cuda_graphs, s.channels_last, s.roofline
    dev, amp = resolve_device(device), resolve_dtype(dtype)
    check_compile_mode(compile_mode)
    if cuda_graphs and compile and compile_mode in ("reduce-overhead", "max-autotune"):
        raise ConfigError(f"compile mode {compile_mode} captures CUDA graphs itself: drop --cuda-graphs, "
                          "or use mode default or max-autotune-no-cudagraphs")  # fmt: skip
    pure = dtype in PURE
    graphs = cuda_graphs and dev.type == "cuda"
    sched = SCHEDULES["cuda" if dev.type == "cuda" else "cpu"]
    warmup = sched.warmup if warmup is None else warmup
    iters = sched.iters if iters is None else iters
    max_rounds = sched.max_rounds if max_rounds is None else max_rounds
    time_cap_s = sched.time_cap_s if time_cap_s is None else time_cap_s
    check_counts(rounds=rounds, iters=iters, warmup=warmup)
    if max_rounds < 1 or not target_ci > 0 or not time_cap_s >= 0:
        raise ConfigError("max_rounds must be >= 1, target_ci > 0 and time_cap_s >= 0; got "
                          f"{max_rounds}, {target_ci}, {time_cap_s}")  # fmt: skip
    adaptive = rounds is None
    min_rounds = rounds if rounds is not None else min(sched.min_rounds, max_rounds)
    batch = parse_batch_size(batch_size)
    if not models:
        raise ConfigError("no models to time")
    reference = next(iter(models)) if reference is None else reference
    if reference not in models:
        raise ConfigError(f"reference {reference!r} is not one of the models: {', '.join(models)}")
    threads = threads or _all_cores()
    size = input_size or input_size_of(next(iter(models.values())))
    report = progress or (lambda _msg: None)

    fmt = torch.channels_last if channels_last else torch.contiguous_format
    for m in models.values():  # shared weights are cast once; the rest per model
        m.eval().to(dev, dtype=amp if pure else None)
        if channels_last:
            m.to(memory_format=fmt)
    fused = {name: set_fused_attention(m) for name, m in models.items()}
    # the autocast weight-cast cache breaks CUDA graph capture (torch docs); off with graphs
    autocast_on = amp != torch.float32 and not pure
    autocast = torch.autocast(dev.type, dtype=amp, enabled=autocast_on,
                              cache_enabled=False if graphs else None)  # fmt: skip

    def make_input(b: int, gen: torch.Generator | None = None) -> torch.Tensor:
        x = torch.randn(b, *size, generator=gen).to(dev, dtype=amp if pure else torch.float32)
        return x.contiguous(memory_format=fmt) if channels_last and x.dim() == 4 else x

    with _settings(dev, threads, tf32), torch.inference_mode(), autocast:

        def run_all(b: int) -> None:
            x = make_input(b)
            for m in models.values():
                m(x)
            _sync(dev)

        if batch == "auto":
            report(f"searching batch size from {sched.batch_size}")
            batch = find_batch_size(run_all, sched.batch_size)
        gen = torch.Generator().manual_seed(0)
        x = make_input(batch, gen)  # [B, C, (F,) H, W], never zeros
        report("checking attention kernels")  # one profiled pass each, eager, before any timing
        kernels = {name: kernel_label(attention_kernels(m, x)) for name, m in models.items()}
        peaks, moved = None, {}
        if roofline:

            report("measuring the device's matmul peak and bandwidth")  # before and after timing
            peaks = measure_peaks(dev, amp)
            for name, m in models.items():
                report(f"counting the bytes {name} moves")
                moved[name] = bytes_moved(m, x, amp if autocast_on else None)
        if compile:  # one recompile per variant of the shared forward code; keep all of them
            torch._dynamo.reset()  # as timm's benchmark: nothing compiled earlier is reused
            cfg = torch._dynamo.config
            if hasattr(cfg, "recompile_limit"):  # `cache_size_limit` before torch 2.7
                cfg.recompile_limit = max(cfg.recompile_limit, 8 + 2 * len(models))
        runs: dict[str, Callable[[torch.Tensor], object]] = {}
        for n, m in models.items():
            runs[n] = torch.compile(m, mode=compile_mode) if compile else m
            if compile and also_eager:
                runs[n + EAGER_SUFFIX] = m
        compiled_names = {n for n in models if compile}

        for name, m in runs.items():
            report(f"warm-up {name}" + (" (compiling)" if name in compiled_names else ""))
            for _ in range(warmup):
                m(x)
        _sync(dev)
        if graphs:
            report("capturing CUDA graphs")
            runs = {name: _graphed(m, x) for name, m in runs.items()}
        times: dict[str, list[float]] = {name: [] for name in runs}
        names = list(runs)

        def one_round(r: int) -> float:
            """Time every model once, in reverse order in odd rounds; returns the seconds taken."""
            for name in names if r % 2 == 0 else names[::-1]:
                m = runs[name]
                _sync(dev)
                t0 = time.perf_counter()
                for _ in range(iters):
                    m(x)
                _sync(dev)
                times[name].append((time.perf_counter() - t0) * 1e3 / iters)
            return sum(times[name][-1] for name in names) * iters / 1e3

        spent = 0.0
        for r in range(min_rounds):
            report(f"round {r + 1}/{min_rounds}" + (" (minimum)" if adaptive else ""))
            spent += one_round(r)
        done = min_rounds
        while adaptive and done < max_rounds and spent < time_cap_s:
            widest = widest_interval(times, reference)
            if widest <= target_ci:  # as needs_more_rounds, without bootstrapping twice
                break
            # after the check's numpy work the next model ran 2-20% slower (tiny ViT, CPU): an
            # untimed pass of the model that closed the last round (and opens the next) absorbs it
            runs[names[-1] if done % 2 else names[0]](x)
            for _ in range(min(max(1, done // 10), max_rounds - done)):  # grow ~10% per check
                report(f"round {done + 1} (adaptive, widest interval ±{widest:.0%})")
                spent += one_round(done)
                done += 1
                if spent >= time_cap_s:
                    break

        shares = {}
        if roofline and peaks is not None:

            report("measuring the device's matmul peak and bandwidth again")
            peaks = best_peaks(peaks, measure_peaks(dev, amp))
            for name, m in runs.items():
                report(f"profiling {name}")
                shares[name] = time_breakdown(m, x)

    common: dict[str, Any] = {
        "batch_size": batch,
        "device": dev.type,
        "device_name": device_name(dev),
        "host": socket.gethostname(),
        "gpu": device_slot(dev),
        "dtype": dtype,
        "cuda_graphs": graphs,
        "channels_last": channels_last,
        "tf32": tf32 and dev.type == "cuda",
        "torch_version": torch.__version__,
        "threads": threads,
        "warmup": warmup,
        "rounds": done,
        "iters": iters,
    }
    out = {}
    for name, ms in times.items():
        p10, med, p90 = (float(v) for v in np.percentile(ms, [10, 50, 90]))
        base = name.removesuffix(EAGER_SUFFIX) if name not in models else name
        roof: dict[str, Any] = {}
        if roofline and peaks is not None:
            share = shares[name]
            roof = dict(peak_tflops=peaks.tflops, peak_gbs=peaks.gbs, bytes_fixed=moved[base][0],
                        bytes_per_image=moved[base][1], time_share_matmul=share.matmul,
                        time_share_attention=share.attention, time_share_other=share.other)  # fmt: skip
        out[name] = Timing(
            images_per_s=batch * 1e3 / med,
            latency_ms=med,
            latency_ms_p10=p10,
            latency_ms_p90=p90,
            attention="fused" if fused[base] else "none",
            round_ms=tuple(ms),
            attn_kernel=kernels[base],
            compiled=name in compiled_names,
            compile_mode=compile_mode if name in compiled_names else "",
            **common,
            **roof,
        )
    return out


def _graphed(
    run: Callable[[torch.Tensor], object], x: torch.Tensor
) -> Callable[[torch.Tensor], object]:
    """`run(x)` captured once as a CUDA graph; the returned callable replays it (the input is the
    same fixed tensor in every call, so the captured addresses stay valid). Warm-up on a side
    stream first, as torch.cuda.graphs asks."""
    stream = torch.cuda.Stream(device=x.device)
    stream.wait_stream(torch.cuda.current_stream(x.device))
    with torch.cuda.stream(stream):
        for _ in range(3):
            run(x)
    torch.cuda.current_stream(x.device).wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = run(x)

    def replay(inp: torch.Tensor) -> object:
        if inp is not x:
            raise ValueError("a captured CUDA graph replays on the tensor it was captured with")
        graph.replay()
        return out

    return replay


def measure_throughput(model: nn.Module, **kwargs: Any) -> Timing:
    """Time one model; keyword arguments as `time_interleaved`."""
    return time_interleaved({"model": model}, **kwargs)["model"]
