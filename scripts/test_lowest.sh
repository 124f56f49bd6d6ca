#!/usr/bin/env bash
# Install the lowest versions pgrpo declares (constraints-lowest.txt) into a fresh virtual environment and run the
# core and trainer tests on them, after importing every module (a cheap check for the packages those tests skip).
#   bash scripts/test_lowest.sh [VENV_DIR]    # default: a temporary directory, removed afterwards
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
# torch is pinned in the same command (constraints-lowest.txt): an unpinned resolve would pull a CUDA build.
python -m pip install --quiet --disable-pip-version-check -c constraints-lowest.txt torch -e . pytest hypothesis
# Every pin of constraints-lowest.txt must be what got installed (a constraint pip could not honour fails above).
python - <<'PY'
from importlib.metadata import version
from pathlib import Path

from packaging.requirements import Requirement

pins = [Requirement(line) for line in Path("constraints-lowest.txt").read_text().splitlines() if line[:1].isalnum()]
wrong = [f"{p.name}: {version(p.name)} installed, {p.specifier} pinned" for p in pins if version(p.name) not in p.specifier]
assert not wrong, wrong
print("lowest versions:", ", ".join(f"{p.name} {version(p.name)}" for p in pins))
PY
python - <<'PY'
import importlib
import pkgutil

import pgrpo

names = [m.name for m in pkgutil.walk_packages(pgrpo.__path__, "pgrpo.") if not m.name.endswith("__main__")]
for name in names:
    importlib.import_module(name)
print(f"imported {len(names)} modules")
PY
HF_HUB_OFFLINE=1 python -m pytest -q -p no:cacheprovider tests/core tests/trainer
