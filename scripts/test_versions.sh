#!/usr/bin/env bash
# Install the lowest versions pgrpo declares (constraints-lowest.txt) or the newest its ranges allow (no
# constraints.txt) into a fresh virtual environment, import every module (a cheap check for the packages the tests
# skip), then run the core and trainer tests there. torch stays pinned to the CPU build of the tested release in both.
#   bash scripts/test_versions.sh lowest|newest [VENV_DIR]    # default VENV_DIR: a temporary directory, removed after
set -euo pipefail
cd "$(dirname "$0")/.."
which="${1:-}"
case "$which" in
    lowest) pins=(-c constraints-lowest.txt torch) ;;
    newest) pins=(torch==2.13.0) ;;
    *) echo "usage: bash scripts/test_versions.sh lowest|newest [VENV_DIR]" >&2; exit 2 ;;
esac
venv="${2:-}"
if [[ -z "$venv" ]]; then
    venv="$(mktemp -d)/venv"
    trap 'rm -rf "$(dirname "$venv")"' EXIT
fi
python3 -m venv "$venv"
# shellcheck disable=SC1091
. "$venv/bin/activate"
# torch is pinned in the same command: an unpinned resolve would pull a multi-GB CUDA build.
python -m pip install --quiet --disable-pip-version-check "${pins[@]}" -e . pytest hypothesis
PGRPO_VERSIONS="$which" python - <<'PY'
import importlib
import os
import pkgutil
from importlib.metadata import version
from pathlib import Path

from packaging.requirements import Requirement

import pgrpo

if os.environ["PGRPO_VERSIONS"] == "lowest":
    # Every pin of constraints-lowest.txt must be what got installed (a constraint pip could not honour fails above).
    lines = Path("constraints-lowest.txt").read_text().splitlines()
    pins = [Requirement(line) for line in lines if line[:1].isalnum()]
    wrong = [f"{p.name}: {version(p.name)} installed, {p.specifier} pinned" for p in pins if version(p.name) not in p.specifier]
    assert not wrong, wrong
shown = ("torch", "transformers", "trl", "peft", "datasets", "accelerate")
print(f"{os.environ['PGRPO_VERSIONS']} versions:", ", ".join(f"{n} {version(n)}" for n in shown))
names = [m.name for m in pkgutil.walk_packages(pgrpo.__path__, "pgrpo.") if not m.name.endswith("__main__")]
for name in names:
    importlib.import_module(name)
print(f"imported {len(names)} modules")
PY
HF_HUB_OFFLINE=1 python -m pytest -q -p no:cacheprovider tests/core tests/trainer
