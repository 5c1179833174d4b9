"""Does tlbench's model wrapping cost time? Our baseline vs timm's stock model, timed interleaved.

Both models run in the same rounds (A B A B ...) with the same random batch, dtype and fused
attention; the ratio is the median over rounds of timm ms / tlbench ms (1.0 = no overhead, > 1 =
ours faster). Our baseline differs from the stock model only in its head (global average pool over
patch tokens instead of the class token, tlbench's convention for every variant).

Run:  .venv/bin/python benchmarks/timm_overhead.py --model vit_b16 --device cpu
Keep the latest figures in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import sys

from tlbench.errors import TLBenchError


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="vit_b16", help="alias or timm ViT name (default vit_b16)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--dtype", default="float32", help="float32, bfloat16 or float16 (autocast)")
    p.add_argument("--batch-size", default="auto", help="int, or 'auto' (CPU 8; CUDA search)")
    p.add_argument("--rounds", type=int, default=None,
                   help="timed rounds (default: adaptive, until the ratio's 95%% interval is ±5%%)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default all cores)")
    p.add_argument("--compile", action="store_true", help="torch.compile both models")
    return p.parse_args(argv)


def stock_model(name: str):  # -> nn.Module; torch imported lazily so --help is instant
    """timm's own model: create_model for registered names, the plain constructor otherwise."""
    import timm
    from timm.models.vision_transformer import VisionTransformer

    from tlbench.backbones.registry import CUSTOM_MODELS

    if name in CUSTOM_MODELS:
        return VisionTransformer(**CUSTOM_MODELS[name]).eval()
    return timm.create_model(name).eval()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        from tlbench.measure.throughput import speedup_interval, time_interleaved
        from tlbench.variants import build_model, make_variant

        variant = make_variant(args.model)
        ours, name = build_model(variant), variant.model
        timings = time_interleaved(
            {"tlbench": ours, "timm": stock_model(name)},
            batch_size=args.batch_size,
            device=args.device,
            dtype=args.dtype,
            compile=args.compile,
            rounds=args.rounds,
            threads=args.threads,
            reference="timm",
        )
    except TLBenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    t = timings["tlbench"]
    print(
        f"{name} on {t.device_name} ({t.device}, threads {t.threads}), {t.dtype}, "
        f"batch {t.batch_size}, {t.rounds} rounds x {t.iters} iters, compiled={t.compiled}, "
        f"attention={t.attention}, torch {t.torch_version}"
    )
    print(f"{'model':<8} {'img/s':>9} {'ms/batch':>10} {'p10':>9} {'p90':>9}")
    for label, tm in timings.items():
        print(
            f"{label:<8} {tm.images_per_s:>9.2f} {tm.latency_ms:>10.1f} "
            f"{tm.latency_ms_p10:>9.1f} {tm.latency_ms_p90:>9.1f}"
        )
    r = speedup_interval(timings["timm"], timings["tlbench"])
    shaky = "" if r.reliable else " (unreliable: interval wider than ±10%; rerun on a quieter machine)"
    print(f"ratio timm ms / tlbench ms (median over rounds): {r.value:.3f}x, "
          f"95% CI {r.low:.3f}-{r.high:.3f}{shaky}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
