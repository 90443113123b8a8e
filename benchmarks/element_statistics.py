"""Per-element energy scale and shift against one global value, at the start of training.

Builds the ethanol BP model of ``ethanol_budget.yaml`` twice from the same seed: once
with the per-element scale (RMS force per element) and shift (now the default), once
with every element given the global values (the single scalar of earlier versions),
and reports the validation errors before training and after a few epochs.

    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE python benchmarks/element_statistics.py \\
        [--epochs 20]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from tqdm import tqdm

from atomnet.models.statistics import scale_shift
from atomnet.training import load_config
from atomnet.training.trainer import setup, train_epoch, validate

HERE = Path(__file__).resolve().parent


def run(config_path: str, epochs: int, per_element: bool) -> list[dict]:
    config = load_config(config_path)
    config.output.dir = Path(f"/tmp/atomnet_element_statistics_{per_element}")
    config.training.epochs = epochs
    config.training.max_time_minutes = None
    config.training.ema_decay = None
    run_ = setup(config)
    bp = run_.potential.terms["short_range"]
    if not per_element:
        data = run_.prepared.data.train
        graphs = [{k: v.cpu().double() for k, v in g.items()} for g in data.graphs]
        scale, shift = scale_shift(graphs, data.residuals)
        with torch.no_grad():
            bp.scale.fill_(scale)
            bp.shift.fill_(shift)
    rows = [dict(epoch=0, scale=bp.scale.tolist(), **validate(run_))]
    bar = tqdm(disable=True)
    for epoch in range(1, epochs + 1):
        train_epoch(run_, epoch, bar)
        if epoch in (1, 5, epochs):
            rows.append(dict(epoch=epoch, **validate(run_)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(HERE / "ethanol_budget.yaml"))
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args()
    for per_element in (True, False):
        rows = run(args.config, args.epochs, per_element)
        scales = [f"{s:.3f}" for s in rows[0]["scale"]]
        print("per-element" if per_element else "global", "scale", scales,
              "(energy scale per element, eV; the RMS force in eV/Å)")
        for r in rows:
            print(f"  epoch {r['epoch']:>3}: valid E MAE {r['energy_mae_per_atom']:8.2f} "
                  f"meV/atom, F MAE {r['forces_mae']:7.1f} meV/Å, loss {r['loss']:.4g}")


if __name__ == "__main__":
    main()
