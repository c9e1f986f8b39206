#!/usr/bin/env bash
# Set up respaths (CPU torch 2.13.0, Fashion-MNIST from Debian) and run the main job. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ] && ! dpkg -s dataset-fashion-mnist >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check torch==2.13.0 -e . 2>&1 | grep -v '^WARNING: Location' || true
exec .venv/bin/respaths demo "$@"
