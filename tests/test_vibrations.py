"""Vibrational analysis from exact Hessians, against independent oracles.

Oracles: central finite differences (ASE's ``Vibrations`` with the same calculator, and
differences of the dipole), closed-form diatomic frequencies (harmonic and Morse, SI
constants), the known 974.86 km/mol per e²/amu, and block structure of the Hessian.
A test-only Morse pair term is registered here as ``test_morse``.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.build import molecule
from ase.vibrations import Vibrations
from conftest import ELEMENTS, MODEL, make_water_box

import atomnet
from atomnet import keys
from atomnet.derivatives import hessian, hessians
from atomnet.errors import UsageError
from atomnet.physics import FixedCharges
from atomnet.structures import collate
from atomnet.terms import Term, register
from atomnet.vibrations import (
    KM_PER_MOL_PER_E2_AMU,
    VibrationWarning,
    harmonic_modes,
    rigid_body_basis,
    vibrations,
)

CHARGES = {"H": 0.35, "C": -0.15, "O": -0.6}


@register("test_morse")
class Morse(Term):
    """E_i = ½ Σ_j D (1 − exp(−a (r_ij − r0)))² (``harmonic``: ½ Σ_j ½ k (r − r0)², k = 2Da²)."""

    def __init__(self, elements, depth=4.5, width=1.9, r0=1.27, harmonic=False, cutoff=6.0):
        super().__init__()
        self.depth, self.width, self.r0 = float(depth), float(width), float(r0)
        self.harmonic, self.pair_cutoff = bool(harmonic), float(cutoff)
        self.fields = keys.pairs(self.pair_cutoff)
        self.reads = (self.fields.index, self.fields.lengths)

    def recipe(self):
        return {"depth": self.depth, "width": self.width, "r0": self.r0,
                "harmonic": self.harmonic, "cutoff": self.pair_cutoff}

    def forward(self, graph):
        i, _ = graph[self.fields.index]
        x = graph[self.fields.lengths] - self.r0
        if self.harmonic:
            pair = self.depth * self.width**2 * x * x  # ½ k x², k = 2Da²
        else:
            pair = self.depth * (1.0 - torch.exp(-self.width * x)) ** 2
        return pair.new_zeros(graph[keys.SPECIES].shape[0]).index_add(0, i, 0.5 * pair)


def _bp(elements=ELEMENTS, seed=0):
    torch.manual_seed(seed)
    return atomnet.build(MODEL, elements=elements)


def _charged(seed=0):
    pot = _bp(seed=seed)
    return atomnet.Potential(dict(pot.terms), ELEMENTS,
                             stages={"charges": FixedCharges(ELEMENTS, CHARGES)})


@pytest.fixture(scope="module")
def relaxed():
    """Ethanol relaxed with an untrained BP model (fmax 1e-5 eV/Å), and its calculator."""
    calc = atomnet.Calculator(_bp())
    vib = vibrations(molecule("CH3CH2OH"), calc, optimize=True, fmax=1e-5)
    return vib.atoms, calc, vib


def _ase_frequencies(atoms, calc, tmp_path, indices=None):
    atoms = atoms.copy()
    atoms.calc = calc
    vib = Vibrations(atoms, name=str(tmp_path / "ase_vib"), delta=0.005, nfree=4,
                     indices=indices)
    vib.run()
    return np.sort(np.real(vib.get_frequencies()))


# --- Hessians -------------------------------------------------------------------------


def test_batched_hessians_are_per_structure(ethanol):
    """One Hessian per structure, equal to each one's own; rows chunked any way."""
    pot = _bp().double()
    water = molecule("H2O")
    water.rattle(0.03, seed=1)
    graphs = [pot.graph(a, labels=False) for a in (ethanol, water)]
    batch = collate(graphs)
    blocks = hessians(pot, batch, chunk=5)
    assert [b.shape for b in blocks] == [(27, 27), (9, 9)]
    for block, g in zip(blocks, graphs):
        torch.testing.assert_close(block, hessian(pot, g, chunk=64), rtol=0, atol=1e-12)
    with pytest.raises(UsageError, match="one structure"):
        hessian(pot, batch)


def test_partial_hessian_is_the_block_of_the_full_one(ethanol):
    pot = _bp().double()
    g = pot.graph(ethanol, labels=False)
    full = hessian(pot, g)
    idx = [7, 2, 5]
    part = hessian(pot, g, indices=idx)
    coords = np.array([[3 * i, 3 * i + 1, 3 * i + 2] for i in sorted(idx)]).ravel()
    torch.testing.assert_close(part, full[coords][:, coords], rtol=0, atol=1e-12)
    for bad in ([], [0, 0], [9], [-1], [0.5]):
        with pytest.raises(UsageError, match="indices"):
            hessian(pot, g, indices=bad)


@pytest.mark.parametrize("case", ["molecule", "small cell", "batch", "fixed charges",
                                  "one atom", "diatomic"])
def test_local_hessian_equals_rows(case, ethanol):
    """The Hessian assembled from the BP model's local pieces equals 3N full backward
    passes (themselves checked against finite differences in test_physics)."""
    pot = _charged() if case == "fixed charges" else _bp()
    pot = pot.double()
    if case == "small cell":  # 3.1 Å box, 5 Å cutoff: atoms see their own images
        graph = pot.graph(make_water_box(1), labels=False)
    elif case in ("one atom", "diatomic"):  # no pairs; pairs but no angular triplets
        graph = pot.graph(Atoms("O") if case == "one atom" else
                          Atoms("OH", positions=[[0, 0, 0], [0.3, 0.2, 0.9]]), labels=False)
    elif case == "batch":
        water = molecule("H2O")
        water.rattle(0.03, seed=1)
        graph = collate([pot.graph(a, labels=False) for a in (ethanol, water)])
    else:
        graph = pot.graph(ethanol, labels=False)
    local = hessians(pot, graph, method="local", chunk=7)
    rows = hessians(pot, graph, method="rows")
    for a, b in zip(local, rows, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-11)
    if case == "molecule":
        part = hessian(pot, graph, indices=[1, 4], method="local")
        torch.testing.assert_close(part, hessian(pot, graph, indices=[1, 4], method="rows"),
                                   rtol=0, atol=1e-11)


def test_out_of_memory_is_not_swallowed(ethanol, monkeypatch):
    """Only a missing batching rule falls back to one row at a time; OOM propagates."""
    pot = _bp().double()
    graph = pot.graph(ethanol, labels=False)
    reference = hessian(pot, graph, method="rows")
    real = torch.autograd.grad

    def failing(error):
        def grad(*args, **kwargs):
            if kwargs.get("is_grads_batched"):
                raise error
            return real(*args, **kwargs)
        return grad

    monkeypatch.setattr(torch.autograd, "grad", failing(torch.OutOfMemoryError("CPU OOM")))
    with pytest.raises(torch.OutOfMemoryError):
        hessian(pot, graph, method="rows")
    monkeypatch.setattr(torch.autograd, "grad", failing(RuntimeError("no batching rule")))
    with pytest.warns(RuntimeWarning, match="one by one"):
        fallback = hessian(pot, graph, method="rows")
    torch.testing.assert_close(fallback, reference, rtol=0, atol=1e-12)


def test_terms_without_local_structure_take_the_rows_path():
    pot = atomnet.Potential({"bond": Morse(["H", "Cl"])}, ["H", "Cl"]).double()
    graph = pot.graph(Atoms("HCl", positions=[[0, 0, 0], [0.4, 0.5, 1.1]]), labels=False)
    with pytest.raises(UsageError, match="method='rows'"):
        hessian(pot, graph, method="local")
    assert torch.isfinite(hessian(pot, graph)).all()
    with pytest.raises(UsageError, match="method must be"):
        hessian(pot, graph, method="fast")


# --- frequencies against ASE's finite differences ----------------------------------------


def test_frequencies_match_ase_finite_differences(relaxed, tmp_path):
    atoms, calc, vib = relaxed
    assert vib.max_force < 1e-4
    reference = _ase_frequencies(atoms, calc, tmp_path)[6:]  # ASE keeps 6 near-zero modes
    ours = vib.frequencies
    assert len(ours) == 3 * len(atoms) - 6
    high = reference > 100.0
    assert high.sum() >= 15
    np.testing.assert_allclose(ours[high], reference[high], atol=1.0)


def test_partial_frequencies_match_ase(relaxed, tmp_path):
    atoms, calc, _ = relaxed
    idx = [0, 1, 2]  # the heavy-atom frame moves, the hydrogens are clamped
    vib = vibrations(atoms, calc, indices=idx)
    assert vib.projection == "none" and len(vib.frequencies) == 9
    reference = _ase_frequencies(atoms, calc, tmp_path, indices=idx)
    high = reference > 100.0
    np.testing.assert_allclose(vib.frequencies[high], reference[high], atol=1.0)


# --- projection ---------------------------------------------------------------------------


@pytest.mark.parametrize("name, n_rigid", [("CH3CH2OH", 6), ("CO2", 5)])
def test_projection_removes_translations_and_rotations(name, n_rigid):
    """After projection exactly k frequencies are below 1 cm⁻¹ (k = 6, or 5 when linear),
    even at a geometry far from equilibrium where the rotations are not zero modes."""
    atoms = molecule(name)
    if name != "CO2":
        atoms.rattle(0.1, seed=3)  # far from a minimum: rotations carry torque
    with pytest.warns(VibrationWarning, match="residual force"):
        vib = vibrations(atoms, atomnet.Calculator(_bp()))
    assert vib._modes.n_rigid == n_rigid
    assert len(vib.frequencies) == 3 * len(atoms) - n_rigid
    spectrum = vib.all_frequencies()
    assert (np.abs(spectrum) < 1.0).sum() == n_rigid
    np.testing.assert_allclose(np.sort(spectrum[np.abs(spectrum) >= 1.0]),
                               np.sort(vib.frequencies[np.abs(vib.frequencies) >= 1.0]),
                               atol=1e-6)
    rigid = rigid_body_basis(vib.atoms.positions, vib.masses)
    assert np.abs(vib.mass_weighted_modes @ rigid).max() < 1e-10
    if name != "CO2":  # the unprojected Hessian does not have rotational zero modes here
        assert np.abs(vib.rigid_frequencies).max() > 1.0


def test_analysis_reproduces_pyscf_frequencies():
    """Our mass weighting, projection and constants on PySCF's own DFT Hessian (bundled)
    give PySCF's harmonic frequencies (an independent implementation)."""
    from ase.io import read
    from conftest import REPO

    atoms = read(REPO / "data" / "methanol_frequencies.xyz")
    n = len(atoms)
    modes = harmonic_modes(np.asarray(atoms.info["hessian"]).reshape(3 * n, 3 * n),
                           np.asarray(atoms.info["frequency_masses"]), atoms.positions)
    np.testing.assert_allclose(modes.frequencies, atoms.info["frequencies_cm"], atol=0.05)


# --- analytic diatomics ------------------------------------------------------------------


@pytest.mark.parametrize("harmonic", [False, True])
def test_diatomic_frequency_is_analytic(harmonic):
    """ω = a·sqrt(2D/μ) (Morse) = sqrt(k/μ) (harmonic, k = 2Da²), in SI then cm⁻¹."""
    depth, width, r0 = 4.5, 1.9, 1.27
    pot = atomnet.Potential({"bond": Morse(["H", "Cl"], depth, width, r0, harmonic)},
                            ["H", "Cl"])
    atoms = Atoms("HCl", positions=[[0, 0, 0], np.ones(3) * r0 / math.sqrt(3)])  # off-axis
    vib = vibrations(atoms, pot)
    masses = atoms.get_masses() * units._amu
    mu = masses.prod() / masses.sum()
    omega = width * 1e10 * math.sqrt(2 * depth * units._e / mu)  # rad/s
    expected = omega / (2 * math.pi * units._c) / 100.0  # cm⁻¹
    assert vib._modes.n_rigid == 5 and vib.frequencies.shape == (1,)  # linear
    assert vib.frequencies[0] == pytest.approx(expected, rel=1e-9)
    # Gaussian's reduced mass 1/Σx² of the normalised mode: M²μ/(m₁² + m₂²)
    mu_g = masses.sum() ** 2 * mu / (masses**2).sum() / units._amu
    assert vib.reduced_masses[0] == pytest.approx(mu_g, rel=1e-9)
    assert vib.force_constants[0] == pytest.approx(
        2 * depth * width**2 * mu_g * units._amu / mu, rel=1e-9)
    t = vib.thermo(T=300.0, p=1e5)
    assert t.kind == "ideal_gas" and t.model.geometry == "linear"
    assert t.zpe == pytest.approx(0.5 * vib.energies[0], rel=1e-12)
    assert t.gibbs == pytest.approx(t.enthalpy - 300.0 * t.entropy, rel=1e-12)


def test_imaginary_modes_are_negative_and_flagged():
    """Stretched past the inflection point, the Morse curvature is negative."""
    pot = atomnet.Potential({"bond": Morse(["H", "Cl"])}, ["H", "Cl"])
    atoms = Atoms("HCl", positions=[[0, 0, 0], [0, 0, 1.27 + math.log(2) / 1.9 + 0.2]])
    with pytest.warns(VibrationWarning):
        vib = vibrations(atoms, pot)
    assert vib.frequencies[0] < 0 and vib.imaginary[0]
    assert "i" in vib.table().splitlines()[1]
    with pytest.raises(UsageError, match="imaginary"):
        vib.thermo()


# --- IR --------------------------------------------------------------------------------


def test_km_per_mol_constant():
    # 42.2561 km/mol per (D/Å)²/amu (e.g. Gaussian, ASE) × (1 e·Å in Debye)²
    assert KM_PER_MOL_PER_E2_AMU == pytest.approx(42.2561 * (1 / units.Debye) ** 2, rel=1e-4)


def test_ir_intensities_match_dipole_finite_differences(ethanol):
    calc = atomnet.Calculator(_charged())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VibrationWarning)
        vib = vibrations(ethanol, calc)
    assert vib.ir_intensities is not None and vib.ir_intensities.shape == vib.frequencies.shape
    inv_sqrt_m = 1 / np.sqrt(vib.masses)
    h = 1e-4
    probe = vib.atoms.copy()
    probe.calc = calc
    fd = []
    for q in vib.mass_weighted_modes:
        step = (q.reshape(-1, 3) * inv_sqrt_m[:, None]) * h
        probe.positions = vib.atoms.positions + step
        plus = probe.get_dipole_moment()
        probe.positions = vib.atoms.positions - step
        minus = probe.get_dipole_moment()
        fd.append(KM_PER_MOL_PER_E2_AMU * np.sum(((plus - minus) / (2 * h)) ** 2))
    np.testing.assert_allclose(vib.ir_intensities, fd, rtol=1e-6, atol=1e-8)
    assert vib.ir_intensities.max() > 1.0


def test_ir_is_absent_without_charges(relaxed):
    atoms, calc, vib = relaxed
    assert vib.ir_intensities is None and vib.dipole_derivatives is None
    with pytest.raises(UsageError, match="charges"):
        vibrations(atoms, calc, ir=True)


# --- robustness, periodic cells, ASE hand-over ------------------------------------------------


def test_warns_with_residual_force_and_optimises_when_asked(ethanol):
    calc = atomnet.Calculator(_bp())
    with pytest.warns(VibrationWarning, match=r"residual force \d\.\d\de[-+]\d\d eV/Å"):
        vibrations(ethanol, calc)
    with warnings.catch_warnings():
        warnings.simplefilter("error", VibrationWarning)
        vib = vibrations(ethanol, calc, optimize=True, fmax=1e-4)
    assert vib.max_force < 1e-4
    np.testing.assert_array_equal(ethanol.positions, make_ethanol_positions())


def make_ethanol_positions():
    from conftest import make_ethanol

    return make_ethanol().positions


def test_non_finite_model_is_a_clear_error(ethanol):
    pot = _bp()
    with torch.no_grad():
        next(pot.terms["short_range"].parameters()).fill_(float("nan"))
    with pytest.raises(UsageError, match="non-finite"):
        vibrations(ethanol, pot)
    with pytest.raises(UsageError, match="ase.Atoms"):
        vibrations("ethanol.xyz", pot)
    with pytest.raises(UsageError, match="calculator"):
        vibrations(ethanol, None)


def test_partial_optimisation_moves_only_the_chosen_atoms(ethanol):
    vib = vibrations(ethanol, atomnet.Calculator(_bp()), optimize=True, indices=[3, 4],
                     fmax=1e-4)
    moved = np.linalg.norm(vib.atoms.positions - ethanol.positions, axis=1)
    assert moved[[3, 4]].min() > 1e-4 and np.delete(moved, [3, 4]).max() == 0.0
    assert vib.max_force < 1e-4 and not vib.atoms.constraints


def test_slab_projects_translations():
    slab = make_water_box(1)
    slab.pbc = [True, True, False]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VibrationWarning)
        vib = vibrations(slab, _bp(["H", "O"]))
    assert vib.projection == "translations"
    assert (np.abs(vib.all_frequencies()) < 1.0).sum() == 3


def test_periodic_cell_gamma_modes():
    """A small cell (atoms see their own images): 3 translations projected, thermo harmonic."""
    box = make_water_box(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VibrationWarning)
        vib = vibrations(box, _bp(["H", "O"]))
    assert vib.projection == "translations" and len(vib.frequencies) == 3 * len(box) - 3
    assert (np.abs(vib.all_frequencies()) < 1.0).sum() == 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VibrationWarning)  # an untrained model: imaginary modes
        t = vib.thermo(T=300.0)
    assert t.kind == "harmonic" and t.pressure is None
    assert t.gibbs == pytest.approx(t.enthalpy - 300.0 * t.entropy)


def test_to_ase_has_the_same_hessian(relaxed):
    _, _, vib = relaxed
    data = vib.to_ase()
    np.testing.assert_allclose(data.get_hessian_2d(), vib.hessian)
    high = vib.frequencies > 100
    ase_freq = np.sort(np.real(data.get_frequencies()))[6:]
    np.testing.assert_allclose(ase_freq[high], vib.frequencies[high], atol=0.5)


def test_harmonic_modes_checks_its_input():
    with pytest.raises(ValueError, match="shape"):
        harmonic_modes(np.eye(5), np.ones(2), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="non-finite"):
        harmonic_modes(np.full((6, 6), np.nan), np.ones(2), np.zeros((2, 3)))
