"""Neighbour lists (vesin, and blocks at long reach) against ASE and each other, triplets
against a brute-force loop, edge vectors of batches."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule
from ase.neighborlist import neighbor_list

from atomnet import keys
from atomnet.neighbors import (
    angular_triplets,
    block_pairs,
    edge_vectors,
    neighbor_pairs,
    neighbours_per_atom,
    pair_list,
    triplets_by_center,
)
from atomnet.neighbors.blocks import BLOCKS_ABOVE
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


# --- long-reach pair lists (blocks), one search per cutoff, batched edge vectors ---------
def _molecule_cloud() -> Atoms:
    """A flat cloud of 40 atoms (z extent 0): blocks on a grid with a negligible axis."""
    rng = np.random.default_rng(4)
    positions = np.c_[rng.uniform(0.0, 12.0, (40, 2)), np.zeros(40)]
    return Atoms("H" * 40, positions=positions)


BLOCK_CASES = {**CASES, "flat_cloud": _molecule_cloud}


@pytest.mark.parametrize("cutoff", [CUTOFF, 9.0, 17.0])
@pytest.mark.parametrize("case", BLOCK_CASES)
def test_block_pairs_match_vesin(case, cutoff):
    """The long-reach builder finds vesin's pairs (every cell shape, mixed periodicity,
    positions outside the cell, cells far smaller than the cutoff), sorted by center."""
    atoms = BLOCK_CASES[case]()
    index, shifts = block_pairs(atoms.positions, atoms.cell.array, atoms.pbc, cutoff, rows=5)
    assert index.dtype == torch.int64 and shifts.dtype == torch.float64
    assert shifts.shape == (index.shape[1], 3)
    i, j = index.numpy()
    assert np.all(np.diff(i) >= 0)
    assert not np.any(shifts.numpy()[:, ~atoms.pbc]), "shift along a non-periodic direction"
    assert np.array_equal(shifts.numpy(), np.round(shifts.numpy()))
    ref = neighbor_pairs(atoms.positions, atoms.cell.array, atoms.pbc, cutoff)
    assert len(i) == len(ref[0]) > 0
    assert _as_set(i, j, shifts.numpy()) == _as_set(*ref)


def test_pair_list_takes_blocks_at_long_reach(water_box, monkeypatch):
    """pair_list hands long reach to blocks (and short reach to vesin): the same pairs."""
    import atomnet.neighbors.vesin_backend as backend

    calls = []
    original = backend.block_pairs
    monkeypatch.setattr(backend, "block_pairs",
                        lambda *args, **kw: calls.append(args[-1]) or original(*args, **kw))
    args = (water_box.positions, water_box.cell.array, water_box.pbc)
    for cutoff in (CUTOFF, 12.0):
        index, shifts = pair_list(*args, cutoff)
        i, j = index.numpy()
        assert np.all(np.diff(i) >= 0)
        assert _as_set(i, j, shifts.numpy()) == _as_set(*neighbor_pairs(*args, cutoff))
    assert neighbours_per_atom(*args, CUTOFF) < BLOCKS_ABOVE < neighbours_per_atom(*args, 12.0)
    assert calls == [12.0]


def test_each_cutoff_has_its_own_exact_list(water_box, monkeypatch):
    """A short list next to a long one (a network beside D3): each gets its own search
    (the short one is not selected from the long one), holds exactly the pairs closer
    than its cutoff, sorted by center, with its own triplets."""
    import atomnet.structures.graph as graph_module

    searched = []
    original = graph_module.pair_list
    monkeypatch.setattr(graph_module, "pair_list",
                        lambda *args: searched.append(args[-1]) or original(*args))
    graph = atoms_to_graph(water_box, ["H", "O"], pair_lists={CUTOFF: 3.5, 12.0: None})
    assert searched == [CUTOFF, 12.0]
    short, long = keys.pairs(CUTOFF), keys.pairs(12.0)
    assert short.triplets in graph and long.triplets not in graph
    _, d_long = edge_vectors(graph, long)
    i, j = graph[long.index].numpy()
    s = graph[long.shifts].numpy()
    keep = d_long.numpy() < CUTOFF
    i_short, j_short = graph[short.index].numpy()
    assert np.all(np.diff(i_short) >= 0) and np.all(np.diff(i) >= 0)
    assert _as_set(i_short, j_short, graph[short.shifts].numpy()) == \
        _as_set(i[keep], j[keep], s[keep])
    _, d_short = edge_vectors(graph, short)
    got = {tuple(sorted(map(int, t))) for t in graph[short.triplets].T}
    assert got == _brute_force_triplets(i_short, d_short.numpy(), 3.5)


def test_overlap_is_caught_without_a_short_list():
    """A potential with only a long list (D3 alone) still rejects overlapping atoms."""
    from atomnet.structures import StructureError

    atoms = _triclinic()
    atoms.positions[3] = atoms.positions[7] + [0.03, 0.0, 0.0]
    with pytest.raises(StructureError, match="atoms 3 and 7 are 0.030 Å apart"):
        atoms_to_graph(atoms, ["H"], pair_lists={12.0: None})


def test_batched_edge_vectors_match_single_structures(water_box, water_cell, ethanol):
    """S @ cell per structure's slice of a collated list (and by gathering cells where the
    edges are not grouped by structure), differentiable with respect to every cell."""
    from atomnet.structures import collate

    structures = [water_box, ethanol, water_cell]
    graphs = [atoms_to_graph(a, ["H", "C", "O"], pair_lists={CUTOFF: None}) for a in structures]
    fields = keys.pairs(CUTOFF)
    singles = [edge_vectors(dict(g), fields)[0] for g in graphs]
    batch = collate(graphs)
    cell = batch[keys.CELL].clone().requires_grad_(True)
    for order in ("as collated", "reversed"):
        graph = dict(batch, **{keys.CELL: cell})
        if order == "reversed":
            flip = torch.arange(graph[fields.index].shape[1] - 1, -1, -1)
            graph[fields.index] = graph[fields.index][:, flip]
            graph[fields.shifts] = graph[fields.shifts][flip]
        vectors, _ = edge_vectors(graph, fields)
        if order == "reversed":
            vectors = vectors[flip]
        assert torch.allclose(vectors.detach(), torch.cat(singles), rtol=0, atol=1e-12)
        (grad,) = torch.autograd.grad(vectors.sum(), cell)
        expected = torch.stack([g[fields.shifts].sum(0).unsqueeze(1).expand(3, 3)
                                for g in graphs])
        assert torch.allclose(grad, expected, rtol=0, atol=1e-12)


def test_far_apart_fragments_are_searched_by_blocks():
    """Two molecules 10⁵ Å apart with a 1 Å cutoff: vesin's cell grid would be 10⁵ cells
    long (vesin dies of SIGFPE there), so blocks take it; same pairs as brute force."""
    a = molecule("CH3CH2OH")
    b = a.copy()
    b.positions[:, 0] += 1e5
    atoms = a + b
    index, shifts = pair_list(atoms.positions, atoms.cell.array, atoms.pbc, 1.2)
    d = np.linalg.norm(atoms.positions[:, None] - atoms.positions[None], axis=-1)
    i, j = np.nonzero((d < 1.2) & ~np.eye(len(atoms), dtype=bool))
    assert _as_set(*index.numpy(), shifts.numpy()) == _as_set(i, j, np.zeros((len(i), 3)))
    assert len(i) == 2 * 12  # the C–H and O–H bonds of both molecules, both ways


def test_long_lists_give_the_same_vectors_and_derivatives(potential, water_box, water_cell,
                                                          ethanol, monkeypatch):
    """Lists above CHUNKED_ABOVE edges are filled chunk by chunk by an autograd function:
    the same vectors and lengths, and the same energies, forces, stress and Hessians
    (second derivatives through its backward, batched rows included) as the plain
    expression; a batch of structures too."""
    import atomnet.neighbors.edges as edges
    from atomnet.derivatives import evaluate
    from atomnet.structures import collate

    structures = [water_box, ethanol, water_cell]
    graph = collate([potential.graph(a) for a in structures])
    single = collate([potential.graph(water_cell)])
    results = []
    for threshold in (None, 0):
        if threshold is not None:
            monkeypatch.setattr(edges, "CHUNKED_ABOVE", threshold)
            monkeypatch.setattr(edges, "CHUNK", 7)
        fields = keys.pairs(CUTOFF)
        vectors, lengths = edge_vectors(dict(graph), fields)
        batch = evaluate(potential, graph, forces=True, stress=True, hessian=True)
        cell = evaluate(potential, single, forces=True, stress=True, hessian=True)
        results.append([vectors.detach(), lengths.detach(), batch.energy, batch.forces,
                        batch.stress, *batch.hessian, cell.stress, *cell.hessian])
    for a, b in zip(*results):
        assert torch.allclose(a.detach(), b.detach(), rtol=0, atol=1e-12)


def test_overlap_check_survives_structures_far_apart():
    """vesin 0.6.2 dies (SIGFPE) when its cell grid is too fine: e.g. two molecules
    10⁵ Å apart at the overlap check's 1 Å. The check must still run, and still catch
    an overlap."""
    from ase.build import molecule

    from atomnet.structures.errors import StructureError
    from atomnet.structures.validate import validate_atoms

    a, b = molecule("H2O"), molecule("H2O")
    b.positions += [1e5, 0.0, 0.0]
    validate_atoms(a + b, elements=["H", "O"])
    b.positions[1] = b.positions[0] + [0.05, 0.0, 0.0]
    with pytest.raises(StructureError, match="overlap|close"):
        validate_atoms(a + b, elements=["H", "O"])
