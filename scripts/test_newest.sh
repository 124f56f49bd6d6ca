#!/usr/bin/env bash
# Install the newest versions pyproject.toml's ranges allow (no constraints.txt; torch still pinned to the CPU build of
# the tested release) into a fresh virtual environment and run the core and trainer tests on them, after importing
# every module. The counterpart of scripts/test_lowest.sh: a new release inside a declared range shows up here first.
#   bash scripts/test_newest.sh [VENV_DIR]    # default: a temporary directory, removed afterwards
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-}"
if [[ -z "$venv" ]]; then
    venv="$(mktemp -d)/venv"
    trap 'rm -rf "$(dirname "$venv")"' EXIT
fi
python3 -m venv "$venv"
# shellcheck disable=SC1091
. "$venv/bin/activate"
# torch is pinned in the same command: an unpinned resolve would pull a multi-GB CUDA build.
python -m pip install --quiet --disable-pip-version-check torch==2.13.0 -e . pytest hypothesis
python - <<'PY'
import importlib
import pkgutil
from importlib.metadata import version

import pgrpo

print("newest versions:", ", ".join(f"{n} {version(n)}" for n in ("transformers", "trl", "peft", "datasets", "accelerate")))
names = [m.name for m in pkgutil.walk_packages(pgrpo.__path__, "pgrpo.") if not m.name.endswith("__main__")]
for name in names:
    importlib.import_module(name)
print(f"imported {len(names)} modules")
PY
HF_HUB_OFFLINE=1 python -m pytest -q -p no:cacheprovider tests/core tests/trainer
