"""device_graph: the torch-only builder gives the graph of atoms_to_graph + collate (same
pair and triplet sets, same frame, same energies and forces) and rejects bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule

import atomnet
from atomnet import keys
from atomnet.derivatives import evaluate
from atomnet.errors import UsageError
from atomnet.neighbors.triplets import torch_triplets_by_center, triplets_by_center
from atomnet.structures import StructureError, atoms_to_graph, collate, device_graph

ELEMENTS = ["H", "C", "O", "Si"]
PAIR_LISTS = [{5.0: 3.5}, {3.0: None, 6.0: None}]
SKINS = [0.0, 0.5]


def _ethanol() -> Atoms:
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.02, seed=0)
    atoms.positions += [120.0, -40.0, 3.0]
    return atoms


def _silicon() -> Atoms:
    """Bulk Si 2x2x2, sheared, rattled, drifted out of the cell."""
    si = bulk("Si", "diamond", a=5.43, cubic=True).repeat((2, 2, 1))
    si.set_cell(si.cell.array + [[0, 0, 0], [0.6, 0, 0], [0.2, -0.4, 0]], scale_atoms=True)
    si.rattle(0.05, seed=1)
    si.positions[:3] += [[11.0, -7.0, 30.0], [-0.3, 0.0, 0.0], [0.0, 0.0, -6.0]]
    return si


def _small_cell() -> Atoms:
    """A 3 Å triclinic cell: each atom sees many of its own images within 5 Å."""
    cell = [[3.0, 0.0, 0.0], [0.5, 3.0, 0.0], [0.3, 0.2, 3.0]]
    return Atoms("SiC", positions=[[0.1, 0.2, 0.3], [1.6, 1.4, 1.7]], cell=cell, pbc=True)


def _slab() -> Atoms:
    """Si slab, periodic in x and y only, with a tilted non-periodic c vector."""
    slab = bulk("Si", "diamond", a=5.43, cubic=True)
    slab.center(vacuum=6.0, axis=2)
    slab.cell[2] += [1.0, 0.5, 0.0]
    slab.pbc = (True, True, False)
    slab.rattle(0.03, seed=2)
    slab.positions[0] += [-6.0, 13.0, 0.0]
    return slab


def _flat_slab() -> Atoms:
    """A layer with a zero third cell vector, pbc (True, True, False)."""
    layer = Atoms("C2", positions=[[0.0, 0.0, 0.0], [1.23, 0.71, 0.1]],
                  cell=[[2.46, 0.0, 0.0], [1.23, 2.13, 0.0], [0.0, 0.0, 0.0]],
                  pbc=(True, True, False))
    layer.positions += [-5.0, 3.0, 1.0]
    return layer


def _wire() -> Atoms:
    """A chain periodic along x only, the other two cell vectors zero."""
    return Atoms("CO", positions=[[0.2, 0.0, 0.0], [1.3, 0.3, -0.2]],
                 cell=[[2.5, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]],
                 pbc=(True, False, False))


STRUCTURES = {"ethanol": _ethanol, "silicon": _silicon, "small_cell": _small_cell,
              "slab": _slab, "flat_slab": _flat_slab, "wire": _wire}
BATCH = ["ethanol", "silicon", "small_cell", "slab", "wire"]


def _inputs(frames: list[Atoms], dtype=torch.float64):
    positions = torch.tensor(np.concatenate([a.positions for a in frames]), dtype=dtype)
    numbers = torch.tensor(np.concatenate([a.numbers for a in frames]))
    cell = torch.tensor(np.stack([a.cell.array for a in frames]), dtype=dtype)
    pbc = torch.tensor(np.stack([a.pbc for a in frames]))
    system = torch.repeat_interleave(torch.arange(len(frames)),
                                     torch.tensor([len(a) for a in frames]))
    return positions, numbers, cell, pbc, system


def _device(frames: list[Atoms], pair_lists, skin=0.0, dtype=torch.float64, **kwargs):
    positions, numbers, cell, pbc, system = _inputs(frames, dtype)
    return device_graph(positions, numbers, cell, pbc, ELEMENTS, pair_lists, system=system,
                        skin=skin, **kwargs)


def _numpy(frames: list[Atoms], pair_lists, skin=0.0):
    return collate([atoms_to_graph(a, ELEMENTS, pair_lists=pair_lists, labels=False, skin=skin)
                    for a in frames])


def _edges(graph, fields) -> list[tuple]:
    i, j = graph[fields.index].tolist()
    shifts = graph[fields.shifts].round().long().tolist()
    return [(a, b, tuple(s)) for a, b, s in zip(i, j, shifts)]


def _pair_set(graph, fields) -> list[tuple]:
    edges = _edges(graph, fields)
    assert len(set(edges)) == len(edges)
    return sorted(edges)


def _triplet_set(graph, fields) -> set:
    edges = _edges(graph, fields)
    out = []
    for e1, e2 in graph[fields.triplets].T.tolist():
        (i1, j1, s1), (i2, j2, s2) = edges[e1], edges[e2]
        assert i1 == i2 and e1 < e2
        out.append((i1, frozenset([(j1, s1), (j2, s2)])))
    assert len(set(out)) == len(out)
    return set(out)


def _assert_same_graph(got, want, pair_lists):
    assert set(got) == set(want)
    for key, value in want.items():
        assert got[key].dtype == value.dtype, key
        assert got[key].shape == value.shape, key
    for key in (keys.POSITIONS, keys.ORIGIN, keys.CELL, keys.TOTAL_CHARGE, keys.WEIGHT):
        torch.testing.assert_close(got[key], want[key], rtol=0, atol=1e-10)
    for key in (keys.SPECIES, keys.NUMBERS, keys.PBC, keys.BATCH, keys.N_ATOMS):
        assert torch.equal(got[key], want[key]), key
    for cutoff, triplet_cutoff in pair_lists.items():
        fields = keys.pairs(cutoff)
        assert _pair_set(got, fields) == _pair_set(want, fields)
        centers = got[fields.index][0]
        assert bool((centers[1:] >= centers[:-1]).all())
        if triplet_cutoff is not None:
            assert _triplet_set(got, fields) == _triplet_set(want, fields)


@pytest.mark.parametrize("skin", SKINS)
@pytest.mark.parametrize("pair_lists", PAIR_LISTS, ids=["triplets", "two-lists"])
@pytest.mark.parametrize("name", list(STRUCTURES))
def test_one_structure_matches_numpy(name, pair_lists, skin):
    frames = [STRUCTURES[name]()]
    _assert_same_graph(_device(frames, pair_lists, skin), _numpy(frames, pair_lists, skin),
                       pair_lists)


@pytest.mark.parametrize("skin", SKINS)
@pytest.mark.parametrize("pair_lists", PAIR_LISTS, ids=["triplets", "two-lists"])
def test_batch_matches_numpy(pair_lists, skin):
    frames = [STRUCTURES[name]() for name in BATCH]
    got = _device(frames, pair_lists, skin)
    _assert_same_graph(got, _numpy(frames, pair_lists, skin), pair_lists)
    assert got[keys.pairs(min(pair_lists)).index].sum() > 0


def test_one_structure_inputs_and_dtype():
    """(3, 3) cell, (3,) pbc, no system index, float32: fields in float32, same pairs."""
    atoms = _slab()
    positions = torch.tensor(atoms.positions, dtype=torch.float32)
    got = device_graph(positions, torch.tensor(atoms.numbers),
                       torch.tensor(atoms.cell.array, dtype=torch.float32),
                       torch.tensor(atoms.pbc), ELEMENTS, {5.0: 3.5},
                       charge=torch.tensor([-1.0]))
    # the NumPy builder from the same float32-rounded input
    atoms.positions = positions.double().numpy()
    atoms.cell = torch.tensor(atoms.cell.array, dtype=torch.float32).double().numpy()
    want = _numpy([atoms], {5.0: 3.5})
    for key, value in got.items():
        assert value.dtype == (torch.float32 if want[key].is_floating_point()
                               else want[key].dtype), key
    assert got[keys.TOTAL_CHARGE].tolist() == [-1.0]
    fields = keys.pairs(5.0)
    assert _pair_set(got, fields) == _pair_set(want, fields)
    assert _triplet_set(got, fields) == _triplet_set(want, fields)


def test_energy_forces_stress_match_numpy():
    torch.manual_seed(0)
    pot = atomnet.build({"type": "bpnn", "hidden": [16]}, ELEMENTS, cutoff=5.0).double()
    frames = [STRUCTURES[name]() for name in BATCH]
    frames[3].pbc = True  # stress needs 3-D periodic cells; the rest as they are
    positions, numbers, cell, pbc, system = _inputs(frames)
    got = evaluate(pot, device_graph(positions, numbers, cell, pbc, pot.elements,
                                     pot.pair_lists, system=system),
                   forces=True, stress=True)
    want = evaluate(pot, collate([pot.graph(a, labels=False) for a in frames]),
                    forces=True, stress=True)
    torch.testing.assert_close(got.energy, want.energy, rtol=0, atol=1e-12)
    torch.testing.assert_close(got.forces, want.forces, rtol=0, atol=1e-12)
    torch.testing.assert_close(got.stress, want.stress, rtol=0, atol=1e-12)


def test_torch_triplets_match_numpy():
    rng = np.random.default_rng(0)
    centers = np.sort(rng.integers(0, 30, 400))
    e1, e2 = torch_triplets_by_center(torch.from_numpy(centers))
    a, b = triplets_by_center(centers, 30)
    assert np.array_equal(e1.numpy(), a) and np.array_equal(e2.numpy(), b)
    empty = torch_triplets_by_center(torch.zeros(1, dtype=torch.long))
    assert [t.numel() for t in empty] == [0, 0]


def test_unknown_element_names_it_and_structure():
    frames = [_ethanol(), _small_cell()]
    frames[1].numbers[1] = 26  # Fe
    with pytest.raises(StructureError, match=r"structure 1: element\(s\) Fe not known"):
        _device(frames, {5.0: 3.5})


def test_nan_position_names_structure():
    frames = [_ethanol(), _silicon()]
    frames[1].positions[4, 1] = np.nan
    with pytest.raises(StructureError, match="structure 1: positions contain NaN"):
        _device(frames, {5.0: None})


@pytest.mark.parametrize("pair_lists", PAIR_LISTS, ids=["triplets", "two-lists"])
def test_overlapping_atoms_name_them(pair_lists):
    frames = [_small_cell(), _ethanol()]
    frames[1].positions[5] = frames[1].positions[2] + [0.03, 0.0, 0.0]
    with pytest.raises(StructureError, match=r"structure 1: atoms (2 and 5|5 and 2) are 0\.030"):
        _device(frames, pair_lists)
    _device(frames, pair_lists, check=False)  # no check: built anyway


def test_unordered_system_is_a_usage_error():
    positions, numbers, cell, pbc, system = _inputs([_ethanol(), _small_cell()])
    with pytest.raises(UsageError, match="ordered by structure"):
        device_graph(positions, numbers, cell, pbc, ELEMENTS, {5.0: None},
                     system=system.flip(0))


def test_on_cuda():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    frames = [STRUCTURES[name]() for name in BATCH]
    positions, numbers, cell, pbc, system = _inputs(frames)
    got = device_graph(positions.cuda(), numbers.cuda(), cell.cuda(), pbc.cuda(), ELEMENTS,
                       {5.0: 3.5}, system=system.cuda())
    assert all(v.device.type == "cuda" for v in got.values())
    _assert_same_graph({k: v.cpu() for k, v in got.items()}, _numpy(frames, {5.0: 3.5}),
                       {5.0: 3.5})


def test_far_apart_atoms_take_the_numpy_blocks():
    """Atoms 10⁵ Å apart: a cell grid vesin cannot take (VESIN_MAX_CELLS); the NumPy
    list's blocks serve instead, with the same pairs."""
    atoms = Atoms("H2CO", positions=[[0, 0, 0], [0.74, 0, 0], [1e5, 0, 0], [1e5, 1.1, 0]])
    _assert_same_graph(_device([atoms], {5.0: 3.5}), _numpy([atoms], {5.0: 3.5}), {5.0: 3.5})
