"""Edge vectors recomputed from positions and cell (differentiable)."""

from __future__ import annotations

import torch

from .. import keys


def edge_vectors(
    graph: dict[str, torch.Tensor], fields: keys.PairKeys
) -> tuple[torch.Tensor, torch.Tensor]:
    """Edge vectors r_j - r_i + S @ cell (E, 3) Å and their lengths (E,) Å of one pair list.

    Also stored in ``graph`` under ``fields.vectors`` / ``fields.lengths``.
    Differentiable with respect to positions and cell.
    """
    i, j = graph[fields.index]
    pos = graph[keys.POSITIONS]
    # index_select, not [] indexing: its derivatives (index_add, index_select) batch
    # well, which matters for batched Hessian rows
    vec = pos.index_select(0, j) - pos.index_select(0, i)
    shifts = graph[fields.shifts]
    if shifts.numel() and bool(graph[keys.PBC].any()):  # molecules: all shifts are zero
        cell = graph[keys.CELL][graph[keys.BATCH][i]]  # (E, 3, 3)
        vec = vec + torch.einsum("ea,eab->eb", shifts, cell)
    lengths = torch.linalg.vector_norm(vec, dim=-1)
    graph[fields.vectors] = vec
    graph[fields.lengths] = lengths
    return vec, lengths
