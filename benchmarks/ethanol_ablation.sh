#!/bin/sh
# 2x2 ablation on rMD17 ethanol: EMA on/off x budgeted schedule / fixed epoch count.
# Four single-process runs side by side, one thread each (half a core each on 2 cores).
cd "$(dirname "$0")/.." && mkdir -p runs
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE
B=benchmarks/ethanol_budget.yaml
python benchmarks/ethanol_bp.py --config $B --out runs/abl_ema_budget --no-speed > runs/abl_ema_budget.log 2>&1 &
python benchmarks/ethanol_bp.py --config $B --out runs/abl_noema_budget --no-ema --no-speed > runs/abl_noema_budget.log 2>&1 &
python benchmarks/ethanol_bp.py --config $B --out runs/abl_ema_fixed --epochs 2000 --stop-after 29 --no-speed > runs/abl_ema_fixed.log 2>&1 &
python benchmarks/ethanol_bp.py --config $B --out runs/abl_noema_fixed --epochs 2000 --stop-after 29 --no-ema --no-speed > runs/abl_noema_fixed.log 2>&1 &
wait
