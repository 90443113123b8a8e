"""Training statistics a model asks for (feature normalisation, energy scale and shift).

Called from a model's :meth:`~atomnet.terms.Term.fit_statistics`; the training
code never looks up buffers by name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch

from .. import keys


@torch.no_grad()
def feature_statistics(
    features: Callable[[dict], torch.Tensor], batches: Iterable[dict], floor: float = 1e-2
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std (F,) of ``features(batch)`` (N, F) over all atoms of ``batches``.

    The std is floored at ``floor · max(std)`` (and 1e-6) so that nearly
    constant features are not blown up. Computed in float64.
    """
    total, total_sq, n = 0.0, 0.0, 0
    for batch in batches:
        x = features(batch).double()
        total = total + x.sum(0)
        total_sq = total_sq + (x * x).sum(0)
        n += x.shape[0]
    mean = total / n
    var = (total_sq / n - mean * mean).clamp_min(0.0)
    std = var.sqrt()
    std = std.clamp_min(max(float(std.max()) * floor, 1e-6))
    return mean, std


def element_scale_shift(
    graphs: Sequence[dict], residuals: torch.Tensor, n_species: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-element (scale (S,), shift (S,)) of a per-atom energy term, float64.

    shift: eV per atom of each element, the per-atom mean of the residual energies
    (E_ref − Σ E0) plus the least-squares correction on the element counts; when the
    compositions do not determine every element (e.g. one molecule), the
    minimum-norm correction is used, so undetermined elements keep the mean.
    scale: RMS force component (eV/Å) on the atoms of each element, where forces are
    labelled; elements without force labels (or sets without forces) take the global
    value of :func:`scale_shift`.
    """
    global_scale, mean = scale_shift(graphs, residuals)
    counts = np.stack([np.bincount(g[keys.SPECIES].cpu().numpy(), minlength=n_species)
                       for g in graphs]).astype(np.float64)
    res = residuals.double().cpu().numpy() - mean * counts.sum(1)
    correction = np.linalg.lstsq(counts, res, rcond=None)[0] if len(graphs) else 0.0
    shift = torch.as_tensor(mean + correction, dtype=torch.float64)
    sq = np.zeros(n_species)
    n = np.zeros(n_species)
    for g in graphs:
        if keys.ref("forces") not in g or not bool(g.get(keys.mask("forces"), True)):
            continue
        species = g[keys.SPECIES].cpu().numpy()
        f2 = g[keys.ref("forces")].double().pow(2).sum(-1).cpu().numpy()
        np.add.at(sq, species, f2)
        np.add.at(n, species, 3)
    with np.errstate(invalid="ignore", divide="ignore"):
        rms = np.sqrt(sq / n)
    ok = (n > 0) & np.isfinite(rms) & (rms > 1e-6)
    scale = torch.as_tensor(np.where(ok, rms, global_scale), dtype=torch.float64)
    return scale, shift


def scale_shift(graphs: Sequence[dict], residuals: torch.Tensor) -> tuple[float, float]:
    """(scale, shift): RMS force (eV/Å) or std of residual energy per atom (eV); and
    mean residual energy per atom (eV). ``residuals``: (n,) E_ref − Σ E0 in eV.

    Force labels count only where a structure has them (``ref_forces_mask`` when present).
    """
    n_atoms = torch.tensor([float(g[keys.N_ATOMS].sum()) for g in graphs], dtype=torch.float64)
    per_atom = residuals.double().cpu() / n_atoms
    shift = float(per_atom.mean())
    forces = [g[keys.ref("forces")] for g in graphs
              if keys.ref("forces") in g and bool(g.get(keys.mask("forces"), True))]
    if forces:
        scale = float(torch.cat(forces).double().pow(2).mean().sqrt())
    else:
        scale = float(per_atom.std()) if len(per_atom) > 1 else 1.0
    if not np.isfinite(scale) or scale < 1e-6:
        scale = 1.0
    return scale, shift
