"""vesin backend: pairs within a cutoff, for molecules and (mixed) periodic cells."""

from __future__ import annotations

import numpy as np
import torch
from vesin import NeighborList

from .. import keys
from .blocks import BLOCKS_ABOVE, block_pairs
from .triplets import angular_triplets


def neighbor_pairs(
    positions: np.ndarray, cell: np.ndarray, pbc, cutoff: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All ordered pairs (i, j, S) with |r_j − r_i + S @ cell| < cutoff, i ≠ j or S ≠ 0.

    Args:
        positions: (N, 3) Å.  cell: (3, 3) Å, rows are cell vectors.
        pbc: bool or 3 bools.  cutoff: Å.
    Returns:
        i (E,) int64, j (E,) int64, S (E, 3) int64 cell shifts; sorted by i.
    """
    if _vesin_cells(positions, cutoff) > VESIN_MAX_CELLS:  # vesin would crash (SIGFPE)
        found = block_pairs(positions, cell, pbc, cutoff)
        if found is not None:
            index, shifts = found
            return (index[0].numpy(), index[1].numpy(),
                    shifts.numpy().round().astype(np.int64))
    i, j, s = _vesin(positions, cell, pbc, cutoff)
    return i.astype(np.int64), j.astype(np.int64), s.astype(np.int64)


def _vesin(positions: np.ndarray, cell: np.ndarray, pbc, cutoff: float):
    """vesin's full, center-sorted list as it comes (i, j uint64; S int32)."""
    pbc = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,))
    positions = np.ascontiguousarray(positions, dtype=np.float64)
    if not pbc.any():
        cell = np.zeros((3, 3))  # open boundaries: vesin needs no box
    else:
        cell = np.ascontiguousarray(cell, dtype=np.float64)
    nl = NeighborList(cutoff=float(cutoff), full_list=True, sorted=True)
    return nl.compute(positions, cell, [bool(p) for p in pbc], quantities="ijS")


#: cutoff-sized cells along the atoms' bounding box beyond which vesin is not asked: it
#: dies of a floating-point exception (SIGFPE) from ~5 × 10⁴ (vesin 0.6.2, e.g. two
#: molecules 10⁵ Å apart with a 1 Å cutoff)
VESIN_MAX_CELLS = 1e4


def _vesin_cells(positions: np.ndarray, cutoff: float) -> float:
    if len(positions) < 2:
        return 0.0
    return float(np.ptp(np.asarray(positions, dtype=np.float64), axis=0).max()) / cutoff


def neighbours_per_atom(positions: np.ndarray, cell: np.ndarray, pbc, cutoff: float) -> float:
    """A rough count of neighbours per atom within ``cutoff``: density (atoms per cell
    volume, or per bounding box where not periodic in 3-D) × sphere volume; at most
    N − 1 for a molecule."""
    pbc = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,))
    n = len(positions)
    if n == 0:
        return 0.0
    if pbc.all():
        volume = abs(float(np.linalg.det(cell)))
    else:
        extent = np.ptp(np.asarray(positions, dtype=np.float64), axis=0)
        volume = float(np.prod(np.maximum(extent, 1.0)))
    estimate = n * 4.0 / 3.0 * np.pi * cutoff**3 / max(volume, 1e-12)
    return min(estimate, n - 1.0) if not pbc.any() else estimate


def pair_list(
    positions: np.ndarray, cell: np.ndarray, pbc, cutoff: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The pairs of :func:`neighbor_pairs` as a graph stores them: index (2, E) int64 and
    shifts (E, 3) float64 torch tensors, sorted by center.

    vesin below :data:`~atomnet.neighbors.blocks.BLOCKS_ABOVE` neighbours per atom;
    above it (long reach: D3's 60 Bohr) :func:`~atomnet.neighbors.blocks.block_pairs`,
    several times faster there, and also where vesin's cell grid would be too fine
    (:data:`VESIN_MAX_CELLS`). Same pairs; within a center, vesin orders them by
    neighbour, blocks by shift.
    """
    if neighbours_per_atom(positions, cell, pbc, cutoff) > BLOCKS_ABOVE \
            or _vesin_cells(positions, cutoff) > VESIN_MAX_CELLS:
        found = block_pairs(positions, cell, pbc, cutoff)
        if found is not None:
            return found
    i, j, s = _vesin(positions, cell, pbc, cutoff)
    index = np.stack([i, j])
    # vesin's uint64 indices are far below 2⁶³: reinterpreted, not copied again
    index = index.view(np.int64) if index.dtype == np.uint64 else index.astype(np.int64)
    index = torch.from_numpy(index)
    return index, torch.from_numpy(s.astype(np.float64))


def pair_distances(
    positions: np.ndarray, cell: np.ndarray, pairs: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> np.ndarray:
    """|r_j − r_i + S @ cell| (E,) in Å, in NumPy: for selecting pairs and checking input.

    Never enters a model (contract 1): models recompute distances differentiably.
    """
    i, j, s = pairs
    return np.linalg.norm(positions[j] - positions[i] + s @ cell, axis=1)


def pairs_to_graph(
    graph: dict[str, torch.Tensor],
    fields: keys.PairKeys,
    pairs: tuple[np.ndarray, np.ndarray, np.ndarray],
    distances: np.ndarray,
    triplet_cutoff: float | None = None,
) -> dict[str, torch.Tensor]:
    """Store one pair list (and, if asked, its angular triplets) in a one-structure graph.

    Adds ``fields.index`` (2, E), ``fields.shifts`` (E, 3) (integer values, float
    dtype, ready to multiply with the cell) and, with ``triplet_cutoff`` (Å),
    ``fields.triplets`` (2, T), selected with ``distances`` (E,) Å from
    :func:`pair_distances`. Modifies ``graph`` in place.
    """
    i, j, s = pairs
    graph[fields.index] = torch.from_numpy(np.stack([i, j]))
    graph[fields.shifts] = torch.from_numpy(s.astype(np.float64))
    if triplet_cutoff is not None:
        n_atoms = graph[keys.POSITIONS].shape[0]
        graph[fields.triplets] = torch.from_numpy(
            angular_triplets(i, distances, triplet_cutoff, n_atoms)
        )
    return graph
