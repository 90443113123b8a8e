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
