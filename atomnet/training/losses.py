"""Weighted loss on energies per atom, force components, stress, dipoles and charges.

    L = w_E · Σ_b w_b (ΔE_b / N_b)² / Σ_b w_b                     [eV²/atom²]
      + w_F · Σ_i w_b(i) |ΔF_i|² / (3 Σ_i w_b(i))                  [eV²/Å²]
      + w_σ · Σ_b w_b |Δσ_b|² / (9 Σ_b w_b)                        [eV²/Å⁶]
      + w_μ · Σ_b w_b |Δμ_b|² / (3 Σ_b w_b)                        [e²Å²]
      + w_q · Σ_i w_b(i) Δq_i² / Σ_i w_b(i)                        [e²]

with w_b the per-structure ``weight`` (``atoms.info["weight"]``, default 1).
Labels are per structure: the force, stress, dipole and charge sums run over the
structures whose mask (``ref_<label>_mask``) is set, so a batch averages over its
labelled atoms/structures only (a batch without any gives a zero term). Terms whose
labels are absent (or, for dipoles and charges, that the model does not predict), or
whose weight is 0, are left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from ..errors import AtomnetError


class Prediction(NamedTuple):
    """Model outputs for a batch (residual energy: without the E0 term)."""

    energy: torch.Tensor  # (B,) eV, E − Σ E0
    forces: torch.Tensor | None = None  # (N, 3) eV/Å
    stress: torch.Tensor | None = None  # (B, 3, 3) eV/Å³
    dipole: torch.Tensor | None = None  # (B, 3) e·Å (models with charges)
    charges: torch.Tensor | None = None  # (N,) e (models with charges)


class Reference(NamedTuple):
    """Labels of a batch, with what is needed to weight them."""

    energy: torch.Tensor  # (B,) eV, E_ref − Σ E0
    n_atoms: torch.Tensor  # (B,) atoms per structure
    weight: torch.Tensor  # (B,) per-structure loss weight
    batch: torch.Tensor  # (N,) structure of each atom
    forces: torch.Tensor | None = None  # (N, 3) eV/Å (zeros where not labelled)
    stress: torch.Tensor | None = None  # (B, 3, 3) eV/Å³ (zeros where not labelled)
    forces_mask: torch.Tensor | None = None  # (B,) bool, structures with forces; None: all
    stress_mask: torch.Tensor | None = None  # (B,) bool, structures with stress; None: all
    dipole: torch.Tensor | None = None  # (B, 3) e·Å (zeros where not labelled)
    charges: torch.Tensor | None = None  # (N,) e (zeros where not labelled)
    dipole_mask: torch.Tensor | None = None  # (B,) bool, structures with a dipole; None: all
    charges_mask: torch.Tensor | None = None  # (B,) bool, structures with charges; None: all

    def atom_mask(self, label: str = "forces") -> torch.Tensor | None:
        """(N,) bool: atoms whose structure carries the per-atom ``label`` (forces or
        charges; None: all)."""
        mask = getattr(self, f"{label}_mask")
        return None if mask is None else mask[self.batch]


class LossTerms(NamedTuple):
    """The weighted total and each unweighted term (None when left out)."""

    total: torch.Tensor
    energy: torch.Tensor | None
    forces: torch.Tensor | None
    stress: torch.Tensor | None
    dipole: torch.Tensor | None = None
    charges: torch.Tensor | None = None


@dataclass(frozen=True)
class LossWeights:
    """Weights of the energy-per-atom, force, stress, dipole and charge terms (defaults:
    those of :class:`~atomnet.training.config.TrainingConfig`)."""

    energy: float = 1.0
    forces: float = 10.0
    stress: float = 1.0
    dipole: float = 10.0
    charges: float = 1.0


class TrainingError(AtomnetError, RuntimeError):
    """Training cannot go on (e.g. the loss became NaN); the message says what to try."""


#: the loss terms, in the order of :func:`loss_sums`' denominators
TERMS = ("energy", "forces", "stress", "dipole", "charges")


def _weighted_sum(
    sq: torch.Tensor, w: torch.Tensor, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(Σ w·sq, Σ w) over the first dimension (sq's trailing dims are averaged),
    counting only the items where ``mask`` is set."""
    per_item = sq.reshape(sq.shape[0], -1).mean(-1)
    if mask is not None:
        mask = mask.to(per_item.device)
        per_item = torch.where(mask, per_item, torch.zeros_like(per_item))
        w = torch.where(mask, w, torch.zeros_like(w))
    return (w * per_item).sum(), w.sum()


def loss_sums(
    pred: Prediction, ref: Reference, weights: LossWeights
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Each term's (numerator, denominator): the weighted sum of squared errors and the
    weighted count (structures, force-labelled atoms, stress-labelled structures,
    dipole-labelled structures, charge-labelled atoms).

    The term is numerator / denominator; a data-parallel run sums the denominators
    over ranks first, so that every rank's share adds up to the global mean."""
    w = ref.weight.to(pred.energy)
    n = ref.n_atoms.to(pred.energy)
    out: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    if weights.energy > 0:
        e_err = (pred.energy - ref.energy.to(pred.energy)) / n
        out["energy"] = _weighted_sum(e_err**2, w)
    if weights.forces > 0 and pred.forces is not None and ref.forces is not None:
        out["forces"] = _weighted_sum((pred.forces - ref.forces) ** 2, w[ref.batch],
                                      ref.atom_mask())
    if weights.stress > 0 and pred.stress is not None and ref.stress is not None:
        out["stress"] = _weighted_sum((pred.stress - ref.stress) ** 2, w, ref.stress_mask)
    if weights.dipole > 0 and pred.dipole is not None and ref.dipole is not None:
        out["dipole"] = _weighted_sum((pred.dipole - ref.dipole) ** 2, w, ref.dipole_mask)
    if weights.charges > 0 and pred.charges is not None and ref.charges is not None:
        out["charges"] = _weighted_sum((pred.charges - ref.charges) ** 2, w[ref.batch],
                                       ref.atom_mask("charges"))
    return out


def combine(
    sums: dict[str, tuple[torch.Tensor, torch.Tensor]],
    weights: LossWeights,
    denominators: dict[str, torch.Tensor] | None = None,
) -> LossTerms:
    """The weighted loss from :func:`loss_sums`, each numerator divided by its
    denominator in ``denominators`` (default: its own; a term with no labelled
    item is 0)."""
    terms: dict[str, torch.Tensor | None] = dict.fromkeys(TERMS)
    total = None
    for name, (num, den) in sums.items():
        if denominators is not None:
            den = denominators[name]
        terms[name] = num / den.clamp_min(1e-12)
        part = getattr(weights, name) * terms[name]
        total = part if total is None else total + part
    if total is None:
        raise ValueError("no loss term: every weight is 0 or every label absent")
    return LossTerms(total, *(terms[k] for k in TERMS))


def compute_loss(pred: Prediction, ref: Reference, weights: LossWeights) -> LossTerms:
    """The weighted loss (scalar) and its terms. See the module docstring for units."""
    return combine(loss_sums(pred, ref, weights), weights)


def check_finite(loss: torch.Tensor, epoch: int, batch: int, lr: float) -> None:
    """Raise :class:`TrainingError` if ``loss`` is NaN or infinite."""
    if not bool(torch.isfinite(loss)):
        raise TrainingError(
            f"loss became {float(loss.detach())} at epoch {epoch}, batch {batch} "
            f"(learning rate {lr:.3g}); try a lower training.lr, a smaller "
            f"training.grad_clip, or check the data for bad labels"
        )
