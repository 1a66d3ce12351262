#!/usr/bin/env bash
# GPU checks in one run: CUDA correctness tests, then the benchmark tables on the card.
#
#   scripts/gpu_check.sh DATA_DIR [OUT_DIR]
#
# DATA_DIR holds sst/train.txt and ptb/valid.txt (as ../shared/data does); OUT_DIR
# (default $OUT, else gpu-out) receives card.txt, tests.txt, tree.md/.txt,
# seq.md/.txt, workers.txt and pipelined.txt (whole epochs with 1 and 3 worker processes).
# It needs torch with CUDA and the package's pure-Python dependencies
# (gast, safetensors, tqdm, pytest, hypothesis) importable; it installs dynnet itself
# with --no-deps. Takes about 7 minutes on an H100/H200.
#
# On a lent device machine that lacks some of them, from the repository root here:
#   echo /.whl/ >> .git/info/exclude; echo /.gpudata/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform manylinux2014_x86_64 -d .whl gast safetensors
#   mkdir -p .gpudata/sst .gpudata/ptb
#   cp ../shared/data/sst/train.txt .gpudata/sst/; cp ../shared/data/ptb/valid.txt .gpudata/ptb/
# then run with carry [".whl", ".gpudata"]:
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl &&
#   export PYTHONPATH=/tmp/site && scripts/gpu_check.sh .gpudata
set -euo pipefail
data=${1:?usage: scripts/gpu_check.sh DATA_DIR [OUT_DIR]}
out=${2:-${OUT:-gpu-out}}
mkdir -p "$out"
export PYTHONUNBUFFERED=1

python3 -m pip install -q --no-deps --no-build-isolation -e .
{ nvidia-smi -L; python3 -c "import torch; print('torch', torch.__version__)"; } \
    | tee "$out/card.txt"
python3 -m pytest -q -p no:warnings tests/test_engine.py tests/test_segments.py \
    tests/test_recurrences.py tests/test_example_traces.py tests/test_replayed_batches.py \
    tests/models \
    -k "cuda or segment or tree" 2>&1 \
    | tee "$out/tests.txt"
python3 -m benchmarks.run --device cuda --data "$data" --only tree --trees 1024 \
    --repeats 3 --out "$out/tree.md" 2>&1 | tee "$out/tree.txt"
python3 -m benchmarks.run --device cuda --data "$data" --only seq cls while --sentences 256 \
    --trees 512 --vectors 1024 --repeats 3 --out "$out/seq.md" 2>&1 | tee "$out/seq.txt"
python3 -m pytest -q -p no:warnings tests/test_workers.py 2>&1 | tee "$out/workers.txt"
python3 -m benchmarks.pipelined --device cuda --data "$data" --only tree --trees 2048 \
    --batch-sizes 256 --repeats 3 --workers 1 3 2>&1 | tee "$out/pipelined.txt"
