#!/usr/bin/env bash
# Create .venv and install audiogate with everything it needs (CPU PyTorch).
# Idempotent: a second run only checks what is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
# The CPU build first: a floating torch requirement would pull a multi-GB CUDA build.
# For a GPU, point TORCH_INDEX_URL at PyTorch's CUDA wheel index (see the README).
if [ -n "${TORCH_INDEX_URL:-}" ]; then
    python -m pip install --quiet "torch==2.13.0" --index-url "$TORCH_INDEX_URL"
else
    python -m pip install --quiet "torch==2.13.0"
fi
python -m pip install --quiet -e ".[serve,onnx,dev,voice,tensorboard,docs]"
# resemblyzer (voice extra) depends on webrtcvad 2.0.10, an sdist (built with gcc) whose module
# imports pkg_resources, which setuptools >= 81 no longer has; audiogate never imports it, but
# the test that checks our encoder against resemblyzer's own does. webrtcvad-wheels installs the
# same module without that import, over it.
python -m pip install --quiet "webrtcvad-wheels==2.0.14.post1"
