"""Angular triplets from an edge list, fully vectorised (integer work only)."""

from __future__ import annotations

import torch


def triplets_by_center(centers: torch.Tensor, n_atoms: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All unordered pairs of edges that share a center atom.

    Args:
        centers: (E,) center atom of each edge, *sorted ascending*.
        n_atoms: number of atoms.
    Returns:
        (e1, e2): (T,) indices into the edge list with e1 < e2 and
        ``centers[e1] == centers[e2]``; each unordered pair once.

    For a center with c edges, local pairs (b, a), b > a are enumerated in the
    row-major lower-triangle order (1,0), (2,0), (2,1), (3,0), …, which does
    not depend on c, so one ``tril_indices`` table serves every center.
    """
    device = centers.device
    counts = torch.bincount(centers, minlength=n_atoms)
    if counts.numel() == 0 or int(counts.max()) < 2:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return empty, empty
    pair_counts = counts * (counts - 1) // 2
    edge_offsets = torch.cumsum(counts, 0) - counts
    pair_offsets = torch.cumsum(pair_counts, 0) - pair_counts
    center_of_pair = torch.repeat_interleave(torch.arange(n_atoms, device=device), pair_counts)
    local = torch.arange(center_of_pair.numel(), device=device) - pair_offsets[center_of_pair]
    max_count = int(counts.max())
    tril = torch.tril_indices(max_count, max_count, -1, device=device)
    base = edge_offsets[center_of_pair]
    return base + tril[1][local], base + tril[0][local]
