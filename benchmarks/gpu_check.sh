#!/usr/bin/env bash
# GPU check (issue 24): ViT-B/16 as fast as this device allows, every setting timed interleaved
# against its own baseline, with a roofline per step. One call, at most 8 minutes.
#
# Run from anywhere on a CUDA machine:   bash benchmarks/gpu_check.sh
# Steps (each `tlbench bench`, batch 'auto' = largest that fits from 1024 down, JSON records, a
# figure roofline_<step>.png/.pdf from the device's matmul peak and copy bandwidth measured in
# that step, and a log):
#   eager_bf16      bf16 autocast, eager: the first run's setting (9,035 img/s on an H200), with
#                   TokenLearner S = 8 at p = 0, 1/4, 1/2, 3/4
#   compiled_pure   pure bf16 weights, torch.compile (mode COMPILE_MODE, default 'default'), channels-last,
#                   baseline + TokenLearner p = 1/4, each also eager in the same rounds
#                   (--compile-gain: compiled / eager with its interval)
#   tome            the same setting for ToMe r = 13 from block 0 (ToMe's own)
#   graphs          pure bf16, eager replayed as CUDA graphs, TokenLearner at p = 0 and 1/4 (few
#                   tokens: launch-bound without graphs)
# then a summary against the issue's targets: baseline >= 45% of the spec bf16 peak, TokenLearner
# p = 1/4 efficiency >= 0.9, ToMe r = 13 >= 1.5x; the roofline columns say why where one is missed.
#
# Output: OUT (default results/gpu_<device name>, e.g. results/gpu_h200): <step>.json, <step>.log,
# roofline_<step>.png/.pdf, environment.log, summary.log. Each step is cut at its share of TOTAL_S
# (default 470 s, so the call stays inside 8 minutes); a step that runs out of time is reported
# and the rest still run.
#
# Needs python3 with torch (CUDA), timm, typer, rich, numpy, pandas, matplotlib and fvcore. fvcore and its
# pure-Python needs (iopath, yacs, termcolor) are often missing on GPU images; if so, put them in
# .gpu_site/ (e.g. `cp -r .venv/lib/python3.*/site-packages/{fvcore,iopath,yacs,termcolor} .gpu_site/`)
# and carry that folder, or carry wheels in .whl/; the script picks either up.
#
# Env: PYTHON (default python3), OUT, TOTAL_S, PEAK_TFLOPS (override the spec peak), BATCH
# (default auto), COMPILE_MODE, THREADS, TIME_CAP (adaptive timing per step, default 20 s),
# STEPS (a space-separated subset of the steps, default all four).
# Dry run of the whole script on a CPU (minutes: inductor compiles C++):
#   PYTHON=.venv/bin/python DEVICE=cpu MODEL=tiny THREADS=1 BATCH=8 OUT=/tmp/gpu_check bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 COLUMNS=200
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY="${PYTHON:-python3}"
export DEVICE="${DEVICE:-cuda}"
MODEL="${MODEL:-vit_b16}"
TOTAL_S="${TOTAL_S:-470}"
deadline=$((SECONDS + TOTAL_S))

if ! "$PY" -c "import fvcore" 2>/dev/null; then
  if [ -d .gpu_site ]; then
    export PYTHONPATH="$PYTHONPATH:$PWD/.gpu_site"
  elif compgen -G ".whl/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
    export PYTHONPATH="$PYTHONPATH:/tmp/site"
  fi
fi

if [ -z "${OUT:-}" ]; then  # results/gpu_<name>: "NVIDIA H200" -> gpu_h200
  name=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1)
  slug=$(printf '%s' "${name:-cpu}" | tr '[:upper:]' '[:lower:]' | sed -e 's/^nvidia //' -e 's/[^a-z0-9]\+/_/g' -e 's/_$//')
  OUT="results/gpu_${slug:-cpu}"
fi
out="$OUT"
mkdir -p "$out"

echo "== environment" | tee "$out/environment.log"
{
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader
  "$PY" - <<'EOF'
import os, sys
import torch
missing = []
for name in ("timm", "fvcore", "typer", "rich", "numpy", "pandas", "matplotlib"):
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
EOF
} 2>&1 | tee -a "$out/environment.log"
[ "${PIPESTATUS[0]}" = 0 ] || exit 1

common=(--model "$MODEL" --batch-size "${BATCH:-auto}" --device "$DEVICE" --time-cap "${TIME_CAP:-20}" --format json)
[ -n "${THREADS:-}" ] && common+=(--threads "$THREADS")
failed=0
step() {  # step NAME SHARE_S ARGS...: one bench, cut at min(SHARE_S, time left before the deadline)
  local name=$1 share=$2; shift 2
  case " ${STEPS:-eager_bf16 compiled_pure tome graphs} " in *" $name "*) ;; *) return ;; esac
  local left=$((deadline - SECONDS))
  local limit=$((share < left ? share : left))
  if [ "$limit" -lt 15 ]; then
    echo "== $name: skipped, ${left} s left of TOTAL_S=${TOTAL_S}" | tee "$out/$name.log"
    failed=$((failed + 1))
    return
  fi
  echo "== $name (limit ${limit} s): tlbench bench $*"
  local t0=$SECONDS
  timeout "$limit" "$PY" -m tlbench bench "${common[@]}" --figure "$out/roofline_$name" "$@" \
    >"$out/$name.json" 2>"$out/$name.log"
  local rc=$?
  echo "== $name: exit $rc after $((SECONDS - t0)) s"
  if [ "$rc" != 0 ]; then
    tail -n 5 "$out/$name.log"
    rm -f "$out/$name.json"  # a cut run's JSON is incomplete
    failed=$((failed + 1))
  fi
}

step eager_bf16 90 --dtype bfloat16
step compiled_pure 170 --dtype bfloat16-pure --compile --compile-mode "${COMPILE_MODE:-default}" \
  --compile-gain --channels-last --positions 0.25
step tome 120 --dtype bfloat16-pure --compile --compile-mode "${COMPILE_MODE:-default}" --compile-gain \
  --channels-last --method tome_r --param r=13 --positions 0
step graphs 70 --dtype bfloat16-pure --cuda-graphs --channels-last --positions 0,0.25

echo "== summary" | tee "$out/summary.log"
"$PY" - "$out" <<'EOF' 2>&1 | tee -a "$out/summary.log"
import json, os, sys
from pathlib import Path

out = Path(sys.argv[1])
# dense bf16 tensor-core peaks, TFLOP/s (vendor data sheets); first matching substring wins
PEAKS = [("H200 NVL", 835.5), ("H100 NVL", 835.5), ("H100 PCIe", 756.5), ("GH200", 989.5),
         ("H200", 989.5), ("H100", 989.5), ("B200", 2250.0), ("A100", 312.0), ("L40S", 362.1),
         ("RTX 4090", 165.2), ("L40", 181.0), ("L4", 121.0)]
head = (f"{'variant':<16} {'img/s':>8} {'speedup':>7} {'95% CI':>11} {'FLOPs×':>6} {'eff.':>5} "
        f"{'TFLOP/s':>8} {'MFU meas':>8} {'MFU spec':>8} {'FLOP/B':>7} {'mm/attn/other':>13} "
        f"{'eager img/s':>11} {'compile×':>8} {'compile× CI':>11}")
found = {}
for step in ("eager_bf16", "compiled_pure", "tome", "graphs"):
    path = out / f"{step}.json"
    if not path.is_file():
        print(f"-- {step}: no records (see {step}.log)")
        continue
    rows = json.loads(path.read_text())
    found[step] = rows
    r0 = rows[0]
    name = r0["device_name"]
    spec = float(os.environ["PEAK_TFLOPS"]) if os.environ.get("PEAK_TFLOPS") else next(
        (p for key, p in PEAKS if key in name), None)
    print(f"-- {step}: {r0['model']} on {name}, {r0['dtype']}, batch {r0['batch_size']}, "
          f"compiled={r0['compiled']} ({r0['compile_mode'] or 'eager'}), cuda_graphs={r0['cuda_graphs']}, "
          f"channels_last={r0['channels_last']}, {r0['rounds']} rounds x {r0['iters']} iters, "
          f"attention {r0['attn_kernel']}; measured matmul peak {r0['peak_tflops']:.4g} TFLOP/s, "
          f"copy {r0['peak_gbs']:.4g} GB/s; spec peak {spec or 'unknown (set PEAK_TFLOPS)'}")
    print(head)
    for r in rows:
        spec_mfu = f"{r['achieved_tflops'] / spec:.1%}" if spec else "–"
        shares = f"{r['time_share_matmul']:.0%}/{r['time_share_attention']:.0%}/{r['time_share_other']:.0%}"
        gain = r["compile_gain"] is not None
        print(f"{r['variant']:<16} {r['images_per_s']:>8.0f} {r['speedup']:>6.2f}× "
              f"{r['speedup_low']:>5.2f}–{r['speedup_high']:<5.2f} {r['flops_speedup']:>5.2f}× "
              f"{r['efficiency']:>5.2f} {r['achieved_tflops']:>8.4g} {r['mfu']:>8.1%} {spec_mfu:>8} "
              f"{r['arith_intensity']:>7.4g} {shares:>13} "
              f"{r['eager_images_per_s'] if gain else float('nan'):>11.0f} "
              f"{(r['compile_gain'] if gain else float('nan')):>7.2f}× "
              + (f"{r['compile_gain_low']:.2f}–{r['compile_gain_high']:.2f}" if gain else "–"))
    if spec:
        base = rows[0]
        print(f"   target: baseline >= 45% of the spec peak: {base['achieved_tflops'] / spec:.1%}")

def variant(step, prefix):
    return next((r for r in found.get(step, []) if r["variant"].startswith(prefix)), None)

tl = variant("compiled_pure", "p0.25")
if tl:
    print(f"target: TokenLearner p = 1/4 turns >= 0.9 of its FLOP savings into time: "
          f"{tl['efficiency']:.2f} ({tl['speedup']:.2f}× for {tl['flops_speedup']:.2f}× fewer FLOPs)")
tome = variant("tome", "tome_r")
if tome:
    print(f"target: ToMe r = 13 >= 1.5×: {tome['speedup']:.2f}× "
          f"({tome['speedup_low']:.2f}–{tome['speedup_high']:.2f})")
EOF
echo "== $failed step(s) failed or skipped; files in $out"
exit "$failed"
