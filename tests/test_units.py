"""Units at the edges: data files in other units are converted to eV and Å once, on read.

A reference set in eV/Å (EMT Cu: periodic cells with stress, a cluster with a
dipole) is written in each supported unit; reading it through the training
data path must give graphs with the values the file holds times the factor
(to 1e-10 relative), which are the eV/Å reference values (to file precision).
"""

from __future__ import annotations

from pathlib import Path

import ase.io
import ase.units
import numpy as np
import pytest
import yaml
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator

from atomnet import keys
from atomnet.structures import get_label
from atomnet.structures.graph import local_positions
from atomnet.training import ConfigError, load_config
from atomnet.training.data import read_frames, relabel
from atomnet.training.prepare import prepare
from atomnet.units import Conversion

#: factors into eV / Å, written out independently of atomnet.units
ENERGY = {"eV": 1.0, "meV": 1e-3, "Hartree": ase.units.Hartree, "Ha": ase.units.Hartree,
          "kcal/mol": ase.units.kcal / ase.units.mol, "kJ/mol": ase.units.kJ / ase.units.mol,
          "Ry": ase.units.Rydberg, "Rydberg": ase.units.Rydberg}
LENGTH = {"Å": 1.0, "Angstrom": 1.0, "A": 1.0, "Bohr": ase.units.Bohr, "nm": 10.0}
CASES = ([(e, "Å") for e in ENERGY] + [("eV", unit) for unit in LENGTH if unit != "Å"]
         + [("Hartree", "Bohr"), ("kcal/mol", "nm")])
NAMES = {"energy": "energy", "forces": "forces", "stress": "stress"}


def reference_frames() -> list[Atoms]:
    """eV/Å: two rattled Cu cells (energy, forces, stress), one cluster (+ a dipole)."""
    rng = np.random.default_rng(0)
    frames = []
    for k in range(3):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
        if k == 2:
            atoms = atoms[:3]
            atoms.pbc, atoms.cell = False, np.zeros((3, 3))
        else:
            atoms.set_cell(atoms.cell * rng.uniform(0.98, 1.02), scale_atoms=True)
        atoms.rattle(0.05, seed=k)
        atoms.calc = EMT()
        results = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
        if atoms.pbc.all():
            results["stress"] = atoms.get_stress()
        else:
            results["dipole"] = np.array([0.1, -0.2, 0.3])
        atoms.calc = SinglePointCalculator(atoms, **results)
        frames.append(atoms)
    return frames


def in_units(frames: list[Atoms], e: float, length: float) -> list[Atoms]:
    """``frames`` (eV/Å) expressed in an energy unit worth ``e`` eV and a length unit
    worth ``length`` Å."""
    out = []
    for atoms in frames:
        copy = atoms.copy()
        copy.positions = atoms.positions / length
        copy.set_cell(atoms.cell.array / length, scale_atoms=False)
        r = atoms.calc.results
        results = {"energy": r["energy"] / e, "forces": r["forces"] / (e / length)}
        if "stress" in r:
            results["stress"] = r["stress"] / (e / length**3)
        if "dipole" in r:
            results["dipole"] = r["dipole"] / length
        copy.calc = SinglePointCalculator(copy, **results)
        out.append(copy)
    return out


def write_case(folder: Path, energy_unit: str, length_unit: str) -> Path:
    e, length = ENERGY[energy_unit], LENGTH[length_unit]
    ase.io.write(folder / "data.xyz", in_units(reference_frames(), e, length), format="extxyz")
    atom = Atoms("Cu", pbc=False)
    atom.calc = EMT()
    atom.calc = SinglePointCalculator(atom, energy=atom.get_potential_energy() / e)
    ase.io.write(folder / "e0s.xyz", [atom], format="extxyz")
    config = {
        "data": {"train": "data.xyz", "isolated_atoms": "e0s.xyz", "valid_fraction": 0.0,
                 "energy_unit": energy_unit, "length_unit": length_unit},
        "model": {"type": "bpnn", "cutoff": 4.0, "hidden": [4]},
        "training": {"epochs": 1, "dtype": "float64"},
        "output": {"dir": "out", "progress": False},
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True))
    return path


def _local(atoms: Atoms, length: float) -> np.ndarray:
    """Local-frame positions (Å) of ``atoms`` given in a unit of ``length`` Å."""
    scaled = atoms.copy()
    scaled.set_cell(atoms.cell.array * length)
    scaled.positions = atoms.positions * length
    return local_positions(scaled)[0]


@pytest.mark.parametrize(("energy_unit", "length_unit"), CASES)
def test_data_in_other_units_reach_the_graphs_in_ev_and_angstrom(
    tmp_path, energy_unit, length_unit
):
    path = write_case(tmp_path, energy_unit, length_unit)
    cfg = load_config(path)
    assert (cfg.data.energy_unit, cfg.data.length_unit) == (energy_unit, length_unit)
    prepared = prepare(cfg)
    e, length = ENERGY[energy_unit], LENGTH[length_unit]
    raw = ase.io.read(tmp_path / "data.xyz", ":")  # as the file holds them
    reference = reference_frames()
    graphs = prepared.data.train.graphs
    assert prepared.split["train"] == [0, 1, 2]
    assert prepared.data.train.labels == ("energy", "forces", "stress")
    for graph, file_atoms, ref in zip(graphs, raw, reference):
        fr = file_atoms.calc.results
        expected = {
            # graphs hold positions in a local frame (wrapped, centred): compare in it
            keys.POSITIONS: (_local(file_atoms, length), local_positions(ref)[0]),
            keys.CELL: (file_atoms.cell.array[None] * length, ref.cell.array[None]),
            keys.ref("energy"): (np.array([fr["energy"] * e]),
                                 np.array([ref.calc.results["energy"]])),
            keys.ref("forces"): (fr["forces"] * e / length, ref.calc.results["forces"]),
        }
        if ref.pbc.all():
            stress = get_label(file_atoms, "stress") * e / length**3
            expected[keys.ref("stress")] = (stress[None], get_label(ref, "stress")[None])
        for key, (exact, ev_angstrom) in expected.items():
            value = graph[key].numpy()
            np.testing.assert_allclose(value, exact, rtol=1e-10, atol=1e-12, err_msg=key)
            np.testing.assert_allclose(value, ev_angstrom, rtol=1e-6, atol=1e-6, err_msg=key)
    # isolated-atom energies are data too: converted the same way
    atom = Atoms("Cu", pbc=False)
    atom.calc = EMT()
    assert prepared.e0s["Cu"] == pytest.approx(atom.get_potential_energy(), rel=1e-10)


@pytest.mark.parametrize(("energy_unit", "length_unit"), [("Hartree", "Bohr"), ("meV", "nm")])
def test_dipoles_are_converted_as_charge_times_length(tmp_path, energy_unit, length_unit):
    write_case(tmp_path, energy_unit, length_unit)
    frames = read_frames(tmp_path / "data.xyz", NAMES, Conversion(energy_unit, length_unit))
    raw = ase.io.read(tmp_path / "data.xyz", ":")
    dipole = get_label(frames[2], "dipole")
    np.testing.assert_allclose(dipole, get_label(raw[2], "dipole") * LENGTH[length_unit],
                               rtol=1e-10)
    np.testing.assert_allclose(dipole, [0.1, -0.2, 0.3], rtol=1e-6)


def test_conversion_works_on_copies():
    frames = in_units(reference_frames(), ase.units.Hartree, ase.units.Bohr)
    before = [(a.positions.copy(), a.cell.array.copy(), dict(a.calc.results)) for a in frames]
    converted = relabel(frames, NAMES, Conversion("Hartree", "Bohr"))
    for atoms, (pos, cell, results), new in zip(frames, before, converted):
        assert new is not atoms
        assert np.array_equal(atoms.positions, pos) and np.array_equal(atoms.cell.array, cell)
        assert atoms.calc.results["energy"] == results["energy"]
        assert not np.allclose(new.positions, pos)


@pytest.mark.parametrize(("key", "value", "known"), [
    ("energy_unit", "hartrees", "Hartree"),
    ("energy_unit", "eV/atom", "kcal/mol"),
    ("length_unit", "bohrs", "Bohr"),
    ("length_unit", "pm", "nm"),
])
def test_unknown_unit_is_a_config_error_listing_the_known_ones(tmp_path, key, value, known):
    path = write_case(tmp_path, "eV", "Å")
    raw = yaml.safe_load(path.read_text())
    raw["data"][key] = value
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert f"data.{key}" in message and repr(value) in message and known in message
    assert str(path) in message


def test_checkpoint_without_unit_keys_resumes_with_default_units():
    from atomnet.training.resume import _differences

    old = {"train": "/a/data.xyz", "energy_key": "energy"}  # written before the unit keys
    new = {"train": "/b/data.xyz", "energy_key": "energy", "energy_unit": "eV",
           "length_unit": "Å"}
    assert _differences(old, new, "data") == []
    assert _differences(old, {**new, "energy_unit": "Hartree"}, "data") == [
        "data.energy_unit: 'eV' → 'Hartree'"]
