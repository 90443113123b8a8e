"""Verlet skin in the calculator: reused pair lists give a fresh list's results.

The calculator builds its pair lists at cutoff + skin and reuses them until an atom has
moved more than skin/2; parts whose contributions vanish exactly beyond their cutoff
make the extra pairs contribute exactly zero (tests/test_verlet.py checks it along MD).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import units
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
from ase.md.verlet import VelocityVerlet
from conftest import make_ethanol, make_water_box

import atomnet
from atomnet.errors import UsageError

ELEMENTS = ["H", "C", "O"]


def _model(physics=None):
    torch.manual_seed(0)
    model = {"type": "bpnn", "hidden": [16, 16]}
    if physics:
        model["physics"] = physics
    return atomnet.build(model, ELEMENTS, cutoff=4.0)


@pytest.mark.parametrize("make", [make_ethanol, make_water_box])
def test_forces_along_nve_equal_a_fresh_calculator(make):
    """300 steps of float64 NVE with the default (skinned) calculator: the lists are
    reused, and the forces at the end equal a fresh calculator's to 1e-9 eV/Å."""
    pot = _model({"charges": "learned", "repulsion": {"method": "zbl"}})
    atoms = make()
    atoms.calc = atomnet.Calculator(pot, dtype="float64")
    assert atoms.calc.active_skin == 0.5
    MaxwellBoltzmannDistribution(atoms, temperature_K=600, rng=np.random.default_rng(0))
    VelocityVerlet(atoms, timestep=0.5 * units.fs).run(300)
    calc = atoms.calc
    assert 1 <= calc.rebuilds < 60, calc.rebuilds  # reused (~35 builds measured), and rebuilt
    fresh = atoms.copy()
    fresh.calc = atomnet.Calculator(pot, dtype="float64", skin=0.0)
    assert np.abs(atoms.get_forces() - fresh.get_forces()).max() < 1e-9
    assert abs(atoms.get_potential_energy() - fresh.get_potential_energy()) < 1e-9
    assert np.abs(atoms.get_charges() - fresh.get_charges()).max() < 1e-12
    if atoms.pbc.all():
        assert np.abs(atoms.get_stress() - fresh.get_stress()).max() < 1e-9


def test_lists_are_rebuilt_when_needed():
    pot = _model()
    atoms = make_ethanol()
    calc = atomnet.Calculator(pot, dtype="float64", skin=0.4)
    atoms.calc = calc
    atoms.get_forces()
    assert calc.rebuilds == 1
    atoms.positions[0] += [0.15, 0.0, 0.0]  # < skin/2: reused
    atoms.get_forces()
    assert calc.rebuilds == 1
    atoms.positions[0] += [0.1, 0.0, 0.0]  # 0.25 Å since the build: > skin/2
    atoms.get_forces()
    assert calc.rebuilds == 2
    atoms.info["charge"] = 1.0  # any change of what the graph holds
    atoms.get_forces()
    assert calc.rebuilds == 3
    atoms.positions[1] = np.nan  # bad input still gets the full validation
    with pytest.raises(Exception, match="(?i)nan|finite"):
        atoms.get_forces()


def test_skin_is_off_for_parts_that_read_every_listed_pair():
    """D3 and Ewald's real-space sum truncate hard at their cutoff: no skin for them."""
    pot = _model({"dispersion": {"method": "d3bj", "functional": "pbe", "three_body": False,
                                 "mode": "add", "cutoff": 8.0, "cn_cutoff": 6.0}})
    calc = atomnet.Calculator(pot, dtype="float64")
    assert calc.skin == 0.5 and calc.active_skin == 0.0
    with pytest.raises(UsageError, match="skin"):
        atomnet.Calculator(pot, skin=-1.0)
