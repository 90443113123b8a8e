#!/usr/bin/env bash
# Main job: train a BP potential on the bundled methanol DFT data, evaluate it on the
# held-out test split, and run 400 steps (200 fs) of NVE molecular dynamics with it.
# About 5 minutes on 2 CPU cores. Outputs in runs/demo/.
# Re-running resumes from runs/demo/checkpoint.atomnet; delete runs/demo to start afresh.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_WAIT_POLICY=PASSIVE MPLBACKEND=Agg
OUT=runs/demo

echo "== train =="
atomnet train examples/demo.yaml

echo "== evaluate on the held-out test split =="
atomnet evaluate "$OUT/model.atomnet" "$OUT/test.xyz" --json "$OUT/test_metrics.json"

echo "== NVE molecular dynamics, 400 steps of 0.5 fs from a test structure at 300 K =="
atomnet md "$OUT/model.atomnet" "$OUT/test.xyz" --steps 400 --timestep 0.5 \
    --temperature 300 --ensemble nve --out "$OUT/md_nve.xyz"
echo "done: see $OUT/ (model.atomnet, metrics.csv, learning_curve.png, force_parity.png, md_nve.xyz)"
