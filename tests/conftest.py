"""Common fixtures: a rattled ethanol molecule, a periodic water box, an untrained BP potential.

Every structure is built here, so the suite runs in a plain clone (no data
outside the repository). Derivative tests run in float64 via the ``dtype``
fixture; nothing here sets a global default dtype.

``skip_policy`` fails the session when a test skips or xfails for any reason
but an absent optional device or package (see tests/skip_policy.py).
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule

import atomnet

pytest_plugins = ["pytester", "skip_policy"]

REPO = Path(__file__).resolve().parents[1]
ELEMENTS = ["H", "C", "O"]
CUTOFF = 5.0
#: small but representative: every derivative path of the default BPNN
MODEL = {"type": "bpnn", "hidden": [32, 32]}


def make_ethanol(seed: int = 7) -> Atoms:
    """Ethanol (9 atoms, non-periodic), rattled by 0.05 Å: no symmetry, not at equilibrium."""
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.05, seed=seed)
    atoms.pbc = False
    return atoms


@pytest.fixture
def ethanol() -> Atoms:
    """A fresh rattled ethanol per test (9 atoms, non-periodic, no calculator)."""
    return make_ethanol()


def make_water_box(n: int = 2, spacing: float = 3.1, seed: int = 0) -> Atoms:
    """n³ water molecules on a cubic grid (≈ 1 g/cm³), randomly oriented, rattled, sheared."""
    rng = np.random.default_rng(seed)
    water = molecule("H2O")
    box = Atoms(cell=np.eye(3) * n * spacing, pbc=True)
    for x in range(n):
        for y in range(n):
            for z in range(n):
                m = water.copy()
                m.rotate(rng.uniform(0.0, 360.0), rng.normal(size=3))
                m.translate((np.array([x, y, z]) + 0.5) * spacing)
                box += m
    cell = box.cell.array.copy()
    cell[1, 0] += 0.3
    cell[2, 1] -= 0.2
    box.set_cell(cell, scale_atoms=True)
    box.rattle(0.05, seed=seed + 1)
    return box


@pytest.fixture
def water_box() -> Atoms:
    """8 water molecules (24 atoms) in a slightly sheared periodic cell, ~6.2 Å edges."""
    return make_water_box()


@pytest.fixture
def water_cell() -> Atoms:
    """One water molecule in a 3.1 Å sheared cell: every atom sees many of its own images."""
    return make_water_box(n=1)


@pytest.fixture
def water_slab() -> Atoms:
    """The water box periodic in x and y only (mixed boundary conditions)."""
    atoms = make_water_box()
    atoms.pbc = [True, True, False]
    return atoms


@pytest.fixture
def dtype() -> torch.dtype:
    """dtype of derivative tests."""
    return torch.float64


def build_potential(dtype: torch.dtype = torch.float64, seed: int = 0) -> atomnet.Potential:
    """Untrained BPNN for H, C, O with a fixed seed; the global RNG is left untouched."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        potential = atomnet.build(MODEL, ELEMENTS, cutoff=CUTOFF)
    return potential.to(dtype)


@pytest.fixture(scope="session")
def _potential64() -> atomnet.Potential:
    return build_potential(torch.float64)


@pytest.fixture
def potential(_potential64: atomnet.Potential, dtype: torch.dtype) -> atomnet.Potential:
    """A fresh copy per test (calculators move and freeze the module they are given)."""
    return copy.deepcopy(_potential64).to(dtype)
