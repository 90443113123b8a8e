"""The physics battery on an untrained BP potential: ethanol and a periodic water box.

Hard numbers (float64, through atomnet.Calculator): forces vs ASE finite
differences ≤ 1e-5 eV/Å, stress ≤ 1e-5 eV/Å³, Hessian ≤ 1e-4 eV/Å², energies
invariant under rotation to 1e-8 eV.
"""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule

from atomnet import testing
from atomnet.testing._tools import calculator

STRUCTURES = ["ethanol", "water_box"]


@pytest.mark.parametrize("name", STRUCTURES)
def test_potential_is_not_flat(potential, name, request):
    """Tolerances only mean something if forces are well above them."""
    atoms = request.getfixturevalue(name)
    atoms.calc = calculator(potential)
    forces = atoms.get_forces()
    assert np.abs(forces).max() > 1e-2, "untrained potential is too flat for the checks"
    assert np.median(np.linalg.norm(forces, axis=1)) > 1e-3


@pytest.mark.parametrize("name", STRUCTURES)
def test_forces_vs_finite_differences(potential, name, request):
    atoms = request.getfixturevalue(name)
    subset = range(0, len(atoms), 2) if len(atoms) > 12 else None  # keep it fast
    assert testing.check_forces_fd(potential, atoms, tol=1e-5, indices=subset) < 1e-5


def test_stress_vs_finite_differences(potential, water_box):
    assert testing.check_stress_fd(potential, water_box, tol=1e-5) < 1e-5


def test_stress_vs_finite_differences_many_images(potential, water_cell):
    assert testing.check_stress_fd(potential, water_cell, tol=1e-5) < 1e-5


def test_hessian_vs_finite_differences(potential, ethanol):
    assert testing.check_hessian_fd(potential, ethanol, tol=1e-4) < 1e-4


def test_hessian_periodic_self_images(potential, water_cell):
    assert testing.check_hessian_fd(potential, water_cell, tol=1e-4) < 1e-4


@pytest.mark.parametrize("name", [*STRUCTURES, "water_slab", "water_cell"])
def test_invariance(potential, name, request):
    atoms = request.getfixturevalue(name)
    assert testing.check_invariance(potential, atoms, tol=1e-8) < 1e-8


def test_separability(potential, ethanol):
    assert testing.check_separability(potential, ethanol, molecule("H2O"), tol=1e-8) < 1e-8


def test_no_cross_talk(potential, ethanol, water_box, water_cell):
    other = ethanol.copy()
    other.rattle(0.05, seed=3)
    error = testing.check_no_cross_talk(potential, [ethanol, water_box, other, water_cell])
    assert error < 1e-10


def test_no_cross_talk_periodic_with_stress(potential, water_box, water_cell):
    assert testing.check_no_cross_talk(potential, [water_cell, water_box, water_cell]) < 1e-10


def test_gradcheck_molecule(potential, ethanol):
    assert testing.check_gradcheck(potential, ethanol)


def test_gradcheck_positions_and_cell(potential, water_cell):
    assert testing.check_gradcheck(potential, water_cell)


def test_run_all(potential, water_cell):
    results = testing.run_all(potential, molecule("CH3OH"), periodic=water_cell)
    assert set(results) >= {"forces_fd", "stress_fd", "hessian_fd", "invariance",
                            "separability", "no_cross_talk", "gradcheck"}
    for name, error in results.items():
        assert error <= testing.TOLERANCES.get(name.removesuffix("_periodic"), 0.0), name


def test_atoms_without_neighbours(potential):
    """Isolated atoms (no edges, no triplets) batch and differentiate cleanly: zero force."""
    lone = [Atoms("O"), Atoms("H2", positions=[[0, 0, 0], [0, 0, 6.0]]), molecule("H2O")]
    assert testing.check_no_cross_talk(potential, lone) < 1e-10
    assert testing.check_forces_fd(potential, lone[1]) < 1e-5
    calc = calculator(potential)
    assert np.abs(calc.get_forces(lone[1])).max() == 0.0
