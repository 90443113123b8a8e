"""Time per energy+forces call through atomnet.Calculator, with a per-stage breakdown.

Systems: ethanol (9 atoms, from ../shared/data) and a periodic water box
(512 molecules, 1,536 atoms, 1 g/cm³). Prints medians over repeated calls.

    OMP_NUM_THREADS=1 python benchmarks/calculator_speed.py [--model MODEL] [--repeats 200]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.build import molecule
from ase.io import read
from scipy.spatial.transform import Rotation

import atomnet
from atomnet.derivatives import evaluate
from atomnet.structures import to_device

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "botnet"


def water_box(n_side: int = 8, seed: int = 0) -> Atoms:
    """n_side³ randomly oriented water molecules on a grid at ~1 g/cm³, periodic."""
    rng = np.random.default_rng(seed)
    spacing = 3.104  # Å: (18.015 g/mol / 6.022e23 / 1 g cm⁻³)^(1/3)
    w = molecule("H2O")
    w.positions -= w.get_center_of_mass()
    positions, symbols = [], []
    for ix in range(n_side):
        for iy in range(n_side):
            for iz in range(n_side):
                rot = Rotation.random(random_state=rng.integers(1 << 31)).as_matrix()
                centre = spacing * (np.array([ix, iy, iz]) + 0.5)
                positions.extend(w.positions @ rot.T + centre)
                symbols.extend(w.get_chemical_symbols())
    return Atoms(symbols, positions=positions, cell=[spacing * n_side] * 3, pbc=True)


def median_ms(fn, repeats: int, warmup: int = 5) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def profile_system(name: str, atoms: Atoms, potential, dtype: str, repeats: int) -> None:
    calc = atomnet.Calculator(potential, dtype=dtype)
    atoms = atoms.copy()
    atoms.calc = calc
    rng = np.random.default_rng(1)

    def call():
        atoms.positions = atoms.positions + 1e-4 * rng.standard_normal(atoms.positions.shape)
        atoms.get_forces()

    total = median_ms(call, repeats)
    pot = calc.potential
    graph_ms = median_ms(lambda: pot.graph(atoms), repeats)
    g = to_device(pot.graph(atoms), calc.device, calc.dtype)
    energy_ms = median_ms(lambda: evaluate(pot, g, forces=False), repeats)
    forces_ms = median_ms(lambda: evaluate(pot, g, forces=True), repeats)
    print(
        f"{name:<10} {len(atoms):>6} {dtype:<8} {total:>9.2f} {graph_ms:>10.2f} "
        f"{energy_ms:>10.2f} {forces_ms - energy_ms:>10.2f} "
        f"{total - graph_ms - forces_ms:>9.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a .atomnet file (default: untrained BP H/C/O)")
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    run_speed(args.model, args.repeats)


def run_speed(model: str | None, repeats: int) -> None:
    """Print the timing table for ``model`` (a path; None: untrained BP for H/C/O)."""
    torch.manual_seed(0)
    if model:
        potential = atomnet.load(model)
    else:
        potential = atomnet.build({"type": "bpnn"}, ["H", "C", "O"], cutoff=5.0)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, cpu {os.cpu_count()} cores")
    print("median ms per call; stages: graph = neighbour list + triplets + tensors, "
          "forward = energy, backward = forces − energy, ase = rest of the calculator")
    print(f"{'system':<10} {'atoms':>6} {'dtype':<8} {'total':>9} {'graph':>10} "
          f"{'forward':>10} {'backward':>10} {'ase':>9}")
    ethanol = read(SHARED / "ethanol" / "test_MD.xyz", 0)
    box = water_box()
    for dtype in ("float32", "float64"):
        profile_system("ethanol", ethanol, potential, dtype, repeats)
    for dtype in ("float32", "float64"):
        profile_system("water", box, potential, dtype, max(repeats // 20, 5))


if __name__ == "__main__":
    main()
