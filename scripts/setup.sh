#!/usr/bin/env bash
# Create .venv/ in the checkout with tmzoo installed (editable) and its test tools.
# torch is pinned here (CPU wheel); setup.cfg keeps it loose for users.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet "$TORCH_SPEC"
.venv/bin/python -m pip install --quiet -e ".[all]"
touch .venv/.tmzoo-installed
echo "tmzoo installed in .venv ($(.venv/bin/python -c 'import torch, torch_geometric, lightning; print(f"torch {torch.__version__}, PyG {torch_geometric.__version__}, Lightning {lightning.__version__}")'))"
