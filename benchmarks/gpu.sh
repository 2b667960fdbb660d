#!/usr/bin/env bash
# The GPU checks of manga_assets, in one command, on a machine with NVIDIA GPUs:
#   1. install: a virtual environment that sees the machine's packages (so a CUDA build of torch
#      already there is used; otherwise pip's default torch wheel, which has CUDA), then the
#      project with its dev extras;
#   2. the model tests with MANGA_TEST_DEVICE=cuda: the training tests train on the GPU (float32,
#      deterministic kernels), and an inference test embeds there; the DDP tests stay on the CPU
#      (gloo), step 4 is DDP on the GPUs;
#   3. one timed training epoch over 9,000 synthetic galaxies per model, bf16 autocast and
#      torch.compile (benchmarks/training.py; two epochs run, the second is timed, since the
#      first includes compilation), with the time 100 epochs would take;
#   4. DDP over all visible GPUs (nccl) against one GPU, same galaxies, same global batch
#      (benchmarks/ddp.py; skipped with one GPU).
# Then prints a results table. Logs of every step go to $GPU_RESULTS (default gpu-results/).
#
# Usage: bash benchmarks/gpu.sh            (from anywhere; about 10-15 minutes on one H200)
# Settings: PYTHON (interpreter for the venv, default python3), GPU_VENV (default .venv-gpu),
#           GALAXIES (default 9000), DDP_BATCH (global batch of the DDP run, default 32 per GPU).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
if ! command -v nvidia-smi >/dev/null 2>&1; then
    echo "gpu.sh: nvidia-smi not found; this script needs a machine with NVIDIA GPUs" >&2
    exit 2
fi
if ! nvidia-smi -L >/dev/null 2>&1; then
    echo "gpu.sh: nvidia-smi cannot reach a GPU (driver not loaded?):" >&2
    nvidia-smi -L >&2 || true
    exit 2
fi
GPUS=$(nvidia-smi -L | grep -c '^GPU ' || true)
if [ "${GPUS}" -lt 1 ]; then
    echo "gpu.sh: nvidia-smi lists no GPU" >&2
    exit 2
fi

PYTHON=${PYTHON:-python3}
VENV=${GPU_VENV:-.venv-gpu}
GALAXIES=${GALAXIES:-9000}
DDP_BATCH=${DDP_BATCH:-$((32 * GPUS))}
RESULTS=${GPU_RESULTS:-gpu-results}
mkdir -p "${RESULTS}"
TABLE="${RESULTS}/table.tsv"
printf 'step\tstatus\tseconds\tresult\n' >"${TABLE}"
FAILED=0

# step NAME LOG COMMAND...: run a step, keep going when it fails, record status and duration.
step() {
    local name=$1 log=$2
    shift 2
    echo "== ${name} (log: ${log})"
    local started=${SECONDS} status=ok
    if ! "$@" >"${log}" 2>&1; then
        status=FAILED
        FAILED=1
        tail -n 20 "${log}" >&2 || true
    fi
    STEP_STATUS=${status}
    STEP_SECONDS=$((SECONDS - started))
}

record() {  # record NAME RESULT
    printf '%s\t%s\t%s\t%s\n' "$1" "${STEP_STATUS}" "${STEP_SECONDS}" "$2" >>"${TABLE}"
}

nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv >"${RESULTS}/gpus.csv"

# set -e does not hold inside a function called as a condition (step's "if"): hence the returns.
install() {
    if [ ! -x "${VENV}/bin/python" ]; then
        "${PYTHON}" -m venv --system-site-packages "${VENV}" || return 1
    fi
    "${VENV}/bin/python" -m pip install --quiet --upgrade pip || return 1
    if ! "${VENV}/bin/python" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
        "${VENV}/bin/python" -m pip install --quiet torch || return 1
    fi
    "${VENV}/bin/python" -m pip install --quiet -e ".[dev]" || return 1
    "${VENV}/bin/python" -c "import torch; assert torch.cuda.is_available(), 'torch has no CUDA'
print('torch', torch.__version__, 'CUDA', torch.version.cuda, torch.cuda.device_count(), 'GPUs')"
}
step install "${RESULTS}/install.log" install
record install "$(tail -n 1 "${RESULTS}/install.log")"
if [ "${STEP_STATUS}" != ok ]; then
    column -t -s $'\t' "${TABLE}"
    exit 1
fi
PY="${VENV}/bin/python"

step "model tests on cuda" "${RESULTS}/tests.log" \
    env MANGA_TEST_DEVICE=cuda CUBLAS_WORKSPACE_CONFIG=:4096:8 "${PY}" -m pytest -q -p no:cacheprovider manga_assets_tests/test_model
record "model tests (cuda)" "$(grep -E '[0-9]+ (passed|failed)' "${RESULTS}/tests.log" | tail -n 1)"

step "training epoch, ${GALAXIES} galaxies, bf16 + compile" "${RESULTS}/training.log" \
    "${PY}" benchmarks/training.py --device cuda --bf16 --compile --epochs 2 \
    --galaxies "${GALAXIES}" --quiet
for variant in ae vae; do
    # Columns of training.py's table: variant params gal/s epoch-s ...
    line=$(awk -v v="${variant}" '$1 == v && NF > 8' "${RESULTS}/training.log" | tail -n 1)
    if [ -n "${line}" ]; then
        read -r _ _ rate epoch _ <<<"${line}"
        result="${rate} galaxies/s, epoch ${epoch} s, 100 epochs ~$(awk -v e="${epoch}" \
            'BEGIN { printf "%.1f", e * 100 / 60 }') min (target < 5)"
    else
        result="no figure (see log)"
    fi
    record "training ${variant} (1 GPU)" "${result}"
done

if [ "${GPUS}" -ge 2 ]; then
    step "DDP over ${GPUS} GPUs" "${RESULTS}/ddp.log" \
        "${PY}" benchmarks/ddp.py --device cuda --processes "${GPUS}" --bf16 --compile \
        --galaxies "${GALAXIES}" --epochs 2 --batch-size "${DDP_BATCH}"
    record "DDP ${GPUS} GPUs vs 1" "$(grep -E '^ratios' "${RESULTS}/ddp.log" | tail -n 1)"
else
    STEP_STATUS=skipped STEP_SECONDS=0
    record "DDP over GPUs" "one GPU visible: DDP needs two or more (one rank per GPU)"
fi

echo
echo "results (${GPUS} GPU(s): $(nvidia-smi --query-gpu=name --format=csv,noheader | sort -u | paste -sd, -))"
column -t -s $'\t' "${TABLE}"
exit "${FAILED}"
