"""Dimer dissociation curves (HH, CH, OH, CC, CO, OO) of a model against DFT.

Reads ``../shared/data/botnet/ethanol/test_dimers.xyz`` (UHF-PBE/def2-SVP curves,
0.35–5 Å) and evaluates each model given on every frame. For each curve it reports
whether the model is repulsive at short range (the energy falls monotonically from
the shortest distance to its minimum) and how many local minima it has (a DFT
binding curve has one); and it plots model against DFT, each curve relative to its
value at the largest distance (4.3–5 Å), so that shapes compare.

    OMP_NUM_THREADS=1 python benchmarks/dimers.py runs/eth_tails/model.atomnet \\
        runs/eth_plain/model.atomnet --labels "BP + tails" "BP" \\
        --plot docs/figures/dimers.png

Models with terms added on top of the fitted part (D3 with ``mode: add``) are
evaluated as fitted (the DFT here has no dispersion) and, separately, in full.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np
from ase.io import read

import atomnet

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "botnet" / "ethanol"
PAIRS = ("HH", "HC", "HO", "CC", "CO", "OO")


def curves(path: Path) -> dict[str, list]:
    out: dict[str, list] = defaultdict(list)
    for atoms in read(path, ":"):
        out[atoms.info["config_type"]].append(atoms)
    for frames in out.values():
        frames.sort(key=lambda a: a.get_distance(0, 1))
    return dict(out)


def local_minima(e: np.ndarray) -> int:
    """Strict interior local minima of a sampled curve (plateaus ignored)."""
    d = np.diff(e)
    d = d[np.abs(d) > 1e-6]  # flat beyond the cutoff: no minimum there
    return int(np.sum((d[:-1] < 0) & (d[1:] > 0)))


def repulsive(e: np.ndarray, r: np.ndarray, r_min: float) -> bool:
    """Repulsive at short range: above the dissociated limit at the shortest distance,
    and falling monotonically from there to ``r_min`` (the DFT minimum)."""
    inside = r <= r_min
    return bool(e[0] > e[-1] and np.all(np.diff(e[inside]) < 0))


def model_curve(potential, frames, e0s: dict[str, float], fitted: bool) -> np.ndarray:
    """Model energies (eV) minus the E0s along a curve, as fitted or in full."""
    calc = atomnet.Calculator(potential, dtype="float64")
    out = []
    for atoms in frames:
        atoms = atoms.copy()
        atoms.calc = calc
        if fitted:
            with calc.potential.as_fitted():
                calc.reset()
                e = atoms.get_potential_energy()
        else:
            e = atoms.get_potential_energy()
        out.append(e - sum(e0s[s] for s in atoms.get_chemical_symbols()))
    return np.array(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--labels", nargs="*")
    parser.add_argument("--data", type=Path, default=DATA / "test_dimers.xyz")
    parser.add_argument("--plot", type=Path)
    args = parser.parse_args()
    labels = args.labels or [p.parent.name for p in args.models]
    data = curves(args.data)
    results = {}
    print("| model | pair | repulsive inside the DFT minimum | local minima (DFT: 1) | "
          "E(r_shortest) − E(r_max), model / DFT (eV) | deepest minimum at, model / DFT (Å) |")
    print("|---|---|---|---|---|---|")
    for path, label in zip(args.models, labels):
        potential = atomnet.load(path)
        e0s = potential.reference.as_dict()
        for pair in PAIRS:
            frames = data[pair]
            r = np.array([a.get_distance(0, 1) for a in frames])
            dft = np.array([a.get_potential_energy() for a in frames])
            dft = dft - dft[-1]  # relative to the most distant frame: binding curves
            fitted = model_curve(potential, frames, e0s, fitted=True)
            fitted = fitted - fitted[-1]
            full = model_curve(potential, frames, e0s, fitted=False) \
                if potential.added_names else None
            if full is not None:
                full = full - full[-1]
            results[(label, pair)] = (r, dft, fitted, full)
            ok = repulsive(fitted, r, r[np.argmin(dft)])
            print(f"| {label} | {pair} | {'yes' if ok else 'NO'} | "
                  f"{local_minima(fitted)} | "
                  f"{fitted[0]:.1f} / {dft[0]:.1f} | "
                  f"{r[np.argmin(fitted)]:.2f} / {r[np.argmin(dft)]:.2f} |")
    if args.plot:
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(2, 3, figsize=(12, 7))
        for ax, pair in zip(axes.flat, PAIRS):
            r, dft, *_ = results[(labels[0], pair)]
            ax.plot(r, dft, "k-", lw=2, label="DFT (UHF-PBE)")
            for label in labels:
                r, _, fitted, full = results[(label, pair)]
                ax.plot(r, fitted, "-", label=label)
                if full is not None:
                    ax.plot(r, full, ":", label=f"{label} + added terms")
            low = min(dft.min(), min(results[(lb, pair)][2].min() for lb in labels))
            ax.set_ylim(low - 1.0, max(8.0, 0.2 * abs(low)))
            ax.axhline(0.0, color="grey", lw=0.5)
            ax.set_title(pair)
            ax.set_xlabel("r (Å)")
            ax.set_ylabel("E(r) − E(r_max) (eV)")
        axes.flat[0].legend(fontsize=8)
        fig.tight_layout()
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.plot, dpi=110)
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
