"""Exact-Hessian vibrational analysis against ASE finite differences, same model, same run.

For each molecule, alternating rounds time
  * ``atomnet.vibrations(atoms, calc)``: exact Hessian (autograd, rows in chunks) plus the
    harmonic analysis (mass weighting, Eckart projection, modes, reduced masses);
  * ``ase.vibrations.Vibrations(atoms, nfree=2, delta=0.01)`` with the same calculator:
    6N + 1 force calls (ASE's defaults) plus ``get_frequencies()``, its cache in a
    temporary folder;
and prints the medians, the median of the per-round ratios, and the largest
difference above 100 cm⁻¹ between ASE's frequencies and ours *without* projection
(ASE does not project rotations, and these geometries are not minima of the
untrained model, so only unprojected spectra compare like with like).
Molecules: ethanol (9 atoms), 3BPA (27 atoms, from ../shared/data when
present), and an n-alkane C33H68 (101 atoms) built here. The model is an untrained
default BP model (cost does not depend on the weights), float64.

    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE python benchmarks/vibrations_speed.py \\
        [--rounds 3] [--model MODEL.atomnet] [--chunk 32]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.build import molecule
from ase.io import read
from ase.vibrations import Vibrations

import atomnet
from atomnet import derivatives
from atomnet.vibrations import VibrationWarning, harmonic_modes

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "botnet"


def alkane(n_carbon: int) -> Atoms:
    """A straight-chain n-alkane CnH(2n+2): zig-zag backbone (C–C 1.54 Å, 111°), C–H 1.09 Å."""
    half = np.radians(111.0) / 2
    dx, dy = 1.54 * np.sin(half), 1.54 * np.cos(half)
    carbons = np.array([[k * dx, (k % 2) * dy, 0.0] for k in range(n_carbon)])
    symbols, positions = ["C"] * n_carbon, list(carbons)
    tet = np.radians(109.47) / 2
    for k, c in enumerate(carbons):
        prev = carbons[k - 1] if k > 0 else c - (carbons[k + 1] - c) * [1, -1, 1]
        nxt = carbons[k + 1] if k < n_carbon - 1 else c - (carbons[k - 1] - c) * [1, -1, 1]
        bis = 2 * c - prev - nxt
        bis /= np.linalg.norm(bis)
        normal = np.array([0.0, 0.0, 1.0])
        for sign in (1, -1):
            positions.append(c + 1.09 * (np.cos(tet) * bis + sign * np.sin(tet) * normal))
            symbols.append("H")
        if k in (0, n_carbon - 1):  # the methyl's third hydrogen continues the chain
            out = c - (nxt if k == 0 else prev)
            positions.append(c + 1.09 * out / np.linalg.norm(out))
            symbols.append("H")
    return Atoms(symbols, positions=positions)


def systems() -> dict[str, Atoms]:
    out = {"ethanol (9)": molecule("CH3CH2OH")}
    path = SHARED / "3bpa" / "train_300K.xyz"
    if path.exists():
        out["3BPA (27)"] = read(path, 0)
    chain = alkane(33)
    out[f"C33H68 ({len(chain)})"] = chain
    return out


def time_exact(atoms: Atoms, calc) -> tuple[float, np.ndarray]:
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VibrationWarning)
        vib = atomnet.vibrations(atoms, calc)
    elapsed = time.perf_counter() - t0
    unprojected = harmonic_modes(vib.hessian, vib.masses, vib.atoms.positions, "none")
    return elapsed, unprojected.frequencies


def time_ase(atoms: Atoms, calc) -> tuple[float, np.ndarray]:
    probe = atoms.copy()
    probe.calc = calc
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        vib = Vibrations(probe, name=os.path.join(tmp, "vib"), nfree=2, delta=0.01)
        vib.run()
        freq = vib.get_frequencies()
        elapsed = time.perf_counter() - t0
    return elapsed, np.sort(np.real(freq))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", help="a .atomnet file (default: untrained BP, H C N O)")
    parser.add_argument("--chunk", type=int, default=derivatives.HESSIAN_CHUNK,
                        help="Hessian rows per batched backward pass")
    args = parser.parse_args()
    derivatives.core.HESSIAN_CHUNK = args.chunk
    torch.manual_seed(0)
    model = args.model or atomnet.build({"type": "bpnn"}, elements=["H", "C", "N", "O"])
    calc = atomnet.Calculator(model, dtype="float64")
    print(f"torch threads {torch.get_num_threads()}, OMP_NUM_THREADS="
          f"{os.environ.get('OMP_NUM_THREADS')}, chunk {args.chunk}, float64")
    print(f"{'system':<16} {'exact s':>9} {'ASE FD s':>9} {'FD/exact':>9} "
          f"{'max |Δf| >100 cm-1, unprojected':>31}")
    for name, atoms in systems().items():
        time_exact(atoms, calc)  # warm-up
        exact, fd, ratios = [], [], []
        for _ in range(args.rounds):
            te, f_exact = time_exact(atoms, calc)
            ta, f_ase = time_ase(atoms, calc)
            exact.append(te)
            fd.append(ta)
            ratios.append(ta / te)
        high = f_ase > 100
        diff = np.abs(f_ase[high] - f_exact[high]).max()
        print(f"{name:<16} {np.median(exact):9.3f} {np.median(fd):9.3f} "
              f"{np.median(ratios):9.1f} {diff:31.3f}", flush=True)


if __name__ == "__main__":
    main()
