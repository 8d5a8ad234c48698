#!/usr/bin/env bash
# The offline GPU check: one command that tests and measures pconv-jax on a GPU host in at most
# 8 minutes, with nothing installed by hand and no network (docs/accelerators.md, "The offline GPU check").
#
#   benchmarks/gpu_check/run.sh           # on the GPU host, with .gpu-bundle/ beside the tree
#   benchmarks/gpu_check/run.sh --tiny    # CPU dry run at tiny sizes (make test runs it)
#
# Installs the bundle's wheels (`make gpu-bundle`) into a private folder under /tmp (no root),
# then runs, each step in its own process under `timeout`, each writing OUT/NAME.json and one
# line here: env, the fast tests on the device, the paper's 512 px training step (bf16 and
# float32, batch 6 and the largest that fits; MFU against the bf16 matmul rate measured here),
# the same step through `python -m pconv_jax.train` fed from JPEG and mask folders, the 512 px
# forward and the exported files, the PyTorch network on the same device; a table last.
# OUT holds 8 files: log.txt (every step's output) and 7 JSON files.
#
# Environment: OUT (default /tmp/pconv-gpu-check/out), PYTHON (python3), PCONV_TORCH_PYTHON
# (the PyTorch step's interpreter; default PYTHON on a GPU; unset in a dry run: step skipped),
# GPU_CHECK_BUNDLE (.gpu-bundle), GPU_CHECK_WORK (/tmp/pconv-gpu-check), GPU_CHECK_BUDGET_S
# (470, 1200 with --tiny: every step's time limit scales with it), JAX_PLATFORMS (cuda; cpu
# with --tiny).
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
TINY=""
case "${1:-}" in
  --tiny) TINY="--tiny" ;;
  "") ;;
  *) echo "usage: $0 [--tiny]" >&2; exit 2 ;;
esac
PYTHON="${PYTHON:-python3}"
WORK="${GPU_CHECK_WORK:-/tmp/pconv-gpu-check}"
OUT="${OUT:-$WORK/out}"
BUNDLE="${GPU_CHECK_BUNDLE:-$REPO/.gpu-bundle}"
BUDGET="${GPU_CHECK_BUDGET_S:-$([ -n "$TINY" ] && echo 1200 || echo 470)}"  # a CPU is slower
SITE="$WORK/site"
mkdir -p "$WORK" "$OUT" || { echo "cannot create $WORK or $OUT" >&2; exit 2; }
LOG="$OUT/log.txt"
: >"$LOG"
: >"$WORK/steps.tsv"
for n in env tests step cli forward torch summary; do rm -f "$OUT/$n.json"; done

if [ -n "$TINY" ]; then export JAX_PLATFORMS="${JAX_PLATFORMS:-cpu}"
else export JAX_PLATFORMS="${JAX_PLATFORMS:-cuda}"; fi
export JAX_COMPILATION_CACHE_DIR="${JAX_COMPILATION_CACHE_DIR:-$WORK/jax-cache}"
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-1}"
cd "$REPO" || exit 2

# Step limits in seconds at the default budget (470 s; the sum stays under 8 minutes).
limit() { awk -v s="$1" -v b="$BUDGET" 'BEGIN { printf "%d", s * b / 470 + 0.5 }'; }

say() { echo "$*" | tee -a "$LOG"; }

# run_step NAME LIMIT_S JSON CMD...: runs CMD under timeout, logs its output, prints one line.
run_step() {
  local name=$1 seconds=$2 json=$3; shift 3
  local start end rc status line
  start=$(date +%s.%N)
  printf '\n===== %s (limit %s s): %s\n' "$name" "$seconds" "$*" >>"$LOG"
  timeout -k 10 "$seconds" "$@" >>"$LOG" 2>&1
  rc=$?
  end=$(date +%s.%N)
  status=$("$PYTHON" -c 'import json,sys
try: print(json.load(open(sys.argv[1])).get("status", "failed"))
except Exception: print("failed")' "$OUT/$json.json" 2>/dev/null)
  case $rc in 0) ;; 124|137) status="timeout" ;; *) [ "$status" = ok ] && status="failed" ;; esac
  line=$("$PYTHON" -c 'import json,sys
try: print(json.load(open(sys.argv[1])).get("line", ""))
except Exception: print("")' "$OUT/$json.json" 2>/dev/null)
  [ -n "$line" ] || line=$(tail -n 1 "$LOG")
  local took
  took=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
  printf '%s\t%s\t%s\n' "$name" "$status" "$took" >>"$WORK/steps.tsv"
  say "$(printf '%-8s %-8s %6.1f s  %s' "$name" "$status" "$took" "$line")"
  [ "$status" = ok ] || [ "$status" = skipped ]
}

say "pconv-jax GPU check ${TINY:+(tiny dry run) }$(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -n); OUT=$OUT"

# --- The bundle: the wheels this host lacks, into a private site folder ----------------------
install_bundle() {
  rm -rf "$SITE"
  if compgen -G "$BUNDLE/*.whl" >/dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
      --disable-pip-version-check --target "$SITE" "$BUNDLE"/*.whl
  else
    echo "no wheels in $BUNDLE: using the packages installed here"
  fi
}
start=$(date +%s.%N)
printf '\n===== install (%s)\n' "$BUNDLE" >>"$LOG"
if ! install_bundle >>"$LOG" 2>&1; then
  say "install  failed: pip could not install $BUNDLE into $SITE (see $LOG)"
  exit 1
fi
export GPU_CHECK_SITE="$SITE"
export PYTHONPATH="$SITE:$REPO/src:$REPO${PYTHONPATH:+:$PYTHONPATH}"
took=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
printf 'install\tok\t%s\n' "$took" >>"$WORK/steps.tsv"

CHECK=("$PYTHON" -m benchmarks.gpu_check.check)
COMMON=(--out "$OUT" --work "$WORK" $TINY)

# --- The steps, in order ------------------------------------------------------------------------
L=$(limit 15); run_step env "$L" env "${CHECK[@]}" env "${COMMON[@]}" --bundle "$BUNDLE" \
  || { say "the check cannot run here (see $OUT/env.json)"; exit 1; }
L=$(limit 120); run_step tests "$L" tests "${CHECK[@]}" tests "${COMMON[@]}" --budget $((L - 25))
L=$(limit 90); run_step step-bf16 "$L" step "${CHECK[@]}" step "${COMMON[@]}" \
  --dtype bfloat16 --budget $((L - 5))
L=$(limit 55); run_step step-f32 "$L" step "${CHECK[@]}" step "${COMMON[@]}" \
  --dtype float32 --append --budget $((L - 5))
L=$(limit 70); run_step cli "$L" cli "${CHECK[@]}" cli "${COMMON[@]}" --budget $((L - 5))
L=$(limit 45); run_step forward "$L" forward "${CHECK[@]}" forward "${COMMON[@]}" \
  --budget $((L - 5))

TORCH_PYTHON="${PCONV_TORCH_PYTHON:-}"
[ -z "$TORCH_PYTHON" ] && [ -z "$TINY" ] && TORCH_PYTHON="$PYTHON"
L=$(limit 75)
if [ -n "$TORCH_PYTHON" ]; then
  run_step torch "$L" torch "$TORCH_PYTHON" -m benchmarks.gpu_check.torch_step --out "$OUT" \
    --budget $((L - 5)) $TINY
else
  "$PYTHON" -c 'import json,sys; json.dump({"status": "skipped", "line": "skipped: "
    "PCONV_TORCH_PYTHON is not set (an interpreter with torch; make .venv-torch)"},
    open(sys.argv[1], "w"))' "$OUT/torch.json"
  printf 'torch\tskipped\t0\n' >>"$WORK/steps.tsv"
  say "torch    skipped     0.0 s  PCONV_TORCH_PYTHON is not set (an interpreter with torch)"
fi

# --- The table -----------------------------------------------------------------------------------
say "results: $OUT (log.txt; env, tests, step, cli, forward, torch, summary .json)"
echo | tee -a "$LOG"
"${CHECK[@]}" summary "${COMMON[@]}" 2>>"$LOG" | tee -a "$LOG"
exit "${PIPESTATUS[0]}"
