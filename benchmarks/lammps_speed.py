"""MD steps per second: LAMMPS with ``pair_style atomnet`` on 1 and 2 MPI ranks vs ASE.

A periodic water box (512 molecules, 1,536 atoms, 1 g/cm³; see calculator_speed.py) with
an untrained BP model for H and O (the cost does not depend on the weights). Both sides
run NVE velocity Verlet, 0.5 fs, from the same velocities (300 K):

* LAMMPS: ``mpirun -np P lmp -in in.water`` with the plugin from ``atomnet lammps build``
  and the model from ``atomnet export``; time from LAMMPS's "Loop time" of a second
  ``run`` (the first, 3 steps, takes the set-up and warm-up calls).
* ASE: ``ase.md.verlet.VelocityVerlet`` with ``atomnet.Calculator`` (what ``atomnet md``
  runs), timed around ``dyn.run``.

    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE python benchmarks/lammps_speed.py \\
        [--steps 20] [--dtype float64] [--ranks 1 2]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from ase.io import write
from ase.md.velocitydistribution import Stationary, thermalize_momenta
from ase.md.verlet import VelocityVerlet
from ase.units import fs

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from calculator_speed import water_box  # noqa: E402

import atomnet  # noqa: E402
from atomnet.lammps import build_plugin  # noqa: E402
from atomnet.lammps.export import export  # noqa: E402

INPUT = """units metal
atom_style atomic
boundary p p p
atom_modify map array
read_data {data}
mass 1 1.008
mass 2 15.999
plugin load {plugin}
pair_style atomnet
pair_coeff * * {model} H O
velocity all create 300.0 4928459 mom yes rot no dist gaussian
timestep 0.0005
fix 1 all nve
thermo 10
run 3
run {steps}
"""


def lammps_time(data, plugin, model, steps, ranks, workdir) -> float:
    path = Path(workdir) / f"in.{ranks}"
    path.write_text(INPUT.format(data=data, plugin=plugin, model=model, steps=steps))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = ["mpirun", "-np", str(ranks), shutil.which("lmp") or "lmp", "-in", str(path),
           "-log", "none"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=workdir,
                         timeout=3600, check=True).stdout
    loops = re.findall(r"Loop time of ([0-9.eE+-]+) on (\d+) procs for (\d+) steps", out)
    if len(loops) != 2:
        raise RuntimeError(f"no loop time in LAMMPS output:\n{out[-2000:]}")
    return float(loops[-1][0])  # the second run: set-up and warm-up calls excluded


def ase_time(atoms, potential, steps, dtype) -> float:
    atoms = atoms.copy()
    atoms.calc = atomnet.Calculator(potential, dtype=dtype)
    thermalize_momenta(atoms, temperature_K=300, rng=np.random.default_rng(0))
    Stationary(atoms)
    dyn = VelocityVerlet(atoms, 0.5 * fs)
    dyn.run(3)  # as LAMMPS's first run: set-up and warm-up calls are not timed
    t0 = time.perf_counter()
    dyn.run(steps)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    potential = atomnet.build({"type": "bpnn"}, elements=["H", "O"])
    atoms = water_box(8)
    plugin = build_plugin()
    with tempfile.TemporaryDirectory() as tmp:
        model = export(potential, Path(tmp) / "model.pt", args.dtype)
        data = Path(tmp) / "water.data"
        write(data, atoms, format="lammps-data", specorder=["H", "O"], atom_style="atomic")
        print(f"{len(atoms)} atoms, {args.steps} steps, {args.dtype}, torch threads 1 per "
              f"process, medians of {args.rounds} alternating rounds")
        times: dict[str, list[float]] = {"ASE (atomnet.Calculator)": []}
        for ranks in args.ranks:
            times[f"LAMMPS, {ranks} rank(s)"] = []
        torch.set_num_threads(1)
        for _ in range(args.rounds):
            times["ASE (atomnet.Calculator)"].append(ase_time(atoms, potential, args.steps,
                                                              args.dtype))
            for ranks in args.ranks:
                times[f"LAMMPS, {ranks} rank(s)"].append(
                    lammps_time(data, plugin, model, args.steps, ranks, tmp))
        base = np.median(times["ASE (atomnet.Calculator)"])
        print(f"{'run':<26} {'ms/step':>9} {'steps/s':>8} {'vs ASE':>7}")
        for name, values in times.items():
            per_step = np.median(values) / args.steps
            print(f"{name:<26} {1000 * per_step:9.1f} {1 / per_step:8.2f} "
                  f"{base / np.median(values):7.2f}")


if __name__ == "__main__":
    main()
