"""Stages that write per-atom charges (e) for the terms after them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from .. import keys
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
