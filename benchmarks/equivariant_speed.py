"""Equivariant model against MACE at equal size: time per energy+forces call, one run.

Each round times, in fresh processes and in turn, MACE (``../shared/tools/mace_baseline.sh
speed``: 32 channels, L = 1, correlation 3, 2 layers, float32, through its ASE calculator)
and atomnet's equivariant model of the same size (``size: medium``), untrained, eager and
with ``Calculator(compile=True)``, with MACE's protocol: 60 calls after a 1e-3 Å jiggle,
the first 10 dropped, median, float32. Then, once, a periodic water box of 1,536 atoms
(``md_speed.water_box(8)``): 12 calls, the first 2 dropped, and the process's peak RSS.

    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE python benchmarks/equivariant_speed.py --rounds 3
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SYSTEMS = {"ethanol": SHARED / "data" / "botnet" / "ethanol" / "test_MD.xyz",
           "3bpa": SHARED / "data" / "botnet" / "3bpa" / "train_300K.xyz"}


def worker(path: str, calls: int, size: str, compiled: bool) -> dict:
    import torch
    from ase.io import read

    import atomnet

    if path == "water":
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from md_speed import water_box

        atoms, calls, drop = water_box(8), 12, 2
    else:
        atoms, drop = read(path, 0), 10
    torch.manual_seed(0)
    elements = sorted(set(atoms.get_chemical_symbols()))
    pot = atomnet.build({"type": "equivariant", "size": size}, elements, cutoff=5.0)
    atoms.calc = atomnet.Calculator(pot, dtype="float32", compile=compiled)
    rng = np.random.default_rng(0)
    times = []
    for _ in range(calls):
        atoms.positions += rng.normal(scale=1e-3, size=atoms.positions.shape)
        t0 = time.perf_counter()
        atoms.get_potential_energy()
        atoms.get_forces()
        times.append(time.perf_counter() - t0)
    t = np.array(times[drop:]) * 1000
    return {"median_ms": float(np.median(t)), "atoms": len(atoms), "first_s": times[0],
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_atomnet(path: Path | str, size: str, compiled: bool = False) -> dict:
    out = subprocess.run([sys.executable, __file__, "--worker", str(path), "--size", size]
                         + (["--compiled"] if compiled else []),
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_mace(path: Path) -> float:
    out = subprocess.run(["bash", str(SHARED / "tools" / "mace_baseline.sh"), "speed",
                          str(path), "32", "1", "3", "2", "float32"],
                         capture_output=True, text=True, check=True)
    match = re.search(r"median ([0-9.]+) ms", out.stdout)
    if match is None:
        raise RuntimeError(f"no median in MACE's output: {out.stdout[-500:]}")
    return float(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size", default="medium")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--compiled", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, 60, args.size, args.compiled)))
        return
    rows: dict[str, dict[str, list[float]]] = {}
    for r in range(args.rounds):
        for name, path in SYSTEMS.items():
            row = rows.setdefault(name, {"mace": [], "atomnet": [], "compiled": []})
            row["mace"].append(run_mace(path))
            row["atomnet"].append(run_atomnet(path, args.size)["median_ms"])
            row["compiled"].append(run_atomnet(path, args.size, True)["median_ms"])
            print(f"round {r + 1} {name}: MACE {row['mace'][-1]:.2f} ms, atomnet "
                  f"{row['atomnet'][-1]:.2f} ms, compiled {row['compiled'][-1]:.2f} ms",
                  flush=True)
    print("| system | MACE (ms) | atomnet eager (ms) | ratio | compile=True (ms) | ratio |")
    for name, row in rows.items():
        mace = np.array(row["mace"])
        eager, comp = np.array(row["atomnet"]), np.array(row["compiled"])
        print(f"| {name} | {np.median(mace):.2f} | {np.median(eager):.2f} | "
              f"{np.median(eager / mace):.2f}× | {np.median(comp):.2f} | "
              f"{np.median(comp / mace):.2f}× |")
    water = run_atomnet("water", args.size)
    print(f"water box, {water['atoms']} atoms, eager: {water['median_ms'] / 1000:.2f} s a call, "
          f"peak RSS {water['peak_rss_mib']:.0f} MiB")


if __name__ == "__main__":
    main()
