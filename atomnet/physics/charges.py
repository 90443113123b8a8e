"""Stages that write per-atom charges (e) for the terms after them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from .. import keys
from ..descriptors import polynomial_cutoff
from ..errors import UsageError
from ..nn import sum_per_structure
from ..terms import Term, register


def conserve_charge(raw: torch.Tensor, graph: dict[str, torch.Tensor]) -> torch.Tensor:
    """Charges (N,) e whose sum per structure equals ``total_charge`` exactly.

    The excess Σ q_raw − Q of each structure is spread evenly over its atoms
    (neutral redistribution), so the result is smooth in the raw charges.
    """
    batch, n_atoms = graph[keys.BATCH], graph[keys.N_ATOMS]
    total = sum_per_structure(raw, batch, n_atoms.shape[0])
    excess = (total - graph[keys.TOTAL_CHARGE].to(raw)) / n_atoms.to(raw)
    return raw - excess[batch]


@register("fixed_charges")
class FixedCharges(Term):
    """Per-element charges q[Z_i] (e), corrected so each structure carries its total charge.

    For point-charge models and tests, e.g. ``charges: {Na: 1.0, Cl: -1.0}``.
    No parameters: the charges are part of the recipe.
    """

    skin_safe = True  # reads no pair list

    kind = "stage"
    reads = (keys.SPECIES, keys.BATCH, keys.N_ATOMS, keys.TOTAL_CHARGE)
    writes = (keys.CHARGES,)

    def __init__(self, elements: Sequence[str], charges: Mapping[str, float]):
        super().__init__()
        if not isinstance(charges, Mapping):
            raise UsageError(f"charges must map element symbols to e, got {charges!r}")
        missing = [s for s in elements if s not in charges]
        extra = sorted(set(charges) - set(elements))
        if missing or extra:
            raise UsageError(
                f"fixed charges need exactly the model's elements {list(elements)}: "
                f"missing {missing}, unknown {extra}"
            )
        self.charges = {s: float(charges[s]) for s in elements}
        values = [self.charges[s] for s in elements]
        self.register_buffer("values", torch.tensor(values, dtype=torch.float64), persistent=False)

    def recipe(self) -> dict:
        return {"charges": dict(self.charges)}

    def forward(self, graph: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        raw = self.values[graph[keys.SPECIES]].to(graph[keys.POSITIONS].dtype)
        return {keys.CHARGES: conserve_charge(raw, graph)}


@register("learned_charges")
class LearnedCharges(Term):
    """Charges from local charge transfer between neighbours, conserved exactly and locally.

        χ_i = NN_Z((G_i − μ)/σ) + χ0_Z            (a learned electronegativity, e)
        q_i = Σ_j f_c(r_ij) (χ_j − χ_i) + Q_b / N_b

    with G_i Behler–Parrinello symmetry functions of the atom's own neighbourhood
    (``cutoff`` Å, so any model family can carry the head) and f_c the C² polynomial
    cutoff. Every transfer term is antisymmetric in i, j, so the charges of each
    structure sum to its total charge Q_b (``atoms.info["charge"]``) exactly, *and* a
    neutral fragment far from the rest keeps exactly zero net charge: energies stay
    separable (a uniform redistribution of a global excess would move charge between
    fragments at any distance). A charged structure spreads Q_b evenly (the only
    non-local part). Trained through the energy terms that read the charges (Coulomb)
    and against reference dipoles/charges. μ, σ are set by :meth:`fit_statistics`;
    ``q0`` holds χ0.
    """

    skin_safe = True  # descriptor and transfer carry f_c(r) = 0 beyond the cutoff

    kind = "stage"
    writes = (keys.CHARGES,)

    def __init__(
        self,
        elements: Sequence[str],
        cutoff: float = 5.0,
        angular_cutoff: float = 3.5,
        n_radial: int = 8,
        n_angular_radial: int = 4,
        n_angle_sections: int = 4,
        zeta: float = 14.1,
        hidden: Sequence[int] = (32, 32),
        activation: str = "silu",
    ):
        from ..descriptors import SymmetryFunctions
        from ..nn import ElementMLP

        super().__init__()
        self.hparams = {
            "cutoff": float(cutoff), "angular_cutoff": float(angular_cutoff),
            "n_radial": int(n_radial), "n_angular_radial": int(n_angular_radial),
            "n_angle_sections": int(n_angle_sections), "zeta": float(zeta),
            "hidden": [int(h) for h in hidden], "activation": str(activation),
        }
        self.descriptor = SymmetryFunctions(
            len(elements), cutoff, min(angular_cutoff, cutoff), n_radial, n_angular_radial,
            n_angle_sections, zeta, "polynomial")
        self.pair_cutoff = float(cutoff)
        self.triplet_cutoff = self.descriptor.triplet_cutoff
        self.pairs = keys.pairs(self.pair_cutoff)
        self.reads = (*self.descriptor.reads, self.pairs.lengths, keys.BATCH, keys.N_ATOMS,
                      keys.TOTAL_CHARGE)
        n = self.descriptor.n_features
        self.net = ElementMLP(len(elements), n, hidden, activation)
        self.register_buffer("feature_mean", torch.zeros(n))
        self.register_buffer("feature_std", torch.ones(n))
        self.q0 = torch.nn.Parameter(torch.zeros(len(elements)))
        with torch.no_grad():  # start near neutral atoms: small raw charges (≲ 0.1 e)
            self.net.weights[-1].mul_(0.1)
            self.net.biases[-1].zero_()

    def recipe(self) -> dict:
        return dict(self.hparams)

    def forward(self, graph: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        species = graph[keys.SPECIES]
        x = (self.descriptor(graph) - self.feature_mean) / self.feature_std
        chi = self.net(x, species) + self.q0[species]
        i, j = graph[self.pairs.index]
        flow = polynomial_cutoff(graph[self.pairs.lengths], self.pair_cutoff) \
            * (chi.index_select(0, j) - chi.index_select(0, i))
        local = chi.new_zeros(chi.shape[0]).index_add(0, i, flow)
        batch, n_atoms = graph[keys.BATCH], graph[keys.N_ATOMS]
        spread = graph[keys.TOTAL_CHARGE].to(chi) / n_atoms.to(chi)
        return {keys.CHARGES: local + spread[batch]}

    @torch.no_grad()
    def fit_statistics(self, data) -> dict[str, float]:
        from ..models.statistics import feature_statistics

        mean, std = feature_statistics(self.descriptor, data.batches())
        self.feature_mean.copy_(mean.to(self.feature_mean))
        self.feature_std.copy_(std.to(self.feature_std))
        return {"n_features": float(mean.numel())}
