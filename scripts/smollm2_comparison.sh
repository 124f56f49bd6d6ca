#!/usr/bin/env bash
# The real-LM comparison of docs/results/smollm2 in one command (SmolLM2-135M-Instruct + LoRA on reviews, 2 CPU cores):
#   bash scripts/smollm2_comparison.sh [extra pgrpo bench flags, e.g. --seeds 2]
# 1. `frozen`, the instruct model as shipped: its held-out evaluation does not depend on the number of steps (learning
#    rate 0), so it takes one step;
# 2. the variants of configs/bench/smollm2_cpu.yaml, same seeds, same held-out prompts, then the report of both
#    (runs/bench_smollm2/report.md, results.json, figures). Finished runs are kept: rerun to resume.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
pgrpo bench --config configs/bench/smollm2_cpu.yaml --variants frozen --max_steps 1 "$@"
pgrpo bench --config configs/bench/smollm2_cpu.yaml "$@"
