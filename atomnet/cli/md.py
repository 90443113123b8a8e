"""``atomnet md MODEL STRUCTURE``: molecular dynamics on ASE's integrators.

Ensembles (``--ensemble``): ``nve`` (velocity Verlet), ``nvt-langevin``
(Langevin), ``nvt-nose-hoover`` (Nosé–Hoover chain) and ``npt`` (isotropic
MTK barostat with Nosé–Hoover chains; 3-D periodic cells only). Writes a
trajectory every ``--interval`` steps (extxyz, or ASE ``.traj`` by the suffix
of ``--out``) with momenta, and a text log (step, time, T, energies, pressure).
``--restart`` continues from the last frame of a trajectory, momenta included.
The run stops with an error (exit status 2) when the temperature exceeds
``--max-temperature`` or two atoms come closer than ``--min-distance``; the
last frame on disk is then the last good one.

Prints the mean temperature, the speed (ns/day) and, for NVE, the total-energy
drift in meV/atom/ps (slope of a straight-line fit), a check of the model's
smoothness and of the time step.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import ase.io
import numpy as np
from ase import units
from ase.constraints import FixCom
from ase.io.trajectory import Trajectory
from ase.md import velocitydistribution as _velocities
from ase.md.langevin import Langevin
from ase.md.nose_hoover_chain import IsotropicMTKNPT, NoseHooverChainNVT
from ase.md.velocitydistribution import Stationary, ZeroRotation
from ase.md.verlet import VelocityVerlet
from tqdm import tqdm

from ..calculators import Calculator
from ..errors import AtomnetError, UsageError
from ..neighbors import neighbor_pairs, pair_distances
from ..structures import check_elements, read_structures, validate_atoms

ENSEMBLES = ("nve", "nvt-langevin", "nvt-nose-hoover", "npt")
#: the deprecated ``--thermostat`` values and the ensembles they mean
THERMOSTATS = {"nve": "nve", "langevin": "nvt-langevin"}


class MDStopped(AtomnetError, RuntimeError):
    """The simulation became unphysical (too hot, atoms too close); the message names the step."""


def add_parser(sub) -> None:
    p = sub.add_parser(
        "md", help="molecular dynamics with a trained model",
        description="Run MD (ASE integrators) from a structure; writes a trajectory "
                    "(extxyz or .traj) and a log.")
    p.add_argument("model", help="a .atomnet model file")
    p.add_argument("structure", help="starting structure (any file ase.io reads); with "
                                     "--restart, the trajectory to continue")
    p.add_argument("--index", type=int, default=0, help="frame of STRUCTURE to start from")
    p.add_argument("--ensemble", choices=ENSEMBLES, default=None,
                   help="nve, nvt-langevin (default), nvt-nose-hoover or npt")
    p.add_argument("--thermostat", choices=sorted(THERMOSTATS), default=None,
                   help="deprecated: use --ensemble nve / nvt-langevin")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--timestep", type=float, default=0.5, help="fs (default 0.5)")
    p.add_argument("--temperature", type=float, default=300.0,
                   help="K: target of the thermostat and initial temperature")
    p.add_argument("--initial-temperature", type=float, default=None,
                   help="K of the initial Maxwell-Boltzmann velocities (default --temperature)")
    p.add_argument("--pressure", type=float, default=0.0, help="GPa, npt only (default 0)")
    p.add_argument("--friction", type=float, default=0.01, help="Langevin friction, 1/fs")
    p.add_argument("--tdamp", type=float, default=None,
                   help="fs, Nosé-Hoover thermostat time (default 100 time steps)")
    p.add_argument("--pdamp", type=float, default=None,
                   help="fs, MTK barostat time (default 1000 time steps)")
    p.add_argument("--seed", type=int, default=0, help="seed of velocities and noise")
    p.add_argument("--interval", type=int, default=10,
                   help="write, log and check every N steps")
    p.add_argument("--out", default=None,
                   help="trajectory: .traj for ASE's format, else extxyz (default traj.xyz; "
                        "with --restart, STRUCTURE)")
    p.add_argument("--log", default=None, help="log file (default: --out with suffix .log)")
    p.add_argument("--restart", action="store_true",
                   help="continue from the last frame of STRUCTURE (positions, cell, momenta) "
                        "and append to the trajectory and log")
    p.add_argument("--max-temperature", type=float, default=None,
                   help="K: stop above it (default max(10 x --temperature, 5000))")
    p.add_argument("--min-distance", type=float, default=0.5,
                   help="Å: stop when two atoms come closer (default 0.5)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the model (plain BP models, or models with an "
                        "equivariant term): ~3-5x faster calls on small molecules after a "
                        "compile of 10-30 s")
    p.set_defaults(run=run)


def _resolve(args: argparse.Namespace) -> str:
    """Check the options; return the ensemble (``--thermostat`` is a deprecated alias)."""
    for name in ("steps", "interval"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name} must be >= 1")
    if not args.timestep > 0:
        raise UsageError("--timestep must be positive (fs)")
    if not args.temperature >= 0:
        raise UsageError("--temperature must be >= 0 K")
    if args.initial_temperature is not None and not args.initial_temperature >= 0:
        raise UsageError("--initial-temperature must be >= 0 K")
    if not args.friction >= 0:
        raise UsageError("--friction must be >= 0 (1/fs)")
    for name in ("tdamp", "pdamp", "max_temperature"):
        value = getattr(args, name)
        if value is not None and not value > 0:
            raise UsageError(f"--{name.replace('_', '-')} must be positive")
    if not args.min_distance >= 0:
        raise UsageError("--min-distance must be >= 0 Å")
    ensemble = args.ensemble
    if args.thermostat is not None:
        alias = THERMOSTATS[args.thermostat]
        if ensemble is not None and ensemble != alias:
            raise UsageError(f"--thermostat {args.thermostat} contradicts --ensemble {ensemble}")
        print(f"warning: --thermostat is deprecated; use --ensemble {alias}", file=sys.stderr)
        ensemble = alias
    return ensemble or "nvt-langevin"


def _integrator(atoms, ensemble: str, args: argparse.Namespace, rng: np.random.Generator):
    dt = args.timestep * units.fs
    tdamp = (args.tdamp or 100.0 * args.timestep) * units.fs
    if ensemble == "nve":
        return VelocityVerlet(atoms, timestep=dt)
    if ensemble == "nvt-langevin":
        atoms.set_constraint([*atoms.constraints, FixCom()])  # ASE's advice over fixcm=True
        return Langevin(atoms, timestep=dt, temperature_K=args.temperature,
                        friction=args.friction / units.fs, fixcm=False, rng=rng)
    if ensemble == "nvt-nose-hoover":
        return NoseHooverChainNVT(atoms, timestep=dt, temperature_K=args.temperature,
                                  tdamp=tdamp)
    pdamp = (args.pdamp or 1000.0 * args.timestep) * units.fs
    return IsotropicMTKNPT(atoms, timestep=dt, temperature_K=args.temperature,
                           pressure_au=args.pressure * units.GPa, tdamp=tdamp, pdamp=pdamp)


def drift_per_atom_ps(times_fs: np.ndarray, energies: np.ndarray, n_atoms: int) -> float:
    """Slope of a straight-line fit of the total energy, meV/atom/ps."""
    if len(times_fs) < 2:
        return 0.0
    slope = np.polyfit(times_fs, energies, 1)[0]  # eV/fs
    return float(slope) * 1000.0 * 1000.0 / n_atoms


def ns_per_day(simulated_fs: float, wall_s: float) -> float:
    """Simulated nanoseconds per day of wall time."""
    return simulated_fs * 1e-6 * 86400.0 / wall_s if wall_s > 0 else float("inf")


def summary(log: np.ndarray, n_atoms: int, ensemble: str, wall_s: float | None = None) -> str:
    """Text summary of an MD log with columns (time fs, E_pot eV, E_kin eV, T K), one row per
    step of this run (the first row is its starting point)."""
    t, epot, ekin, temp = log.T
    etot = epot + ekin
    steps, span_fs = len(t) - 1, t[-1] - t[0]
    lines = [
        f"{steps} steps, {span_fs:.1f} fs; T = {temp.mean():.1f} ± {temp.std():.1f} K "
        f"(final {temp[-1]:.1f} K)",
        f"potential energy {epot.mean():.4f} ± {epot.std():.4f} eV",
    ]
    if wall_s is not None:
        lines.append(f"speed {ns_per_day(span_fs, wall_s):.4g} ns/day ({wall_s:.1f} s wall)")
    drift = drift_per_atom_ps(t, etot, n_atoms)
    span = 1000.0 * (etot.max() - etot.min()) / n_atoms
    if ensemble == "nve":
        lines.append(f"NVE energy drift {drift:+.3f} meV/atom/ps "
                     f"(total energy range {span:.3f} meV/atom)")
    else:
        lines.append(f"total energy range {span:.2f} meV/atom (not conserved with {ensemble})")
    if not np.all(np.isfinite(etot)):
        lines.append("warning: non-finite energies: the simulation blew up")
    return "\n".join(lines)


def closest_pair(atoms, within: float) -> tuple[int, int, float] | None:
    """The closest pair of atoms (or atom and periodic image) nearer than ``within`` Å."""
    if within <= 0 or (len(atoms) < 2 and not atoms.pbc.any()):
        return None
    pairs = neighbor_pairs(atoms.positions, atoms.cell.array, atoms.pbc, within)
    distances = pair_distances(atoms.positions, atoms.cell.array, pairs)
    if not len(distances):
        return None
    k = int(np.argmin(distances))
    return int(pairs[0][k]), int(pairs[1][k]), float(distances[k])


def _problem(atoms, max_temperature: float, min_distance: float) -> str | None:
    """Why the current state is unphysical, or None."""
    energy = atoms.get_potential_energy()
    if not np.isfinite(energy) or not np.all(np.isfinite(atoms.positions)):
        return "non-finite energy or positions"
    temperature = atoms.get_temperature()
    if temperature > max_temperature:
        return f"temperature {temperature:.0f} K exceeds --max-temperature {max_temperature:g} K"
    close = closest_pair(atoms, min_distance)
    if close is not None:
        i, j, d = close
        return f"atoms {i} and {j} are {d:.3f} Å apart (< --min-distance {min_distance:g} Å)"
    return None


def _start(args: argparse.Namespace):
    """The starting structure and its first step; momenta are set unless restarting."""
    if args.restart:
        path = Path(args.structure)
        if not path.is_file():
            raise UsageError(f"--restart: trajectory {path} not found")
        atoms = ase.io.read(path, index=-1)
        validate_atoms(atoms, source=str(path), index=-1)
        if "momenta" not in atoms.arrays:
            raise UsageError(f"--restart: the last frame of {path} has no momenta")
        momenta = atoms.get_momenta()
        atoms.calc = None
        atoms.constraints = []
        atoms.set_momenta(momenta, apply_constraint=False)
        return atoms, int(atoms.info.get("step", 0))
    atoms = read_structures(args.structure, index=str(args.index))[0]
    # before anything touches the positions (velocities, rotation removal, the model)
    validate_atoms(atoms, source=args.structure, index=args.index)
    return atoms, 0


def _thermalize(atoms, temperature: float, rng: np.random.Generator) -> None:
    if hasattr(_velocities, "thermalize_momenta"):  # ASE >= 3.29
        _velocities.thermalize_momenta(atoms, temperature, rng=rng)
    else:  # pragma: no cover
        _velocities.MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=rng)
    Stationary(atoms)
    if not atoms.pbc.any():
        ZeroRotation(atoms)


class _Writer:
    """Trajectory (extxyz or .traj) and text log, opened for writing or appending."""

    def __init__(self, out: Path, log: Path, periodic: bool, append: bool):
        out.parent.mkdir(parents=True, exist_ok=True)
        log.parent.mkdir(parents=True, exist_ok=True)
        self.periodic = periodic
        self.traj_format = "traj" if out.suffix == ".traj" else "extxyz"
        mode = "a" if append else "w"
        self.traj = Trajectory(str(out), mode) if self.traj_format == "traj" else open(out, mode)
        self.log = open(log, mode)
        if not append or log.stat().st_size == 0:
            columns = ["step", "time_fs", "T_K", "Epot_eV", "Ekin_eV", "Etot_eV"]
            self.log.write("# " + " ".join(columns + ["P_GPa"] * periodic) + "\n")

    def write(self, atoms, step: int, time_fs: float) -> None:
        atoms.info["step"] = step
        atoms.info["time_fs"] = time_fs
        epot, ekin = atoms.get_potential_energy(), atoms.get_kinetic_energy()
        fields = [f"{step:d}", f"{time_fs:.3f}", f"{atoms.get_temperature():.3f}",
                  f"{epot:.8f}", f"{ekin:.8f}", f"{epot + ekin:.8f}"]
        if self.periodic:
            stress = atoms.get_stress(include_ideal_gas=True)
            fields.append(f"{-stress[:3].mean() / units.GPa:.6f}")
        if self.traj_format == "traj":
            self.traj.write(atoms)
        else:
            ase.io.write(self.traj, atoms, format="extxyz")
        if hasattr(self.traj, "flush"):  # ASE's TrajectoryWriter writes through
            self.traj.flush()
        self.log.write(" ".join(fields) + "\n")
        self.log.flush()

    def close(self) -> None:
        self.traj.close()
        self.log.close()


def run(args: argparse.Namespace) -> int:
    ensemble = _resolve(args)
    atoms, first_step = _start(args)
    if ensemble == "npt" and not atoms.pbc.all():
        raise UsageError(f"--ensemble npt needs a cell periodic in all 3 directions; "
                         f"{args.structure} has pbc={atoms.pbc.tolist()}")
    atoms.calc = Calculator(args.model, device=args.device, dtype=args.dtype,
                            compile=args.compile)
    check_elements(atoms.numbers, atoms.calc.elements, args.structure, args.index)
    rng = np.random.default_rng([args.seed, first_step])  # fresh noise after a restart
    if not args.restart:
        initial = args.temperature if args.initial_temperature is None \
            else args.initial_temperature
        _thermalize(atoms, initial, rng)
    max_temperature = args.max_temperature or max(10.0 * args.temperature, 5000.0)
    out = Path(args.out if args.out is not None else
               (args.structure if args.restart else "traj.xyz"))
    log_path = Path(args.log) if args.log is not None else out.with_suffix(".log")
    problem = _problem(atoms, max_temperature, args.min_distance)
    if problem is not None:
        raise MDStopped(f"md stopped at step {first_step} (the start): {problem}")
    dyn = _integrator(atoms, ensemble, args, rng)
    writer = _Writer(out, log_path, bool(atoms.pbc.all()), append=args.restart)
    rows: list[tuple[float, float, float, float]] = []
    last_good = first_step
    start = time.perf_counter()

    def now() -> tuple[int, float]:
        step = first_step + dyn.get_number_of_steps()
        return step, step * args.timestep

    try:
        with tqdm(total=args.steps, unit="step", leave=False, disable=None) as bar:
            def observe() -> None:
                nonlocal last_good
                local = dyn.get_number_of_steps()
                step, time_fs = now()
                rows.append((time_fs, atoms.get_potential_energy(),
                             atoms.get_kinetic_energy(), atoms.get_temperature()))
                if local % args.interval == 0 or local == args.steps:
                    problem = _problem(atoms, max_temperature, args.min_distance)
                    if problem is not None:
                        raise MDStopped(
                            f"md stopped at step {step} ({time_fs:g} fs): {problem}; the last "
                            f"good frame (step {last_good}) is the last one in {out}")
                    if local or not args.restart:  # a restart's first frame is on disk
                        writer.write(atoms, step, time_fs)
                    last_good = step
                if local:
                    bar.update(1)
                    speed = ns_per_day(local * args.timestep, time.perf_counter() - start)
                    bar.set_postfix(T=f"{rows[-1][3]:.0f} K", ns_day=f"{speed:.3g}",
                                    refresh=False)

            dyn.attach(observe, interval=1)
            dyn.run(args.steps)
    finally:
        writer.close()
    wall = time.perf_counter() - start
    print(summary(np.array(rows), len(atoms), ensemble, wall_s=wall))
    print(f"trajectory written to {out}, log to {log_path}")
    return 0
