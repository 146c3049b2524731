#!/usr/bin/env bash
# Set up, then generate the demo data set and run eda, train, evaluate and predict on it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
audiogate demo --out demo "$@"
