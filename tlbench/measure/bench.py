"""`tlbench bench`: do FLOP savings become time savings? Build, count, time interleaved, compare.

Every variant is counted on its eager model (fvcore, fused attention handled in flops.py), then all
are timed in the same rounds with the same attention kernel (throughput.py). Ratios are taken
against the baseline of this run only: `speedup` (wall clock, with a 95% bootstrap interval
`speedup_low`..`speedup_high` and a `speedup_reliable` flag), `flops_speedup` (baseline GFLOPs /
variant GFLOPs) and `efficiency` = speedup / flops_speedup (1.0: every saved FLOP saved time).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from tlbench.config import GridConfig, SpeedConfig
from tlbench.core import DEFAULT_METHOD
from tlbench.errors import ConfigError
from tlbench.measure.flops import count_flops
from tlbench.measure.throughput import (
    Progress,
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
)  # fmt: skip


def bench_variants(
    model: str,
    positions: Sequence[float] | None = None,
    tokens: Sequence[int] | None = None,
    *,
    method: str = DEFAULT_METHOD,
    params: Mapping[str, int | Sequence[int]] | None = None,
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
        img_size: input resolution (default: the model's).
        speed: the timing settings, whole (config.SpeedConfig); `knobs` replace its fields.
        progress: called with a short status line before each stage.

    Returns:
        One dict per variant, baseline first, with the keys of RECORD_KEYS.
    """
    try:
        speed = dataclasses.replace(speed or SpeedConfig(), **knobs)
    except TypeError:
        known = ", ".join(f.name for f in dataclasses.fields(SpeedConfig))
        raise ConfigError(f"unknown speed setting in {sorted(knobs)}; known: {known}") from None
    # validate cheap arguments before building anything
    resolve_device(speed.device), resolve_dtype(speed.dtype), parse_batch_size(speed.batch_size)
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
    timings = time_interleaved(models, speed, input_size=size, reference="baseline", progress=progress)
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
        records.append({k: row[k] for k in RECORD_KEYS})
    return records
