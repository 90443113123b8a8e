"""``atomnet md MODEL STRUCTURE``: molecular dynamics with ASE, Langevin or NVE.

Prints the mean temperature and, for NVE, the total-energy drift in
meV/atom/ps (slope of a straight-line fit), a check of the model's smoothness
and of the time step.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import ase.io
import numpy as np
from ase import units
from ase.constraints import FixCom
from ase.md import velocitydistribution as _velocities
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import Stationary, ZeroRotation
from ase.md.verlet import VelocityVerlet
from tqdm import tqdm

from ..calculators import Calculator
from ..errors import UsageError
from ..structures import check_elements, read_structures, validate_atoms


def add_parser(sub) -> None:
    p = sub.add_parser("md", help="molecular dynamics with a trained model",
                       description="Run MD (ASE) from a structure; writes an extxyz trajectory.")
    p.add_argument("model", help="a .atomnet model file")
    p.add_argument("structure", help="starting structure (any file ase.io reads)")
    p.add_argument("--index", type=int, default=0, help="frame of STRUCTURE to start from")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--timestep", type=float, default=0.5, help="fs (default 0.5)")
    p.add_argument("--temperature", type=float, default=300.0, help="K, initial and Langevin")
    p.add_argument("--thermostat", choices=["langevin", "nve"], default="langevin")
    p.add_argument("--friction", type=float, default=0.01, help="Langevin friction, 1/fs")
    p.add_argument("--seed", type=int, default=0, help="seed of velocities and noise")
    p.add_argument("--interval", type=int, default=10, help="write every N steps")
    p.add_argument("--out", default="traj.xyz", help="trajectory file (extxyz)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    p.set_defaults(run=run)


def _check(args: argparse.Namespace) -> None:
    for name in ("steps", "interval"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name} must be >= 1")
    if not args.timestep > 0:
        raise UsageError("--timestep must be positive (fs)")
    if not args.temperature >= 0:
        raise UsageError("--temperature must be >= 0 K")
    if not args.friction >= 0:
        raise UsageError("--friction must be >= 0 (1/fs)")


def _integrator(atoms, args: argparse.Namespace, rng: np.random.Generator):
    dt = args.timestep * units.fs
    if args.thermostat == "nve":
        return VelocityVerlet(atoms, timestep=dt)
    atoms.set_constraint([*atoms.constraints, FixCom()])  # ASE's advice over fixcm=True
    return Langevin(atoms, timestep=dt, temperature_K=args.temperature,
                    friction=args.friction / units.fs, fixcm=False, rng=rng)


def drift_per_atom_ps(times_fs: np.ndarray, energies: np.ndarray, n_atoms: int) -> float:
    """Slope of a straight-line fit of the total energy, meV/atom/ps."""
    if len(times_fs) < 2:
        return 0.0
    slope = np.polyfit(times_fs, energies, 1)[0]  # eV/fs
    return float(slope) * 1000.0 * 1000.0 / n_atoms


def summary(log: np.ndarray, n_atoms: int, thermostat: str) -> str:
    """Text summary of an MD log with columns (time fs, E_pot eV, E_kin eV, T K)."""
    t, epot, ekin, temp = log.T
    etot = epot + ekin
    lines = [
        f"{len(t) - 1} steps, {t[-1]:.1f} fs; T = {temp.mean():.1f} ± {temp.std():.1f} K "
        f"(final {temp[-1]:.1f} K)",
        f"potential energy {epot.mean():.4f} ± {epot.std():.4f} eV",
    ]
    drift = drift_per_atom_ps(t, etot, n_atoms)
    span = 1000.0 * (etot.max() - etot.min()) / n_atoms
    if thermostat == "nve":
        lines.append(f"NVE energy drift {drift:+.3f} meV/atom/ps "
                     f"(total energy range {span:.3f} meV/atom)")
    else:
        lines.append(f"total energy range {span:.2f} meV/atom (not conserved with Langevin)")
    if not np.all(np.isfinite(etot)):
        lines.append("warning: non-finite energies: the simulation blew up")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    _check(args)
    atoms = read_structures(args.structure, index=str(args.index))[0]
    # before anything touches the positions (velocities, rotation removal, the model)
    validate_atoms(atoms, source=args.structure, index=args.index)
    atoms.calc = Calculator(args.model, device=args.device, dtype=args.dtype)
    check_elements(atoms.numbers, atoms.calc.elements, args.structure, args.index)
    rng = np.random.default_rng(args.seed)
    if hasattr(_velocities, "thermalize_momenta"):  # ASE >= 3.29
        _velocities.thermalize_momenta(atoms, args.temperature, rng=rng)
    else:  # pragma: no cover
        _velocities.MaxwellBoltzmannDistribution(atoms, temperature_K=args.temperature, rng=rng)
    Stationary(atoms)
    if not atoms.pbc.any():
        ZeroRotation(atoms)
    dyn = _integrator(atoms, args, rng)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows: list[tuple[float, float, float, float]] = []

    with open(out, "w") as traj, tqdm(total=args.steps, unit="step", leave=False,
                                         disable=None) as bar:
        def observe() -> None:
            step = dyn.get_number_of_steps()
            rows.append((step * args.timestep, atoms.get_potential_energy(),
                         atoms.get_kinetic_energy(), atoms.get_temperature()))
            if step % args.interval == 0:
                ase.io.write(traj, atoms, format="extxyz")
            if step:
                bar.update(1)
                bar.set_postfix(T=f"{rows[-1][3]:.0f} K", refresh=False)

        dyn.attach(observe, interval=1)
        dyn.run(args.steps)
    print(summary(np.array(rows), len(atoms), args.thermostat))
    print(f"trajectory written to {out}")
    return 0
