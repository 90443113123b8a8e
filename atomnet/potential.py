"""Potential: named energy terms → per-atom contributions → total energy per structure.

Each term is a module mapping a graph to per-atom energies (N,) in eV and
declaring the fields it ``reads``. The potential recomputes edge vectors from
positions and cell (contract 1), runs every term, keeps each term's per-atom
contribution visible (contract 3) and sums them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from . import keys
from .neighbors import edge_vectors
from .nn import sum_per_structure

#: fields every graph provides before any term runs
PROVIDED = {
    keys.POSITIONS, keys.NUMBERS, keys.SPECIES, keys.CELL, keys.PBC, keys.BATCH,
    keys.N_ATOMS, keys.TOTAL_CHARGE, keys.EDGE_INDEX, keys.EDGE_SHIFTS,
    keys.EDGE_VECTORS, keys.EDGE_LENGTHS, keys.TRIPLET_EDGES,
}


class Potential(nn.Module):
    """Sum of named energy terms over one set of elements and one neighbour cutoff.

    Args:
        terms: ``{name: module}``; each module's ``forward(graph)`` returns (N,) eV.
        elements: element symbols; ``species`` indexes this list.
        cutoff: neighbour-list cutoff in Å (the largest any term needs).
        config: the build recipe (model section etc.), stored in model files.
    """

    def __init__(
        self,
        terms: Mapping[str, nn.Module],
        elements: Sequence[str],
        cutoff: float,
        config: dict | None = None,
    ):
        super().__init__()
        self.elements = list(elements)
        self.cutoff = float(cutoff)
        self.config = dict(config or {})
        self.terms = nn.ModuleDict(terms)
        self._check_wiring()
        wanted = [t.triplet_cutoff for t in terms.values() if getattr(t, "triplet_cutoff", None)]
        #: cutoff (Å) of the angular triplets the graph must carry, or None
        self.triplet_cutoff = max(wanted) if wanted else None

    def _check_wiring(self) -> None:
        available = set(PROVIDED)
        for name, term in self.terms.items():
            missing = set(getattr(term, "reads", ())) - available
            if missing:
                raise ValueError(
                    f"energy term {name!r} reads {sorted(missing)}, which no earlier stage writes"
                )
            available |= set(getattr(term, "writes", ()))

    @property
    def term_names(self) -> list[str]:
        return list(self.terms)

    def forward(self, graph: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Evaluate all terms. Returns a new dict: the graph plus

        ``contributions`` ({name: (N,) eV}), ``atomic_energies`` (N,) eV and
        ``energy`` (B,) eV.
        """
        graph = dict(graph)
        edge_vectors(graph)
        contributions = {}
        total = None
        for name, term in self.terms.items():
            e = term(graph)
            contributions[name] = e
            total = e if total is None else total + e
        n_structures = graph[keys.N_ATOMS].shape[0]
        graph[keys.CONTRIBUTIONS] = contributions
        graph[keys.ATOMIC_ENERGIES] = total
        graph[keys.ENERGY] = sum_per_structure(total, graph[keys.BATCH], n_structures)
        return graph

    def graph(self, atoms, **kwargs) -> dict[str, torch.Tensor]:
        """Graph of ``atoms`` with the neighbours and triplets this potential needs.

        Keyword arguments go to :func:`atomnet.structures.atoms_to_graph`.
        """
        from .structures import atoms_to_graph

        return atoms_to_graph(
            atoms, self.elements, cutoff=self.cutoff, triplet_cutoff=self.triplet_cutoff, **kwargs
        )

    def extra_repr(self) -> str:
        return f"elements={self.elements}, cutoff={self.cutoff} Å"
