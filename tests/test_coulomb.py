"""The Coulomb term against independent oracles.

Madelung constants of rock salt and CsCl (literature values), the direct sum of a
molecule against the same molecule in growing periodic boxes (with the known dipole
term of Ewald's conducting boundary), finite differences of forces, stress and
Hessians, a fine scan of a dimer through the switching window, separability, mixed
batches and recipes. Everything float64 unless said otherwise; energies eV, forces
eV/Å, stress eV/Å³, lengths Å.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule

import atomnet
from atomnet import keys, testing
from atomnet.derivatives import evaluate
from atomnet.errors import UsageError
from atomnet.physics.charges import FixedCharges
from atomnet.physics.coulomb import Coulomb, all_pairs, half_sphere_kvectors
from atomnet.physics.coulomb_constant import COULOMB_CONSTANT as K
from atomnet.structures import collate, to_device
from atomnet.terms import build_term

ELEMENTS = ["H", "C", "O"]
CHARGES = {"H": 0.35, "C": -0.25, "O": -0.7}
WATER = {"H": 0.4, "O": -0.8}

#: Madelung constants per ion pair, relative to the nearest-neighbour distance
NACL_MADELUNG = 1.747564594633
CSCL_MADELUNG = 1.762674773070


def coulomb_potential(elements=ELEMENTS, charges=None, **options) -> atomnet.Potential:
    term = Coulomb(elements, **options)
    charges = CHARGES if charges is None else charges
    return atomnet.Potential({"coulomb": term}, elements,
                             stages={"charges": FixedCharges(elements, charges)})


def energy(potential, atoms: Atoms) -> float:
    calc = atomnet.Calculator(potential, dtype="float64")
    return float(calc.get_potential_energy(atoms.copy()))


def water_dimer() -> Atoms:
    a, b = molecule("H2O"), molecule("H2O")
    b.rotate(70, "x")
    b.translate([2.9, 0.3, 0.1])
    dimer = a + b
    dimer.rattle(0.02, seed=1)
    return dimer


# --- oracles -------------------------------------------------------------------
@pytest.mark.parametrize("method", ["ewald", "pme"])
@pytest.mark.parametrize("crystal", ["rocksalt", "cesiumchloride"])
def test_madelung_constants(method, crystal):
    """E per ion pair = −M k_e/d for ±1 charges at nearest-neighbour distance d; the
    crystal is a shifted supercell so that ions sit off PME's mesh points."""
    d = 2.3
    if crystal == "rocksalt":
        atoms, madelung, elements = bulk("NaCl", crystal, a=2 * d, cubic=True), NACL_MADELUNG, \
            ["Na", "Cl"]
    else:
        atoms = bulk("CsCl", crystal, a=2 * d / math.sqrt(3), cubic=True) * (2, 2, 2)
        madelung, elements = CSCL_MADELUNG, ["Cs", "Cl"]
    atoms.translate([0.123, 0.456, 0.789])
    atoms.wrap()
    pot = coulomb_potential(elements, {elements[0]: 1.0, elements[1]: -1.0},
                            damping="none", method=method)
    measured = -energy(pot, atoms) / (len(atoms) / 2) * d / K
    assert abs(measured - madelung) / madelung < 1e-5


def test_madelung_independent_of_the_split():
    """The Ewald energy does not depend on the range-separation parameters."""
    atoms = bulk("NaCl", "rocksalt", a=4.6, cubic=True)
    charges = {"Na": 1.0, "Cl": -1.0}
    energies = [energy(coulomb_potential(["Na", "Cl"], charges, damping="none", **opt), atoms)
                for opt in ({"real_space_cutoff": 6.0}, {"real_space_cutoff": 12.0},
                            {"smearing": 1.0, "accuracy": 1e-8})]
    assert max(energies) - min(energies) < 1e-5 * abs(energies[0])


@pytest.mark.parametrize("method", ["ewald", "pme"])
def test_molecule_in_growing_box(method):
    """A neutral water dimer in a cubic box L: Ewald (conducting boundary) adds
    −2π k_e M²/(3L³) for the dipole M; what is left decays as L⁻⁵."""
    dimer = water_dimer()
    pot = coulomb_potential(["H", "O"], WATER, method=method)
    calc = atomnet.Calculator(pot, dtype="float64")
    alone = dimer.copy()
    e0 = float(calc.get_potential_energy(alone))
    per_atom0 = calc.get_potential_energies(alone)
    q = np.where(dimer.numbers == 8, -0.8, 0.4)
    dipole = (q[:, None] * dimer.positions).sum(0)
    residuals, per_atom = [], []
    for box in (16.0, 24.0, 32.0):
        atoms = dimer.copy()
        atoms.cell, atoms.pbc = np.eye(3) * box, True
        atoms.center()
        e = float(calc.get_potential_energy(atoms))
        residuals.append(abs(e + 2 * math.pi * K * (dipole @ dipole) / (3 * box**3) - e0))
        per_atom.append(np.abs(calc.get_potential_energies(atoms) - per_atom0).max())
    assert residuals[0] < 5e-4 and residuals[1] < 5e-5 and residuals[2] < 1.5e-5, residuals
    assert per_atom[0] > per_atom[1] > per_atom[2], per_atom
    assert per_atom[2] < 1e-3


def test_molecule_direct_sum():
    """Molecules: E = Σ_{i<j} k q_i q_j s(r)/r over all pairs, per-atom half each."""
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.05, seed=3)
    pot = coulomb_potential(r_on=1.0, r_off=3.0)
    calc = atomnet.Calculator(pot, dtype="float64")
    q = calc.get_charges(atoms.copy())
    r = atoms.get_all_distances()
    x = np.clip((r - 1.0) / 2.0, 0.0, 1.0)
    s = x**3 * (10 - 15 * x + 6 * x**2)
    with np.errstate(divide="ignore", invalid="ignore"):
        pair = np.where(np.eye(len(atoms)) > 0, 0.0, K * np.outer(q, q) * s / r)
    assert calc.get_potential_energy(atoms.copy()) == pytest.approx(0.5 * pair.sum(), abs=1e-10)
    np.testing.assert_allclose(calc.get_potential_energies(atoms.copy()), 0.5 * pair.sum(1),
                               atol=1e-10)


# --- derivatives ---------------------------------------------------------------
def test_forces_and_hessian_molecule(ethanol):
    pot = coulomb_potential()
    assert testing.check_forces_fd(pot, ethanol, tol=1e-6) < 1e-6
    assert testing.check_hessian_fd(pot, ethanol, tol=1e-4) < 1e-4


@pytest.mark.parametrize("method", ["ewald", "pme"])
def test_forces_and_stress_periodic(method, water_box, water_cell):
    pot = coulomb_potential(method=method)
    assert testing.check_forces_fd(pot, water_box, tol=1e-5, indices=range(0, 24, 3)) < 1e-5
    assert testing.check_stress_fd(pot, water_box, tol=1e-6) < 1e-6
    assert testing.check_forces_fd(pot, water_cell, tol=1e-5) < 1e-5
    assert testing.check_stress_fd(pot, water_cell, tol=1e-6) < 1e-6


def test_hessian_periodic_self_images(water_cell):
    """Γ-point Hessian through torch-pme's Ewald sum (batched rows, no fallback)."""
    assert testing.check_hessian_fd(coulomb_potential(), water_cell, tol=1e-5) < 1e-5


def test_forces_are_large_enough_to_mean_something(water_box):
    calc = atomnet.Calculator(coulomb_potential(), dtype="float64")
    assert np.abs(calc.get_forces(water_box)).max() > 0.1
    assert np.abs(calc.get_stress(water_box)).max() > 1e-3


def test_invariance_periodic(water_box):
    assert testing.check_invariance(coulomb_potential(), water_box, tol=1e-8) < 1e-8


def _dimers(pot, distances: np.ndarray) -> dict:
    """One batch of Na–Cl dimers along x at ``distances`` (Å)."""
    template = to_device(pot.graph(Atoms("NaCl", positions=[[0, 0, 0], [3.0, 0, 0]]),
                                   labels=False), "cpu", torch.float64)
    graphs = []
    for r in distances:
        g = dict(template)
        g[keys.POSITIONS] = torch.tensor([[-r / 2, 0.0, 0.0], [r / 2, 0.0, 0.0]])
        graphs.append(g)
    return collate(graphs)


def _scan(pot, distances):
    """E, dE/dr and d²E/dr² of the dimers (autograd; the Hessian's xx entry)."""
    res = evaluate(pot, _dimers(pot, distances), forces=True, hessian=True)
    e = res.energy.detach().numpy()
    slope = -res.forces.detach().numpy().reshape(-1, 2, 3)[:, 1, 0]
    curvature = np.array([h[3, 3].item() for h in res.hessian])
    return e, slope, curvature


def test_switching_scan_is_smooth():
    """Energy, slope and curvature of a ±1 dimer, scanned across r_on and r_off at
    steps h and h/10: the largest step-to-step change shrinks ten-fold (a jump
    would not), and is bounded by h × the next derivative."""
    r_on, r_off = 2.0, 5.0
    pot = coulomb_potential(["Na", "Cl"], {"Na": 1.0, "Cl": -1.0}, r_on=r_on, r_off=r_off)
    for edge in (r_on, r_off):
        coarse, fine = [_scan(pot, edge + np.arange(-50, 51) * h) for h in (1e-3, 1e-4)]
        for k in range(3):
            big = np.abs(np.diff(coarse[k])).max()
            small = np.abs(np.diff(fine[k])).max()
            assert small < 0.12 * big + 1e-12, (edge, k, small, big)
            if k < 2:  # |ΔQ| ≤ h·max|Q'|
                assert big <= 1e-3 * np.abs(coarse[k + 1]).max() * 1.01 + 1e-12
    # limits: nothing below r_on, bare Coulomb beyond r_off
    e, slope, _ = _scan(pot, np.array([1.5, 1.99, 5.01, 7.0]))
    np.testing.assert_allclose(e[:2], 0.0, atol=1e-14)
    np.testing.assert_allclose(slope[:2], 0.0, atol=1e-14)
    np.testing.assert_allclose(e[2:], -K / np.array([5.01, 7.0]), rtol=1e-12)


# --- structure of the sum ------------------------------------------------------
def test_separability_of_neutral_molecules():
    """Neutral molecules 10⁴ Å apart: dipole–dipole coupling (~R⁻³) is below 1e-9 eV,
    charge–dipole terms of per-atom energies (~R⁻²) below 1e-7 eV."""
    pot = coulomb_potential(["H", "O"], WATER)
    a = water_dimer()
    b = molecule("H2O")
    assert testing.check_separability(pot, a, b, tol=1e-7, gap=1e4) < 1e-7


def test_charged_structures_are_finite():
    """Charged molecule (total charge from atoms.info) and charged cell (neutralising
    background): finite, and the cell's energy does not depend on the split σ."""
    ion = molecule("H2O")
    ion.info["charge"] = 1.0
    assert math.isfinite(energy(coulomb_potential(["H", "O"], WATER), ion))
    cell = bulk("NaCl", "rocksalt", a=4.6, cubic=True)
    cell.info["charge"] = 1.0
    charges = {"Na": 1.0, "Cl": -1.0}
    energies = [energy(coulomb_potential(["Na", "Cl"], charges, real_space_cutoff=rc), cell)
                for rc in (7.0, 11.0)]
    assert all(math.isfinite(e) for e in energies)
    assert abs(energies[0] - energies[1]) < 1e-5 * abs(energies[0])


def test_mixed_batch(ethanol, water_box, water_cell):
    """Molecules and periodic cells in one batch: each structure's energy, forces and
    stress as alone, and no gradient across structures."""
    other = molecule("CH3OH")
    pot = coulomb_potential()
    assert testing.check_no_cross_talk(pot, [ethanol, water_cell, other, water_box]) < 1e-10
    assert testing.check_no_cross_talk(pot, [water_cell, water_box]) < 1e-10


def test_all_pairs_from_batch():
    batch = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2])
    n_atoms = torch.tensor([3, 2, 4])
    i, j = all_pairs(batch, n_atoms, torch.tensor([True, False, True]))
    got = sorted(zip(i.tolist(), j.tolist()))
    want = [(0, 1), (0, 2), (1, 2)] + [(a, b) for a in range(5, 9) for b in range(a + 1, 9)]
    assert got == want


def test_half_sphere_kvectors():
    """Every k with 0 < |k| ≤ k_c once with −k absent, for a sheared cell."""
    cell = torch.tensor([[4.0, 0.0, 0.0], [1.3, 5.0, 0.0], [-0.7, 0.4, 3.5]], dtype=torch.float64)
    k_cut = 4.0
    k = half_sphere_kvectors(cell, k_cut)
    recip = 2 * math.pi * torch.linalg.inv(cell).T
    m = torch.cartesian_prod(*[torch.arange(-12, 13)] * 3).to(torch.float64)
    every = m @ recip
    norms = every.norm(dim=1)
    assert k.shape[0] * 2 == int(((norms > 0) & (norms <= k_cut)).sum())
    both = torch.cat([k, -k])
    assert torch.unique(torch.round(both, decimals=8), dim=0).shape[0] == both.shape[0]


# --- options, dtype, recipes -----------------------------------------------------
def test_float32_matches_float64(ethanol, water_box):
    for method in ("ewald", "pme"):
        pot = coulomb_potential(method=method)
        for atoms in (ethanol, water_box):
            g = collate([pot.graph(atoms, labels=False)])
            e64 = pot.double()(to_device(g, "cpu", torch.float64))[keys.ENERGY]
            e32 = pot.float()(to_device(g, "cpu", torch.float32))[keys.ENERGY]
            assert e32.dtype == torch.float32
            assert abs(float(e32) - float(e64)) < 1e-5 * max(1.0, abs(float(e64)))


def test_recipe_round_trip(water_box):
    term = Coulomb(ELEMENTS, method="pme", r_on=1.5, r_off=4.5, accuracy=1e-7)
    again = build_term({"type": "coulomb", **term.recipe()}, ELEMENTS)
    assert again.recipe() == term.recipe()
    assert again.pair_cutoff == term.pair_cutoff
    pot = coulomb_potential(method="pme", r_on=1.5, r_off=4.5, accuracy=1e-7)
    rebuilt = atomnet.Potential.from_recipe(pot.recipe())
    assert energy(rebuilt, water_box) == energy(pot, water_box)


def test_defaults():
    term = Coulomb(ELEMENTS)
    p = math.sqrt(-math.log(1e-6))
    assert (term.damping, term.method, term.r_on, term.r_off) == ("switch", "ewald", 2.0, 5.0)
    assert term.smearing == pytest.approx(term.real_space_cutoff / (math.sqrt(2) * p))
    assert term.pair_cutoff == max(term.real_space_cutoff, term.r_off)
    bare = Coulomb(ELEMENTS, damping="none", real_space_cutoff=4.0)
    assert bare.pair_cutoff == 4.0


@pytest.mark.parametrize("options", [
    {"damping": "erf"}, {"method": "p3m"}, {"r_on": 5.0, "r_off": 2.0}, {"accuracy": 2.0},
    {"smearing": -1.0}, {"interpolation_nodes": 8}, {"real_space_cutoff": "far"},
])
def test_bad_options(options):
    with pytest.raises(UsageError):
        Coulomb(ELEMENTS, **options)


def test_needs_a_charge_stage():
    with pytest.raises(UsageError, match="charges"):
        atomnet.Potential({"coulomb": Coulomb(ELEMENTS)}, ELEMENTS)


def test_slab_is_refused(water_slab):
    with pytest.raises(UsageError, match="slabs"):
        energy(coulomb_potential(), water_slab)
