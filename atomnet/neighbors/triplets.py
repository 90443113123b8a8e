"""Angular triplets from a pair list: integer work only, vectorised in NumPy, and the
same in torch (TorchScript-compatible, on any device)."""

# no ``from __future__ import annotations``: TorchScript reads the torch functions'
# annotations as types
import numpy as np
import torch


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


def torch_triplets_by_center(center: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`triplets_by_center` in torch: unordered pairs (e1 < e2) of edges sharing a
    center, ``center`` (E,) int64 *sorted ascending*; the same pairs in the same order
    (by e2, then e1), (T,) int64 each, on ``center``'s device. TorchScript-compatible
    (the LAMMPS export scripts it). Does not check the sorting. On a GPU,
    ``repeat_interleave`` waits for the device (its output size).
    """
    n = center.shape[0]
    if n < 2:
        empty = torch.zeros(0, dtype=torch.long, device=center.device)
        return empty, empty
    arange = torch.arange(n, device=center.device)
    first = torch.searchsorted(center, center)  # first edge of each edge's center
    rank = arange - first  # edges before it, same center: its e1 partners
    e2 = torch.repeat_interleave(arange, rank)
    # e1 runs first, first + 1, … within each e2's run of triplets: position − offset
    offset = torch.cumsum(rank, 0) - rank - first
    e1 = torch.arange(e2.shape[0], device=center.device) - offset.index_select(0, e2)
    return e1, e2


def torch_angular_triplets(i: torch.Tensor, distances: torch.Tensor,
                           cutoff: float) -> torch.Tensor:
    """:func:`angular_triplets` in torch: (2, T) int64 pairs of edge indices sharing a
    center, both edges shorter than ``cutoff`` (Å); ``i`` (E,) sorted ascending,
    ``distances`` (E,) Å. TorchScript-compatible."""
    close = torch.nonzero(distances < cutoff).squeeze(1)
    a, b = torch_triplets_by_center(i.index_select(0, close))
    return torch.stack([close.index_select(0, a), close.index_select(0, b)])
