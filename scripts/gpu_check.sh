#!/usr/bin/env bash
# Issue 12's GPU check, in one run of under 8 minutes on an H200:
#   1. install the carried wheels (.whl/, see the device notes; torch and triton are already there);
#   2. run the scan tests (torch and triton backends; on CUDA when a GPU is present);
#   3. build mamba-ssm from its carried sdist (.sdist/) capped at 5 minutes, for the cuda backend;
#   4. `segresmamba bench --device cuda`: docs/benchmarks/<date>-gpu.json.
# `bash scripts/gpu_check.sh --rehearse` runs every step on the CPU with tiny sizes (same code
# paths), writing the JSON to ${OUT:-/tmp}/rehearsal-gpu.json instead of docs/.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ "${1:-}" = "--rehearse" ]; then
    DEVICE=cpu
    BENCH=(--size 64 --models segresmamba,unet --repeats 1 --out-json "${OUT:-/tmp}/rehearsal-gpu.json" --overwrite)
else
    DEVICE=cuda
    BENCH=(--size 96 --size 128 --repeats 3)
fi
status=0

echo "== 1. carried wheels"
if compgen -G ".whl/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
else
    echo "no .whl/ folder: using the installed packages"
fi
export PYTHONPATH=SegResMambaSlicer${PYTHONPATH:+:$PYTHONPATH}

echo "== 2. scan tests ($DEVICE)"
# Triton decorates its own library in one mode per process: on a GPU, the compiled kernels only
# (CI runs the interpreted CPU cases).
only=()
[ "$DEVICE" = cuda ] && only=(-k "not cpu")
timeout 240 "$PY" -m pytest -q -x -p no:cacheprovider "${only[@]}" \
    Testing/test_scan.py Testing/test_triton_scan.py Testing/test_causal_conv.py || status=1

echo "== 3. mamba-ssm from its sdist (at most 5 minutes)"
if [ "$DEVICE" = cuda ] && compgen -G ".sdist/mamba_ssm-*.tar.gz" >/dev/null; then
    if timeout 300 "$PY" -m pip install -q --no-build-isolation --no-deps --target /tmp/site \
        .sdist/mamba_ssm-*.tar.gz; then
        SEGRESMAMBA_SCAN=cuda timeout 120 "$PY" -m pytest -q -x -p no:cacheprovider \
            Testing/test_triton_scan.py -k "other_backends" || status=1
    else
        echo "mamba-ssm did not build within 5 minutes: no cuda backend in this run"
    fi
else
    echo "skipped (no GPU or no .sdist/mamba_ssm-*.tar.gz carried)"
fi

echo "== 4. segresmamba bench --device $DEVICE"
"$PY" -m segresmamba.bench --device "$DEVICE" "${BENCH[@]}" || status=1
exit $status
