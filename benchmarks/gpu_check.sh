#!/usr/bin/env bash
# GPU check: vit_b16 speed sweep at bf16 with batch-size search, plus model FLOP utilisation (MFU).
#
# Run from anywhere on a CUDA machine:   bash benchmarks/gpu_check.sh
# It prints the environment, the `tlbench bench` table (baseline + TokenLearner at p = 0, 0.25,
# 0.5, 0.75 with S = 8; batch 'auto' = largest that fits from 1024 down), then per variant the
# achieved TFLOP/s and MFU = achieved FLOP/s / the device's dense bf16 peak. Achieved FLOP/s =
# img/s x 2 x fvcore GFLOPs (fvcore counts one multiply-add as one FLOP; hardware peaks count two).
# It also times one 8192^3 bf16 matmul, so the ratio to what this chip actually reaches is shown
# even when its spec peak is not in the table below. Budgeted at ~3 min on an H100/H200; the
# sweep is killed at BENCH_TIMEOUT_S (default 480 s) so one call stays inside 10 minutes.
#
# Needs python3 with torch (CUDA), timm, typer, rich, numpy and fvcore. fvcore and its pure-Python
# needs (iopath, yacs, termcolor) are often missing on GPU images; if so, put them in .gpu_site/
# (e.g. `cp -r .venv/lib/python3.*/site-packages/{fvcore,iopath,yacs,termcolor} .gpu_site/`) and
# carry that folder, or carry wheels in .whl/; the script picks either up.
#
# Env: PYTHON (default python3), OUT (where JSON goes; default results/gpu_check), PEAK_TFLOPS
# (override the spec peak), BATCH (default auto), COMPILE=1 (also pass --compile; adds minutes),
# BENCH_TIMEOUT_S, THREADS. Dry run of the whole script on a CPU:
#   PYTHON=.venv/bin/python DEVICE=cpu MODEL=tiny THREADS=1 OUT=/tmp/gpu_check bash benchmarks/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY="${PYTHON:-python3}"
export DEVICE="${DEVICE:-cuda}"
MODEL="${MODEL:-vit_b16}"
out="${OUT:-results/gpu_check}"
mkdir -p "$out"

if ! "$PY" -c "import fvcore" 2>/dev/null; then
  if [ -d .gpu_site ]; then
    export PYTHONPATH="$PYTHONPATH:$PWD/.gpu_site"
  elif compgen -G ".whl/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
    export PYTHONPATH="$PYTHONPATH:/tmp/site"
  fi
fi

echo "== environment"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader || true
"$PY" - <<'EOF'
import os, sys, time
import torch
missing = []
for name in ("timm", "fvcore", "typer", "rich", "numpy"):
    try:
        __import__(name)
    except ImportError:
        missing.append(name)
cuda = os.environ["DEVICE"].startswith("cuda")
if missing or (cuda and not torch.cuda.is_available()):
    sys.exit(f"gpu_check: cannot run: CUDA available={torch.cuda.is_available()}, missing={missing}")
import timm
gpu = torch.cuda.get_device_name() if cuda else "none (dry run)"
print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), timm {timm.__version__}, "
      f"GPU {gpu}, python {sys.version.split()[0]}")
# what a plain bf16 matmul reaches on this chip: the practical ceiling for MFU
n = 8192 if cuda else 1024
a, b = (torch.randn(n, n, device=os.environ["DEVICE"], dtype=torch.bfloat16) for _ in range(2))
sync = torch.cuda.synchronize if cuda else (lambda: None)
for _ in range(3):
    a @ b
sync()
t0 = time.perf_counter()
for _ in range(10):
    a @ b
sync()
tflops = 10 * 2 * n**3 / (time.perf_counter() - t0) / 1e12
print(f"bf16 matmul {n}^3: {tflops:.3g} TFLOP/s")
open("/tmp/tlbench_matmul_tflops", "w").write(f"{tflops}\n")
EOF

echo "== tlbench bench --model $MODEL --dtype bfloat16 --batch-size ${BATCH:-auto} --device $DEVICE"
extra=()
[ "${COMPILE:-0}" = 1 ] && extra+=(--compile)
[ -n "${THREADS:-}" ] && extra+=(--threads "$THREADS")
start=$(date +%s)
timeout "${BENCH_TIMEOUT_S:-480}" "$PY" -m tlbench bench --model "$MODEL" --dtype bfloat16 \
  --batch-size "${BATCH:-auto}" --device "$DEVICE" --format json "${extra[@]}" >"$out/bench_${MODEL}_bf16.json"
echo "sweep took $(($(date +%s) - start)) s; records in $out/bench_${MODEL}_bf16.json"

"$PY" - "$out/bench_${MODEL}_bf16.json" <<'EOF'
import json, os, sys
rows = json.load(open(sys.argv[1]))
# dense bf16 tensor-core peaks, TFLOP/s (vendor data sheets); first matching substring wins
PEAKS = [("H200 NVL", 835.5), ("H100 NVL", 835.5), ("H100 PCIe", 756.5), ("GH200", 989.5),
         ("H200", 989.5), ("H100", 989.5), ("B200", 2250.0), ("A100", 312.0), ("L40S", 362.1),
         ("RTX 4090", 165.2), ("L40", 181.0),
         ("L4", 121.0)]
name = rows[0]["device_name"]
peak = float(os.environ["PEAK_TFLOPS"]) if os.environ.get("PEAK_TFLOPS") else next(
    (p for key, p in PEAKS if key in name), None)
matmul = float(open("/tmp/tlbench_matmul_tflops").read())
r0 = rows[0]
print(f"{r0['model']} on {name}: {r0['dtype']} autocast, batch {r0['batch_size']}, "
      f"{r0['rounds']} rounds x {r0['iters']} iters, tf32={r0['tf32']}, attention={r0['attention']}, "
      f"compiled={r0['compiled']}, torch {r0['torch_version']}")
print(f"peak: {peak if peak else 'unknown (set PEAK_TFLOPS)'} TFLOP/s spec, {matmul:.3g} measured matmul")
head = f"{'variant':<10} {'block':>5} {'img/s':>9} {'ms/batch':>9} {'GFLOPs':>7} {'speedup':>7} " \
       f"{'FLOPs×':>6} {'eff.':>5} {'TFLOP/s':>8} {'MFU':>6} {'/matmul':>7}"
print(head)
for r in rows:
    tflops = r["images_per_s"] * 2 * r["gflops"] / 1e3  # GFLOPs are MACs: 2 FLOPs each
    mfu = f"{tflops / peak:.1%}" if peak else "–"
    block = "–" if r["block_index"] is None else r["block_index"]
    print(f"{r['variant']:<10} {block:>5} {r['images_per_s']:>9.0f} {r['latency_ms']:>9.2f} "
          f"{r['gflops']:>7.3g} {r['speedup']:>6.2f}× {r['flops_speedup']:>5.2f}× "
          f"{r['efficiency']:>5.2f} {tflops:>8.3g} {mfu:>6} {tflops / matmul:>7.1%}")
EOF
