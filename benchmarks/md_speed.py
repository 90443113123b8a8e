"""MD-call speed, side by side with TorchANI, in alternating rounds of one run.

Each round times, in fresh processes and in turn, TorchANI (an ANI-2x-sized model through
its ASE calculator: ``../shared/tools/ani_baseline.sh speed``) and atomnet's calculator
(the default path, and ``compile=True``) with the same protocol: ``get_potential_energy()``
+ ``get_forces()`` after a 1e-3 Å jiggle, float32, the first calls//6 dropped, median.
The table gives the median over rounds of each side and of the per-round ratios.

    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE python benchmarks/md_speed.py --rounds 3
    python benchmarks/md_speed.py --scaling 8 12 16      # atomnet only: ms/call, peak RSS

atomnet model: untrained BP for H, C, N, O, hidden [256, 128, 64] (the ethanol
benchmark size), 5 Å radial and 3.5 Å angular cutoffs. Water boxes ``water:N`` are
N³ molecules at ~1 g/cm³, built as in the TorchANI script (``water:8`` = 1,536 atoms).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SYSTEMS = {"ethanol": str(SHARED / "data" / "botnet" / "ethanol" / "test_MD.xyz"),
           "3bpa": str(SHARED / "data" / "botnet" / "3bpa" / "train_300K.xyz"),
           "water:8": "water:8"}


def water_box(n_side: int, spacing: float = 3.1, seed: int = 0):
    """n_side³ randomly oriented water molecules on a rattled grid; periodic."""
    from ase import Atoms
    from ase.build import molecule

    rng = np.random.default_rng(seed)
    w = molecule("H2O")
    atoms = Atoms(cell=np.eye(3) * spacing * n_side, pbc=True)
    for i in range(n_side):
        for j in range(n_side):
            for k in range(n_side):
                m = w.copy()
                m.rotate(rng.uniform(0, 360), rng.normal(size=3))
                m.positions += (np.array([i, j, k]) + 0.5) * spacing
                atoms += m
    atoms.rattle(0.05, seed=seed)
    return atoms


def structure(spec: str):
    from ase.io import read

    if spec.startswith("water:"):
        return water_box(int(spec.split(":")[1]))
    return read(spec, 0)


def worker(spec: str, mode: str, calls: int) -> dict:
    """Time atomnet in this process; returns the median ms and the peak RSS (MiB)."""
    import torch

    import atomnet

    atoms = structure(spec)
    torch.manual_seed(0)
    pot = atomnet.build({"type": "bpnn", "hidden": [256, 128, 64]}, ["H", "C", "N", "O"],
                        cutoff=5.0)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    atoms.calc = atomnet.Calculator(pot, dtype="float32", compile=(mode == "compile"))
    rng = np.random.default_rng(0)
    times = []
    t_first = None
    for k in range(calls):
        atoms.positions += rng.normal(scale=1e-3, size=atoms.positions.shape)
        t0 = time.perf_counter()
        atoms.get_potential_energy()
        atoms.get_forces()
        dt = time.perf_counter() - t0
        t_first = dt if k == 0 else t_first
        times.append(dt)
    t = np.array(times[max(2, calls // 6):]) * 1000
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"median_ms": float(np.median(t)), "first_s": t_first, "atoms": len(atoms),
            "peak_rss_mib": rss, "rss_before_mib": rss0, "threads": torch.get_num_threads()}


def run_atomnet(spec: str, mode: str, calls: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--worker", spec, "--mode", mode,
                          "--calls", str(calls)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_ani(spec: str, calls: int) -> float:
    out = subprocess.run(["bash", str(SHARED / "tools" / "ani_baseline.sh"), "speed", spec,
                          "float32", str(calls)], capture_output=True, text=True, check=True)
    return float(re.search(r"median ([0-9.]+) ms", out.stdout).group(1))


def compare(names: list[str], rounds: int, modes: list[str]) -> None:
    results: dict[str, dict[str, list[float]]] = {n: {} for n in names}
    for r in range(rounds):
        for name in names:
            spec = SYSTEMS[name]
            calls = 60 if not name.startswith("water") else 12
            row = results[name]
            row.setdefault("torchani", []).append(run_ani(spec, calls))
            for mode in modes:
                res = run_atomnet(spec, mode, calls)
                row.setdefault(mode, []).append(res["median_ms"])
                row.setdefault(f"{mode} first call s", []).append(res["first_s"])
            print(f"round {r + 1} {name}: " + ", ".join(
                f"{k} {v[-1]:.3f}" for k, v in row.items()), flush=True)
    print(f"\nthreads: OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}; medians of "
          f"{rounds} alternating rounds, ms per energy+forces call (float32)")
    print("| system | TorchANI | " + " | ".join(f"atomnet {m}" for m in modes) + " | "
          + " | ".join(f"ratio {m}" for m in modes) + " |")
    for name, row in results.items():
        ani = np.array(row["torchani"])
        cells = [f"{np.median(row[m]):.2f}" for m in modes]
        ratios = [f"{np.median(np.array(row[m]) / ani):.3f}x" for m in modes]
        print(f"| {name} | {np.median(ani):.2f} | " + " | ".join(cells) + " | "
              + " | ".join(ratios) + " |")


def scaling(sides: list[int], mode: str) -> None:
    print("| atoms | ms per call | µs/atom | peak RSS (MiB) | RSS before the calculator |")
    for n in sides:
        res = run_atomnet(f"water:{n}", mode, 8)
        print(f"| {res['atoms']} | {res['median_ms']:.1f} | "
              f"{1e3 * res['median_ms'] / res['atoms']:.1f} | {res['peak_rss_mib']:.0f} | "
              f"{res['rss_before_mib']:.0f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--systems", nargs="+", default=["ethanol", "water:8"],
                        choices=sorted(SYSTEMS))
    parser.add_argument("--modes", nargs="+", default=["default", "compile"],
                        choices=["default", "compile"])
    parser.add_argument("--scaling", nargs="+", type=int, metavar="N",
                        help="atomnet only: water:N boxes, ms per call and peak memory")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="default", help=argparse.SUPPRESS)
    parser.add_argument("--calls", type=int, default=60, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.mode, args.calls)))
    elif args.scaling:
        scaling(args.scaling, args.modes[0])
    else:
        compare(args.systems, args.rounds, args.modes)


if __name__ == "__main__":
    main()
