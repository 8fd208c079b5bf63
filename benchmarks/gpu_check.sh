#!/usr/bin/env bash
# The GPU checks in one call: the GPU tests, then the benchmarks, most valuable first, each under its
# own time limit inside one overall budget, so a hang or a slow step costs only the steps after it.
#
#   bash benchmarks/gpu_check.sh                                # on the GPU machine (see benchmarks/GPU.md)
#   EFFNAS_GPU_CHECK_DRY=1 bash benchmarks/gpu_check.sh         # anywhere: the plumbing, in about a minute
#   bash benchmarks/gpu_check.sh --summary DIR                  # the target lines again, from earlier logs
#
# Steps (logs in $OUT, at most 8 files: 0-env 1-pytest-gpu 2-trial_throughput 3-step_time_fidelity 4-overhead
# 5-fused_vs_mbconv 6-search_wall_time, and summary.txt):
#   0  python, torch, GPU; carried wheels from .whl/ installed into $SITE (benchmarks/fetch_gpu_wheels.sh)
#   1  python3 -m pytest -m gpu tests/        the CUDA-graph engine, nas train, profile, throughput smoke
#   2  benchmarks.trial_throughput            graph vs eager (>= 4x), trainer vs hand-tuned graph (>= 0.90x)
#   3  benchmarks.step_time_fidelity          step-time CV (< 2 %), Spearman proxy vs full (>= 0.9)
#   4  benchmarks.overhead                    share of a trial outside training and evaluation
#   5  benchmarks.fused_vs_mbconv             the paper's Table 3 on this GPU
#   6  benchmarks.search_wall_time            synthetic:50000x32, 5 epochs, --workers 4: the 200-trial projection
#                                             (its budget shrinks to the time left; the 200-trial run is 15 min)
# Environment: OUT (log folder; default a new temporary one), GPU_CHECK_SECONDS (overall budget, default 575,
# so a 600 s call ends cleanly), ONLY (step numbers to run, e.g. ONLY="3 6"; step 0 always runs),
# WHEELS (default .whl), SITE (their install target, default /tmp/site),
# EFFNAS_GPU_CHECK_DRY=1 (no GPU needed: every benchmark's exact flags are parsed by its own argparse, pytest
# only collects, and one tiny benchmark really runs on the CPU, so the logs and the summary are exercised too).
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)

if [ "${1:-}" = "--summary" ]; then
    exec python3 -m benchmarks.gpu_summary "${2:?usage: gpu_check.sh --summary LOG_DIR}"
fi

DRY=${EFFNAS_GPU_CHECK_DRY:-0}
OUT=${OUT:-$(mktemp -d -t effnas-gpu-check-XXXX)}
SITE=${SITE:-/tmp/site}
WHEELS=${WHEELS:-.whl}
BUDGET=${GPU_CHECK_SECONDS:-575}
RESERVE=10  # seconds kept for the summary
START=$SECONDS
STATUS=()
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"  # `python -m effnas.nas` from any folder

left() { echo $((BUDGET - (SECONDS - START) - RESERVE)); }

# run_step NAME CAP_SECONDS COMMAND...: run under min(CAP, time left), tee into $OUT/NAME.log, record the outcome.
run_step() {
    local name=$1 cap=$2
    shift 2
    local log="$OUT/$name.log" limit t0 rc
    if [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" ${name%%-*} "* ]]; then
        return  # not among the steps asked for
    fi
    limit=$(left)
    ((cap < limit)) && limit=$cap
    if ((limit < 15)); then
        echo "== $name: skipped, $(left) s left of the ${BUDGET} s budget" | tee "$log"
        STATUS+=("$name: skipped (out of time)")
        return
    fi
    echo "== $name (limit ${limit} s, $(date -u +%H:%M:%S)): $*" | tee "$log"
    t0=$SECONDS
    timeout --signal=INT --kill-after=15 "$limit" "$@" 2>&1 | tee -a "$log"
    rc=${PIPESTATUS[0]}
    local note=""
    ((rc == 124)) && note=" (timed out)"
    echo "== $name: exit $rc$note after $((SECONDS - t0)) s" | tee -a "$log"
    STATUS+=("$name: exit $rc$note, $((SECONDS - t0)) s")
}

# bench NAME CAP MODULE ARGS...: a benchmark; in a dry run its own argparse checks ARGS, then it stops.
bench() {
    local name=$1 cap=$2 module=$3
    shift 3
    if [ "$DRY" = 1 ]; then
        run_step "$name" "$cap" python3 - "$module" "$@" <<'EOF'
import argparse, importlib, sys
parse = argparse.ArgumentParser.parse_args
def parse_only(self, args=None, namespace=None):
    print("flags accepted:", vars(parse(self, args, namespace)))
    raise SystemExit(0)
argparse.ArgumentParser.parse_args = parse_only
importlib.import_module(sys.argv[1]).main(sys.argv[2:])
EOF
    else
        run_step "$name" "$cap" python3 -m "$module" "$@"
    fi
}

# ---------------------------------------------------------------------------------------------- 0: environment
{
    echo "== 0-env ($(date -u +%FT%TZ)), dry run: $DRY, budget ${BUDGET} s, logs in $OUT"
    python3 --version
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version \
        --format=csv,noheader
    python3 -c "
import torch
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version(),
      'available', torch.cuda.is_available())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f'{torch.cuda.device_count()} GPU(s); 0: {p.name}, {p.total_memory / 2**30:.0f} GiB, sm {p.major}.{p.minor}, '
          f'bf16 {torch.cuda.is_bf16_supported()}')"
    if compgen -G "$WHEELS/*.whl" >/dev/null; then
        py=$(python3 -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
        ls "$WHEELS"/*-cp3*.whl >/dev/null 2>&1 && ! ls "$WHEELS"/*-"$py"-*.whl >/dev/null 2>&1 &&
            echo "WARNING: $WHEELS has no $py wheels: PY_VERSIONS=${py:2:1}.${py:3} bash benchmarks/fetch_gpu_wheels.sh"
        wheels=$(ls "$WHEELS"/*.whl | sed 's|.*/||; s|-.*||' | sort -u | tr '\n' ' ')
        echo "installing carried wheels into $SITE: $wheels"
        # shellcheck disable=SC2086
        if python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
            --find-links "$WHEELS" $wheels 2>&1 | grep -v "Running pip as the 'root' user"; [ "${PIPESTATUS[0]}" = 0 ]; then
            echo "wheels installed"
        else
            echo "WARNING: installing the carried wheels failed; steps that import optuna, kornia or plotly will fail"
        fi
    else
        echo "no wheels in $WHEELS: using what python3 has (run benchmarks/fetch_gpu_wheels.sh here, carry [\".whl\"])"
    fi
} 2>&1 | tee "$OUT/0-env.log"
[ -d "$SITE" ] && export PYTHONPATH="$PYTHONPATH:$SITE"  # ahead of site-packages, as any PYTHONPATH entry
python3 -c "import optuna, kornia, plotly; print('imports ok: optuna', optuna.__version__, 'kornia',
    kornia.__version__, 'plotly', plotly.__version__)" 2>&1 | tail -1 | tee -a "$OUT/0-env.log"
if [ "$DRY" != 1 ] && ! python3 -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
    echo "no CUDA device here: nothing to check (EFFNAS_GPU_CHECK_DRY=1 tests the plumbing)" | tee -a "$OUT/0-env.log"
    exit 2
fi

# ---------------------------------------------------------------------------------------------- 1-6
if [ "$DRY" = 1 ]; then
    run_step 1-pytest-gpu 60 python3 -m pytest -q -m gpu -p no:cacheprovider --collect-only tests/
else
    run_step 1-pytest-gpu 120 python3 -m pytest -q -m gpu -p no:cacheprovider -rs --durations=8 \
        --continue-on-collection-errors tests/
fi
bench 2-trial_throughput 150 benchmarks.trial_throughput --device cuda
bench 3-step_time_fidelity 180 benchmarks.step_time_fidelity --device cuda --full-steps 20
bench 4-overhead 75 benchmarks.overhead --device cuda
bench 5-fused_vs_mbconv 75 benchmarks.fused_vs_mbconv --device cuda
# One search with 4 workers (--only-n: no 1-worker row). Guessed cost on an H100/H200: ~45 s of start-up
# (interpreters, 4 s of data per process, the reference trial) and, guessed long so the step is not cut off,
# ~7 s per trial at 4 workers (a 5-epoch trial of 3,125 steps is ~5-7 s alone; 4 sharing the GPU should
# finish one every 2-4 s): so the budget is what the time left allows, a multiple of 4 (whole rounds of the 4
# workers), at least 4 and at most 80.
remaining=$(left)
budget=$(( (remaining - 60) / 7 / 4 * 4 ))
budget=$(( budget < 4 ? 4 : budget > 80 ? 80 : budget ))
bench 6-search_wall_time "$remaining" benchmarks.search_wall_time --device cuda --data synthetic:50000x32 \
    --workers 4 --epochs 5 --budget "$budget" --only-n
if [ "$DRY" = 1 ]; then  # one real run, tiny and on the CPU, so the summary reads a real table
    run_step 5-fused_vs_mbconv 60 python3 -m benchmarks.fused_vs_mbconv --device cpu --threads 1 --width 0.25 \
        --image-size 32 --batch-size 2 --steps 1 --rounds 1
fi

# ---------------------------------------------------------------------------------------------- summary
{
    echo
    echo "== gpu_check: $((SECONDS - START)) s of ${BUDGET} s, logs in $OUT"
    printf '   %s\n' "${STATUS[@]}"
    echo "== GPU targets"
    python3 -m benchmarks.gpu_summary "$OUT" | sed 's/^/   /'
} 2>&1 | tee "$OUT/summary.txt"
