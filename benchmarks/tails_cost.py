"""What each physics tail adds to an energy+forces+stress call, beside the network's own time.

Periodic water boxes of 192 and 1,536 atoms (≈1 g/cm³, from calculator_speed.py). For
each box, the same BP network (the ethanol benchmark size, hidden [256, 128, 64], 5 Å)
alone, with each tail, and with all of them, through :class:`atomnet.Calculator`
(graph building with every pair list included; atoms nudged between calls so nothing is
cached). Rounds alternate between the variants; medians are printed, and each tail's
cost as a ratio to the network's own time in the same run.

Settings (``--setting``):
  default: the defaults of each term (D3 at simple-dftd3's 60/40 bohr cutoffs, Ewald
           at accuracy 1e-6);
  fast:    the documented cheaper setting (docs/physics.md, "Cost"): D3 two-body and
           coordination-number cutoffs from the D3 benchmark's error-vs-cost curve with
           an energy error ≤ 0.05 meV/atom, PME at accuracy 1e-4.

    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE python benchmarks/tails_cost.py \\
        [--setting fast] [--dtype float64] [--rounds 5] [--sizes 4 8]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from calculator_speed import water_box  # noqa: E402

import atomnet  # noqa: E402

#: physics sections per setting; the network and the learned charge head are the same
SETTINGS = {
    "default": {
        "coulomb": {"charges": "learned", "method": "ewald"},
        "dispersion": {"method": "d3bj", "functional": "pbe", "three_body": False,
                       "mode": "add"},
        "repulsion": {"method": "zbl"},
    },
    "fast": {
        "coulomb": {"charges": "learned", "method": "pme", "accuracy": 1e-4,
                    "real_space_cutoff": 6.0},
        "dispersion": {"method": "d3bj", "functional": "pbe", "three_body": False, "mode": "add",
                       "cutoff": 21.0, "cn_cutoff": 10.0},
        "repulsion": {"method": "zbl"},
    },
}
NETWORK = {"type": "bpnn", "hidden": [256, 128, 64]}


def variants(setting: str) -> dict[str, dict]:
    physics = SETTINGS[setting]
    out = {"network": dict(NETWORK)}
    for name, options in physics.items():
        out[f"+ {name}"] = {**NETWORK, "physics": {name: options}}
    out["+ all"] = {**NETWORK, "physics": physics}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setting", choices=sorted(SETTINGS), default="fast")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sizes", type=int, nargs="*", default=[4, 8],
                        help="molecules per box edge (4: 192 atoms, 8: 1,536)")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, setting {args.setting}, "
          f"{args.dtype}, {args.rounds} alternating rounds")
    elements = ["H", "C", "O"]
    for n in args.sizes:
        box = water_box(n)
        calcs = {}
        for name, model in variants(args.setting).items():
            torch.manual_seed(0)
            pot = atomnet.build(model, elements, cutoff=5.0)
            atoms = box.copy()
            atoms.calc = atomnet.Calculator(pot, dtype=args.dtype)
            calcs[name] = atoms
        rng = np.random.default_rng(0)
        times: dict[str, list[float]] = {k: [] for k in calcs}
        for atoms in calcs.values():  # warm-up
            atoms.get_stress()
        repeats = 3 if len(box) > 1000 else 10
        for _ in range(args.rounds):
            for name, atoms in calcs.items():
                for _ in range(repeats):
                    atoms.positions = atoms.positions + 1e-4 * rng.standard_normal((len(box), 3))
                    t0 = time.perf_counter()
                    atoms.get_stress()  # one evaluation: energy, forces and stress
                    atoms.get_potential_energy()
                    atoms.get_forces()
                    times[name].append(time.perf_counter() - t0)
        base = float(np.median(times["network"]))
        print(f"\n{len(box)} atoms")
        print("| model | E+F+S (ms) | tail's added time / network's time |")
        print("|---|---|---|")
        for name, t in times.items():
            med = float(np.median(t))
            ratio = "" if name == "network" else f"{(med - base) / base:.2f}"
            print(f"| {name} | {1e3 * med:.1f} | {ratio} |")


if __name__ == "__main__":
    main()
