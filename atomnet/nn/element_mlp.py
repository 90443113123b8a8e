"""One small MLP per element, applied to the atoms of that element."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

#: smooth activations only: second derivatives must exist for Hessians
ACTIVATIONS = {"silu": nn.SiLU, "tanh": nn.Tanh, "celu": nn.CELU, "softplus": nn.Softplus}


def _mlp(n_in: int, hidden: Sequence[int], activation: str) -> nn.Sequential:
    layers: list[nn.Module] = []
    width = n_in
    for h in hidden:
        layers += [nn.Linear(width, h), ACTIVATIONS[activation]()]
        width = h
    layers.append(nn.Linear(width, 1))
    return nn.Sequential(*layers)


class ElementMLP(nn.Module):
    """Per-element networks: features (N, F) and species (N,) → one scalar per atom (N,).

    Atoms are grouped by element (a loop over elements, never over atoms).
    """

    def __init__(self, n_species: int, n_in: int, hidden: Sequence[int], activation: str):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"activation must be a smooth one of {sorted(ACTIVATIONS)}, got {activation!r}"
            )
        self.nets = nn.ModuleList(_mlp(n_in, hidden, activation) for _ in range(n_species))

    def forward(self, features: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        out = features.new_zeros(features.shape[0])
        for s, net in enumerate(self.nets):
            idx = torch.nonzero(species == s).squeeze(-1)
            if idx.numel():
                out = out.index_put((idx,), net(features[idx]).squeeze(-1))
        return out
