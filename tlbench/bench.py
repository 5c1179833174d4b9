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

from tlbench.errors import ConfigError
from tlbench.measure.roofline import Peaks, roofline_metrics
from tlbench.throughput import (
    EAGER_SUFFIX,
    TARGET_CI,
    Progress,
    check_compile_mode,
    check_counts,
    parse_batch_size,
    resolve_device,
    resolve_dtype,
    speedup_interval,
    time_interleaved,
)

DEFAULT_POSITIONS = (0.0, 0.25, 0.5, 0.75)  # p = 1 costs the baseline plus TokenLearner: no speedup
DEFAULT_TOKENS = (8,)  # the paper's S for ViT-B/16; 16 doubles a CPU run for a small difference

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
    method: str = "tokenlearner",
    params: Mapping[str, int | Sequence[int]] | None = None,
    batch_size: int | str = "auto",
    dtype: str = "float32",
    compile: bool = False,
    compile_mode: str = "default",
    cuda_graphs: bool = False,
    channels_last: bool = False,
    compile_gain: bool = False,
    roofline: bool = True,
    device: str = "auto",
    rounds: int | None = None,
    warmup: int | None = None,
    iters: int | None = None,
    threads: int | None = None,
    tf32: bool = False,
    target_ci: float = TARGET_CI,
    time_cap_s: float | None = None,
    max_rounds: int | None = None,
    img_size: int | None = None,
    progress: Progress | None = None,
) -> list[dict[str, Any]]:
    """Time the baseline and TokenLearner variants of one model, interleaved in one run.

    Args:
        model: alias or timm ViT name.
        positions: relative positions p in [0, 1] (default 0, 0.25, 0.5, 0.75).
        tokens: learned token counts S (default 8).
        method: the token reduction method (tlbench.reducers; default TokenLearner).
        params: the method's parameters, a value or a list (a grid) per name (tome_r: r).
        batch_size: images per forward pass, or 'auto' (CUDA: largest that fits from 1024 down in
            timm's decay steps; CPU: 8).
        dtype: 'float32', or 'bfloat16' / 'float16' autocast.
        compile: time torch.compile'd models (counted eager, compiled afterwards).
        compile_mode, cuda_graphs, channels_last: see `throughput.time_interleaved`; the same
            for the baseline and every variant, recorded on every record.
        compile_gain: with `compile`, also time every variant eager in the same rounds: records
            get its eager img/s and speedup, and compile_gain = compiled / eager with its interval.
        roofline: the device's roofs, bytes moved and time shares (measure/roofline.py) per record.
        device: 'auto', 'cpu', 'cuda' or 'cuda:N'.
        rounds, warmup, iters, threads, tf32: see `throughput.time_interleaved`; rounds=None
            adds rounds until every speedup interval is tight (target_ci, time_cap_s, max_rounds).
        img_size: input resolution (default: the model's).
        progress: called with a short status line before each stage.

    Returns:
        One dict per variant, baseline first, with the keys of RECORD_KEYS.
    """
    # validate cheap arguments before building anything
    resolve_device(device), resolve_dtype(dtype), parse_batch_size(batch_size)
    check_compile_mode(compile_mode)
    if compile_gain and not compile:
        raise ConfigError("--compile-gain compares compiled with eager: it needs --compile")
    check_counts(rounds=rounds, iters=iters, warmup=warmup)
    from tlbench.flops import count_flops
    from tlbench.models import build_sharing, make_variants
    from tlbench.throughput import input_size_of

    report = progress or (lambda _msg: None)
    positions = list(DEFAULT_POSITIONS if positions is None else positions)
    variants = make_variants(model, positions, list(tokens or DEFAULT_TOKENS), img_size=img_size,
                             method=method, params=params)  # fmt: skip
    report(f"building {variants[0].model}")
    models = build_sharing(variants, img_size)  # variants share the backbone: one copy in memory
    gflops = {}
    for name, m in models.items():
        report(f"counting FLOPs of {name}")
        gflops[name] = count_flops(m).gflops  # on the eager model, before any compile
    base = models["baseline"]

    size = input_size_of(base)
    timings = time_interleaved(
        models,
        input_size=size,
        batch_size=batch_size,
        device=device,
        dtype=dtype,
        compile=compile,
        compile_mode=compile_mode,
        cuda_graphs=cuda_graphs,
        channels_last=channels_last,
        also_eager=compile_gain,
        roofline=roofline,
        tf32=tf32,
        threads=threads,
        warmup=warmup,
        rounds=rounds,
        iters=iters,
        reference="baseline",
        target_ci=target_ci,
        time_cap_s=time_cap_s,
        max_rounds=max_rounds,
        progress=progress,
    )
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
