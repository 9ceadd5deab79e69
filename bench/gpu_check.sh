#!/usr/bin/env bash
# Every GPU number in one call (bench/gpu_check.py; docs/gpu-check.md):
#   bench/gpu_check.sh [--size small|real] --out DIR [--parts pgd,goat,memory,serve]
# Runs with the machine's own Python ($PYTHON, else python3); installs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec "${PYTHON:-python3}" bench/gpu_check.py "$@"
