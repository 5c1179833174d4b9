#!/usr/bin/env bash
# One device call's worth of GPU checks, each step bounded so one failure costs only its own step.
#
#   bash benchmarks/gpu_session.sh OUTDIR
#
# 1. benchmarks/gpu_check.sh: ViT-B/16 eager bf16, compiled pure bf16, ToMe r = 13, CUDA graphs,
#    each with a roofline; here cut to CHECK_LIMIT_S (230 s: its first steps) so the session fits
#    one 10-minute call. Run gpu_check.sh alone for all of it (8 minutes).
# 2. pytest's CUDA tests (-m gpu) and the throughput tests on this machine.
# 3. Other reducers on the same model, bf16, batch 256: ToMe r = 13 from block 0 (ToMe's own
#    setting), Top-K and EViT at p = 1/4 keeping 8 tokens; each beside its own baseline.
# 4. The README's main job (`tlbench sweep`, the built-in study) with --device cuda: trains, probes
#    and times on the GPU; its run directory is packed into OUTDIR/sweep_cuda.tar.gz.
# Every step writes its log into OUTDIR; the exit code is the number of failed steps.
# Dry run on a CPU: PYTHON=.venv/bin/python DEVICE=cpu MODEL=tiny THREADS=1 bash benchmarks/gpu_session.sh /tmp/gs
set -uo pipefail
cd "$(dirname "$0")/.."
out="$(mkdir -p "${1:?usage: gpu_session.sh OUTDIR}" && cd "$1" && pwd)"
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 COLUMNS=200  # rich tables unclipped in logs
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
[ -d .gpu_site ] && export PYTHONPATH="$PYTHONPATH:$PWD/.gpu_site"
PY="${PYTHON:-python3}"
DEVICE="${DEVICE:-cuda}"
MODEL="${MODEL:-vit_b16}"
failed=0

step() {  # step NAME SECONDS CMD...: run CMD with a time limit, log to OUTDIR/NAME.log
  local name=$1 limit=$2; shift 2
  echo "== $name (limit ${limit}s): $*"
  local t0=$SECONDS
  timeout "$limit" "$@" >"$out/$name.log" 2>&1
  local rc=$?
  tail -n 40 "$out/$name.log"
  echo "== $name: exit $rc after $((SECONDS - t0)) s"
  [ "$rc" = 0 ] || failed=$((failed + 1))
}

step gpu_check "${CHECK_LIMIT_S:-230}" env OUT="$out" DEVICE="$DEVICE" MODEL="$MODEL" \
  TOTAL_S="$(( ${CHECK_LIMIT_S:-230} - 10 ))" PYTHON="$PY" bash benchmarks/gpu_check.sh

step pytest_gpu 60 "$PY" -m pytest -q -p no:cacheprovider tests/test_throughput.py

threads=()
[ -n "${THREADS:-}" ] && threads=(--threads "$THREADS")
bench() {  # bench NAME ARGS...: one reducer beside its baseline, JSON records
  local name=$1; shift
  step "$name" "${METHOD_LIMIT_S:-45}" "$PY" -m tlbench bench --model "$MODEL" --dtype bfloat16 \
    --batch-size "${METHOD_BATCH:-256}" --device "$DEVICE" --time-cap 15 --format table "${threads[@]}" "$@"
}
bench bench_tome_r13 --method tome_r --param r=13 --positions 0
bench bench_topk --method topk --positions 0.25 --tokens 8
bench bench_evit --method evit --positions 0.25 --tokens 8

step sweep_cuda "${SWEEP_LIMIT_S:-150}" "$PY" -m tlbench sweep --device "$DEVICE" --out "$out/sweep"
[ -d "$out/sweep" ] && tar -czf "$out/sweep_cuda.tar.gz" -C "$out" sweep && rm -rf "$out/sweep"

echo "== $failed step(s) failed"
exit "$failed"
