#!/usr/bin/env bash
# Check that `pip install "pgrpo[vllm]"` resolves, with pgrpo's own requirements, to a vLLM that TRL 1.16 supports
# (0.22-0.31), without installing or downloading the big wheels (pip reads the packages' metadata only).
#   bash scripts/check_vllm_extra.sh
set -euo pipefail
cd "$(dirname "$0")/.."
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
report="$scratch/report.json"
# An empty venv with a current pip, whose fast-deps reads each wheel's metadata with HTTP range requests instead of
# downloading the wheel (vLLM alone is 300 MB, its CUDA dependencies gigabytes).
python3 -m venv "$scratch/venv"
"$scratch/venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade "pip>=25"
# torch is pinned as in scripts/install.sh (a CPU build on the test machines; on a GPU machine PyPI's 2.13.0 is CUDA).
"$scratch/venv/bin/python" -m pip install --dry-run --use-feature=fast-deps --quiet --disable-pip-version-check \
    --report "$report" torch==2.13.0 ".[vllm]"
"$scratch/venv/bin/python" - "$report" <<'PY'
import json
import sys

chosen = {item["metadata"]["name"].lower(): item["metadata"]["version"] for item in json.load(open(sys.argv[1]))["install"]}
print("pgrpo[vllm] resolves to:", ", ".join(f"{name} {chosen[name]}" for name in ("vllm", "torch", "transformers", "trl")))
minor = tuple(int(part) for part in chosen["vllm"].split(".")[:2])
assert (0, 22) <= minor <= (0, 31), f"vLLM {chosen['vllm']} is outside TRL 1.16's 0.22-0.31"
PY
