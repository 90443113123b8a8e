"""The TorchScript export for LAMMPS, checked in Python against atomnet.Calculator.

LAMMPS hands the module local + ghost atoms (image-shifted copies) and a full pair list;
these tests build the same view with ASE's neighbour list, so they need no LAMMPS:
energies per atom and forces (ghost forces folded back onto their owners) must equal the
calculator's, and the virial Σ r⊗f over local and ghost atoms (LAMMPS's fdotr) its stress.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import molecule
from ase.neighborlist import neighbor_list
from conftest import make_water_box

import atomnet
from atomnet.cli.main import main
from atomnet.errors import UsageError
from atomnet.lammps.export import export, load_exported
from atomnet.physics import Coulomb, FixedCharges

ELEMENTS = ["H", "C", "O"]


def _potential(cutoff_fn="polynomial", activation="silu"):
    torch.manual_seed(3)
    pot = atomnet.build({"type": "bpnn", "hidden": [24, 16], "cutoff_fn": cutoff_fn,
                         "activation": activation}, elements=ELEMENTS,
                        e0s={"H": -13.6, "C": -1025.3, "O": -2035.5})
    with torch.no_grad():  # non-trivial normalisation, as after training
        bp = pot.terms["short_range"]
        bp.feature_std.uniform_(0.5, 2.0)
        bp.feature_mean.uniform_(-0.1, 0.1)
        bp.scale.fill_(0.7)
        bp.shift.fill_(-0.2)
    return pot


def lammps_view(atoms, reach: float):
    """(positions, species, edge_index, nlocal, owner) as LAMMPS would pass them: local
    atoms, then one ghost per (atom, image) within ``reach``, and every pair (i < nlocal)."""
    n = len(atoms)
    i, j, shifts = neighbor_list("ijS", atoms, reach)
    positions = list(atoms.positions)
    owner = list(range(n))
    ghost = {}
    targets = []
    for b, s in zip(j, shifts):
        if not s.any():
            targets.append(b)
            continue
        key = (b, *s)
        if key not in ghost:
            ghost[key] = len(positions)
            positions.append(atoms.positions[b] + s @ atoms.cell.array)
            owner.append(b)
        targets.append(ghost[key])
    species = [ELEMENTS.index(s) for s in atoms.get_chemical_symbols()]
    species = torch.tensor([species[o] for o in owner])
    edges = torch.tensor(np.stack([i, np.array(targets, dtype=np.int64)]))
    return torch.tensor(np.array(positions)), species, edges, n, np.array(owner)


def _run(module, atoms, reach, dtype=torch.float64):
    pos, species, edges, nlocal, owner = lammps_view(atoms, reach)
    pos = pos.to(dtype).requires_grad_(True)
    energies = module(pos, species, edges, nlocal)
    grad = torch.autograd.grad(energies.sum(), pos)[0].double().numpy()
    forces = np.zeros((nlocal, 3))
    np.add.at(forces, owner, -grad)  # LAMMPS's reverse communication
    virial = -(pos.detach().double().numpy().T @ grad)  # Σ_a r_a ⊗ f_a, ghosts included
    return energies.detach().double().numpy(), forces, virial


@pytest.mark.parametrize("kind", ["molecule", "cell with self-images", "2x2x2 cell"])
def test_export_matches_the_calculator(kind, tmp_path):
    pot = _potential()
    module = load_exported(export(pot, tmp_path / "model.pt"))
    if kind == "molecule":
        atoms = molecule("CH3CH2OH")
        atoms.rattle(0.05, seed=1)
    else:
        atoms = make_water_box(1 if kind == "cell with self-images" else 2)
    calc = atomnet.Calculator(pot)
    atoms.calc = calc
    ref_forces = atoms.get_forces()
    ref_energies = calc.results["energies"]
    energies, forces, virial = _run(module, atoms, pot.cutoff + 1.0)  # farther pairs ignored
    np.testing.assert_allclose(energies, ref_energies, rtol=0, atol=1e-10)
    np.testing.assert_allclose(forces, ref_forces, rtol=0, atol=1e-10)
    if kind != "molecule":
        stress = -0.5 * (virial + virial.T) / atoms.get_volume()
        ref = atoms.get_stress(voigt=False)
        np.testing.assert_allclose(stress, ref, rtol=0, atol=1e-10)


@pytest.mark.parametrize("cutoff_fn, activation", [("cosine", "tanh"), ("polynomial", "celu")])
def test_export_follows_the_recipe(cutoff_fn, activation, tmp_path):
    pot = _potential(cutoff_fn, activation)
    module = load_exported(export(pot, tmp_path / "model.pt"))
    atoms = make_water_box(2)
    calc = atomnet.Calculator(pot)
    atoms.calc = calc
    ref_forces = atoms.get_forces()
    energies, forces, _ = _run(module, atoms, pot.cutoff)
    np.testing.assert_allclose(energies, calc.results["energies"], rtol=0, atol=1e-10)
    np.testing.assert_allclose(forces, ref_forces, rtol=0, atol=1e-10)


def test_float32_export_and_attributes(tmp_path):
    pot = _potential()
    module = load_exported(export(pot, tmp_path / "model32.pt", dtype="float32"))
    assert module.elements == ELEMENTS and module.cutoff == pot.cutoff
    assert module.num_interactions == 1 and module.dtype == "float32"
    assert module.atomnet_version == atomnet.__version__
    atoms = make_water_box(2)
    energies, forces, _ = _run(module, atoms, pot.cutoff, dtype=torch.float32)
    atoms.calc = atomnet.Calculator(pot)
    assert abs(energies.sum() - atoms.get_potential_energy()) < 1e-3 * len(atoms)
    np.testing.assert_allclose(forces, atoms.get_forces(), atol=1e-3)


def test_a_domain_without_some_element_and_without_pairs(tmp_path):
    """A LAMMPS domain may hold no atom of an element, or atoms with no neighbours."""
    pot = _potential()
    module = load_exported(export(pot, tmp_path / "model.pt"))
    atoms = molecule("H2O")
    atoms.calc = atomnet.Calculator(pot)
    energies, forces, _ = _run(module, atoms, pot.cutoff)
    np.testing.assert_allclose(forces, atoms.get_forces(), rtol=0, atol=1e-10)
    lonely = module(torch.zeros(1, 3, dtype=torch.float64), torch.tensor([1]),
                    torch.zeros(2, 0, dtype=torch.long), 1)
    single = molecule("CH4")[:1]
    single.calc = atomnet.Calculator(pot)
    assert lonely.item() == pytest.approx(single.get_potential_energy(), abs=1e-10)


def test_only_bp_models_export(tmp_path):
    pot = _potential()
    stages = {"charges": FixedCharges(ELEMENTS, {"H": 0.4, "C": -0.2, "O": -0.8})}
    coulomb = atomnet.Potential({**pot.terms, "coulomb": Coulomb(ELEMENTS)}, ELEMENTS,
                                stages=stages)
    with pytest.raises(UsageError, match="charges.*coulomb"):
        export(coulomb, tmp_path / "x.pt")
    assert not (tmp_path / "x.pt").exists()


def test_a_charge_head_for_dipoles_only_is_left_out(tmp_path):
    """Charges that no energy term reads do not change the energy: the export drops them
    and gives the ASE calculator's energies and forces."""
    pot = _potential()
    dipoles = atomnet.Potential(dict(pot.terms), ELEMENTS, stages={
        "charges": FixedCharges(ELEMENTS, {"H": 0.4, "C": -0.2, "O": -0.8})})
    module = torch.jit.load(str(export(dipoles, tmp_path / "q.pt")))
    atoms = molecule("CH3CH2OH")
    atoms.calc = atomnet.Calculator(dipoles)
    energies, forces, _ = _run(module, atoms, dipoles.cutoff)
    assert energies.sum() == pytest.approx(atoms.get_potential_energy(), abs=1e-9)
    np.testing.assert_allclose(forces, atoms.get_forces(), rtol=0, atol=1e-10)


def test_cli_export(tmp_path, capsys):
    pot = _potential()
    atomnet.save(pot, tmp_path / "model.atomnet")
    assert main(["export", str(tmp_path / "model.atomnet"), str(tmp_path / "model.pt")]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == str(tmp_path / "model.pt") and (tmp_path / "model.pt").exists()
    assert main(["export", str(tmp_path / "missing.atomnet"), str(tmp_path / "m.pt")]) == 2
    assert "atomnet: error:" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "model.atomnet"), str(tmp_path / "no" / "m.pt")]) == 2
