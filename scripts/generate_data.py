#!/usr/bin/env python3
"""Regenerate the bundled example datasets in ``data/``.

Produces four extended-XYZ files and a README:

* ``methanol_dft.xyz`` -- CH3OH geometries sampled from GFN2-xTB Langevin MD
  (tblite) at 300/450/600 K, relabelled with PySCF PBE/def2-SVP (RKS):
  energy, analytic forces and dipole moment.
* ``methanol_isolated_atoms.xyz`` -- isolated H, C, O atoms at the same level
  (UKS, ground-state multiplicities), i.e. the E0 reference energies.
* ``cu_emt.xyz`` -- strained / rattled / MD snapshots of a 32-atom fcc Cu
  cell labelled with ASE's EMT calculator (NOT DFT): energy, forces, stress.
* ``methanol_frequencies.xyz`` -- CH3OH at its PBE/def2-SVP minimum (ASE BFGS on
  PySCF analytic forces) with the analytic PySCF Hessian and PySCF's harmonic
  frequencies (reference for vibrational analysis). Deterministic (no RNG).

Units everywhere in the output: positions and cell in Angstrom, energy in eV,
forces in eV/Angstrom, stress in eV/Angstrom^3 (ASE Voigt order
xx, yy, zz, yz, xz, xy; ASE sign convention), dipole in e*Angstrom,
Hessian in eV/Angstrom^2, frequencies in cm^-1, masses in amu.

Everything is seeded, so a rerun with the same arguments and the same package
versions reproduces the data (up to floating-point noise across BLAS builds).
Run heavy jobs single-threaded, e.g.::

    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE python3 scripts/generate_data.py

Quick smoke run into a scratch directory::

    python3 scripts/generate_data.py --n-methanol 6 --n-cu 6 --outdir /tmp/atomnet_data_smoke

Only the frequency stage (rewrites ``methanol_frequencies.xyz`` and its README
section and checksum line; the other files are left untouched)::

    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE python3 scripts/generate_data.py \
        --only frequencies --outdir data
"""

from __future__ import annotations

import argparse
import hashlib
import platform
import re
import sys
import time
from pathlib import Path

import ase
import ase.io
import numpy as np
from ase import Atoms, units
from ase.build import bulk, molecule
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.constraints import FixCom
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import Stationary, ZeroRotation, thermalize_momenta
from ase.optimize import BFGS

# --------------------------------------------------------------------------
# Protocol constants (documented in data/README.md)
# --------------------------------------------------------------------------
METHANOL_TEMPERATURES_K = (300.0, 450.0, 600.0)
MD_TIMESTEP_FS = 0.5          # GFN2-xTB MD timestep, fs
MD_EQUIL_FS = 1000.0          # equilibration discarded before sampling, fs
MD_STRIDE_FS = 20.0           # time between stored frames, fs
MD_FRICTION_PER_FS = 0.01     # Langevin friction, 1/fs

DFT_XC = "pbe"
DFT_BASIS = "def2-svp"
DFT_CONV_TOL = 1e-9           # SCF energy convergence, Hartree
DFT_GRID_LEVEL = 3            # PySCF Treutler-Ahlrichs grid level
DFT_LEVEL = "PBE/def2-SVP"

# 2S (number of unpaired electrons) of the atomic ground states: 2S+1 = 2, 3, 3
ATOM_SPIN = {"H": 1, "C": 2, "O": 2}

CU_LATTICE_A = 3.61           # ASE's reference fcc Cu lattice constant, Angstrom
CU_REPEAT = 2                 # 2x2x2 conventional cells -> 32 atoms
CU_MAX_STRAIN = 0.03          # max |strain component|
CU_RATTLE_SIGMA_A = (0.05, 0.10)  # rattle std dev range, Angstrom
CU_MD_TEMPERATURES_K = (300.0, 600.0, 900.0)
CU_MD_TIMESTEP_FS = 2.0
CU_MD_EQUIL_STEPS = 250
CU_MD_STRIDE_STEPS = 25

MIN_DISTANCE_A = 0.7          # frames with a closer atom pair are rejected

FREQ_FMAX = 1e-5              # BFGS convergence: max per-atom |F|, eV/Angstrom
# Tighter SCF convergence for the frequency stage only (same functional, basis and
# grid): at DFT_CONV_TOL with a restarted density the forces are only good to
# ~1e-4 eV/Angstrom, which is the size of the BFGS convergence criterion.
FREQ_SCF_CONV_TOL = 1e-11     # Hartree (orbital-gradient tolerance sqrt of this)
FREQ_MAX_STEPS = 200          # BFGS step limit (error if not converged)

FILES = {
    "methanol": "methanol_dft.xyz",
    "atoms": "methanol_isolated_atoms.xyz",
    "cu": "cu_emt.xyz",
}
FREQ_FILE = "methanol_frequencies.xyz"


# --------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------
def log(msg: str) -> None:
    """Print a time-stamped progress message (flushed immediately)."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def package_versions(tblite: bool = True) -> dict[str, str]:
    """Return the versions of python and the packages used for generation.

    ``tblite=False`` leaves tblite out (it is only needed for the methanol MD
    sampling, not for ``--only frequencies``).
    """
    from importlib.metadata import version

    import pyscf

    versions = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "ase": ase.__version__,
        "pyscf": pyscf.__version__,
    }
    if tblite:
        versions["tblite"] = version("tblite")
    return versions


def sha256sum(path: Path) -> str:
    """Return the hex SHA-256 digest of a file."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def min_pair_distance(atoms: Atoms) -> float:
    """Smallest interatomic distance in Angstrom (minimum image if periodic)."""
    d = atoms.get_all_distances(mic=any(atoms.pbc))
    return float(d[np.triu_indices(len(atoms), k=1)].min())


def attach_labels(atoms: Atoms, **results) -> Atoms:
    """Return a copy of ``atoms`` with a SinglePointCalculator holding ``results``.

    Results must already be in ASE units (eV, eV/Angstrom, eV/Angstrom^3,
    e*Angstrom) so that extxyz writes them as the standard keys.
    """
    labelled = atoms.copy()
    labelled.calc = SinglePointCalculator(labelled, **results)
    return labelled


# --------------------------------------------------------------------------
# Methanol: GFN2-xTB sampling + PBE/def2-SVP labels
# --------------------------------------------------------------------------
def sample_methanol_md(temperature_K: float, n_frames: int,
                       rng: np.random.Generator) -> list[Atoms]:
    """Sample ``n_frames`` methanol geometries from GFN2-xTB Langevin MD.

    Timestep ``MD_TIMESTEP_FS`` fs, friction ``MD_FRICTION_PER_FS`` 1/fs,
    ``MD_EQUIL_FS`` fs of equilibration discarded, then one frame every
    ``MD_STRIDE_FS`` fs. Returns unlabelled copies (positions in Angstrom).
    """
    from tblite.ase import TBLite

    atoms = molecule("CH3OH")
    atoms.calc = TBLite(method="GFN2-xTB", verbosity=0)
    atoms.set_constraint(FixCom())
    thermalize_momenta(atoms, temperature_K, rng=rng)
    Stationary(atoms)
    ZeroRotation(atoms)
    dyn = Langevin(atoms, timestep=MD_TIMESTEP_FS * units.fs,
                   temperature_K=temperature_K, fixcm=False,
                   friction=MD_FRICTION_PER_FS / units.fs, rng=rng)
    dyn.run(int(round(MD_EQUIL_FS / MD_TIMESTEP_FS)))
    stride = int(round(MD_STRIDE_FS / MD_TIMESTEP_FS))
    frames = []
    while len(frames) < n_frames:
        dyn.run(stride)
        frame = Atoms(atoms.get_chemical_symbols(), positions=atoms.positions)
        if min_pair_distance(frame) >= MIN_DISTANCE_A:
            frames.append(frame)
    return frames


def pyscf_mol(atoms: Atoms, spin: int = 0):
    """Build a PySCF Mole from ASE atoms (positions in Angstrom), def2-SVP."""
    from pyscf import gto

    return gto.M(
        atom=[(s, p) for s, p in zip(atoms.get_chemical_symbols(), atoms.positions)],
        unit="Angstrom", basis=DFT_BASIS, charge=0, spin=spin, verbose=0,
    )


def pbe_scf(atoms: Atoms, dm0=None, conv_tol: float = DFT_CONV_TOL):
    """Run a converged PBE/def2-SVP RKS SCF; return the PySCF mean-field object.

    Energies in the returned object are in Hartree (PySCF atomic units).
    ``conv_tol`` is the SCF energy convergence in Hartree.
    """
    from pyscf import dft

    mf = dft.RKS(pyscf_mol(atoms))
    mf.xc = DFT_XC
    mf.conv_tol = conv_tol
    mf.grids.level = DFT_GRID_LEVEL
    mf.kernel(dm0=dm0)
    if not mf.converged:
        raise RuntimeError("PySCF SCF did not converge")
    return mf


def pbe_label(atoms: Atoms, dm0=None, conv_tol: float = DFT_CONV_TOL):
    """PBE/def2-SVP RKS energy, analytic forces and dipole for a closed-shell molecule.

    Returns ``(energy_eV, forces_eV_per_A, dipole_e_A, density_matrix)``.
    Forces are -dE/dR including the DFT-grid response, converted from
    Hartree/Bohr to eV/Angstrom; the dipole (about the origin; origin-independent
    for neutral molecules) from e*Bohr to e*Angstrom. ``dm0`` (optional) is an
    initial-guess density matrix, e.g. from the previous frame; ``conv_tol`` the
    SCF energy convergence in Hartree.
    """
    mf = pbe_scf(atoms, dm0, conv_tol)
    e_ha = mf.e_tot
    grad = mf.nuc_grad_method()
    grad.grid_response = True
    g_ha_bohr = grad.kernel()
    dip_e_bohr = mf.dip_moment(unit="AU", verbose=0)
    energy = e_ha * units.Hartree
    forces = -g_ha_bohr * units.Hartree / units.Bohr
    dipole = np.asarray(dip_e_bohr) * units.Bohr
    return energy, forces, dipole, mf.make_rdm1()


def isolated_atom_energy(symbol: str) -> tuple[float, float]:
    """Spin-polarised (UKS) PBE/def2-SVP energy of a free atom.

    Uses the ground-state multiplicity from ``ATOM_SPIN``. Returns
    ``(energy_eV, <S^2>)``.
    """
    from pyscf import dft

    mf = dft.UKS(pyscf_mol(Atoms(symbol), spin=ATOM_SPIN[symbol]))
    mf.xc = DFT_XC
    mf.conv_tol = DFT_CONV_TOL
    mf.grids.level = DFT_GRID_LEVEL
    e_ha = mf.kernel()
    if not mf.converged:
        raise RuntimeError(f"UKS for isolated {symbol} did not converge")
    return e_ha * units.Hartree, float(mf.spin_square()[0])


def build_methanol(n_total: int, rng: np.random.Generator) -> tuple[list[Atoms], list[float]]:
    """Sample and label ``n_total`` methanol frames, split evenly over temperatures.

    Returns the labelled frames and the wall time (s) of each DFT calculation.
    """
    counts = np.full(len(METHANOL_TEMPERATURES_K), n_total // len(METHANOL_TEMPERATURES_K))
    counts[: n_total % len(METHANOL_TEMPERATURES_K)] += 1
    frames, timings, dm = [], [], None
    for temperature, count in zip(METHANOL_TEMPERATURES_K, counts):
        t0 = time.perf_counter()
        geoms = sample_methanol_md(temperature, int(count), rng)
        log(f"methanol: GFN2-xTB MD at {temperature:.0f} K -> {len(geoms)} frames "
            f"({time.perf_counter() - t0:.1f} s)")
        for geom in geoms:
            t0 = time.perf_counter()
            energy, forces, dipole, dm = pbe_label(geom, dm0=dm)
            timings.append(time.perf_counter() - t0)
            frame = attach_labels(geom, energy=energy, forces=forces, dipole=dipole)
            frame.info.update(config_type="xtb_md", temperature_K=temperature,
                              method=DFT_LEVEL)
            frames.append(frame)
            done = len(frames)
            eta = np.mean(timings) * (n_total - done)
            log(f"methanol: DFT {done}/{n_total}  E={energy:.4f} eV  "
                f"|F|max={np.abs(forces).max():.3f} eV/A  {timings[-1]:.2f} s  "
                f"ETA {eta / 60:.1f} min")
    return frames, timings


def fd_force_check(frame: Atoms, atom: int = 1, axis: int = 0,
                   step_A: float = 1e-3) -> tuple[float, float]:
    """Central finite difference of the PBE energy vs. the stored analytic force.

    Displaces ``atom`` along ``axis`` by +-``step_A`` Angstrom. Returns
    ``(fd_force, analytic_force)`` in eV/Angstrom.
    """
    dm = pbe_scf(frame).make_rdm1()
    energies = []
    for sign in (1.0, -1.0):
        moved = frame.copy()
        moved.positions[atom, axis] += sign * step_A
        energies.append(pbe_scf(moved, dm0=dm).e_tot * units.Hartree)
    fd = -(energies[0] - energies[1]) / (2.0 * step_A)
    return fd, float(frame.get_forces()[atom, axis])


def build_isolated_atoms() -> list[Atoms]:
    """Label isolated H, C, O atoms (E0 references) at PBE/def2-SVP UKS."""
    frames = []
    for symbol in ("H", "C", "O"):
        energy, s2 = isolated_atom_energy(symbol)
        atom = attach_labels(Atoms(symbol), energy=energy, forces=np.zeros((1, 3)))
        atom.info.update(config_type="isolated_atom", method=DFT_LEVEL,
                         multiplicity=ATOM_SPIN[symbol] + 1)
        frames.append(atom)
        log(f"isolated {symbol}: 2S+1={ATOM_SPIN[symbol] + 1}  <S^2>={s2:.4f}  "
            f"E={energy:.6f} eV")
    return frames


# --------------------------------------------------------------------------
# Methanol: PBE/def2-SVP minimum, analytic Hessian, harmonic frequencies
# --------------------------------------------------------------------------
class PBECalculator(Calculator):
    """Minimal ASE calculator: PBE/def2-SVP RKS energy (eV) and forces (eV/A) via ``pbe_label``.

    Each SCF starts from the previous call's density matrix and is converged
    to ``conv_tol`` Hartree.
    """

    implemented_properties = ["energy", "forces"]

    def __init__(self, conv_tol: float = DFT_CONV_TOL):
        super().__init__()
        self.conv_tol = conv_tol
        self.dm = None

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        energy, forces, _, self.dm = pbe_label(self.atoms, dm0=self.dm, conv_tol=self.conv_tol)
        self.results = {"energy": energy, "forces": forces}


def optimise_methanol() -> tuple[Atoms, dict]:
    """BFGS-minimise ``molecule("CH3OH")`` at PBE/def2-SVP to ``FREQ_FMAX`` eV/A.

    ASE ``BFGS`` with its default settings (maxstep 0.2 A, initial Hessian
    70 eV/A^2) on the analytic forces (with grid response), SCF converged to
    ``FREQ_SCF_CONV_TOL``. Returns the
    optimised, labelled atoms (energy and residual forces at the final
    geometry) and a dict with ``steps``, ``fmax``, ``time_s`` and the
    calculator's final density matrix ``dm``.
    """
    atoms = molecule("CH3OH")
    atoms.calc = PBECalculator(conv_tol=FREQ_SCF_CONV_TOL)
    opt = BFGS(atoms, logfile=None)
    t0 = time.perf_counter()
    for _ in opt.irun(fmax=FREQ_FMAX, steps=FREQ_MAX_STEPS):
        fmax = float(np.linalg.norm(atoms.get_forces(), axis=1).max())
        log(f"frequencies: BFGS step {opt.nsteps:3d}  E={atoms.get_potential_energy():.8f} eV  "
            f"fmax={fmax:.2e} eV/A")
    if fmax >= FREQ_FMAX:
        raise RuntimeError(f"BFGS did not reach fmax {FREQ_FMAX} in {FREQ_MAX_STEPS} steps")
    energy, forces = atoms.get_potential_energy(), atoms.get_forces()
    info = {"steps": opt.nsteps, "fmax": fmax, "time_s": time.perf_counter() - t0,
            "dm": atoms.calc.dm}
    bare = Atoms(atoms.get_chemical_symbols(), positions=atoms.positions)
    return attach_labels(bare, energy=energy, forces=forces), info


def rotation_angle_deg(p: np.ndarray, q: np.ndarray) -> float:
    """Angle (degrees) of the best-fit (Kabsch) rotation taking positions ``p`` onto ``q``."""
    p, q = p - p.mean(0), q - q.mean(0)
    u, _, vt = np.linalg.svd(p.T @ q)
    rot = u @ np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))]) @ vt
    return float(np.degrees(np.arccos(np.clip((np.trace(rot) - 1.0) / 2.0, -1.0, 1.0))))


def build_frequencies() -> tuple[Atoms, dict]:
    """Optimised methanol with its analytic PBE/def2-SVP Hessian and harmonic frequencies.

    The Hessian is PySCF's analytic RKS Hessian (``mf.Hessian().kernel()``,
    fixed integration grid), converted Hartree/Bohr^2 -> eV/A^2 and stored
    flattened as a 3N x 3N matrix, row-major over (atom, xyz). Frequencies
    (cm^-1, ascending; imaginary ones as negative numbers) are
    ``pyscf.hessian.thermo.harmonic_analysis`` with translations and rotations
    projected out and PySCF's default masses (isotope-averaged standard atomic
    weights, stored as ``frequency_masses`` in amu). Returns the frame and a
    dict of diagnostics for the log and README.
    """
    from pyscf.hessian import thermo

    start = molecule("CH3OH")
    frame, opt = optimise_methanol()
    log(f"frequencies: BFGS converged in {opt['steps']} steps, fmax {opt['fmax']:.2e} eV/A "
        f"({opt['time_s']:.1f} s)")
    t0 = time.perf_counter()
    mf = pbe_scf(frame, dm0=opt["dm"], conv_tol=FREQ_SCF_CONV_TOL)
    hess_au = mf.Hessian().kernel()                     # (atom, atom, xyz, xyz), Ha/Bohr^2
    time_hess = time.perf_counter() - t0
    natm = len(frame)
    masses = np.asarray(mf.mol.atom_mass_list(isotope_avg=True), dtype=float)
    vib = thermo.harmonic_analysis(mf.mol, hess_au, imaginary_freq=False, mass=masses)
    freqs = np.sort(np.asarray(vib["freq_wavenumber"], dtype=float))
    if len(freqs) != 3 * natm - 6:
        raise RuntimeError(f"expected {3 * natm - 6} vibrational modes, got {len(freqs)}")
    # translation/rotation residual of the unprojected Hessian (no grid response)
    vib_all = thermo.harmonic_analysis(mf.mol, hess_au, exclude_trans=False,
                                       exclude_rot=False, imaginary_freq=False, mass=masses)
    tr_max = float(np.sort(np.abs(np.asarray(vib_all["freq_wavenumber"], dtype=float)))[5])
    hess = (hess_au.transpose(0, 2, 1, 3).reshape(3 * natm, 3 * natm)
            * units.Hartree / units.Bohr**2)
    frame.info.update(config_type="pbe_minimum", method=DFT_LEVEL,
                      frequencies_cm=freqs, frequency_masses=masses,
                      hessian=hess.ravel())
    diag = {"steps": opt["steps"], "fmax": opt["fmax"], "time_opt": opt["time_s"],
            "time_hess": time_hess, "n_imag": int(vib["freq_error"]),
            "asym": float(np.abs(hess - hess.T).max()), "tr_max": tr_max,
            "rot_deg": rotation_angle_deg(start.positions, frame.positions)}
    log(f"frequencies: Hessian + harmonic analysis {time_hess:.1f} s; "
        f"{diag['n_imag']} imaginary; max |H - H^T| {diag['asym']:.1e} eV/A^2; "
        f"unprojected T/R modes up to {tr_max:.1f} cm^-1")
    log("frequencies (cm^-1): " + " ".join(f"{f:.2f}" for f in freqs))
    return frame, diag


# --------------------------------------------------------------------------
# Cu: EMT-labelled strained / rattled / MD configurations
# --------------------------------------------------------------------------
def random_strain(rng: np.random.Generator, kind: str) -> np.ndarray:
    """Random symmetric 3x3 strain tensor (dimensionless, |components| <= 3 %).

    ``kind='iso'``: uniform hydrostatic strain; ``kind='aniso'``: independent
    normal components plus shear components.
    """
    m = CU_MAX_STRAIN
    if kind == "iso":
        return rng.uniform(-m, m) * np.eye(3)
    eps = np.diag(rng.uniform(-m, m, size=3))
    for i, j in ((1, 2), (0, 2), (0, 1)):
        eps[i, j] = eps[j, i] = rng.uniform(-m, m)
    return eps


def strained_cu(rng: np.random.Generator, kind: str) -> Atoms:
    """Perfect 32-atom fcc Cu cell with a random strain applied (atoms follow)."""
    atoms = bulk("Cu", "fcc", a=CU_LATTICE_A, cubic=True).repeat(CU_REPEAT)
    eps = random_strain(rng, kind)
    atoms.set_cell(atoms.cell.array @ (np.eye(3) + eps), scale_atoms=True)
    return atoms


def emt_label(atoms: Atoms) -> Atoms:
    """Return a copy of ``atoms`` labelled with EMT energy (eV), forces (eV/A), stress (eV/A^3)."""
    atoms = atoms.copy()
    atoms.calc = EMT()
    results = dict(energy=atoms.get_potential_energy(), forces=atoms.get_forces(),
                   stress=atoms.get_stress(voigt=True))
    return attach_labels(atoms, **results)


def cu_rattled(n: int, kind: str, rng: np.random.Generator) -> list[Atoms]:
    """``n`` strained (``kind`` 'iso'/'aniso') and rattled Cu cells, EMT-labelled."""
    frames = []
    while len(frames) < n:
        atoms = strained_cu(rng, kind)
        sigma = rng.uniform(*CU_RATTLE_SIGMA_A)
        atoms.positions += rng.normal(0.0, sigma, size=atoms.positions.shape)
        if min_pair_distance(atoms) < MIN_DISTANCE_A:
            continue
        frame = emt_label(atoms)
        frame.info.update(config_type="emt", sampling=f"strain_{kind}_rattle",
                          rattle_sigma_A=round(float(sigma), 4), method="EMT")
        frames.append(frame)
    return frames


def cu_md(n: int, temperature_K: float, rng: np.random.Generator) -> list[Atoms]:
    """``n`` EMT Langevin-MD snapshots of a randomly (aniso) strained Cu cell.

    Timestep ``CU_MD_TIMESTEP_FS`` fs, friction 0.01 1/fs, ``CU_MD_EQUIL_STEPS``
    equilibration steps, then one frame every ``CU_MD_STRIDE_STEPS`` steps.
    """
    atoms = strained_cu(rng, "aniso")
    atoms.calc = EMT()
    atoms.set_constraint(FixCom())
    thermalize_momenta(atoms, temperature_K, rng=rng)
    Stationary(atoms)
    dyn = Langevin(atoms, timestep=CU_MD_TIMESTEP_FS * units.fs, fixcm=False,
                   temperature_K=temperature_K, friction=0.01 / units.fs, rng=rng)
    dyn.run(CU_MD_EQUIL_STEPS)
    frames = []
    while len(frames) < n:
        dyn.run(CU_MD_STRIDE_STEPS)
        frame = emt_label(Atoms(atoms.get_chemical_symbols(), positions=atoms.positions,
                                cell=atoms.cell, pbc=True))
        frame.info.update(config_type="emt", sampling="langevin_md",
                          temperature_K=temperature_K, method="EMT")
        frames.append(frame)
    return frames


def build_cu(n_total: int, rng: np.random.Generator) -> list[Atoms]:
    """EMT Cu set: ~1/3 isotropic strain+rattle, ~1/3 aniso/shear strain+rattle, ~1/3 MD."""
    n_iso = n_total // 3
    n_aniso = n_total // 3
    n_md = n_total - n_iso - n_aniso
    frames = cu_rattled(n_iso, "iso", rng) + cu_rattled(n_aniso, "aniso", rng)
    md_counts = np.full(len(CU_MD_TEMPERATURES_K), n_md // len(CU_MD_TEMPERATURES_K))
    md_counts[: n_md % len(CU_MD_TEMPERATURES_K)] += 1
    for temperature, count in zip(CU_MD_TEMPERATURES_K, md_counts):
        frames += cu_md(int(count), temperature, rng)
    log(f"cu: {len(frames)} EMT frames ({n_iso} iso, {n_aniso} aniso, {n_md} MD)")
    return frames


# --------------------------------------------------------------------------
# I/O, checks and README
# --------------------------------------------------------------------------
def write_and_verify(path: Path, frames: list[Atoms]) -> None:
    """Write frames as extended XYZ and check that labels read back identically."""
    ase.io.write(path, frames, format="extxyz")
    back = ase.io.read(path, ":")
    assert len(back) == len(frames), path
    for a, b in zip(frames, back):
        assert abs(a.get_potential_energy() - b.get_potential_energy()) < 1e-6
        assert np.allclose(a.get_forces(), b.get_forces(), atol=1e-6)
    log(f"wrote {path} ({len(frames)} frames, {path.stat().st_size / 1024:.0f} KiB)")


def write_frequencies(path: Path, frame: Atoms) -> None:
    """Write the frequency frame and check that the info arrays read back exactly."""
    write_and_verify(path, [frame])
    back = ase.io.read(path)
    for key in ("frequencies_cm", "frequency_masses", "hessian"):
        assert np.array_equal(np.asarray(back.info[key]), frame.info[key]), key


def energy_stats(frames: list[Atoms]) -> str:
    """One-line summary of energy per atom (eV/atom) and max force (eV/A)."""
    epa = np.array([f.get_potential_energy() / len(f) for f in frames])
    fmax = max(np.linalg.norm(f.get_forces(), axis=1).max() for f in frames)
    dmin = min(min_pair_distance(f) for f in frames)
    return (f"E/atom min {epa.min():.4f} max {epa.max():.4f} std {epa.std():.4f} eV; "
            f"max |F| {fmax:.3f} eV/A; min distance {dmin:.3f} A")


README_TEMPLATE = """\
# Bundled example datasets

Generated by `scripts/generate_data.py` (seed {seed}). Do not edit by hand;
regenerate with

```
OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE python3 scripts/generate_data.py \\
    --n-methanol {n_methanol} --n-cu {n_cu} --seed {seed} --outdir data
```

All files are extended XYZ (read with `ase.io.read(path, ":")`). Labels are
stored as ASE's standard calculator keys (`energy`, `forces`, `stress`,
`dipole`), so `atoms.get_potential_energy()`, `atoms.get_forces()`,
`atoms.get_stress()` and `atoms.get_dipole_moment()` work on the read frames.

Units: positions/cell in Å, energy in eV, forces in eV/Å, stress in eV/Å³
(ASE Voigt order xx, yy, zz, yz, xz, xy; ASE sign convention, i.e. positive =
tensile), dipole in e·Å. Conversions used `ase.units.Hartree` and
`ase.units.Bohr`.

## Software versions

| package | version |
|---|---|
{version_rows}

Bit-identical regeneration requires the same versions (and BLAS); on other
setups expect differences at the level of floating-point noise.

## `{f_methanol}` — methanol, PBE/def2-SVP ({n_methanol_frames} configurations)

* **Labels**: Kohn–Sham DFT, PBE functional, def2-SVP basis, restricted (RKS),
  PySCF {pyscf}. SCF `conv_tol={conv_tol}` Hartree, `grids.level={grid_level}`
  (PySCF default pruned Treutler–Ahlrichs/Becke grid). No density fitting,
  no dispersion correction. Energy = total electronic + nuclear repulsion
  energy (not atomisation energy). Forces are analytic (−gradient, including
  the grid-response term), converted Hartree/Bohr → eV/Å. `dipole` is
  `mf.dip_moment(unit='AU')` (e·Bohr) × Bohr → e·Å (molecule is neutral, so
  origin-independent). The SCF initial guess is the previous frame's density.
* **Sampling**: GFN2-xTB (tblite {tblite}, `tblite.ase.TBLite(method="GFN2-xTB")`)
  Langevin MD (ASE `Langevin`, friction {friction} fs⁻¹, timestep {dt} fs,
  centre of mass fixed with `FixCom`), started from
  `ase.build.molecule("CH3OH")` with Maxwell–Boltzmann velocities (net linear
  and angular momentum removed),
  one independent trajectory per temperature: {temps} K.
  {equil} fs equilibration discarded, then one frame every {stride} fs.
  Frames per temperature: {per_temp}.
* **Info keys**: `config_type="xtb_md"`, `temperature_K`, `method="PBE/def2-SVP"`.
* **Cost**: {dft_time_mean:.2f} s per energy+gradient on one CPU thread
  (min {dft_time_min:.2f}, max {dft_time_max:.2f}; total {dft_time_total:.0f} s).
* **Statistics**: {stats_methanol}
* **Force check**: on frame 0, the O-atom x force from a central finite
  difference of the PBE energy (step 1e-3 Å) is {fd_num:.6f} eV/Å vs. the
  stored analytic {fd_an:.6f} eV/Å (|difference| {fd_diff:.1e} eV/Å).

## `{f_atoms}` — isolated atoms (E0 references, 3 configurations)

H, C, O at the same level (PBE/def2-SVP, PySCF, same convergence and grid),
spin-polarised UKS with ground-state multiplicities H 2S+1 = 2, C 3, O 3
(integer occupations; symmetry not enforced). Info keys:
`config_type="isolated_atom"`, `multiplicity`, `method`. Energies (eV):
{atom_energies}.

These E0s belong to this dataset only: the rMD17/BOTNet ethanol E0s in
`../shared/data` (ORCA, PBE/def2-SVP) differ by ~2–3 eV for C and O because the
codes' grids and atomic treatments differ. Always pair a dataset with its own E0s.

## `{f_cu}` — fcc Cu, **EMT, not DFT** ({n_cu_frames} configurations)

Labelled with ASE's EMT (effective-medium theory) calculator, ASE {ase}:
energy, forces and stress. This is a cheap empirical potential, included only
to exercise periodic boundary conditions and stress training; it is not
quantum-mechanical data. Every frame has `config_type="emt"` and `method="EMT"`.

* Cell: fcc Cu, a = {cu_a} Å, 2×2×2 conventional cells (32 atoms), periodic.
* `sampling="strain_iso_rattle"` ({n_iso}): random hydrostatic strain
  uniform in ±{strain_pct}%, atoms rattled with Gaussian σ uniform in
  [{sig_lo}, {sig_hi}] Å (σ stored as `rattle_sigma_A`).
* `sampling="strain_aniso_rattle"` ({n_aniso}): random symmetric strain with
  independent normal and shear components each uniform in ±{strain_pct}%,
  rattled as above.
* `sampling="langevin_md"` ({n_md}): EMT Langevin MD (timestep
  {cu_dt} fs, friction 0.01 fs⁻¹, `FixCom`) in a randomly (aniso+shear) strained cell at
  {cu_temps} K; {cu_equil} equilibration steps, then one frame every
  {cu_stride} steps (`temperature_K` stored).
* **Statistics**: {stats_cu}

## Checksums (SHA-256)

```
{checksums}
```
"""

FREQ_README_TEMPLATE = """\
## `{f_freq}` — methanol PBE/def2-SVP minimum, Hessian and harmonic frequencies (1 configuration)

* **Level of theory**: same as `{f_methanol}` — RKS PBE/def2-SVP,
  PySCF {pyscf}, `grids.level={grid_level}`, no density fitting, no
  dispersion — except that the SCF is converged tighter, `conv_tol={freq_conv_tol:g}`
  Hartree instead of {conv_tol:g} (orbital-gradient tolerance √conv_tol): at
  {conv_tol:g} with a restarted density the analytic forces are only reproducible
  to ~1e-4 eV/Å, the size of the convergence criterion below. This changes
  energies by ≪ 1e-6 eV. Generated with python {python}, numpy {numpy},
  ASE {ase}, PySCF {pyscf} (tblite not used). Deterministic (no random numbers).
* **Geometry**: ASE `BFGS` (default settings: maxstep 0.2 Å, initial Hessian
  70 eV/Å²) on the analytic PySCF forces (with grid response), started from
  `ase.build.molecule("CH3OH")`, each SCF started from the previous step's
  density. Converged to fmax ≤ {fmax_target:g} eV/Å (fmax = largest per-atom
  force norm) in {steps} steps; final fmax **{fmax:.2e} eV/Å**.
  Energy {energy:.6f} eV. `energy` and `forces` (the residual forces) are
  stored as the usual calculator keys. PySCF's integration grid does not
  rotate with the molecule, so the energy depends very slightly (µeV) on
  orientation and the optimiser also turns the whole molecule a little
  (here by {rot_deg:.2f}° relative to the start); bond lengths are affected
  only at the ~1e-4 Å level.
* **Hessian**: PySCF analytic RKS Hessian `mf.Hessian().kernel()` at the
  optimised geometry. PySCF's DFT Hessian has no grid-response term (the
  integration grid is held fixed), unlike the forces, so it is only
  approximately translation/rotation-invariant: without projection its six
  translation/rotation "modes" come out at up to {tr_max:.1f} cm⁻¹ (as
  magnitudes). The harmonic analysis projects them out. Converted
  Hartree/Bohr² → eV/Å². Largest asymmetry |H − Hᵀ| {asym:.1e} eV/Å²
  (stored as computed, not symmetrised).
* **Frequencies**: `pyscf.hessian.thermo.harmonic_analysis` (translations and
  rotations projected out, 3N−6 = {n_modes} modes; {imag_text}), in cm⁻¹,
  ascending:

{freq_table}

* **Masses**: PySCF's `mol.atom_mass_list(isotope_avg=True)`, i.e.
  isotope-averaged standard atomic weights ({mass_text} amu), the same
  values as ASE's default `atoms.get_masses()`. Stored per atom as
  `frequency_masses`.
* **Info keys** (all arrays are 1-D, written by ASE's extxyz writer as
  space-separated full-precision floats in a quoted string and read back by
  `ase.io.read` as `numpy` arrays, bit-identical):
  `config_type="pbe_minimum"`, `method="PBE/def2-SVP"`,
  `frequencies_cm` ({n_modes} floats, cm⁻¹; an imaginary mode would be stored
  as a negative number), `frequency_masses` ({natm} floats, amu, atom order),
  `hessian` ({n_hess} floats, eV/Å²: the {ndof}×{ndof} Cartesian Hessian
  ∂²E/∂xᵢ∂xⱼ flattened row-major with index 3·atom + xyz, i.e.
  `atoms.info["hessian"].reshape({ndof}, {ndof})`).
* **Units**: positions Å, energy eV, forces eV/Å, Hessian eV/Å²,
  frequencies cm⁻¹ (PySCF's own CODATA constants), masses amu.
* **Cost**: optimisation {time_opt:.0f} s, SCF + Hessian + harmonic analysis
  {time_hess:.0f} s on one CPU thread.
* **Regenerate only this file** (also rewrites this section and its checksum
  line; the other files are untouched):

```
OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE python3 scripts/generate_data.py \\
    --only frequencies --outdir data
```

"""


def write_readme(outdir: Path, args: argparse.Namespace, versions: dict,
                 methanol: list[Atoms], atoms: list[Atoms], cu: list[Atoms],
                 timings: list[float], fd: tuple[float, float]) -> None:
    """Write ``outdir/README.md`` describing protocol, versions, stats and checksums."""
    temps = [f.info["temperature_K"] for f in methanol]
    sampling = [f.info["sampling"] for f in cu]
    text = README_TEMPLATE.format(
        seed=args.seed, n_methanol=args.n_methanol, n_cu=args.n_cu,
        version_rows="\n".join(f"| {k} | {v} |" for k, v in versions.items()),
        f_methanol=FILES["methanol"], f_atoms=FILES["atoms"], f_cu=FILES["cu"],
        n_methanol_frames=len(methanol), pyscf=versions["pyscf"],
        tblite=versions["tblite"], ase=versions["ase"],
        conv_tol=DFT_CONV_TOL, grid_level=DFT_GRID_LEVEL,
        friction=MD_FRICTION_PER_FS, dt=MD_TIMESTEP_FS, equil=MD_EQUIL_FS,
        stride=MD_STRIDE_FS,
        temps=", ".join(f"{t:.0f}" for t in METHANOL_TEMPERATURES_K),
        per_temp=", ".join(f"{t:.0f} K: {temps.count(t)}" for t in METHANOL_TEMPERATURES_K),
        dft_time_mean=np.mean(timings), dft_time_min=np.min(timings),
        dft_time_max=np.max(timings), dft_time_total=np.sum(timings),
        stats_methanol=energy_stats(methanol),
        fd_num=fd[0], fd_an=fd[1], fd_diff=abs(fd[0] - fd[1]),
        atom_energies=", ".join(f"{a.get_chemical_symbols()[0]} "
                                f"{a.get_potential_energy():.6f}" for a in atoms),
        n_cu_frames=len(cu), cu_a=CU_LATTICE_A,
        n_iso=sampling.count("strain_iso_rattle"),
        n_aniso=sampling.count("strain_aniso_rattle"),
        n_md=sampling.count("langevin_md"), strain_pct=f"{100 * CU_MAX_STRAIN:g}",
        sig_lo=CU_RATTLE_SIGMA_A[0], sig_hi=CU_RATTLE_SIGMA_A[1],
        cu_dt=CU_MD_TIMESTEP_FS, cu_temps=", ".join(f"{t:.0f}" for t in CU_MD_TEMPERATURES_K),
        cu_equil=CU_MD_EQUIL_STEPS, cu_stride=CU_MD_STRIDE_STEPS,
        stats_cu=energy_stats(cu),
        checksums="\n".join(f"{sha256sum(outdir / name)}  {name}"
                            for name in FILES.values()),
    )
    (outdir / "README.md").write_text(text)
    log(f"wrote {outdir / 'README.md'}")


def freq_section(versions: dict, frame: Atoms, diag: dict) -> str:
    """README section (markdown) for ``FREQ_FILE``."""
    freqs = frame.info["frequencies_cm"]
    masses = frame.info["frequency_masses"]
    symbols = frame.get_chemical_symbols()
    ndof = 3 * len(frame)
    rows = ["| mode | frequency / cm⁻¹ |", "|---|---|"]
    rows += [f"| {i} | {f:.2f} |" for i, f in enumerate(freqs, start=1)]
    mass_text = ", ".join(f"{s} {m:g}" for s, m in
                          dict(zip(symbols, masses.tolist())).items())
    n_imag = diag["n_imag"]
    imag_text = ("no imaginary frequencies" if n_imag == 0
                 else f"**{n_imag} imaginary**, stored as negative numbers")
    return FREQ_README_TEMPLATE.format(
        f_freq=FREQ_FILE, f_methanol=FILES["methanol"], conv_tol=DFT_CONV_TOL,
        freq_conv_tol=FREQ_SCF_CONV_TOL,
        grid_level=DFT_GRID_LEVEL, fmax_target=FREQ_FMAX, energy=frame.get_potential_energy(),
        freq_table="\n".join(rows), mass_text=mass_text, imag_text=imag_text,
        n_modes=len(freqs), natm=len(frame), ndof=ndof, n_hess=ndof * ndof,
        **versions, **{k: v for k, v in diag.items() if k != "n_imag"},
    )


FREQ_SECTION_RE = re.compile(rf"^## `{re.escape(FREQ_FILE)}`.*?(?=^## )", re.M | re.S)


def update_readme_frequencies(outdir: Path, section: str | None) -> None:
    """Put the ``FREQ_FILE`` section and checksum line into an existing ``outdir/README.md``.

    The section goes just before ``## Checksums`` (replacing an old one); the
    checksum line of ``FREQ_FILE`` is replaced or appended if the file exists.
    ``section=None`` leaves the section as it is.
    """
    readme = outdir / "README.md"
    if not readme.exists():
        log(f"no {readme}: run the full script once to create it; README not updated")
        return
    text = readme.read_text()
    if section is not None:
        text = FREQ_SECTION_RE.sub("", text)
        text = text.replace("## Checksums", section + "## Checksums", 1)
    if (outdir / FREQ_FILE).exists():
        line = f"{sha256sum(outdir / FREQ_FILE)}  {FREQ_FILE}"
        text = re.sub(rf"^[0-9a-f]{{64}}  {re.escape(FREQ_FILE)}\n", "", text, flags=re.M)
        head, sep, tail = text.rpartition("\n```\n")    # closing fence of the checksums
        text = head + "\n" + line + sep + tail
    readme.write_text(text)
    log(f"updated {readme} ({FREQ_FILE})")


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line options (counts, seed, output directory, stages)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n-methanol", type=int, default=300,
                   help="number of methanol DFT frames, split over 300/450/600 K")
    p.add_argument("--n-cu", type=int, default=100, help="number of Cu EMT frames")
    p.add_argument("--seed", type=int, default=20240607, help="master random seed")
    p.add_argument("--outdir", type=Path,
                   default=Path(__file__).resolve().parent.parent / "data")
    p.add_argument("--frequencies", action=argparse.BooleanOptionalAction, default=True,
                   help=f"also write {FREQ_FILE} (PBE minimum, Hessian, harmonic "
                        "frequencies; ~minutes)")
    p.add_argument("--only", choices=["frequencies"],
                   help="run only this stage; updates its README section and checksum "
                        "in an existing README and leaves the other files untouched")
    return p.parse_args(argv)


def old_freq_section(outdir: Path) -> str | None:
    """The ``FREQ_FILE`` section of an existing ``outdir/README.md`` (None if absent)."""
    readme = outdir / "README.md"
    match = FREQ_SECTION_RE.search(readme.read_text()) if readme.exists() else None
    return match.group(0) if match else None


def run_frequencies(outdir: Path, versions: dict) -> str:
    """Build and write ``FREQ_FILE``; return its README section."""
    frame, diag = build_frequencies()
    write_frequencies(outdir / FREQ_FILE, frame)
    return freq_section(versions, frame, diag)


def main(argv=None) -> None:
    """Generate all datasets and the README into ``--outdir``."""
    args = parse_args(argv)
    args.outdir.mkdir(parents=True, exist_ok=True)
    if args.only == "frequencies":
        versions = package_versions(tblite=False)
        log("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
        t_start = time.perf_counter()
        update_readme_frequencies(args.outdir, run_frequencies(args.outdir, versions))
        log(f"done in {(time.perf_counter() - t_start) / 60:.1f} min")
        return
    versions = package_versions()
    log("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    # independent streams so changing one count does not change the other set
    rng_methanol, rng_cu = (np.random.default_rng(s)
                            for s in np.random.SeedSequence(args.seed).spawn(2))
    t_start = time.perf_counter()

    cu = build_cu(args.n_cu, rng_cu)
    write_and_verify(args.outdir / FILES["cu"], cu)
    atoms = build_isolated_atoms()
    write_and_verify(args.outdir / FILES["atoms"], atoms)
    methanol, timings = build_methanol(args.n_methanol, rng_methanol)
    write_and_verify(args.outdir / FILES["methanol"], methanol)

    log(f"methanol: {energy_stats(methanol)}")
    log(f"cu: {energy_stats(cu)}")
    log(f"DFT time per frame: mean {np.mean(timings):.2f} s, total {np.sum(timings):.0f} s")
    fd = fd_force_check(methanol[0])
    log(f"finite-difference check (frame 0, O x, step 1e-3 A): FD {fd[0]:.6f} "
        f"analytic {fd[1]:.6f} |diff| {abs(fd[0] - fd[1]):.2e} eV/A")
    # --no-frequencies keeps the section of an earlier run (its file is untouched)
    section = (run_frequencies(args.outdir, versions) if args.frequencies
               else old_freq_section(args.outdir))
    write_readme(args.outdir, args, versions, methanol, atoms, cu, timings, fd)
    update_readme_frequencies(args.outdir, section)
    log(f"done in {(time.perf_counter() - t_start) / 60:.1f} min")


if __name__ == "__main__":
    sys.exit(main())
