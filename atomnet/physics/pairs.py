"""Template for pair tails: a subclass writes one pair energy, the base does the rest.

:class:`PairTerm` reads one integer pair list (its ``pair_cutoff``, Å), gets
distances from the potential (contract 1), asks :meth:`PairTerm.pair_energy` for
the energy of each directed edge i→j (eV, the *whole* pair energy e_ij = e_ji),
and gives each atom half of its pairs' energies: E_i = ½ Σ_j e_ij. Switching
belongs in ``pair_energy`` (see :mod:`atomnet.physics.switching`). Pair lists
are full (both directions), so Σ_i E_i = Σ_{i<j} e_ij.
"""

from __future__ import annotations

import torch

from .. import keys
from ..terms import Term


class PairTerm(Term):
    """Energy term E_i = ½ Σ_j e(r_ij) over the pairs closer than ``cutoff`` (Å)."""

    kind = "energy"

    def __init__(self, cutoff: float):
        super().__init__()
        self.pair_cutoff = float(cutoff)
        self.fields = keys.pairs(self.pair_cutoff)
        self.reads = (self.fields.index, self.fields.lengths, keys.SPECIES, keys.NUMBERS)

    def pair_energy(self, graph: dict[str, torch.Tensor], r: torch.Tensor,
                    i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        """Energy (E,) eV of each directed pair i→j at distance ``r`` (E,) Å."""
        raise NotImplementedError

    def forward(self, graph: dict[str, torch.Tensor]) -> torch.Tensor:
        i, j = graph[self.fields.index]
        r = graph[self.fields.lengths]
        e = self.pair_energy(graph, r, i, j)
        n = graph[keys.POSITIONS].shape[0]
        return e.new_zeros(n).index_add(0, i, 0.5 * e)
