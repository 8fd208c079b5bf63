#!/usr/bin/env bash
# Download the wheels a bare GPU machine lacks into .whl/ (git-ignored), for `run(..., carry=[".whl"])`.
#
#   bash benchmarks/fetch_gpu_wheels.sh                      # CPython 3.12, manylinux x86_64
#   PY_VERSIONS="3.11 3.12 3.13" bash benchmarks/fetch_gpu_wheels.sh   # when the GPU machine's Python is unknown
#
# The GPU machine has torch, torchvision, timm, pandas, numpy, scikit-learn (so scipy), tqdm, rich, pytest
# (so packaging), pillow and pyyaml (torchvision's and timm's dependencies). What effnas imports beyond that on
# the paths benchmarks/gpu_check.sh runs:
#   optuna      nas.search, benchmarks.overhead / search_wall_time, most tests
#     -> sqlalchemy, alembic -> mako -> markupsafe, colorlog (optuna's import-time dependencies)
#     (greenlet: not needed, SQLAlchemy 2.1 made it optional; PyYAML: carried anyway, optuna imports it)
#   kornia      nas.augment, imported by nas.train (the GPU test of `nas train`) -> kornia_rs
#   plotly      nas.train_state.write_plot (every `nas train` run writes training.html) -> narwhals
# Versions are the ones installed on the development machine (pip show), so both sides run the same code.
# Install there with benchmarks/gpu_check.sh (it does it first), or by hand:
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
#       --find-links .whl optuna sqlalchemy alembic mako markupsafe colorlog pyyaml kornia kornia_rs plotly narwhals
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES="optuna sqlalchemy alembic mako markupsafe colorlog pyyaml kornia kornia_rs plotly narwhals"
PY_VERSIONS="${PY_VERSIONS:-3.12}"
DEST="${DEST:-.whl}"
MAX_MIB="${MAX_MIB:-40}"

pins=()
for name in $PACKAGES; do
    version=$(python3 -m pip show "$name" 2>/dev/null | sed -n 's/^Version: //p')
    if [ -z "$version" ]; then
        echo "fetch_gpu_wheels: $name is not installed here (pip install -e '.[dev]' first)" >&2
        exit 2
    fi
    pins+=("$name==$version")
done

mkdir -p "$DEST"
for py in $PY_VERSIONS; do
    abi="cp${py/./}"
    echo "fetch_gpu_wheels: CPython $py ($abi): ${pins[*]}"
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$py" --implementation cp \
        --abi "$abi" --abi abi3 --abi none \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "$DEST" "${pins[@]}" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }
done

ls -l "$DEST"/*.whl | awk '{printf "  %8.1f KiB  %s\n", $5 / 1024, $9}'
total=$(du -cb "$DEST"/*.whl | tail -1 | cut -f1)
printf 'fetch_gpu_wheels: %d wheels, %.1f MiB in %s\n' "$(ls "$DEST"/*.whl | wc -l)" "$(echo "$total / 1048576" | bc -l)" "$DEST"
if [ "$total" -gt $((MAX_MIB * 1048576)) ]; then
    echo "fetch_gpu_wheels: over ${MAX_MIB} MiB: the run tool carries at most 64 MiB with the working tree" >&2
    exit 1
fi
