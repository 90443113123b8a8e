"""Input validation (every bad input names file and frame) and batching."""

from __future__ import annotations

from pathlib import Path

import ase.io
import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule
from ase.calculators.singlepoint import SinglePointCalculator

from atomnet import keys
from atomnet.derivatives import evaluate
from atomnet.structures import (
    StructureError,
    atoms_to_graph,
    collate,
    read_structures,
    to_device,
)

ELEMENTS = ["H", "C", "O"]
LABELS = ("energy", "forces")
#: field names of the 5 Å pair list the test potential reads
PAIRS = keys.pairs(5.0)


def _labelled(atoms: Atoms, energy: float | None = -1.0, forces: bool = True) -> Atoms:
    atoms = atoms.copy()
    results = {}
    if energy is not None:
        results["energy"] = energy
    if forces:
        results["forces"] = np.zeros((len(atoms), 3))
    atoms.calc = SinglePointCalculator(atoms, **results)
    return atoms


def _write(path: Path, bad: Atoms) -> Path:
    """Two good frames around ``bad`` (frame 1)."""
    good = _labelled(molecule("H2O"))
    ase.io.write(path, [good, bad, good], format="extxyz")
    return path


def _graphs(path: Path, elements=ELEMENTS) -> list[dict]:
    """The data path of training: read, then one graph per frame naming file and frame."""
    return [
        atoms_to_graph(atoms, elements, pair_lists={5.0: 3.5}, require=LABELS,
                       source=str(path), index=k)
        for k, atoms in enumerate(read_structures(path, require=LABELS))
    ]


def _where(path: Path, frame: int | None = 1) -> str:
    text = str(path) if frame is None else f"{path}, frame {frame}"
    return text.replace("(", r"\(").replace(")", r"\)")


def test_good_file_reads(tmp_path):
    path = _write(tmp_path / "ok.xyz", _labelled(molecule("CH4")))
    graphs = _graphs(path)
    assert len(graphs) == 3
    assert graphs[1][keys.ref(keys.ENERGY)].shape == (1,)
    assert graphs[1][keys.ref(keys.FORCES)].shape == (5, 3)


def test_ase_database_reads_with_labels(tmp_path):
    """ASE databases (.db) go through the same reader; labels survive the round trip."""
    frames = []
    for k, name in enumerate(["H2O", "CH4", "CH3OH"]):
        atoms = molecule(name)
        forces = np.full((len(atoms), 3), 0.1 * (k + 1))
        atoms.calc = SinglePointCalculator(atoms, energy=-float(k + 1), forces=forces)
        frames.append(atoms)
    path = tmp_path / "set.db"
    ase.io.write(path, frames)
    read = read_structures(path, require=LABELS)
    graphs = _graphs(path)
    assert [len(a) for a in read] == [3, 5, 6]
    for k, g in enumerate(graphs):
        assert float(g[keys.ref("energy")]) == -(k + 1)
        assert torch.allclose(g[keys.ref("forces")], torch.full_like(g[keys.ref("forces")],
                                                                     0.1 * (k + 1)))


def test_missing_energy(tmp_path):
    path = _write(tmp_path / "no_energy.xyz", _labelled(molecule("CH4"), energy=None))
    with pytest.raises(StructureError, match=_where(path) + ": missing 'energy'"):
        _graphs(path)


def test_missing_forces(tmp_path):
    path = _write(tmp_path / "no_forces.xyz", _labelled(molecule("CH4"), forces=False))
    with pytest.raises(StructureError, match=_where(path) + ": missing 'forces'"):
        _graphs(path)


def test_unknown_element(tmp_path):
    path = _write(tmp_path / "nitrogen.xyz", _labelled(molecule("NH3")))
    with pytest.raises(StructureError, match=_where(path) + r": element\(s\) N not known"):
        _graphs(path)


def test_nan_position(tmp_path):
    bad = _labelled(molecule("CH4"))
    bad.positions[2, 1] = np.nan
    path = _write(tmp_path / "nan.xyz", bad)
    with pytest.raises(StructureError, match=_where(path) + ": positions contains NaN"):
        _graphs(path)


def test_nan_position_without_neighbour_list():
    bad = molecule("CH4")
    bad.positions[2, 1] = np.nan
    with pytest.raises(StructureError, match="data.xyz, frame 4: positions contains NaN"):
        atoms_to_graph(bad, ELEMENTS, source="data.xyz", index=4)


def test_inf_in_forces(tmp_path):
    bad = _labelled(molecule("CH4"))
    bad.calc.results["forces"][3, 0] = np.inf
    path = _write(tmp_path / "inf.xyz", bad)
    with pytest.raises(StructureError, match=_where(path) + ": 'forces' contains NaN or inf"):
        _graphs(path)


def test_overlapping_atoms(tmp_path):
    bad = _labelled(molecule("CH4"))
    bad.positions[1] = bad.positions[0] + [0.05, 0.0, 0.0]
    path = _write(tmp_path / "overlap.xyz", bad)
    with pytest.raises(StructureError, match=_where(path) + ": atoms 0 and 1 are 0.050 Å apart"):
        _graphs(path)


def test_overlap_with_own_periodic_image():
    atoms = Atoms("H", positions=[[0, 0, 0]], cell=[0.05, 3.0, 3.0], pbc=True)
    with pytest.raises(StructureError, match="cell.xyz, frame 0: atoms 0 and 0"):
        atoms_to_graph(atoms, ELEMENTS, pair_lists={5.0: None}, source="cell.xyz", index=0)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.xyz"
    path.touch()
    with pytest.raises(StructureError, match=_where(path, None) + ": file is empty"):
        read_structures(path)


def test_malformed_file(tmp_path):
    path = tmp_path / "garbage.xyz"
    path.write_text("3\nnot a comment line\nH 0 0 0\nthis is not xyz\n")
    with pytest.raises(StructureError, match=_where(path, None) + ": could not be read"):
        read_structures(path)


def test_nonexistent_file(tmp_path):
    path = tmp_path / "missing.xyz"
    with pytest.raises(StructureError, match=_where(path, None) + ": file not found"):
        read_structures(path)


def test_structure_error_is_a_value_error():
    assert issubclass(StructureError, ValueError)


# --- batching ---------------------------------------------------------------


@pytest.fixture
def three_graphs(potential, ethanol, water_box) -> list[dict]:
    return [potential.graph(a) for a in (ethanol, water_box, molecule("CH3OH"))]


def test_collate_offsets_indices(three_graphs):
    batch = collate(three_graphs)
    atoms = edges = 0
    for k, g in enumerate(three_graphs):
        n, e = len(g[keys.POSITIONS]), g[PAIRS.index].shape[1]
        assert g[PAIRS.triplets].shape[1] > 0
        part = batch[PAIRS.index][:, edges:edges + e]
        assert torch.equal(part, g[PAIRS.index] + atoms)
        assert torch.equal(batch[keys.BATCH][atoms:atoms + n], torch.full((n,), k))
        atoms, edges = atoms + n, edges + e
    assert batch[keys.N_ATOMS].tolist() == [len(g[keys.POSITIONS]) for g in three_graphs]
    e1, e2 = batch[PAIRS.triplets]
    centers = batch[PAIRS.index][0]
    assert torch.equal(centers[e1], centers[e2]), "triplet edges must share their center"
    offsets = torch.tensor([0] + [g[PAIRS.index].shape[1] for g in three_graphs]).cumsum(0)
    expected = torch.cat([g[PAIRS.triplets] + o for g, o in zip(three_graphs, offsets)], 1)
    assert torch.equal(batch[PAIRS.triplets], expected)


def test_batched_energies_equal_individual(potential, three_graphs):
    batched = evaluate(potential, collate(three_graphs), forces=True)
    single = [evaluate(potential, g, forces=True) for g in three_graphs]
    energy = torch.cat([s.energy for s in single])
    forces = torch.cat([s.forces for s in single])
    assert float((batched.energy - energy).detach().abs().max()) < 1e-10
    assert float((batched.forces - forces).abs().max()) < 1e-10
    assert float(forces.abs().max()) > 1e-2


def test_collate_rejects_mismatched_fields(ethanol):
    labelled = _labelled(ethanol)
    a = atoms_to_graph(labelled, ELEMENTS, require=LABELS)
    b = atoms_to_graph(molecule("H2O"), ELEMENTS)
    with pytest.raises(ValueError, match="different fields"):
        collate([a, b])


def test_to_device_casts_floats_only(three_graphs):
    graph = to_device(three_graphs[0], "cpu", torch.float32)
    assert graph[keys.POSITIONS].dtype == torch.float32
    assert graph[PAIRS.shifts].dtype == torch.float32
    assert graph[PAIRS.index].dtype == torch.int64
    assert graph[keys.SPECIES].dtype == torch.int64
    assert three_graphs[0][keys.POSITIONS].dtype == torch.float64, "input modified"
