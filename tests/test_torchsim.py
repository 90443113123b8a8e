"""TorchSimModel: an atomnet potential inside TorchSim equals the ASE calculator, in one
batched call and along TorchSim's own NVE trajectory."""

from __future__ import annotations

import importlib
import sys

import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.build import bulk, molecule
from ase.md.verlet import VelocityVerlet

import atomnet
from atomnet.errors import UsageError

ts = pytest.importorskip(
    "torch_sim", reason="needs the optional package torch-sim-atomistic (pip install .[torchsim])"
)
from torch_sim.integrators import nve  # noqa: E402
from torch_sim.models.interface import validate_model_outputs  # noqa: E402

from atomnet.calculators import TorchSimModel  # noqa: E402

ELEMENTS = ["H", "C", "O", "Si", "Fe"]  # Si and Fe: validate_model_outputs' structures
F64 = torch.float64


@pytest.fixture(scope="module")
def potential():
    torch.manual_seed(3)
    return atomnet.build({"type": "bpnn", "hidden": [16]}, ELEMENTS, cutoff=4.0)


def _molecule(name: str, shift, seed: int, box: float | None = None) -> Atoms:
    atoms = molecule(name)
    atoms.rattle(0.05, seed=seed)
    atoms.positions += shift
    if box is not None:  # TorchSim 0.3.0 has one pbc flag per batch: a molecule in a box
        atoms.cell = np.eye(3) * box
        atoms.pbc = True
    return atoms


def _periodic() -> list[Atoms]:
    """A water molecule in a 9 Å box, a sheared rattled diamond Si cell, a rattled CO2 crystal
    cell: 3-D periodic, different sizes and cells."""
    si = bulk("Si", "diamond", a=5.43, cubic=True)
    si.set_cell(si.cell.array + [[0, 0, 0], [0.3, 0, 0], [0.1, -0.2, 0]], scale_atoms=True)
    si.rattle(0.05, seed=1)
    co2 = _molecule("CO2", [1.0, 1.2, 1.4], seed=2)
    co2.cell, co2.pbc = np.diag([4.2, 3.9, 4.4]), True
    return [_molecule("H2O", [4.0, 4.5, 5.0], seed=0, box=9.0), si, co2]


def _reference(potential, atoms: Atoms):
    atoms = atoms.copy()
    atoms.calc = atomnet.Calculator(potential, dtype="float64", skin=0)
    stress = atoms.get_stress(voigt=False) if atoms.pbc.all() else np.zeros((3, 3))
    return atoms.get_potential_energy(), atoms.get_forces(), stress


@pytest.mark.parametrize("kind", ["periodic", "molecules"])
def test_batch_equals_ase_calculator(potential, kind):
    systems = _periodic() if kind == "periodic" else [
        _molecule("CH3CH2OH", 0.0, seed=4), _molecule("H2O", 0.0, seed=5)]
    model = TorchSimModel(potential)
    out = model(ts.io.atoms_to_state(systems, torch.device("cpu"), F64))
    n = [len(a) for a in systems]
    assert out["energy"].shape == (len(systems),) and out["forces"].shape == (sum(n), 3)
    assert out["stress"].shape == (len(systems), 3, 3)
    forces = np.split(out["forces"].numpy(), np.cumsum(n)[:-1])
    for k, atoms in enumerate(systems):
        energy, f, stress = _reference(potential, atoms)
        assert abs(out["energy"][k].item() - energy) < 1e-10
        np.testing.assert_allclose(forces[k], f, rtol=0, atol=1e-10)
        np.testing.assert_allclose(out["stress"][k].numpy(), stress, rtol=0, atol=1e-10)
        if kind == "periodic":
            assert np.abs(stress).max() > 1e-4  # a real stress was compared
    assert np.abs(out["forces"].numpy()).max() > 1e-3


def test_stress_sign_is_tension_positive(potential):
    """TorchSim's pressure is −trace(stress)/3: the stress must be ASE's (1/V) ∂E/∂ε. Check
    against a finite difference of the batched energy under a small isotropic strain."""
    model = TorchSimModel(potential)
    si = _periodic()[1]
    eps = 1e-5
    energies = []
    for s in (-eps, eps):
        strained = si.copy()
        strained.set_cell(si.cell.array * (1 + s), scale_atoms=True)
        energies.append(model(ts.io.atoms_to_state([strained], "cpu", F64))["energy"].item())
    stress = model(ts.io.atoms_to_state([si], "cpu", F64))["stress"][0].numpy()
    trace_fd = (energies[1] - energies[0]) / (2 * eps) / si.get_volume()  # Σ_i (1/V) ∂E/∂ε_ii
    assert abs(np.trace(stress) - trace_fd) < 1e-7 * max(1.0, abs(trace_fd))


def _min_image(d: np.ndarray, cell: np.ndarray) -> np.ndarray:
    """Displacements ``d`` (n, 3) Å reduced to their shortest periodic images."""
    frac = np.linalg.solve(cell.T, d.T).T
    return (frac - np.round(frac)) @ cell


def test_nve_trajectory_equals_ase_velocity_verlet(potential):
    """20 steps of TorchSim's NVE (velocity Verlet) on a batch of two systems against ASE's
    VelocityVerlet with atomnet.Calculator on each, from the same positions and momenta.

    Time units: TorchSim's metal units and ASE's share the internal time unit Å·√(amu/eV)
    (≈ 10.18 fs): ``MetalUnits.time`` is that unit's count per ps, i.e. 1000 · ase.units.fs
    (same CODATA 2014 constants), so the same number ``dt`` is the same time step in both.
    TorchSim wraps positions into the cell after each step and ASE does not: positions are
    compared up to lattice vectors."""
    assert abs(ts.units.MetalUnits.time / 1000 / units.fs - 1) < 1e-9
    dt = 0.5 * units.fs
    steps = 20
    systems = _periodic()[:2]  # water in a box, Si cell
    rng = np.random.default_rng(11)
    momenta = [rng.normal(size=(len(a), 3)) * np.sqrt(a.get_masses() * units.kB * 600)[:, None]
               for a in systems]

    model = TorchSimModel(potential)
    nve_init, nve_update = nve(model, dt=torch.tensor(dt, dtype=F64), kT=torch.tensor(0.0))
    state = nve_init(ts.io.atoms_to_state(systems, torch.device("cpu"), F64))
    state.momenta = torch.as_tensor(np.concatenate(momenta), dtype=F64)
    for _ in range(steps):
        state = nve_update(state)

    n = [len(a) for a in systems]
    positions = np.split(state.positions.numpy(), np.cumsum(n)[:-1])
    forces = np.split(state.forces.numpy(), np.cumsum(n)[:-1])
    for k, atoms in enumerate(systems):
        atoms = atoms.copy()
        atoms.set_momenta(momenta[k])
        atoms.calc = atomnet.Calculator(potential, dtype="float64", skin=0)
        start = atoms.get_positions()
        VelocityVerlet(atoms, timestep=dt).run(steps)
        assert np.linalg.norm(atoms.positions - start, axis=1).max() > 0.02  # it moved
        np.testing.assert_allclose(
            _min_image(positions[k] - atoms.positions, atoms.cell.array), 0.0, atol=1e-8)
        np.testing.assert_allclose(forces[k], atoms.get_forces(), rtol=0, atol=1e-8)
        np.testing.assert_allclose(state.energy[k].item(), atoms.get_potential_energy(),
                                   rtol=0, atol=1e-8)


def test_validate_model_outputs(potential):
    validate_model_outputs(TorchSimModel(potential), torch.device("cpu"), F64)


def test_options_and_dict_state(potential, tmp_path):
    """A path loads; compute_forces/compute_stress select the outputs; a dict of state
    fields works like the SimState; float32 runs."""
    atomnet.save(potential, tmp_path / "m.atomnet")
    state = ts.io.atoms_to_state(_periodic()[1:], "cpu", F64)
    model = TorchSimModel(tmp_path / "m.atomnet", compute_forces=False, compute_stress=False)
    assert (model.device, model.dtype) == (torch.device("cpu"), F64)
    assert not model.compute_forces and not model.compute_stress
    out = model(state)
    assert set(out) == {"energy"}
    fields = {k: getattr(state, k) for k in ("positions", "cell", "pbc", "atomic_numbers",
                                             "system_idx")}
    full = TorchSimModel(potential)
    torch.testing.assert_close(full(fields)["energy"], out["energy"], rtol=0, atol=1e-12)
    out32 = TorchSimModel(potential, dtype="float32")(
        ts.io.atoms_to_state(_periodic()[1:], "cpu", torch.float32))
    assert out32["forces"].dtype == torch.float32
    torch.testing.assert_close(out32["energy"].double(), out["energy"], rtol=0, atol=1e-3)


def test_missing_torch_sim_is_a_usage_error(monkeypatch):
    """Without torch_sim, importing the adapter says how to install it; atomnet itself does
    not import torch_sim."""
    monkeypatch.setitem(sys.modules, "torch_sim", None)  # "import torch_sim" now fails
    monkeypatch.delitem(sys.modules, "atomnet.calculators.torchsim")
    with pytest.raises(UsageError, match="pip install torch-sim-atomistic"):
        importlib.import_module("atomnet.calculators.torchsim")
    with pytest.raises(UsageError, match="pip install torch-sim-atomistic"):
        atomnet.calculators.TorchSimModel  # noqa: B018


def test_atomnet_does_not_import_torch_sim():
    import subprocess

    code = "import sys, atomnet, atomnet.calculators; assert 'torch_sim' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
