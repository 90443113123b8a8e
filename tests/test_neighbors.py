"""Neighbour lists (vesin) against ASE, and triplets against a brute-force loop."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule
from ase.neighborlist import neighbor_list

from atomnet import keys
from atomnet.neighbors import angular_triplets, edge_vectors, neighbor_pairs, triplets_by_center
from atomnet.structures import atoms_to_graph

CUTOFF = 5.0


def _random_cell(seed: int, n: int, cell: np.ndarray, pbc) -> Atoms:
    rng = np.random.default_rng(seed)
    atoms = Atoms("H" * n, cell=cell, pbc=pbc)
    atoms.set_scaled_positions(rng.uniform(size=(n, 3)))
    return atoms


def _triclinic() -> Atoms:
    cell = np.array([[7.0, 0.0, 0.0], [1.5, 6.5, 0.0], [-1.0, 0.8, 6.0]])
    return _random_cell(0, 12, cell, True)


def _slab() -> Atoms:
    cell = np.array([[6.0, 0.0, 0.0], [2.0, 5.5, 0.0], [0.0, 0.0, 12.0]])
    return _random_cell(1, 10, cell, [True, True, False])


def _small_cell() -> Atoms:
    """Cell vectors of 2–2.5 Å with a 5 Å cutoff: several images of every atom."""
    cell = np.array([[2.0, 0.0, 0.0], [0.4, 2.2, 0.0], [0.3, -0.2, 2.5]])
    return _random_cell(2, 2, cell, True)


def _single_atom_cell() -> Atoms:
    return Atoms("H", positions=[[0.1, 0.2, 0.3]], cell=np.eye(3) * 1.7, pbc=True)


def _outside_cell() -> Atoms:
    """Positions far outside the cell (not wrapped)."""
    atoms = _triclinic()
    atoms.positions += np.array([13.2, -21.7, 8.9])
    return atoms


def _rotation(seed: int) -> np.ndarray:
    """A random proper rotation matrix (no cell vector stays on an axis)."""
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def _rotated_mixed_pbc(seed: int) -> Atoms:
    """A triclinic cell rotated off the axes, periodic along a and c only, atoms spread
    outside the cell (negative coordinates too).

    vesin < 0.5.8 missed pairs in rotated boxes with some non-periodic directions (seeds 9
    and 13 lose pairs with vesin 0.5.7).
    """
    rng = np.random.default_rng(seed)
    cell = np.diag(rng.uniform(3.0, 8.0, 3)) + np.tril(rng.uniform(-1.5, 1.5, (3, 3)), -1)
    n = int(rng.integers(3, 15))
    atoms = Atoms("H" * n, cell=cell, pbc=[True, False, True])
    atoms.set_scaled_positions(rng.uniform(-0.5, 1.5, (n, 3)))
    atoms.set_cell(cell @ _rotation(seed + 10).T, scale_atoms=True)
    return atoms


CASES = {
    "molecule": lambda: molecule("CH3CH2OH"),
    "triclinic": _triclinic,
    "slab": _slab,
    "small_cell": _small_cell,
    "single_atom_cell": _single_atom_cell,
    "outside_cell": _outside_cell,
    "rotated_mixed_pbc": lambda: _rotated_mixed_pbc(9),
    "rotated_mixed_pbc_2": lambda: _rotated_mixed_pbc(13),
}


def _as_set(i, j, shifts) -> set[tuple[int, ...]]:
    return {(int(a), int(b), *map(int, s)) for a, b, s in zip(i, j, shifts)}


@pytest.mark.parametrize("case", CASES)
def test_pairs_match_ase(case):
    atoms = CASES[case]()
    i, j, shifts = neighbor_pairs(atoms.positions, atoms.cell.array, atoms.pbc, CUTOFF)
    ref = neighbor_list("ijS", atoms, CUTOFF)
    assert len(i) == len(ref[0]) > 0
    assert _as_set(i, j, shifts) == _as_set(*ref)


@pytest.mark.parametrize("case", CASES)
def test_pairs_are_integers_sorted_by_center(case):
    atoms = CASES[case]()
    i, j, shifts = neighbor_pairs(atoms.positions, atoms.cell.array, atoms.pbc, CUTOFF)
    for array in (i, j, shifts):
        assert array.dtype == np.int64  # contract 1: no floats
    assert np.all(np.diff(i) >= 0)
    assert shifts.shape == (len(i), 3)
    assert not np.any(shifts[:, ~atoms.pbc]), "shift along a non-periodic direction"


@pytest.mark.parametrize("case", ["triclinic", "slab", "small_cell", "outside_cell"])
def test_edge_vectors_match_ase(case):
    """r_ij = r_j − r_i + S @ cell, recomputed from positions and cell (differentiable).

    Graphs hold wrapped, centred positions, so the integer shifts may differ from
    ASE's; the edges, as (i, j, vector), must be the same set.
    """
    atoms = CASES[case]()
    graph = atoms_to_graph(atoms, ["H"], pair_lists={CUTOFF: None})
    fields = keys.pairs(CUTOFF)
    vectors, lengths = edge_vectors(graph, fields)
    i, j = graph[fields.index].numpy()
    ref_i, ref_j, ref_d = neighbor_list("ijD", atoms, CUTOFF)

    def edges(a, b, d):
        return sorted(zip(a.tolist(), b.tolist(), np.round(d, 9).tolist()))

    got, want = edges(i, j, vectors.numpy()), edges(ref_i, ref_j, ref_d)
    assert len(got) == len(want)
    for (a, b, v), (c, d, w) in zip(got, want):
        assert (a, b) == (c, d)
        np.testing.assert_allclose(v, w, atol=1e-8)
    assert float(lengths.max()) < CUTOFF
    assert lengths.dtype == torch.float64


def _brute_force_triplets(i: np.ndarray, d: np.ndarray, cutoff: float) -> set[tuple[int, int]]:
    out = set()
    for e1, e2 in itertools.combinations(range(len(i)), 2):
        if i[e1] == i[e2] and d[e1] < cutoff and d[e2] < cutoff:
            out.add((e1, e2))
    return out


@pytest.mark.parametrize("case", ["molecule", "triclinic", "small_cell"])
def test_angular_triplets_match_brute_force(case):
    atoms = CASES[case]()
    i, j, shifts = neighbor_pairs(atoms.positions, atoms.cell.array, atoms.pbc, CUTOFF)
    d = np.linalg.norm(atoms.positions[j] - atoms.positions[i] + shifts @ atoms.cell.array, axis=1)
    e1, e2 = angular_triplets(i, d, 3.5, len(atoms))
    got = {(int(min(a, b)), int(max(a, b))) for a, b in zip(e1, e2)}
    assert len(got) == len(e1), "a triplet appears twice"
    assert got == _brute_force_triplets(i, d, 3.5)
    assert len(got) > 0


def test_graph_triplets_match_brute_force(water_box):
    graph = atoms_to_graph(water_box, ["H", "O"], pair_lists={CUTOFF: 3.5})
    fields = keys.pairs(CUTOFF)
    _, lengths = edge_vectors(graph, fields)
    i = graph[fields.index][0].numpy()
    got = {tuple(sorted(map(int, t))) for t in graph[fields.triplets].T}
    assert got == _brute_force_triplets(i, lengths.numpy(), 3.5)


@pytest.mark.parametrize("counts", [[], [1], [0, 3, 1, 5, 0, 2], [7], [2, 0, 0, 4]])
def test_triplets_by_center_match_brute_force(counts):
    centers = np.repeat(np.arange(len(counts)), counts).astype(np.int64)
    e1, e2 = triplets_by_center(centers, len(counts))
    assert np.all(e1 < e2)
    got = set(zip(e1.tolist(), e2.tolist()))
    expected = {
        (a, b) for a, b in itertools.combinations(range(len(centers)), 2)
        if centers[a] == centers[b]
    }
    assert got == expected and len(e1) == len(expected)


def test_triplets_by_center_needs_sorted_centers():
    with pytest.raises(ValueError, match="sorted"):
        triplets_by_center(np.array([1, 0, 1]), 2)


def test_vesin_is_recent_enough():
    """Per-axis periodicity came in vesin 0.4; 0.5.8 fixed missing pairs in rotated boxes."""
    import vesin

    try:
        from packaging.version import Version
    except ImportError:  # pragma: no cover
        def Version(text: str) -> tuple[int, ...]:  # noqa: N802
            return tuple(int(part) for part in text.split("+")[0].split(".")[:3])
    assert Version(vesin.__version__) >= Version("0.5.8"), vesin.__version__
