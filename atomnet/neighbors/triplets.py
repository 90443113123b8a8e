"""Angular triplets from a pair list: integer work only, vectorised in NumPy."""

from __future__ import annotations

import numpy as np


def triplets_by_center(centers: np.ndarray, n_atoms: int) -> tuple[np.ndarray, np.ndarray]:
    """All unordered pairs of edges that share a center atom.

    Args:
        centers: (E,) center atom of each edge, *sorted ascending*.
        n_atoms: number of atoms.
    Returns:
        (e1, e2): (T,) int64 positions in ``centers`` with e1 < e2 and
        ``centers[e1] == centers[e2]``; each unordered pair once.

    For a center with c edges the local pairs (b, a), b > a, are enumerated in
    row-major lower-triangle order (1,0), (2,0), (2,1), (3,0), …, which does not
    depend on c, so one ``tril_indices`` table serves every center.
    """
    centers = np.asarray(centers, dtype=np.int64)
    if centers.size and np.any(np.diff(centers) < 0):
        raise ValueError("triplets_by_center needs edges sorted by center")
    counts = np.bincount(centers, minlength=n_atoms)
    if counts.size == 0 or counts.max() < 2:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    pair_counts = counts * (counts - 1) // 2
    edge_offsets = np.cumsum(counts) - counts
    pair_offsets = np.cumsum(pair_counts) - pair_counts
    center_of_pair = np.repeat(np.arange(n_atoms), pair_counts)
    local = np.arange(center_of_pair.size) - pair_offsets[center_of_pair]
    rows, cols = np.tril_indices(int(counts.max()), -1)
    base = edge_offsets[center_of_pair]
    return base + cols[local], base + rows[local]


def angular_triplets(
    i: np.ndarray, distances: np.ndarray, cutoff: float, n_atoms: int
) -> np.ndarray:
    """(2, T) pairs of edge indices sharing a center, both edges shorter than ``cutoff`` (Å).

    ``i`` must be sorted ascending (vesin's ``sorted=True`` output).
    """
    close = np.nonzero(distances < cutoff)[0]
    a, b = triplets_by_center(i[close], n_atoms)
    return np.stack([close[a], close[b]])
