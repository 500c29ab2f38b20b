#!/usr/bin/env bash
# One call on the GPU machine (docs/BENCHMARKS.md, "Running it on the GPU machine"): a smoke run that stops the call
# early if the GPU path is broken, 1M x 64 mining (MINING=1), the CUDA tests, then the cub100 study until the time
# budget.
#
#   run(carry=[".devdata/cub100_160", ".devdata/efficientnet_lite0_fp16.pth", ".whl"], timeout_s=600,
#       command="bash benchmarks/gpu_run.sh")
#
# Results come back in $OUT: log files and results.tgz (benchmarks/results/cub100/full). BUDGET (seconds, default
# 540) bounds the whole script; the study starts no run that would end after it.
set -u
OUT=${OUT:-/tmp/gpu_out}
BUDGET=${BUDGET:-540}
DEVICE=${DEVICE:-cuda}  # DEVICE=cpu STUDY_MODE=smoke FIRST_RUN_SECONDS=0: a dry run on a CPU
STUDY_MODE=${STUDY_MODE:-full}
MINING_SIZES=${MINING_SIZES:-100000 1000000}
DATA=.devdata/cub100_160
WEIGHTS=.devdata/efficientnet_lite0_fp16.pth
mkdir -p "$OUT"
left() { echo $((BUDGET - SECONDS)); }

python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1
nvidia-smi -L
python3 -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__, torch.cuda.get_device_name(0))"

# 1. Smoke: two tiny runs on the GPU with the study's code path; a failure ends the call here.
timeout 150 python3 benchmarks/cub100_study.py --mode smoke --device "$DEVICE" --data-root "$DATA" --weights "$WEIGHTS" \
    --results-dir /tmp/smoke/results --runs-dir /tmp/smoke/runs --work-dir /tmp/smoke/work --decode-once \
    >"$OUT/smoke.txt" 2>&1
status=$?
tail -n 12 "$OUT/smoke.txt"
if [ $status -ne 0 ]; then echo "SMOKE FAILED ($status) after ${SECONDS}s"; exit 3; fi
echo "smoke ok at ${SECONDS}s"

# 2. Mining cost at 100k and 1M points x 64-d: exact k-NN on the GPU, selection on the CPU (52 s; measured in
# session 12, so only with MINING=1).
[ "${MINING:-0}" = 1 ] && timeout 100 python3 benchmarks/mining_cost.py --sizes $MINING_SIZES --methods exact --device "$DEVICE" --threads 16 \
    >"$OUT/mining.txt" 2>&1
[ -f "$OUT/mining.txt" ] && tail -n 8 "$OUT/mining.txt"
echo "mining done at ${SECONDS}s"

# 3. The CUDA tests (skipped on machines without a GPU).
timeout 60 python3 -m pytest -q -n 0 -p no:cacheprovider -k cuda tests/index/test_exact.py \
    tests/training/test_checkpoint.py tests/inference/test_model.py tests/miners/test_miner_properties.py \
    >"$OUT/cuda_tests.txt" 2>&1
tail -n 5 "$OUT/cuda_tests.txt"
echo "cuda tests done at ${SECONDS}s"

# 4. The study, seed by seed: the comparison the issue asks for first, then the rest of the main study.
study() {
    local budget=$(( $(left) - 25 ))
    if [ "$budget" -lt 30 ]; then echo "no time left for: $*"; return; fi
    timeout "$budget" python3 benchmarks/cub100_study.py --mode "$STUDY_MODE" --device "$DEVICE" --data-root "$DATA" --weights "$WEIGHTS" \
        --decode-once --keep-going --time-budget "$budget" \
        --first-run-seconds "${FIRST_RUN_SECONDS:-150}" --plots-dir "" "$@" 2>&1 | tee -a "$OUT/study.txt"
}
# ABLATIONS="abl_step_lr_sm_default abl_step_lr_random ..." (seed ABLATION_SEEDS, default 0) run before the main study.
if [ -n "${ABLATIONS:-}" ]; then
    study --study ablations --configs $ABLATIONS --seeds ${ABLATION_SEEDS:-0} --no-baseline
fi
study --configs sm_default sm_triplet_global_random pml_margin_dw --seeds 0 1 2
study --configs pml_triplet_semihard sm_triplet_fanng_global_adaptive sm_margin_dw --seeds 0 1 2 --no-baseline
[ "$STUDY_MODE" = full ] && tar czf "$OUT/results.tgz" benchmarks/results/cub100/full 2>/dev/null
echo "all done at ${SECONDS}s"
