#!/usr/bin/env bash
# Side-by-side call speed: atomnet BP vs MACE (ASE calculators, ethanol, float32),
# alternating runs in one session so both see the same machine state.
#   bash benchmarks/mace_comparison.sh [ROUNDS]
# Needs ../shared/tools/mace_baseline.sh (it builds its own venv on first use).
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_WAIT_POLICY=PASSIVE
rounds=${1:-3}
structure=$(mktemp --suffix=.xyz)
python -c "from ase.io import read, write; write('$structure', read('../shared/data/botnet/ethanol/test_MD.xyz', 0))"
for threads in 1 2; do
  for r in $(seq "$rounds"); do
    echo "--- threads=$threads round $r"
    OMP_NUM_THREADS=$threads bash ../shared/tools/mace_baseline.sh speed "$structure" 2>/dev/null | tail -n 1
    OMP_NUM_THREADS=$threads python benchmarks/call_speed.py "$structure"
  done
done
rm -f "$structure"
