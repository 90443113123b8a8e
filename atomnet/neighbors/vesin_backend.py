"""vesin backend: pairs within a cutoff, for molecules and (mixed) periodic cells."""

from __future__ import annotations

import numpy as np
import torch
from vesin import NeighborList

from .. import keys
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
    pbc = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,))
    positions = np.ascontiguousarray(positions, dtype=np.float64)
    if not pbc.any():
        cell = np.zeros((3, 3))  # open boundaries: vesin needs no box
    else:
        cell = np.ascontiguousarray(cell, dtype=np.float64)
    nl = NeighborList(cutoff=float(cutoff), full_list=True, sorted=True)
    i, j, s = nl.compute(positions, cell, [bool(p) for p in pbc], quantities="ijS")
    return i.astype(np.int64), j.astype(np.int64), s.astype(np.int64)


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
