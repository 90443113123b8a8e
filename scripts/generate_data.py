#!/usr/bin/env python3
"""Regenerate the bundled example datasets in ``data/``.

Produces three extended-XYZ files and a README:

* ``methanol_dft.xyz`` -- CH3OH geometries sampled from GFN2-xTB Langevin MD
  (tblite) at 300/450/600 K, relabelled with PySCF PBE/def2-SVP (RKS):
  energy, analytic forces and dipole moment.
* ``methanol_isolated_atoms.xyz`` -- isolated H, C, O atoms at the same level
  (UKS, ground-state multiplicities), i.e. the E0 reference energies.
* ``cu_emt.xyz`` -- strained / rattled / MD snapshots of a 32-atom fcc Cu
  cell labelled with ASE's EMT calculator (NOT DFT): energy, forces, stress.

Units everywhere in the output: positions and cell in Angstrom, energy in eV,
forces in eV/Angstrom, stress in eV/Angstrom^3 (ASE Voigt order
xx, yy, zz, yz, xz, xy; ASE sign convention), dipole in e*Angstrom.

Everything is seeded, so a rerun with the same arguments and the same package
versions reproduces the data (up to floating-point noise across BLAS builds).
Run heavy jobs single-threaded, e.g.::

    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE python3 scripts/generate_data.py

Quick smoke run into a scratch directory::

    python3 scripts/generate_data.py --n-methanol 6 --n-cu 6 --outdir /tmp/atomnet_data_smoke
"""

from __future__ import annotations

import argparse
import hashlib
import platform
import sys
import time
from pathlib import Path

import ase
import ase.io
import numpy as np
from ase import Atoms, units
from ase.build import bulk, molecule
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.constraints import FixCom
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import Stationary, ZeroRotation, thermalize_momenta

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

FILES = {
    "methanol": "methanol_dft.xyz",
    "atoms": "methanol_isolated_atoms.xyz",
    "cu": "cu_emt.xyz",
}


# --------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------
def log(msg: str) -> None:
    """Print a time-stamped progress message (flushed immediately)."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def package_versions() -> dict[str, str]:
    """Return the versions of python and the packages used for generation."""
    from importlib.metadata import version

    import pyscf

    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "ase": ase.__version__,
        "pyscf": pyscf.__version__,
        "tblite": version("tblite"),
    }


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


def pbe_scf(atoms: Atoms, dm0=None):
    """Run a converged PBE/def2-SVP RKS SCF; return the PySCF mean-field object.

    Energies in the returned object are in Hartree (PySCF atomic units).
    """
    from pyscf import dft

    mf = dft.RKS(pyscf_mol(atoms))
    mf.xc = DFT_XC
    mf.conv_tol = DFT_CONV_TOL
    mf.grids.level = DFT_GRID_LEVEL
    mf.kernel(dm0=dm0)
    if not mf.converged:
        raise RuntimeError("PySCF SCF did not converge")
    return mf


def pbe_label(atoms: Atoms, dm0=None):
    """PBE/def2-SVP RKS energy, analytic forces and dipole for a closed-shell molecule.

    Returns ``(energy_eV, forces_eV_per_A, dipole_e_A, density_matrix)``.
    Forces are -dE/dR including the DFT-grid response, converted from
    Hartree/Bohr to eV/Angstrom; the dipole (about the origin; origin-independent
    for neutral molecules) from e*Bohr to e*Angstrom. ``dm0`` (optional) is an
    initial-guess density matrix, e.g. from the previous frame.
    """
    mf = pbe_scf(atoms, dm0)
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


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line options (counts, seed, output directory)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n-methanol", type=int, default=300,
                   help="number of methanol DFT frames, split over 300/450/600 K")
    p.add_argument("--n-cu", type=int, default=100, help="number of Cu EMT frames")
    p.add_argument("--seed", type=int, default=20240607, help="master random seed")
    p.add_argument("--outdir", type=Path,
                   default=Path(__file__).resolve().parent.parent / "data")
    return p.parse_args(argv)


def main(argv=None) -> None:
    """Generate all datasets and the README into ``--outdir``."""
    args = parse_args(argv)
    args.outdir.mkdir(parents=True, exist_ok=True)
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
    write_readme(args.outdir, args, versions, methanol, atoms, cu, timings, fd)
    log(f"done in {(time.perf_counter() - t_start) / 60:.1f} min")


if __name__ == "__main__":
    sys.exit(main())
