#!/usr/bin/env bash
# GPU checks in one run, most important first, each step time-boxed so that one slow or
# failing step cannot cost the others: the CUDA tests, then the benchmark tables.
#
#   scripts/gpu_check.sh DATA_DIR [OUT_DIR] [STEP ...]
#
# DATA_DIR holds sst/train.txt and ptb/valid.txt (as ../shared/data does); OUT_DIR
# (default $OUT, else gpu-out) receives card.txt, steps.txt (each step's exit status and
# seconds) and one STEP.txt per step. STEPs (default: tests tree256 tree64 seq):
#   tests      the whole suite, CUDA tests included (tests/test_devices.py runs the
#              shipped models on the card), in 8 processes where pytest-xdist is there
#   tree256    SST tree-LSTM at batch 256, 1024 trees (issue target 2)
#   tree64     the same at batch 64, 512 trees
#   seq        LSTM language model and the data-dependent loop at batch 256
#   pipelined  whole epochs of the SST training set (8544 trees) with 1 and 3 worker
#              processes at batch 256
#   workers    tests/test_workers.py
# Naive per-example variants are left out (--skip naive): on a card they take most of
# the run; their ratios are measured on the CPU.
#
# It needs torch with CUDA and the package's pure-Python dependencies (gast,
# safetensors, tqdm, pytest, hypothesis) importable; it installs dynnet itself with
# --no-deps. The default steps take about 6 minutes on an H100.
#
# On a lent device machine that lacks gast, from the repository root here:
#   echo /.whl/ >> .git/info/exclude; echo /.gpudata/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform manylinux2014_x86_64 -d .whl gast
#   mkdir -p .gpudata/sst .gpudata/ptb
#   cp ../shared/data/sst/train.txt .gpudata/sst/; cp ../shared/data/ptb/valid.txt .gpudata/ptb/
# then run with carry [".whl", ".gpudata"]:
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl &&
#   export PYTHONPATH=/tmp/site && scripts/gpu_check.sh .gpudata
set -uo pipefail
data=${1:?usage: scripts/gpu_check.sh DATA_DIR [OUT_DIR] [STEP ...]}
out=${2:-${OUT:-gpu-out}}
shift $(($# >= 2 ? 2 : 1))
steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(tests tree256 tree64 seq)
mkdir -p "$out"
export PYTHONUNBUFFERED=1

python3 -m pip install -q --no-deps --no-build-isolation -e . >"$out/card.txt" 2>&1 \
    || { echo "pip install -e . failed"; cat "$out/card.txt"; exit 1; }
{ nvidia-smi -L; nvidia-smi --query-gpu=name,driver_version,clocks.sm --format=csv,noheader
  python3 -c "import torch, dynnet; print('torch', torch.__version__, 'cuda', torch.version.cuda,
torch.cuda.get_device_name())"; lscpu | grep -E 'Model name|^CPU\(s\)'; } \
    >>"$out/card.txt" 2>&1
cat "$out/card.txt"

bench=(python3 -m benchmarks.run --device cuda --data "$data" --skip naive --repeats 3)
run_step() {  # run_step NAME SECONDS COMMAND...: output to NAME.txt, status to steps.txt
    local name=$1 limit=$2 start=$SECONDS status
    shift 2
    echo "== $name (at most ${limit}s)"
    timeout --kill-after=5 "$limit" "$@" >"$out/$name.txt" 2>&1
    status=$?
    tail -n 25 "$out/$name.txt"
    echo "$name: exit $status in $((SECONDS - start))s" | tee -a "$out/steps.txt"
}
for step in "${steps[@]}"; do
    case $step in
        tests) run_step tests 150 python3 -m pytest -q -p no:warnings -p no:cacheprovider \
                   $(python3 -c "import xdist" 2>/dev/null && echo "-n 8") tests ;;
        tree256) run_step tree256 160 "${bench[@]}" --only tree --trees 1024 --batch-sizes 256 ;;
        tree64) run_step tree64 120 "${bench[@]}" --only tree --trees 512 --batch-sizes 64 ;;
        seq) run_step seq 90 "${bench[@]}" --only seq while --sentences 256 --vectors 1024 \
                 --batch-sizes 256 ;;
        pipelined) run_step pipelined 200 python3 -m benchmarks.pipelined --device cuda \
                       --data "$data" --only tree --trees 8544 --batch-sizes 256 --repeats 3 \
                       --workers 1 3 ;;
        workers) run_step workers 120 python3 -m pytest -q -p no:warnings -p no:cacheprovider \
                     tests/test_workers.py ;;
        *) echo "unknown step $step" | tee -a "$out/steps.txt" ;;
    esac
done
