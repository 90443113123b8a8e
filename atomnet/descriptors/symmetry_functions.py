"""ANI-style radial and angular atom-centred symmetry functions (Smith et al. 2017).

Radial, for each neighbour element:
    G_R(i) = Σ_j exp(−η_R (r_ij − R_s)²) f_c(r_ij)
Angular, for each unordered pair of neighbour elements:
    G_A(i) = 2^(1−ζ) Σ_{j<k} (1 + cos(θ_ijk − θ_s))^ζ exp(−η_A ((r_ij + r_ik)/2 − R_s)²)
             f_c(r_ij) f_c(r_ik)
θ is taken as acos(0.95 cos θ), as in TorchANI, to keep derivatives finite at 0 and π.
Everything is vectorised over atoms, pairs and triplets.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .. import keys
from ..errors import UsageError
from .cutoff import CUTOFFS


def gaussian_radial(r: torch.Tensor, fc: torch.Tensor, shifts: torch.Tensor,
                    eta: float) -> torch.Tensor:
    """(E, n) Gaussians exp(−η (r − R_s)²) of edge lengths r times their cutoff values fc.

    Plain typed tensor code (TorchScript-compatible): the LAMMPS export uses it too.
    """
    d = r.unsqueeze(-1) - shifts
    return torch.exp(-eta * d * d) * fc.unsqueeze(-1)


def angular_products(unit1: torch.Tensor, unit2: torch.Tensor, r1: torch.Tensor,
                     r2: torch.Tensor, fc1: torch.Tensor, fc2: torch.Tensor,
                     angle_shifts: torch.Tensor, shifts: torch.Tensor, eta: float,
                     zeta: float) -> torch.Tensor:
    """(T, n_shifts · n_angles) ANI angular terms of triplets from their two edges' unit
    vectors, lengths and angular cutoff values (TorchScript-compatible, as above)."""
    cos = (unit1 * unit2).sum(-1)
    theta = torch.acos(0.95 * cos)
    angle = (1.0 + torch.cos(theta.unsqueeze(-1) - angle_shifts)) ** zeta
    d = 0.5 * (r1 + r2).unsqueeze(-1) - shifts
    weight = (2.0 ** (1.0 - zeta)) * fc1 * fc2
    radial = torch.exp(-eta * d * d) * weight.unsqueeze(-1)
    return (radial.unsqueeze(-1) * angle.unsqueeze(-2)).flatten(1)


def _gaussian_width(n: int, start: float, stop: float) -> float:
    """η (Å⁻²) for n Gaussians spread from start to stop: σ ≈ 0.6 × spacing (ANI-like)."""
    spacing = (stop - start) / max(n - 1, 1)
    sigma = 0.6 * spacing
    return 1.0 / (2.0 * sigma**2)


class SymmetryFunctions(nn.Module):
    """Per-atom descriptor vector from positions (through edge vectors) and species.

    Reads the pair list of ``radial_cutoff`` (index, vectors, lengths and the
    triplets built for ``triplet_cutoff`` = the angular cutoff) and ``species``.
    Output (N, n_features) with ``n_features = S·n_radial + S(S+1)/2 · n_angle_radial
    · n_angle_sections`` for S elements.
    """

    def __init__(
        self,
        n_species: int,
        radial_cutoff: float = 5.2,
        angular_cutoff: float = 3.5,
        n_radial: int = 16,
        n_angular_radial: int = 4,
        n_angle_sections: int = 8,
        zeta: float = 14.1,
        cutoff_fn: str = "polynomial",
    ):
        super().__init__()
        if angular_cutoff > radial_cutoff:
            raise UsageError("angular_cutoff must not exceed radial_cutoff")
        if cutoff_fn not in CUTOFFS:
            raise UsageError(f"cutoff_fn must be one of {sorted(CUTOFFS)}, got {cutoff_fn!r}")
        self.n_species = n_species
        self.radial_cutoff = float(radial_cutoff)
        self.angular_cutoff = float(angular_cutoff)
        self.triplet_cutoff = self.angular_cutoff
        self.fields = keys.pairs(self.radial_cutoff)
        f = self.fields
        self.reads = (f.index, f.vectors, f.lengths, f.triplets, keys.SPECIES)
        self.register_buffer(
            "cutoffs", torch.tensor([self.radial_cutoff, self.angular_cutoff]), persistent=False
        )
        self.zeta = float(zeta)
        self.cutoff_fn = CUTOFFS[cutoff_fn]
        r0 = 0.8
        self.register_buffer("radial_shifts", torch.linspace(r0, radial_cutoff - 0.5, n_radial))
        self.eta_radial = _gaussian_width(n_radial, r0, radial_cutoff - 0.5)
        self.register_buffer(
            "angular_shifts", torch.linspace(r0, angular_cutoff - 0.65, n_angular_radial)
        )
        self.eta_angular = _gaussian_width(n_angular_radial, r0, angular_cutoff - 0.65)
        sections = math.pi / n_angle_sections * (torch.arange(n_angle_sections) + 0.5)
        self.register_buffer("angle_shifts", sections)
        pair = torch.zeros(n_species, n_species, dtype=torch.long)
        rows, cols = torch.triu_indices(n_species, n_species)
        pair[rows, cols] = torch.arange(rows.numel())
        pair[cols, rows] = torch.arange(rows.numel())
        self.register_buffer("pair_index", pair)
        self.n_pairs = rows.numel()
        self.n_radial_features = n_species * n_radial
        self.n_angular_features = self.n_pairs * n_angular_radial * n_angle_sections
        self.n_features = self.n_radial_features + self.n_angular_features

    def radial_terms(self, r: torch.Tensor, fc: torch.Tensor) -> torch.Tensor:
        """(E, n_radial) Gaussians of each edge length times its cutoff value."""
        return gaussian_radial(r, fc, self.radial_shifts, self.eta_radial)

    def radial_blocks(self, graph: dict[str, torch.Tensor]) -> torch.Tensor:
        """(E,) the neighbour-element block of each edge's radial terms."""
        return graph[keys.SPECIES][graph[self.fields.index][1]]

    def radial(self, graph: dict[str, torch.Tensor], fc: torch.Tensor) -> torch.Tensor:
        """(N, S·n_radial) radial features; ``fc`` (E,) radial cutoff values."""
        terms = self.radial_terms(graph[self.fields.lengths], fc)
        return self.scatter_radial(graph, terms)

    def scatter_radial(self, graph: dict[str, torch.Tensor], terms: torch.Tensor) -> torch.Tensor:
        i = graph[self.fields.index][0]
        n = graph[keys.SPECIES].numel()
        out = terms.new_zeros(n * self.n_species, terms.shape[-1])
        out = out.index_add(0, i * self.n_species + self.radial_blocks(graph), terms)
        return out.view(n, self.n_radial_features)

    def angular_terms(self, unit1, unit2, r1, r2, fc1, fc2) -> torch.Tensor:
        """(T, n_angular_radial · n_angle_sections) of triplets from their two edges'
        unit vectors, lengths and angular cutoff values."""
        return angular_products(unit1, unit2, r1, r2, fc1, fc2, self.angle_shifts,
                                self.angular_shifts, self.eta_angular, self.zeta)

    def angular_blocks(self, graph: dict[str, torch.Tensor]) -> torch.Tensor:
        """(T,) the neighbour-element-pair block of each triplet's angular terms."""
        j = graph[self.fields.index][1]
        e1, e2 = graph[self.fields.triplets]
        species = graph[keys.SPECIES]
        return self.pair_index[species[j[e1]], species[j[e2]]]

    def angular(self, graph: dict[str, torch.Tensor], fc: torch.Tensor) -> torch.Tensor:
        """(N, S(S+1)/2 · n_angular_radial · n_angle_sections) angular features;
        ``fc`` (E,) angular cutoff values."""
        r = graph[self.fields.lengths]
        e1, e2 = graph[self.fields.triplets]
        unit = graph[self.fields.vectors] / r.unsqueeze(-1)
        terms = self.angular_terms(
            unit.index_select(0, e1), unit.index_select(0, e2),
            r.index_select(0, e1), r.index_select(0, e2),
            fc.index_select(0, e1), fc.index_select(0, e2))
        return self.scatter_angular(graph, terms)

    def scatter_angular(self, graph: dict[str, torch.Tensor], terms: torch.Tensor) -> torch.Tensor:
        i = graph[self.fields.index][0]
        e1, _ = graph[self.fields.triplets]
        n = graph[keys.SPECIES].numel()
        index = i[e1] * self.n_pairs + self.angular_blocks(graph)
        out = terms.new_zeros(n * self.n_pairs, terms.shape[-1])
        out = out.index_add(0, index, terms)
        return out.view(n, self.n_angular_features)

    def local_terms(self):
        """(edge_terms(v), triplet_terms(v1, v2)): the features' local pieces as functions
        of edge vectors only (the factorisation behind fast exact Hessians)."""

        def edge_terms(v: torch.Tensor) -> torch.Tensor:
            r = torch.linalg.vector_norm(v, dim=-1)
            return self.radial_terms(r, self.cutoff_fn(r, self.radial_cutoff))

        def triplet_terms(v1: torch.Tensor, v2: torch.Tensor) -> torch.Tensor:
            r1 = torch.linalg.vector_norm(v1, dim=-1)
            r2 = torch.linalg.vector_norm(v2, dim=-1)
            return self.angular_terms(
                v1 / r1.unsqueeze(-1), v2 / r2.unsqueeze(-1), r1, r2,
                self.cutoff_fn(r1, self.angular_cutoff), self.cutoff_fn(r2, self.angular_cutoff))

        return edge_terms, triplet_terms

    def forward(self, graph: dict[str, torch.Tensor]) -> torch.Tensor:
        # both cutoffs in one pass over the edges: fewer small ops per call
        fc = self.cutoff_fn(graph[self.fields.lengths].unsqueeze(-1), self.cutoffs)
        return torch.cat([self.radial(graph, fc[:, 0]), self.angular(graph, fc[:, 1])], dim=-1)
