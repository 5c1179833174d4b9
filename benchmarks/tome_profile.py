"""Where ToMe's time goes: the baseline, ToMe, and ToMe without proportional attention, timed
interleaved in one run, then the top operators of one profiled ToMe forward.

    python benchmarks/tome_profile.py --model vit_b16 --device cuda --batch 256 --r 13

Why: on an H200 (bf16, batch 256) `tlbench bench --method tome_r --param r=13` gave 1.00× for
1.69× fewer FLOPs while Top-K at 3.16× fewer FLOPs gave 2.39×. The no-mask row isolates the
cost of the additive log(size) mask (SDPA with a float mask may pick another kernel).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics

import torch

from tlbench.reducers import tome
from tlbench.variants import build_model, make_variant


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="vit_b16")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--r", type=int, default=13)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--iters", type=int, default=5)
    args = ap.parse_args()
    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    dtype = torch.bfloat16
    base = build_model(make_variant(args.model)).to(dev)
    merged = build_model(make_variant(args.model, 0.0, method="tome_r", params={"r": args.r})).to(dev)
    merged.load_state_dict(base.state_dict(), strict=False)
    size = int(base.patch_embed.img_size[0])
    x = torch.randn(args.batch, 3, size, size, device=dev)
    no_bias = tome.proportional_bias

    @contextlib.contextmanager
    def without_mask():
        tome.proportional_bias = lambda sizes, p: None
        try:
            yield
        finally:
            tome.proportional_bias = no_bias

    cases = {
        "baseline": (base, contextlib.nullcontext),
        f"tome_r r={args.r}": (merged, contextlib.nullcontext),
        f"tome_r r={args.r}, no log-size mask": (merged, without_mask),
    }
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    def run(model, ctx) -> float:
        with ctx():
            sync()
            if cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                for _ in range(args.iters):
                    model(x)
                end.record()
                sync()
                return start.elapsed_time(end) / args.iters
            import time

            t0 = time.perf_counter()
            for _ in range(args.iters):
                model(x)
            return (time.perf_counter() - t0) * 1e3 / args.iters

    times: dict[str, list[float]] = {k: [] for k in cases}
    with torch.inference_mode(), torch.autocast(dev.type, dtype=dtype):
        for model, ctx in cases.values():
            run(model, ctx)  # warm-up
        for i in range(args.rounds):
            order = list(cases) if i % 2 == 0 else list(reversed(cases))
            for name in order:
                times[name].append(run(*cases[name]))
        ref = statistics.median(times["baseline"])
        print(f"{args.model} on {torch.cuda.get_device_name() if cuda else 'cpu'}, bf16 autocast, "
              f"batch {args.batch}, {args.rounds} rounds x {args.iters} iters, torch {torch.__version__}")
        for name, ts in times.items():
            ratios = sorted(b / t for b, t in zip(times["baseline"], ts, strict=True))
            print(f"{name:<34} {statistics.median(ts):8.2f} ms/batch   speedup {ref / statistics.median(ts):.2f}x "
                  f"(per-round {ratios[0]:.2f}-{ratios[-1]:.2f})")
        activities = [torch.profiler.ProfilerActivity.CPU]
        if cuda:
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        for name in list(cases)[:2]:
            model, ctx = cases[name]
            with ctx(), torch.profiler.profile(activities=activities) as prof:
                model(x)
                sync()
            key = "self_cuda_time_total" if cuda else "self_cpu_time_total"
            print(f"\n== {name}: top operators by self {'CUDA' if cuda else 'CPU'} time, one forward")
            print(prof.key_averages().table(sort_by=key, row_limit=18, max_name_column_width=60))


if __name__ == "__main__":
    main()
