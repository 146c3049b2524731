#!/usr/bin/env bash
# Set up, then run the linters, the type checker and the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Headless Chromium for the browser test of the web page, espeak-ng for the generated speech of
# the voice tests (Debian packages, root only).
if { ! command -v chromium || ! command -v espeak-ng; } >/dev/null 2>&1 && [ "$(id -u)" = 0 ] \
        && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
        espeak-ng >/dev/null
fi
. .venv/bin/activate
ruff check src tests bench notebooks
mypy
python -m pytest -q "$@"
