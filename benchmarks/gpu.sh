#!/usr/bin/env bash
# L12 on one GPU, tmzoo (bf16-mixed, compiled) against the reference Transformer-M's own code
# (fp16, as its recipe): training molecules/s at batch 256, peak GPU memory, and inference
# molecules/s from SMILES. Fits in about 5 minutes of an H200 (the python part stops at
# GPU_BENCH_TIMEOUT seconds, default 290). Prints `name: value` lines (benchmarks/gpu.py).
#
#   benchmarks/gpu.sh                           # on the GPU machine
#   benchmarks/gpu.sh --device cpu --dry-run    # here: tiny shapes on CPU, checks the script
#
# Needs a Python with torch, torch_geometric, lightning, rdkit and pyyaml ($PYTHON, else the
# checkout's .venv, else python3); tmzoo is taken from src/. Installs nothing heavy: only when
# the reference's compiled featuriser is missing does it run the harness's setup.sh, which
# pip-installs Cython<3 and omegaconf and compiles one .pyx. On a machine that reaches no
# package index, carry wheels of whatever is missing (rdkit, omegaconf) and install them first.
# The reference harness and the data are looked up beside the checkout (../shared) and inside
# it (shared/, which travels to a lent device machine):
#   REFERENCE  harness folder (reference.py, setup.sh, upstream/)   default: [../]shared/reference
#   DATA       pcqm4mv2 sample folder                               default: [../]shared/data/pcqm4mv2/sample1700
#   TM_REF_BUILD  the harness's build folder                       default: ~/.cache/tm-reference-build
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)

if [ -n "${PYTHON:-}" ]; then python=$PYTHON
elif [ -x "$root/.venv/bin/python" ]; then python=$root/.venv/bin/python
else python=python3; fi

first_dir() { for d in "$@"; do if [ -d "$d" ]; then echo "$d"; return; fi; done; echo "$1"; }
reference=${REFERENCE:-$(first_dir "$root/../shared/reference" "$root/shared/reference")}
data=${DATA:-$(first_dir "$root/../shared/data/pcqm4mv2/sample1700" "$root/shared/data/pcqm4mv2/sample1700")}
build=${TM_REF_BUILD:-$HOME/.cache/tm-reference-build}
if [ ! -f "$reference/reference.py" ]; then
  echo "no reference harness at $reference (set REFERENCE)" >&2; exit 2
fi
if [ ! -f "$data/pcqm4m-v2-train.sdf" ]; then
  echo "no pcqm4m-v2-train.sdf in $data (set DATA)" >&2; exit 2
fi
if ! ls "$build"/lib/algos* >/dev/null 2>&1; then
  PYTHON=$python bash "$reference/setup.sh" "${TM_REFERENCE:-$reference/upstream}" "$build" >&2
fi

export PYTHONPATH="$root/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec timeout "${GPU_BENCH_TIMEOUT:-290}" "$python" "$here/gpu.py" --reference "$reference" --build "$build" \
  --data "$data" "$@"
