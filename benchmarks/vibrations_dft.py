"""Harmonic frequencies of trained models against DFT.

1. rMD17 ethanol (``--ethanol MODEL``, trained on ../shared/data/botnet/ethanol/train.xyz):
   the two DFT normal-mode slices ``test_norm_mode_874.xyz`` and ``test_norm_mode_3005.xyz``
   hold DFT energies of geometries displaced along one normal mode. Along each slice the
   harmonic frequency is fitted from the energies as a function of the mass-weighted
   displacement Q = |M^½ (r − r₀)| (sign of the displacement; the files' ``displacement``
   is this Q, in steps of 0.1 Å·amu^½), ω = sqrt(E''(0)), with a quartic through the
   frames with |Q| ≤ ``--qmax`` (default 0.25: five points; the C–H stretch is so
   anharmonic that wider windows move its fitted frequency by ±100 cm⁻¹). The same
   fit on the model's energies, and the model's exact-Hessian curvature along the DFT
   mode (Rayleigh quotient q̂ᵀ M^-½ H M^-½ q̂ at r₀), are compared with it, as is
   the model normal mode (after its own relaxation) of largest overlap.
2. Bundled methanol (``--methanol MODEL``, e.g. the demo's runs/demo/model.atomnet):
   frequencies at the model's own minimum against the PySCF PBE/def2-SVP harmonic
   frequencies in data/methanol_frequencies.xyz; mean absolute error in cm⁻¹.

    OMP_NUM_THREADS=1 python benchmarks/vibrations_dft.py \\
        --ethanol runs/vib_ethanol/model.atomnet --methanol runs/demo/model.atomnet \\
        [--plot docs/figures/vib_slices.png]
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
from ase.io import read

import atomnet
from atomnet.vibrations import VibrationWarning, frequencies_cm

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "botnet" / "ethanol"


def slice_curvature(q: np.ndarray, energy: np.ndarray, qmax: float) -> float:
    """E''(0) in eV/(Å² amu) from a quartic fit of E(Q) for |Q| ≤ qmax."""
    use = np.abs(q) <= qmax
    coeffs = np.polyfit(q[use], energy[use] - energy[use].min(), 4)
    return 2.0 * coeffs[-3]


def ethanol_slices(model: str, qmax: float, plot: str | None) -> list[dict]:
    calc = atomnet.Calculator(model)
    out = []
    panels = []
    for name in ("test_norm_mode_874.xyz", "test_norm_mode_3005.xyz"):
        frames = read(SHARED / name, ":")
        disp = np.array([a.info["displacement"] for a in frames])
        ref = frames[int(np.argmin(np.abs(disp)))]
        masses = ref.get_masses()
        mw = [np.sqrt(masses)[:, None] * (a.positions - ref.positions) for a in frames]
        q = np.array([np.sign(d) * np.linalg.norm(x) for d, x in zip(disp, mw)])
        e_dft = np.array([a.get_potential_energy() for a in frames])
        near0 = int(np.argmin(np.abs(q)))
        e_model = []
        for a in frames:
            a = a.copy()
            a.calc = calc
            e_model.append(a.get_potential_energy())
        e_model = np.array(e_model)
        direction = mw[int(np.argmax(np.abs(q)))].reshape(-1)
        direction /= np.linalg.norm(direction)
        probe = ref.copy()
        hess = calc.get_hessian(probe)
        inv = np.repeat(1 / np.sqrt(masses), 3)
        rayleigh = direction @ (hess * inv[:, None] * inv[None, :]) @ direction
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", VibrationWarning)
            vib = atomnet.vibrations(ref, calc, optimize=True, fmax=1e-4)
        overlap = np.abs(vib.mass_weighted_modes @ direction)
        best = int(np.argmax(overlap))
        row = {
            "slice": name,
            "dft_fit": float(frequencies_cm(slice_curvature(q, e_dft, qmax))),
            "model_fit": float(frequencies_cm(slice_curvature(q, e_model, qmax))),
            "model_rayleigh": float(frequencies_cm(rayleigh)),
            "model_mode": float(vib.frequencies[best]),
            "overlap": float(overlap[best]),
            "slice_mae_meV": float(1000 * np.mean(np.abs(
                (e_model - e_model[near0]) - (e_dft - e_dft[near0]))[np.abs(q) <= 0.2 + 1e-6])),
        }
        out.append(row)
        panels.append((name, q, e_dft - e_dft.min(), e_model - e_model.min(), row))
    if plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
        for ax, (name, q, ed, em, row) in zip(axes, panels):
            ax.plot(q, 1000 * ed, "o", ms=4, label="DFT (rMD17)")
            ax.plot(q, 1000 * em, "-", label="atomnet BP")
            ax.set_xlabel("mass-weighted displacement Q (Å·amu$^{1/2}$)")
            ax.set_ylabel("E − E$_{min}$ (meV)")
            ax.set_title(f"{name}: DFT {row['dft_fit']:.0f}, "
                         f"model {row['model_fit']:.0f} cm$^{{-1}}$", fontsize=9)
            ax.legend(fontsize=8)
        fig.tight_layout()
        Path(plot).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(plot, dpi=120)
    return out


def methanol(model: str) -> dict:
    ref = read(REPO / "data" / "methanol_frequencies.xyz")
    dft = np.asarray(ref.info["frequencies_cm"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VibrationWarning)
        vib = atomnet.vibrations(ref, model, optimize=True, fmax=1e-5)
    ours = vib.frequencies
    return {"dft": dft, "model": ours, "mae": float(np.mean(np.abs(ours - dft))),
            "max": float(np.max(np.abs(ours - dft)))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ethanol", help="model trained on rMD17 ethanol")
    parser.add_argument("--methanol", help="model trained on the bundled methanol data")
    parser.add_argument("--qmax", type=float, default=0.25, help="fit window, Å·amu^½")
    parser.add_argument("--plot", help="PNG of the two slices, DFT vs model")
    args = parser.parse_args()
    if args.ethanol:
        print(f"ethanol normal-mode slices (quartic fit, |Q| ≤ {args.qmax} Å·amu^½), cm⁻¹:")
        print(f"{'slice':<26} {'DFT fit':>8} {'model fit':>9} {'model H':>8} "
              f"{'model mode':>10} {'overlap':>7} {'E MAE meV, |Q|≤0.2':>18}")
        for r in ethanol_slices(args.ethanol, args.qmax, args.plot):
            print(f"{r['slice']:<26} {r['dft_fit']:8.1f} {r['model_fit']:9.1f} "
                  f"{r['model_rayleigh']:8.1f} {r['model_mode']:10.1f} {r['overlap']:7.3f} "
                  f"{r['slice_mae_meV']:18.2f}")
    if args.methanol:
        r = methanol(args.methanol)
        print("\nmethanol, PBE/def2-SVP (PySCF) vs model at its own minimum, cm⁻¹:")
        for d, m in zip(r["dft"], r["model"]):
            print(f"  {d:8.1f} {m:8.1f} {m - d:+7.1f}")
        print(f"  mean absolute error {r['mae']:.1f} cm⁻¹, largest {r['max']:.1f} cm⁻¹")


if __name__ == "__main__":
    main()
