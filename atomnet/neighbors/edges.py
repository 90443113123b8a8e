"""Edge vectors recomputed from positions and cell (differentiable)."""

from __future__ import annotations

import torch

from .. import keys


def edge_vectors(graph: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Edge vectors r_j - r_i + S @ cell (E, 3) Å and their lengths (E,) Å.

    Also stored in ``graph`` as ``edge_vectors`` / ``edge_lengths``.
    Differentiable with respect to positions and cell.
    """
    i, j = graph[keys.EDGE_INDEX]
    pos = graph[keys.POSITIONS]
    vec = pos[j] - pos[i]
    shifts = graph[keys.EDGE_SHIFTS]
    if shifts.numel() and bool(graph[keys.PBC].any()):  # molecules: all shifts are zero
        cell = graph[keys.CELL][graph[keys.BATCH][i]]  # (E, 3, 3)
        vec = vec + torch.einsum("ea,eab->eb", shifts, cell)
    lengths = torch.linalg.vector_norm(vec, dim=-1)
    graph[keys.EDGE_VECTORS] = vec
    graph[keys.EDGE_LENGTHS] = lengths
    return vec, lengths
