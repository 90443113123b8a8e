"""The ASE calculator: optimisation, NVE dynamics, dtypes, devices, errors, contributions."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from ase import units
from ase.build import molecule
from ase.calculators.calculator import PropertyNotImplementedError
from ase.md.verlet import VelocityVerlet
from ase.optimize import BFGS

import atomnet
from atomnet.derivatives import evaluate
from atomnet.errors import UsageError
from atomnet.structures import StructureError

E0S = {"H": -13.6, "C": -1029.8, "O": -2041.3}


def _calc(potential, **kwargs) -> atomnet.Calculator:
    """A calculator on a copy (calculators cast and freeze the module they get)."""
    return atomnet.Calculator(copy.deepcopy(potential), **kwargs)


def test_bfgs_lowers_the_energy(potential, ethanol):
    ethanol.rattle(0.1, seed=0)
    ethanol.calc = _calc(potential)
    e_start = ethanol.get_potential_energy()
    f_start = np.abs(ethanol.get_forces()).max()
    BFGS(ethanol, logfile=None).run(fmax=1e-4, steps=5)
    assert ethanol.get_potential_energy() < e_start - 1e-3
    assert np.abs(ethanol.get_forces()).max() < f_start


def _set_velocities(atoms, temperature_k: float, seed: int) -> None:
    """Maxwell–Boltzmann velocities (no centre-of-mass motion), ASE units."""
    rng = np.random.default_rng(seed)
    masses = atoms.get_masses()[:, None]
    momenta = rng.normal(size=(len(atoms), 3)) * np.sqrt(masses * units.kB * temperature_k)
    momenta -= masses * momenta.sum(0) / masses.sum()
    atoms.set_momenta(momenta)


def test_nve_conserves_energy(potential, ethanol):
    """100 steps of 0.5 fs: total-energy drift ≪ potential-energy fluctuations."""
    ethanol.calc = _calc(potential)
    _set_velocities(ethanol, 300.0, seed=0)
    total, potential_energy = [], []

    def record():
        total.append(ethanol.get_total_energy())
        potential_energy.append(ethanol.get_potential_energy())

    dyn = VelocityVerlet(ethanol, timestep=0.5 * units.fs)
    dyn.attach(record, interval=1)
    dyn.run(100)
    drift = np.abs(np.array(total) - total[0]).max()
    fluctuation = np.std(potential_energy)
    assert fluctuation > 1e-3, "potential too flat for a meaningful NVE test"
    assert drift < 1e-2 * fluctuation, f"drift {drift:.2e} eV vs fluctuation {fluctuation:.2e} eV"


def test_float32_matches_float64(potential, water_box):
    results = {}
    for dtype in ("float32", "float64"):
        atoms = water_box.copy()
        atoms.calc = _calc(potential, dtype=dtype)
        results[dtype] = (atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress())
    (e32, f32, s32), (e64, f64, s64) = results["float32"], results["float64"]
    assert abs(e32 - e64) <= 1e-4 * abs(e64)
    assert np.abs(f32 - f64).max() <= 1e-4 * np.abs(f64).max()
    assert np.abs(s32 - s64).max() <= 1e-3 * np.abs(s64).max()


def test_stress_matches_derivatives_module(potential, water_box):
    water_box.calc = _calc(potential)
    stress = water_box.get_stress(voigt=False)
    expected = evaluate(potential, potential.graph(water_box), stress=True).stress[0]
    np.testing.assert_allclose(stress, expected.detach().numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(stress, stress.T, atol=1e-14)


@pytest.mark.parametrize("pbc", [False, [True, True, False]])
def test_stress_needs_3d_periodic_cell(potential, water_box, pbc):
    water_box.pbc = pbc
    water_box.calc = _calc(potential)
    with pytest.raises(PropertyNotImplementedError):
        water_box.get_stress()


def test_stress_on_molecule_raises(potential, ethanol):
    ethanol.calc = _calc(potential)
    with pytest.raises(PropertyNotImplementedError):
        ethanol.get_stress()


def test_unknown_element_raises_structure_error(potential):
    atoms = molecule("NH3")
    atoms.calc = _calc(potential)
    with pytest.raises(StructureError, match=r"element\(s\) N not known to the model"):
        atoms.get_potential_energy()


def test_contributions_and_per_atom_energies(potential, ethanol):
    potential.terms["e0"].set(E0S)
    ethanol.calc = _calc(potential)
    energy = ethanol.get_potential_energy()
    contributions = ethanol.calc.results["contributions"]
    assert set(contributions) == {"e0", "short_range"}
    assert contributions["e0"] == pytest.approx(sum(E0S[s] for s in ethanol.get_chemical_symbols()))
    assert abs(contributions["short_range"]) > 1e-3
    assert sum(contributions.values()) == pytest.approx(energy, abs=1e-9)
    assert ethanol.get_potential_energies().sum() == pytest.approx(energy, abs=1e-9)
    assert ethanol.calc.results["free_energy"] == energy


def test_hessian_shape_and_symmetry(potential):
    atoms = molecule("H2O")
    calc = _calc(potential)
    hessian = calc.get_hessian(atoms)
    assert hessian.shape == (9, 9) and hessian.dtype == np.float64
    np.testing.assert_allclose(hessian, hessian.T, atol=1e-12)
    # translating the molecule costs nothing: rows sum to zero over atoms per direction
    np.testing.assert_allclose(hessian.reshape(9, 3, 3).sum(1), 0.0, atol=1e-10)


def test_own_results_are_not_read_as_labels(potential):
    """Regression: forces of a previous 3-atom structure must not be taken as labels."""
    calc = _calc(potential)
    water = molecule("H2O")
    water.calc = calc
    water.get_forces()
    methane = molecule("CH4")
    methane.calc = calc
    assert calc.get_hessian(methane).shape == (15, 15)


def test_calculator_leaves_caller_potential_untouched(potential, ethanol):
    potential = potential.float().train()
    atomnet.Calculator(potential, dtype="float64").get_potential_energy(ethanol)
    assert next(potential.parameters()).dtype == torch.float32
    assert all(p.requires_grad for p in potential.parameters())
    assert potential.training


def test_bad_dtype(potential):
    with pytest.raises(ValueError, match="dtype"):
        _calc(potential, dtype="float16")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(potential, water_box):
    results = {}
    for device in ("cpu", "cuda"):
        atoms = water_box.copy()
        atoms.calc = _calc(potential, device=device, dtype="float64")
        results[device] = (atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress())
    for cpu, gpu in zip(results["cpu"], results["cuda"]):
        np.testing.assert_allclose(gpu, cpu, rtol=1e-9, atol=1e-10)
    hessian = _calc(potential, device="cuda").get_hessian(molecule("H2O"))
    np.testing.assert_allclose(hessian, _calc(potential).get_hessian(molecule("H2O")), atol=1e-9)


def test_cuda_request_without_cuda_is_clear(potential, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # runs on GPU hosts too
    with pytest.raises(UsageError, match="CUDA is not available"):
        _calc(potential, device="cuda")


def test_calculator_thread_setting_is_restored_and_results_unchanged(potential, ethanol):
    """Small systems run on one intra-op thread; torch's process setting is restored."""
    before = torch.get_num_threads()
    ethanol = ethanol.copy()
    ethanol.calc = atomnet.Calculator(potential, dtype="float64")
    forces_auto = ethanol.get_forces()
    assert torch.get_num_threads() == before
    ethanol.calc = atomnet.Calculator(potential, dtype="float64", threads=2)
    np.testing.assert_allclose(ethanol.get_forces(), forces_auto, atol=1e-12)
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="threads must be a positive integer"):
        atomnet.Calculator(potential, threads=0)
