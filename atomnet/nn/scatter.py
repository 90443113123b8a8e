"""Scatter helpers (differentiable to any order)."""

from __future__ import annotations

import torch


def sum_per_structure(values: torch.Tensor, batch: torch.Tensor, n_structures: int) -> torch.Tensor:
    """Sum per-atom ``values`` (N, ...) into (B, ...) by ``batch`` index."""
    out = values.new_zeros((n_structures, *values.shape[1:]))
    return out.index_add(0, batch, values)
