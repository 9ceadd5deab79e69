#!/usr/bin/env bash
# Run four small jobs on the organism into $1 (eval: logprob and generate; attack: default and
# verdict_flip). bench/compare_snapshots.py then compares two such folders: samples.jsonl
# (timing fields aside) and the sha256 of every PNG. Used to show a refactor changed no behaviour.
set -euo pipefail
out=${1:?usage: bench/behaviour_snapshot.sh OUT_DIR}
rm -rf "$out"; mkdir -p "$out"
mmsafety-eval task.limit=10 hydra.run.dir="$out/eval_lp" > "$out/eval_lp.log" 2>&1
mmsafety-eval task.limit=10 scoring=generate hydra.run.dir="$out/eval_gen" > "$out/eval_gen.log" 2>&1
mmsafety-attack attack.steps=20 images=2 heldout_prompts=4 hydra.run.dir="$out/attack" > "$out/attack.log" 2>&1
mmsafety-attack attack=verdict_flip attack.steps=20 images=2 hydra.run.dir="$out/flip" > "$out/flip.log" 2>&1
echo "snapshot written to $out"
