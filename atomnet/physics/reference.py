"""Per-element reference energies E0 (isolated-atom energies), as their own term."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from .. import keys
from ..errors import UsageError
from ..terms import Term, register


@register("atomic_reference")
class AtomicReference(Term):
    """Per-atom energy E0[Z_i] in eV; no dependence on positions.

    The E0s live in the ``e0`` tensor only (one source of truth; model files
    store it with the weights, not in the header).

    Always float64 (also in a float32 model); the total energy is therefore summed
    in float64, while forces keep the model's dtype.
    """

    skin_safe = True  # reads no pair list

    reads = (keys.SPECIES,)
    is_reference = True

    def __init__(self, elements: Sequence[str], e0s: Mapping[str, float] | None = None):
        super().__init__()
        self.elements = list(elements)
        self.register_buffer("e0", torch.zeros(len(elements), dtype=torch.float64))
        if e0s is not None:
            self.set(e0s)

    def _vector(self, e0s: Mapping[str, float]) -> torch.Tensor:
        missing = [s for s in self.elements if s not in e0s]
        if missing:
            raise UsageError(f"E0s missing for element(s) {missing}")
        return torch.tensor([float(e0s[s]) for s in self.elements], dtype=torch.float64)

    def set(self, e0s: Mapping[str, float]) -> None:
        """Set E0s from ``{symbol: eV}``."""
        self.e0.copy_(self._vector(e0s).to(self.e0))

    def as_dict(self) -> dict[str, float]:
        return {s: float(v) for s, v in zip(self.elements, self.e0.tolist())}

    def _apply(self, fn, recurse=True):
        # Reference energies are large (~10³ eV per atom): keep them in float64 whatever
        # dtype the rest of the model is cast to, so that float32 models do not round them.
        exact = self.e0.detach().to(torch.float64)
        super()._apply(fn, recurse)
        self.e0 = exact.to(self.e0.device)
        return self

    def forward(self, graph: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.e0[graph[keys.SPECIES]]
