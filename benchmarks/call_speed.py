"""Median time of one energy+forces call through atomnet.Calculator, with the same
protocol as ``../shared/tools/mace_baseline.py speed`` (60 calls, first 10 dropped,
positions jiggled by 1e-3 Å between calls, untrained model, float32).

    python benchmarks/call_speed.py STRUCTURE.xyz [--model MODEL] [--dtype float32]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from ase.io import read

import atomnet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("structure")
    parser.add_argument("--model", help="a .atomnet file (default: untrained BP, default size)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--calls", type=int, default=60)
    args = parser.parse_args()
    atoms = read(args.structure, 0)
    torch.manual_seed(0)
    elements = sorted(set(atoms.get_chemical_symbols()))
    model = args.model or atomnet.build({"type": "bpnn"}, elements, cutoff=5.0)
    atoms.calc = atomnet.Calculator(model, dtype=args.dtype)
    rng = np.random.default_rng(0)
    times = []
    for _ in range(args.calls):
        atoms.positions += rng.normal(scale=1e-3, size=atoms.positions.shape)
        t0 = time.perf_counter()
        atoms.get_potential_energy()
        atoms.get_forces()
        times.append(time.perf_counter() - t0)
    t = np.array(times[10:]) * 1000
    name = args.model or "untrained default"
    print(f"atomnet BP ({name}) {args.dtype} atoms={len(atoms)} threads={torch.get_num_threads()}: "
          f"median {np.median(t):.2f} ms per energy+forces call "
          f"(min {t.min():.2f}, max {t.max():.2f})")


if __name__ == "__main__":
    main()
