#!/usr/bin/env bash
# Set up, then run the linters, the type checker, the documentation build and the whole test
# suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Headless Chromium for the browser test of the web page, and espeak-ng for the spoken words
# of the speech benchmark and the voice tests (Debian packages, root only).
missing=""
command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
command -v espeak-ng >/dev/null 2>&1 || missing="$missing espeak-ng"
if [ -n "$missing" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    # shellcheck disable=SC2086  # one word per package
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi
. .venv/bin/activate
ruff check src tests bench notebooks docs
mypy
lint-imports
# The documentation site: broken links, anchors, API paths or a config reference that cannot be
# generated fail the build. Built into a temporary folder (site/ is never committed).
site_dir="$(mktemp -d)"
NO_MKDOCS_2_WARNING=1 mkdocs build --strict --site-dir "$site_dir"
rm -rf "$site_dir"
python -m pytest -q "$@"
