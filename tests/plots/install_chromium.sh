#!/usr/bin/env bash
# Installs Debian's chromium for tests/plots/test_chromium.py (a headless browser renders the chart pages).
# Nothing to do when a chromium is already there; without root or apt-get it says so and leaves the test to skip.
set -euo pipefail
if command -v chromium >/dev/null || command -v chromium-browser >/dev/null; then
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "install_chromium.sh: not root or no apt-get; tests/plots will skip the headless-browser check" >&2
    exit 0
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
