"""Learning-curve and force-parity figures (PNG, matplotlib's Agg backend)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _series(history: Sequence[dict], key: str) -> tuple[list[float], list[float]]:
    xs = [h["epoch"] for h in history if h.get(key) is not None]
    ys = [h[key] for h in history if h.get(key) is not None]
    return xs, ys


def learning_curve(history: Sequence[dict], path: str | Path) -> Path:
    """Train/valid loss and force MAE (meV/Å) against epoch, log scale."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5), constrained_layout=True)
    panels = (("loss", "loss (eV² units)"), ("forces_mae", "force MAE (meV/Å)"))
    if not any(h.get("train_forces_mae") is not None for h in history):
        panels = (panels[0], ("energy_mae_per_atom", "energy MAE (meV/atom)"))
    for ax, (metric, label) in zip(axes, panels):
        for split in ("train", "valid"):
            xs, ys = _series(history, f"{split}_{metric}")
            if xs:
                ax.plot(xs, ys, label=split)
        ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.legend()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def force_parity(parity: np.ndarray, path: str | Path, title: str) -> Path:
    """Predicted against reference force components (eV/Å); ``parity``: (2, n)."""
    plt = _pyplot()
    ref, pred = parity
    mae = 1000.0 * float(np.mean(np.abs(pred - ref)))
    fig, ax = plt.subplots(figsize=(4.2, 4), constrained_layout=True)
    ax.scatter(ref, pred, s=2, alpha=0.4)
    lo, hi = float(min(ref.min(), pred.min())), float(max(ref.max(), pred.max()))
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
    ax.set_xlabel("reference force component (eV/Å)")
    ax.set_ylabel("predicted force component (eV/Å)")
    ax.set_title(f"{title}: MAE {mae:.1f} meV/Å")
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
