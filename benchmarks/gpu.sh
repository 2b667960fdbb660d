#!/usr/bin/env bash
# The GPU checks of manga_assets, in one command of under 10 minutes on one H100/H200:
#   1. python: an interpreter whose torch has CUDA. The model code and its tests need only numpy,
#      pandas, pyarrow, psutil and pytest beside torch (no dagster, no astropy), so where the
#      machine's python3 has them the checks run on the checkout as it is (PYTHONPATH), with no
#      network. Otherwise a virtual environment that sees the machine's packages gets the project
#      and its dev extras from PyPI (and pip's default torch wheel, which has CUDA, if needed);
#   2. before and after, one epoch each on the same galaxies: the commit BASELINE (default
#      a9b208f, the code before this work; needs git) against this checkout
#      (benchmarks/training_versus.py), then this checkout with CUDA graphs (--cuda-graphs);
#   3. the default schedule (TrainConfig's epochs and early stopping) for each model with the
#      fastest step, float32, and the embedding of every galaxy (--embed); target under 60 s a
#      model on an H200;
#   4. the model tests with MANGA_TEST_DEVICE=cuda (the CUDA-graph tests run only there);
#   5. bf16 autocast with compiled ConvLSTM gate kernels (--bf16 --compile), two epochs;
#   6. DDP over all visible GPUs against one GPU (benchmarks/ddp.py; skipped with one GPU).
# Each step gets what is left of GPU_SECONDS, the whole script's budget, so a lease of fixed length
# returns a table even when a step runs long. Then prints a results table. Logs of every step go to
# $GPU_RESULTS (default gpu-results/).
#
# Usage: bash benchmarks/gpu.sh            (from anywhere)
# Settings: PYTHON (default python3), GPU_VENV (default .venv-gpu), GALAXIES (default 9000),
#           GPU_SECONDS (default 570), DDP_BATCH (global batch of the DDP run, 32 per GPU),
#           BASELINE (default a9b208f).
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
BUDGET=${GPU_SECONDS:-570}
DDP_BATCH=${DDP_BATCH:-$((32 * GPUS))}
BASELINE=${BASELINE:-a9b208f}
RESULTS=${GPU_RESULTS:-gpu-results}
export PYTHONUNBUFFERED=1
mkdir -p "${RESULTS}"
TABLE="${RESULTS}/table.tsv"
printf 'step\tstatus\tseconds\tresult\n' >"${TABLE}"
FAILED=0

# step NAME LOG SECONDS COMMAND...: run a step for at most SECONDS (and no longer than the budget
# leaves), keep going when it fails, record status and duration.
step() {
    local name=$1 log=$2 cap=$3
    shift 3
    local left=$((BUDGET - SECONDS - 10))
    if [ "${cap}" -gt "${left}" ]; then cap=${left}; fi
    STEP_SECONDS=0
    if [ "${cap}" -lt 30 ]; then
        STEP_STATUS=skipped
        echo "== ${name}: skipped, ${left} s of the budget left" | tee "${log}"
        return
    fi
    echo "== ${name} (at most ${cap} s; log: ${log})"
    local started=${SECONDS} status=ok code=0
    if declare -F "$1" >/dev/null; then  # a shell function: timeout cannot run it
        "$@" >"${log}" 2>&1 || code=$?
    else
        timeout --kill-after=10 "${cap}" "$@" >"${log}" 2>&1 || code=$?
    fi
    if [ "${code}" -eq 124 ] || [ "${code}" -eq 137 ]; then
        status="TIMEOUT(${cap}s)"
        FAILED=1
    elif [ "${code}" -ne 0 ]; then
        status=FAILED
        FAILED=1
    fi
    if [ "${status}" != ok ]; then tail -n 20 "${log}" >&2 || true; fi
    STEP_STATUS=${status}
    STEP_SECONDS=$((SECONDS - started))
}

record() {  # record NAME RESULT
    printf '%s\t%s\t%s\t%s\n' "$1" "${STEP_STATUS}" "${STEP_SECONDS}" "$2" >>"${TABLE}"
}

# training_rows LOG: "variant gal/s epoch-s val/base epochs wall-s" from training.py's table.
training_rows() {
    awk '($1 == "ae" || $1 == "vae") && NF >= 13 { print $1, $3, $4, $(NF-2), $(NF-1), $NF }' "$1"
}

show_table() {
    if command -v column >/dev/null 2>&1; then column -t -s $'\t' "${TABLE}"; else cat "${TABLE}"; fi
}

nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv >"${RESULTS}/gpus.csv"

MODEL_DEPS="import torch, numpy, pandas, pyarrow, psutil, pytest, sys
sys.exit(not torch.cuda.is_available())"
PY=${PYTHON}
# set -e does not hold inside a function called as a condition (step's "if"): hence the returns.
python_env() {
    if "${PYTHON}" -c "${MODEL_DEPS}"; then
        echo "using ${PYTHON} as it is, with the checkout on PYTHONPATH"
    else
        if [ ! -x "${VENV}/bin/python" ]; then
            "${PYTHON}" -m venv --system-site-packages "${VENV}" || return 1
        fi
        "${VENV}/bin/python" -m pip install --quiet --upgrade pip || return 1
        if ! "${VENV}/bin/python" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"
        then
            "${VENV}/bin/python" -m pip install --quiet torch || return 1
        fi
        "${VENV}/bin/python" -m pip install --quiet -e ".[dev]" || return 1
    fi
    "${PY}" -c "import torch; assert torch.cuda.is_available(), 'torch has no CUDA'
print('torch', torch.__version__, 'CUDA', torch.version.cuda, torch.cuda.device_count(), 'GPUs')"
}
if ! "${PYTHON}" -c "${MODEL_DEPS}" 2>/dev/null; then PY="${VENV}/bin/python"; fi
export PYTHONPATH="${PWD}${PYTHONPATH:+:${PYTHONPATH}}"
step python "${RESULTS}/python.log" 600 python_env
record python "$(tail -n 1 "${RESULTS}/python.log")"
if [ "${STEP_STATUS}" != ok ]; then
    show_table
    exit 1
fi

# Before and after on the same galaxies, AE, one epoch each: the commit before this work
# (BASELINE, checked out into a git worktree) against this checkout's default step (training
# split resident on the GPU, no per-step waits), then this checkout with CUDA graphs.
if git rev-parse --verify --quiet "${BASELINE}^{commit}" >/dev/null; then
    step "one epoch, ${BASELINE} vs this checkout" "${RESULTS}/versus.log" 150 \
        "${PY}" benchmarks/training_versus.py --baseline "${BASELINE}" --device cuda \
        --galaxies "${GALAXIES}" --repeats 1 --variants ae
    record "one epoch ae, ${BASELINE} vs now" "$(grep -E '^ratios' "${RESULTS}/versus.log" | tail -n 1)"
else
    step "one epoch, memory maps" "${RESULTS}/epoch_maps.log" 120 \
        "${PY}" benchmarks/training.py --data "${RESULTS}/galaxies" --device cuda --epochs 1 \
        --galaxies "${GALAXIES}" --variants ae --quiet --resident no
    result=$(training_rows "${RESULTS}/epoch_maps.log" | awk '{ printf "%s galaxies/s, epoch %s s", $2, $3 }')
    record "one epoch ae, memory maps (no ${BASELINE} here)" "${result:-no figure (see log)}"
fi
step "one epoch, CUDA graphs" "${RESULTS}/epoch_graphs.log" 120 \
    "${PY}" benchmarks/training.py --data "${RESULTS}/galaxies" --device cuda --epochs 1 \
    --galaxies "${GALAXIES}" --variants ae --quiet --cuda-graphs
result=$(training_rows "${RESULTS}/epoch_graphs.log" | awk '{ printf "%s galaxies/s, epoch %s s, val/base %s", $2, $3, $4 }')
record "one epoch ae, CUDA graphs" "${result:-no figure (see log)}"

# The default schedule with CUDA graphs (training falls back to eager, and says so, if recording
# fails), then every galaxy embedded by the model.
for variant in ae vae; do
    step "default schedule ${variant}, ${GALAXIES} galaxies, CUDA graphs" \
        "${RESULTS}/schedule_${variant}.log" 240 \
        "${PY}" benchmarks/training.py --data "${RESULTS}/galaxies" --device cuda --default-schedule --galaxies "${GALAXIES}" \
        --variants "${variant}" --cuda-graphs --embed
    result=$(training_rows "${RESULTS}/schedule_${variant}.log" | awk '{ printf "%s epochs in %s s (target < 60), %s galaxies/s, val/base %s", $5, $6, $2, $4 }')
    share=$(awk '/share of this device.s bf16 matmul/ { print $NF }' "${RESULTS}/schedule_${variant}.log")
    embedded=$(grep -E '^(ae|vae) +embedded' "${RESULTS}/schedule_${variant}.log" | sed 's/^[a-z]* *//')
    record "default schedule ${variant}" "${result:-no figure (see log)}; bf16 matmul share ${share:-?}; ${embedded:-no embedding figure}"
done

# -o filterwarnings=: pyproject's filters name dagster's warning classes; dagster need not be here.
step "model tests on cuda" "${RESULTS}/tests.log" 180 \
    env MANGA_TEST_DEVICE=cuda CUBLAS_WORKSPACE_CONFIG=:4096:8 "${PY}" -m pytest -q \
    -p no:cacheprovider -o filterwarnings= -n 4 manga_assets_tests/test_model
record "model tests (cuda)" "$(grep -E '[0-9]+ (passed|failed)' "${RESULTS}/tests.log" | tail -n 1)"

step "bf16 + compiled gates, ${GALAXIES} galaxies, 2 epochs" "${RESULTS}/compiled.log" 150 \
    "${PY}" benchmarks/training.py --data "${RESULTS}/galaxies" --device cuda --bf16 --compile --epochs 2 \
    --galaxies "${GALAXIES}" --variants ae --quiet
result=$(training_rows "${RESULTS}/compiled.log" | awk '{ printf "%s galaxies/s in the 2nd epoch (%s s), both epochs with compilation %s s", $2, $3, $6 }')
record "bf16 + compiled gates ae" "${result:-no figure (see log)}"

if [ "${GPUS}" -ge 2 ]; then
    step "DDP over ${GPUS} GPUs" "${RESULTS}/ddp.log" 300 \
        "${PY}" benchmarks/ddp.py --device cuda --processes "${GPUS}" --bf16 --compile \
        --galaxies "${GALAXIES}" --epochs 2 --batch-size "${DDP_BATCH}"
    record "DDP ${GPUS} GPUs vs 1" "$(grep -E '^ratios' "${RESULTS}/ddp.log" | tail -n 1)"
else
    STEP_STATUS=skipped STEP_SECONDS=0
    record "DDP over GPUs" "one GPU visible: DDP needs two or more (one rank per GPU)"
fi

echo
echo "results (${GPUS} GPU(s): $(nvidia-smi --query-gpu=name --format=csv,noheader | sort -u | paste -sd, -))"
show_table
exit "${FAILED}"
