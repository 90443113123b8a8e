"""Predictions and metrics of a potential on a :class:`~atomnet.training.data.GraphSet`.

Derivatives come from :func:`atomnet.derivatives.evaluate` (the only place
autograd is called for forces and stress). Energies are compared as residuals
E − Σ E0: the E0 term is left out of the predicted sum, and the reference
residual was formed in float64, so float32 models lose no energy precision.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext

import numpy as np
import torch

from .. import keys
from ..derivatives import evaluate
from ..nn import sum_per_structure
from ..potential import Potential
from .data import GraphSet, batch_order
from .losses import LossWeights, Prediction, Reference, compute_loss
from .metrics import ErrorAccumulator


def residual_energy(
    contributions: dict[str, torch.Tensor], graph: dict, leave_out: set[str]
) -> torch.Tensor:
    """(B,) eV: the sum of every term's per-atom energies except those in ``leave_out``
    (the reference-energy terms, :attr:`atomnet.Potential.reference_names`)."""
    parts = [v for k, v in contributions.items() if k not in leave_out]
    atomic = torch.stack(parts).sum(0)
    return sum_per_structure(atomic, graph[keys.BATCH], graph[keys.N_ATOMS].shape[0])


def predict(
    potential: torch.nn.Module, graph: dict, labels: Sequence[str], create_graph: bool
) -> Prediction:
    """Residual energies (and forces/stress/dipoles/charges when among ``labels``) for a
    batch. Dipoles and charges come from the forward pass of a potential with charges.
    Terms added on top of the fitted model (e.g. D3 with ``mode: add``) are left out:
    the labels do not contain them (:meth:`atomnet.Potential.as_fitted`)."""
    forces, stress = "forces" in labels, "stress" in labels
    fitted = potential.as_fitted() if isinstance(potential, Potential) else nullcontext()
    with fitted:
        res = evaluate(potential, graph, forces=forces, stress=stress,
                       create_graph=create_graph)
    energy = residual_energy(res.contributions, graph, potential.reference_names)
    return Prediction(energy, res.forces, res.stress,
                      res.dipole if "dipole" in labels else None,
                      res.charges if "charges" in labels else None)


def reference(graph: dict, residuals: torch.Tensor, labels: Sequence[str]) -> Reference:
    """Labels of a batch; ``residuals`` (B,) float64 E_ref − Σ E0 in eV."""
    dtype = graph[keys.POSITIONS].dtype
    device = graph[keys.POSITIONS].device

    def label(key: str) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if key not in labels:
            return None, None
        return graph.get(keys.ref(key)), graph.get(keys.mask(key))

    forces, forces_mask = label("forces")
    stress, stress_mask = label("stress")
    dipole, dipole_mask = label("dipole")
    charges, charges_mask = label("charges")
    return Reference(
        energy=residuals.to(device=device, dtype=dtype),
        n_atoms=graph[keys.N_ATOMS],
        weight=graph[keys.WEIGHT],
        batch=graph[keys.BATCH],
        forces=forces,
        stress=stress,
        forces_mask=forces_mask,
        stress_mask=stress_mask,
        dipole=dipole,
        charges=charges,
        dipole_mask=dipole_mask,
        charges_mask=charges_mask,
    )


def evaluate_set(
    potential: torch.nn.Module,
    data: GraphSet,
    batch_size: int,
    weights: LossWeights | None = None,
    collect_forces: bool = False,
    accumulator: ErrorAccumulator | None = None,
    world=None,
) -> tuple[dict[str, float], np.ndarray | None]:
    """Metrics (see :mod:`~atomnet.training.metrics`) of ``potential`` on ``data``.

    Returns the metrics and, when ``collect_forces``, an array (2, n) of
    reference and predicted force components in eV/Å (for parity plots).
    ``accumulator``: add to this one (to pool several sets); the metrics
    returned are then the pooled ones. ``world`` (a :class:`.distributed.World`):
    ranks take every ``size``-th batch and pool their sums (not with
    ``collect_forces``).
    """
    acc = ErrorAccumulator() if accumulator is None else accumulator
    pairs: list[tuple[np.ndarray, np.ndarray]] = []
    batches = batch_order(len(data), batch_size)
    if world is not None and world.distributed:
        batches = batches[world.rank::world.size]
    for graph, residuals in data.iterate(batches):
        pred = predict(potential, graph, data.labels, create_graph=False)
        ref = reference(graph, residuals, data.labels)
        loss = compute_loss(pred, ref, weights) if weights is not None else None
        acc.update(pred, ref, loss)
        if collect_forces and pred.forces is not None and ref.forces is not None:
            mask = ref.atom_mask()
            chosen = [f if mask is None else f[mask] for f in (ref.forces, pred.forces)]
            if chosen[0].numel():
                pairs.append(tuple(f.detach().cpu().double().numpy().ravel() for f in chosen))
    if world is not None and world.distributed:
        acc.reduce(world.all_sum)
    parity = None
    if pairs:
        parity = np.stack([np.concatenate([p[0] for p in pairs]),
                           np.concatenate([p[1] for p in pairs])])
    return acc.compute(), parity
