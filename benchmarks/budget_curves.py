"""Force MAE against wall-clock minutes for training runs under a time budget.

Reads each run's ``metrics.csv`` (written by ``atomnet train``) and plots the
validation force MAE (solid) and the training force MAE (dashed) against the
cumulative epoch time, compile included, on one log-scale figure.

    python benchmarks/budget_curves.py docs/figures/equivariant_budget_curve.png \\
        "gated layer, A at l ≤ 1=runs/eq_budget_ddp/metrics.csv" \\
        "MACE's layer, A at l ≤ 3=runs/eq_mace_c/metrics.csv"
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path


def curve(path: Path) -> tuple[list[float], list[float], list[float]]:
    """(minutes, train force MAE, valid force MAE) in meV/Å, one entry per epoch."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or "valid_forces_mae" not in rows[0]:
        raise SystemExit(f"{path}: no 'valid_forces_mae' column (a run with forces and a "
                         "validation set is needed)")
    minutes, elapsed = [], 0.0
    for row in rows:
        elapsed += float(row["time_s"])
        minutes.append(elapsed / 60)
    return (minutes, [float(r["train_forces_mae"]) for r in rows],
            [float(r["valid_forces_mae"]) for r in rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path, help="figure to write (.png)")
    parser.add_argument("runs", nargs="+", help="LABEL=path/to/metrics.csv")
    args = parser.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for k, spec in enumerate(args.runs):
        label, sep, path = spec.rpartition("=")
        if not sep:
            raise SystemExit(f"expected LABEL=path/to/metrics.csv, got {spec!r}")
        minutes, train, valid = curve(Path(path))
        color = f"C{k}"
        ax.plot(minutes, valid, color=color, label=f"{label}: validation")
        ax.plot(minutes, train, color=color, ls="--", lw=0.8, label=f"{label}: training")
    ax.set_yscale("log")
    ax.set_xlabel("wall clock (min, compile included)")
    ax.set_ylabel("force MAE (meV/Å)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.output, dpi=120)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
