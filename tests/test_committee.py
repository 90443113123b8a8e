"""Committees: mean and spread of K potentials, and training K members that share a split.

Calculator tests use untrained potentials with different seeds (float64); the training
test is a 2-member committee of a tiny model on 20 EMT-labelled methanol structures.
"""

from __future__ import annotations

import json
from pathlib import Path

import ase.io
import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule
from ase.calculators.emt import EMT
from ase.calculators.fd import calculate_numerical_forces
from ase.calculators.singlepoint import SinglePointCalculator
from conftest import build_potential
from safetensors import safe_open

import atomnet
from atomnet.calculators import CommitteeCalculator
from atomnet.errors import UsageError
from atomnet.training import train_committee
from atomnet.training.checkpoint import read_checkpoint
from atomnet.training.config import config_from_dict

TINY_MODEL = {"type": "bpnn", "cutoff": 4.0, "hidden": [8], "n_radial": 4,
              "n_angular_radial": 2, "n_angle_sections": 2}


@pytest.fixture(scope="module")
def members() -> list[atomnet.Potential]:
    """Three untrained float64 BP potentials for H, C, O (seeds 0, 1, 2)."""
    return [build_potential(torch.float64, seed=k) for k in range(3)]


def _single_results(members, atoms: Atoms, properties: list[str]) -> list[dict]:
    out = []
    for potential in members:
        # fresh lists, as the committee builds them (it has no Verlet skin), so that the
        # results compare bit for bit
        calc = atomnet.Calculator(potential, skin=0.0)
        calc.calculate(atoms, properties)
        out.append(calc.results)
    return out


@pytest.mark.parametrize("structure", ["ethanol", "water_box"])
def test_results_are_the_mean_and_std_of_the_members(members, structure, request):
    atoms = request.getfixturevalue(structure)
    properties = ["energy", "forces"] + (["stress"] if atoms.pbc.all() else [])
    single = _single_results(members, atoms, properties)
    calc = atomnet.Calculator(members)
    assert isinstance(calc, CommitteeCalculator) and calc.size == 3
    calc.calculate(atoms, properties)
    r = calc.results
    energies = np.array([s["energy"] for s in single])
    forces = np.stack([s["forces"] for s in single])
    assert r["energy"] == pytest.approx(energies.mean(), abs=1e-10)
    assert r["free_energy"] == r["energy"]
    np.testing.assert_allclose(r["forces"], forces.mean(0), rtol=0, atol=1e-10)
    np.testing.assert_allclose(r["energies"], np.mean([s["energies"] for s in single], 0),
                               rtol=0, atol=1e-10)
    assert r["energies"].sum() == pytest.approx(r["energy"], abs=1e-9)
    assert r["energy_std"] == pytest.approx(np.std(energies), abs=1e-10)
    assert r["energy_std"] > 1e-3  # different seeds: a real spread
    np.testing.assert_allclose(r["forces_std"], np.std(forces, axis=0), rtol=0, atol=1e-10)
    norm = np.sqrt(((forces - forces.mean(0)) ** 2).sum(-1).mean(0))  # RMS deviation per atom
    np.testing.assert_allclose(r["forces_std_norm"], norm, rtol=0, atol=1e-10)
    assert r["forces_std_max"] == pytest.approx(norm.max(), abs=1e-12)
    np.testing.assert_array_equal(r["energy_members"], energies)
    np.testing.assert_array_equal(r["forces_members"], forces)
    for name in single[0]["contributions"]:
        assert r["contributions"][name] == pytest.approx(
            np.mean([s["contributions"][name] for s in single]), abs=1e-10)
    if "stress" in properties:
        stresses = np.stack([s["stress"] for s in single])
        np.testing.assert_allclose(r["stress"], stresses.mean(0), rtol=0, atol=1e-12)
        np.testing.assert_allclose(r["stress_std"], stresses.std(0), rtol=0, atol=1e-12)


def test_forces_are_minus_the_gradient_of_the_mean_energy(members, ethanol):
    ethanol.calc = atomnet.Calculator(members)
    forces = ethanol.get_forces()
    numeric = calculate_numerical_forces(ethanol, eps=1e-4, iatoms=[0, 3, 8])
    np.testing.assert_allclose(forces[[0, 3, 8]], numeric, rtol=0, atol=1e-6)


def test_hessian_is_the_mean_of_the_members(members):
    atoms = molecule("CH3OH")
    atoms.rattle(0.05, seed=1)
    calc = atomnet.Calculator(members[:2])
    expected = np.mean([atomnet.Calculator(p).get_hessian(atoms) for p in members[:2]], 0)
    np.testing.assert_allclose(calc.get_hessian(atoms), expected, rtol=0, atol=1e-10)


def test_vibrations_and_md_tools_accept_a_committee(members):
    """Frequencies from the committee are those of the mean Hessian; what needs one
    model (the potential itself) says so instead of failing with an AttributeError."""
    from atomnet.vibrations.analysis import frequencies_cm, harmonic_modes
    from atomnet.vibrations.harmonic import VibrationWarning, vibrations

    atoms = molecule("CH3OH")
    atoms.rattle(0.05, seed=2)
    calc = atomnet.Calculator(members[:2])
    assert calc.elements == list(members[0].elements)
    with pytest.warns(VibrationWarning):
        result = vibrations(atoms, calc)
    h = np.mean([atomnet.Calculator(p).get_hessian(atoms) for p in members[:2]], 0)
    modes = harmonic_modes(h, atoms.get_masses(), atoms.positions, "rigid")
    np.testing.assert_allclose(result.frequencies, modes.frequencies, atol=1e-6)
    assert np.allclose(modes.frequencies, frequencies_cm(modes.eigenvalues))
    with pytest.raises(UsageError, match="a committee has no single potential"):
        _ = calc.potential


def test_identical_members_have_zero_spread(members, ethanol):
    single = atomnet.Calculator(members[0])
    assert type(single) is atomnet.Calculator  # one model: the plain calculator
    ethanol.calc = single
    energy, forces = ethanol.get_potential_energy(), ethanol.get_forces()
    calc = atomnet.Calculator((members[0], members[0]))
    calc.calculate(ethanol, ["energy", "forces"])
    assert calc.results["energy_std"] == 0.0
    assert not calc.results["forces_std"].any() and calc.results["forces_std_max"] == 0.0
    assert calc.results["energy"] == pytest.approx(energy, abs=1e-12)
    np.testing.assert_allclose(calc.results["forces"], forces, rtol=0, atol=1e-12)


def test_members_must_share_elements(members, tmp_path):
    hco = atomnet.save(members[0], tmp_path / "hco.atomnet")
    ho = atomnet.save(atomnet.build({"type": "bpnn", "hidden": [8]}, ["H", "O"]),
                      tmp_path / "ho.atomnet")
    with pytest.raises(UsageError, match=r"ho\.atomnet has \['H', 'O'\]"):
        atomnet.Calculator([hco, ho])
    with pytest.raises(UsageError, match="at least two"):
        atomnet.Calculator([hco])


def test_committee_file_and_folder(members, tmp_path, ethanol):
    for k in range(2):
        atomnet.save(members[k], tmp_path / f"m{k}" / "model.atomnet")
    with pytest.raises(UsageError, match="no committee file"):
        atomnet.Calculator(tmp_path)
    record = {"format": "atomnet-committee/1", "size": 3,
              "members": [{"model": f"m{k}/model.atomnet"} for k in range(2)]}
    (tmp_path / "committee.json").write_text(json.dumps(record))
    with pytest.raises(UsageError, match="only 2 of 3 members"):
        atomnet.Calculator(tmp_path / "committee.json")
    record["size"] = 2
    (tmp_path / "committee.json").write_text(json.dumps(record))
    expected = atomnet.Calculator(members[:2]).get_potential_energy(ethanol)
    for source in (tmp_path, tmp_path / "committee.json", str(tmp_path)):
        calc = atomnet.Calculator(source)
        assert calc.get_potential_energy(ethanol) == pytest.approx(expected, abs=1e-12)


# --- training ---------------------------------------------------------------


def _methanol_data(folder: Path, n: int = 20) -> Path:
    rng = np.random.default_rng(0)
    frames = []
    for _ in range(n):
        atoms = molecule("CH3OH")
        atoms.positions += rng.normal(0.0, 0.06, atoms.positions.shape)
        atoms.calc = EMT()
        results = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
        atoms.calc = SinglePointCalculator(atoms, **results)
        frames.append(atoms)
    path = folder / "train.xyz"
    ase.io.write(path, frames, format="extxyz")
    return path


def _config(tmp_path: Path):
    raw = {
        "data": {"train": str(_methanol_data(tmp_path)), "valid_fraction": 0.2,
                 "test_fraction": 0.1, "e0s": {"H": -13.6, "C": -1029.8, "O": -2041.3}},
        "model": dict(TINY_MODEL),
        "training": {"epochs": 2, "batch_size": 8, "lr": 5e-3, "seed": 5,
                     "dtype": "float64", "ensemble": 2},
        "output": {"dir": str(tmp_path / "out"), "progress": False},
    }
    return config_from_dict(raw, "test", tmp_path)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def test_committee_training_shares_the_split_and_resumes(tmp_path, ethanol):
    config = _config(tmp_path)
    out = config.output.dir
    epochs = []

    def kill_in_second_member(epoch: int, entry: dict) -> None:
        epochs.append(epoch)
        if len(epochs) == 3:  # member 0 ran epochs 1, 2; member 1 dies after epoch 1
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_committee(config, on_epoch_end=kill_in_second_member)
    record = json.loads((out / "committee.json").read_text())
    assert [m["model"] for m in record["members"]] == ["member_0/model.atomnet"]
    with pytest.raises(UsageError, match="only 1 of 2"):
        atomnet.Calculator(out)

    epochs.clear()
    results = train_committee(config, on_epoch_end=lambda e, _: epochs.append(e))
    assert epochs == [2]  # member 0 skipped; member 1 resumed from its checkpoint
    assert [r.model_path for r in results] == [out / f"member_{k}" / "model.atomnet"
                                              for k in range(2)]
    record = json.loads((out / "committee.json").read_text())
    assert record["size"] == 2 and record["split_seed"] == 5
    assert [m["seed"] for m in record["members"]] == [5, 6]
    assert all(set(m["metrics"]) == {"train", "valid", "test"} for m in record["members"])

    headers = [read_checkpoint(out / f"member_{k}" / "checkpoint.atomnet")[0] for k in range(2)]
    assert headers[0]["state"]["split"] == headers[1]["state"]["split"]
    assert headers[0]["config"]["training"]["ensemble"] == 1
    tests = [(out / f"member_{k}" / "test.xyz").read_text() for k in range(2)]
    assert tests[0] == tests[1]
    a, b = (_weights(r.model_path) for r in results)
    assert any(not torch.equal(a[k], b[k]) for k in a)

    stamps = [r.model_path.stat().st_mtime_ns for r in results]
    epochs.clear()
    again = train_committee(config, on_epoch_end=lambda e, _: epochs.append(e))
    assert epochs == [] and [r.model_path.stat().st_mtime_ns for r in again] == stamps
    assert [r.metrics for r in again] == [r.metrics for r in results]

    calc = atomnet.Calculator(out)
    calc.calculate(ethanol, ["energy", "forces"])
    assert calc.size == 2 and calc.results["energy_std"] > 0
