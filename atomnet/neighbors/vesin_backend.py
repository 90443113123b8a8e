"""vesin backend: pairs within a cutoff, for molecules and (mixed) periodic cells."""

from __future__ import annotations

import numpy as np
import torch
from vesin import NeighborList

from .. import keys


def neighbor_pairs(
    positions: np.ndarray, cell: np.ndarray, pbc, cutoff: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All ordered pairs (i, j, S) with |r_j - r_i + S @ cell| < cutoff, i ≠ j or S ≠ 0.

    Args:
        positions: (N, 3) Å.  cell: (3, 3) Å, rows are cell vectors.
        pbc: bool or 3 bools.  cutoff: Å.
    Returns:
        i (E,) int64, j (E,) int64, S (E, 3) int64 cell shifts; sorted by i.
    """
    pbc = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,))
    positions = np.ascontiguousarray(positions, dtype=np.float64)
    if not pbc.any():
        # vesin needs no box for open boundaries; give it a zero one
        cell = np.zeros((3, 3))
    else:
        cell = np.ascontiguousarray(cell, dtype=np.float64)
    nl = NeighborList(cutoff=float(cutoff), full_list=True, sorted=True)
    i, j, s = nl.compute(positions, cell, [bool(p) for p in pbc], quantities="ijS")
    return i.astype(np.int64), j.astype(np.int64), s.astype(np.int64)


def add_neighbors(graph: dict[str, torch.Tensor], cutoff: float) -> dict[str, torch.Tensor]:
    """Add ``edge_index`` and ``edge_shifts`` to a single-structure graph (in place).

    Shifts are stored as floats holding integers, ready to multiply with the cell.
    """
    positions = graph[keys.POSITIONS].detach().cpu().double().numpy()
    cell = graph[keys.CELL][0].detach().cpu().double().numpy()
    pbc = graph[keys.PBC][0].cpu().numpy()
    i, j, s = neighbor_pairs(positions, cell, pbc, cutoff)
    device = graph[keys.POSITIONS].device
    graph[keys.EDGE_INDEX] = torch.from_numpy(np.stack([i, j])).to(device)
    graph[keys.EDGE_SHIFTS] = torch.from_numpy(s).to(device=device, dtype=graph[keys.CELL].dtype)
    return graph
