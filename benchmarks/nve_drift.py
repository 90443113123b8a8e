"""NVE energy drift of a trained model over 100 ps, float64 and float32.

Runs ``atomnet md --ensemble nve`` (ASE's velocity Verlet, 0.5 fs, 200,000 steps, 300 K
start) on the bundled methanol with the demo model, then fits a line to the total energy
of the log. Each run takes ~20 min on one thread; ``--analyse`` only reads existing logs.

    OMP_NUM_THREADS=1 python benchmarks/nve_drift.py [--model runs/demo/model.atomnet]
"""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

import numpy as np
from ase.io import read

ROOT = Path(__file__).resolve().parents[1]


def run(model: str, dtype: str, out: Path, steps: int) -> None:
    subprocess.run(["atomnet", "md", model, str(ROOT / "data" / "methanol_dft.xyz"),
                    "--ensemble", "nve", "--steps", str(steps), "--timestep", "0.5",
                    "--temperature", "300", "--seed", "1", "--interval", "400",
                    "--out", str(out / f"{dtype}.xyz"), "--dtype", dtype], check=True)


def analyse(log: Path, n_atoms: int) -> dict:
    """Drift from a linear fit of the total energy (meV/atom over the run), the change
    from first to last record and the range (meV/atom)."""
    data = np.loadtxt(log)  # step time_fs T_K Epot_eV Ekin_eV Etot_eV
    t_ps, etot = data[:, 1] / 1000.0, data[:, 5]
    slope = np.polyfit(t_ps, etot, 1)[0]  # eV/ps
    return {"ps": t_ps[-1], "fit": 1e3 * slope * (t_ps[-1] - t_ps[0]) / n_atoms,
            "end": 1e3 * (etot[-1] - etot[0]) / n_atoms, "range": 1e3 * np.ptp(etot) / n_atoms}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "runs" / "demo" / "model.atomnet"))
    parser.add_argument("--out", default=str(ROOT / "runs" / "drift"))
    parser.add_argument("--steps", type=int, default=200_000)
    parser.add_argument("--analyse", action="store_true", help="only read existing logs")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    n_atoms = len(read(ROOT / "data" / "methanol_dft.xyz", 0))
    print("| dtype | simulated | drift (linear fit) | last − first | range |")
    for dtype in ("float64", "float32"):
        if not args.analyse:
            run(args.model, dtype, out, args.steps)
        r = analyse(out / f"{dtype}.log", n_atoms)
        print(f"| {dtype} | {r['ps']:.0f} ps | {r['fit']:+.4f} meV/atom | "
              f"{r['end']:+.4f} meV/atom | {r['range']:.3f} meV/atom |")


if __name__ == "__main__":
    main()
