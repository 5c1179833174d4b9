"""`tlbench bench`: do FLOP savings become time savings? Build, count, time interleaved, compare.

Every variant is counted on its eager model (fvcore, fused attention handled in flops.py), then all
are timed in the same rounds with the same attention kernel (throughput.py). Ratios are taken
against the baseline of this run only: `speedup` (wall clock, with a 95% bootstrap interval
`speedup_low`..`speedup_high` and a `speedup_reliable` flag), `flops_speedup` (baseline GFLOPs /
variant GFLOPs) and `efficiency` = speedup / flops_speedup (1.0: every saved FLOP saved time).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tlbench.config import GridConfig, SpeedConfig, with_knobs
from tlbench.core import DEFAULT_METHOD
from tlbench.errors import ConfigError
from tlbench.measure.flops import count_flops
from tlbench.measure.roofline import Peaks, roofline_metrics
from tlbench.measure.throughput import (
    EAGER_SUFFIX,
    Progress,
    check_compile_mode,
    check_counts,
    input_size_of,
    parse_batch_size,
    resolve_device,
    resolve_dtype,
    speedup_interval,
    time_interleaved,
)
from tlbench.variants import build_sharing, make_variants

# Keys of every record, in output order (units in the names: img/s, ms, GFLOPs, ratios unitless).
RECORD_KEYS = (
    "model", "variant", "position", "block_index", "num_tokens", "batch_size", "device",
    "device_name", "dtype", "images_per_s", "latency_ms", "latency_ms_p10", "latency_ms_p90",
    "speedup", "speedup_low", "speedup_high", "speedup_reliable", "gflops", "flops_speedup",
    "efficiency", "compiled", "tf32", "attention", "attn_kernel", "threads", "rounds", "iters", "torch_version",
    "compile_mode", "cuda_graphs", "channels_last",
    # roofline (None with roofline=False): measure/roofline.py
    "mfu", "achieved_tflops", "arith_intensity", "bytes_per_image", "peak_tflops", "peak_gbs",
    "time_share_matmul", "time_share_attention", "time_share_other",
    # compile_gain=True (else None): the same variant eager, timed in the same rounds
    "eager_images_per_s", "eager_speedup", "eager_speedup_low", "eager_speedup_high",
    "compile_gain", "compile_gain_low", "compile_gain_high",
)  # fmt: skip
ROOFLINE_KEYS = ("mfu", "achieved_tflops", "arith_intensity")  # from measure.roofline.roofline_metrics


def bench_variants(
    model: str,
    positions: Sequence[float] | None = None,
    tokens: Sequence[int] | None = None,
    *,
    method: str = DEFAULT_METHOD,
    params: Mapping[str, int | Sequence[int]] | None = None,
    compile_gain: bool = False,
    img_size: int | None = None,
    speed: SpeedConfig | None = None,
    progress: Progress | None = None,
    **knobs: Any,
) -> list[dict[str, Any]]:
    """Time the baseline and the reducer's variants of one model, interleaved in one run.

    Args:
        model: alias or timm ViT name.
        positions: relative positions p in [0, 1] (default: the sweep grid's, 0, 1/4, 1/2, 3/4).
        tokens: token counts S (default: the sweep grid's, 8).
        method: the token reduction method (tlbench.reducers; default TokenLearner).
        params: the method's parameters, a value or a list (a grid) per name (tome_r: r).
        compile_gain: with `speed.compile`, also time every variant eager in the same rounds: records
            get its eager img/s and speedup, and compile_gain = compiled / eager with its interval.
        img_size: input resolution (default: the model's).
        speed: the timing settings, whole (config.SpeedConfig); `knobs` replace its fields.
        progress: called with a short status line before each stage.

    Returns:
        One dict per variant, baseline first, with the keys of RECORD_KEYS.
    """
    speed = with_knobs(speed or SpeedConfig(), "speed", **knobs)
    # validate cheap arguments before building anything
    resolve_device(speed.device), resolve_dtype(speed.dtype), parse_batch_size(speed.batch_size)
    check_compile_mode(speed.compile_mode)
    if compile_gain and not speed.compile:
        raise ConfigError("--compile-gain compares compiled with eager: it needs --compile")
    check_counts(rounds=speed.rounds, iters=speed.iters, warmup=speed.warmup)
    grid = GridConfig()
    report = progress or (lambda _msg: None)
    positions = list(grid.positions if positions is None else positions)
    variants = make_variants(model, positions, list(tokens or grid.tokens), img_size=img_size,
                             method=method, params=params)  # fmt: skip
    report(f"building {variants[0].model}")
    models = build_sharing(variants, img_size)  # variants share the backbone: one copy in memory
    gflops = {}
    for v in variants:
        report(f"counting FLOPs of {v.name}")
        gflops[v.name] = count_flops(models[v.name], variant=v).gflops  # on the eager model, before any compile
    base = models["baseline"]

    size = input_size_of(base)
    timings = time_interleaved(models, speed, input_size=size, also_eager=compile_gain, reference="baseline",
                               progress=progress)  # fmt: skip
    ref, ref_gflops = timings["baseline"], gflops["baseline"]
    records = []
    for v in variants:
        t = timings[v.name]
        speedup = speedup_interval(ref, t)
        flops_speedup = ref_gflops / gflops[v.name]
        row = dict(
            t.to_dict(),
            model=v.model,
            variant=v.name,
            position=v.position,
            block_index=v.block_index,
            num_tokens=v.num_tokens,
            speedup=speedup.value,
            speedup_low=speedup.low,
            speedup_high=speedup.high,
            speedup_reliable=speedup.reliable,
            gflops=gflops[v.name],
            flops_speedup=flops_speedup,
            efficiency=speedup.value / flops_speedup,
        )
        row.update({k: None for k in RECORD_KEYS if k not in row})
        if t.peak_tflops is not None:
            peaks = Peaks(t.peak_tflops, t.peak_gbs, t.dtype, 0)
            metrics = roofline_metrics(t.images_per_s, gflops[v.name], t.bytes_at_batch, peaks)
            row.update({k: metrics[k] for k in ROOFLINE_KEYS[:3]}, bytes_per_image=t.bytes_at_batch,
                       peak_tflops=t.peak_tflops, peak_gbs=t.peak_gbs,
                       time_share_matmul=t.time_share_matmul, time_share_attention=t.time_share_attention,
                       time_share_other=t.time_share_other)  # fmt: skip
        if compile_gain:
            eager = timings[v.name + EAGER_SUFFIX]
            gain = speedup_interval(eager, t)
            eager_speedup = speedup_interval(timings["baseline" + EAGER_SUFFIX], eager)
            row.update(eager_images_per_s=eager.images_per_s, eager_speedup=eager_speedup.value,
                       eager_speedup_low=eager_speedup.low, eager_speedup_high=eager_speedup.high,
                       compile_gain=gain.value, compile_gain_low=gain.low, compile_gain_high=gain.high)  # fmt: skip
        records.append({k: row[k] for k in RECORD_KEYS})
    return records
