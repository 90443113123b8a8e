"""Training statistics written into the model before training.

* E0s (eV per isolated atom): read from a file of one-atom structures, given
  as a mapping, or fitted by least squares of the training energies on the
  element counts. Never silently zero.
* Feature normalisation: mean and std of the raw descriptors over all
  training atoms → ``feature_mean``/``feature_std``.
* Scale and shift: scale = RMS of the training force components (eV/Å) or,
  without forces, the std of the residual energy per atom (eV); shift = mean
  residual energy per atom (eV) after the E0s.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from .. import keys
from ..neighbors import edge_vectors
from ..structures import StructureError, collate, get_label, read_structures


def read_isolated_atoms(path: str | Path, elements: Sequence[str]) -> dict[str, float]:
    """E0s {symbol: eV} from one-atom frames with an energy; extra elements are ignored."""
    found: dict[str, float] = {}
    for k, atoms in enumerate(read_structures(path)):
        if len(atoms) != 1:
            continue
        energy = get_label(atoms, "energy")
        if energy is None:
            raise StructureError(f"{path}, frame {k}: isolated atom without an energy")
        found[atoms.get_chemical_symbols()[0]] = float(energy)
    missing = [s for s in elements if s not in found]
    if missing:
        raise StructureError(
            f"{path}: no isolated-atom energy for element(s) {missing} "
            f"(found {sorted(found)})"
        )
    return {s: found[s] for s in elements}


def element_counts(graphs: Sequence[dict], n_species: int) -> np.ndarray:
    """(n_structures, n_species) number of atoms of each element per graph."""
    return np.stack([
        np.bincount(g[keys.SPECIES].cpu().numpy(), minlength=n_species) for g in graphs
    ]).astype(np.float64)


def fit_e0s(counts: np.ndarray, energies: np.ndarray, elements: Sequence[str]) -> dict[str, float]:
    """Least-squares E0s: energies (n,) eV ≈ counts (n, S) @ E0 (S,).

    When the compositions do not determine every E0 (e.g. a single molecule:
    counts of rank 1), the minimum-norm solution is used and a warning says so;
    total energies are still reproduced, but the E0s are not isolated-atom
    energies, so supply ``isolated_atoms`` if those matter.
    """
    counts = np.asarray(counts, dtype=np.float64)
    energies = np.asarray(energies, dtype=np.float64)
    if counts.shape[0] == 0:
        raise ValueError("cannot fit E0s without training structures")
    solution, _, rank, _ = np.linalg.lstsq(counts, energies, rcond=None)
    if rank < counts.shape[1]:
        warnings.warn(
            f"element counts of the training set have rank {rank} < {counts.shape[1]} "
            f"elements: the fitted E0s are not unique (minimum-norm solution used); "
            f"give data.isolated_atoms for isolated-atom references",
            stacklevel=2,
        )
    return {s: float(v) for s, v in zip(elements, solution)}


def resolve_e0s(
    spec: Mapping[str, float] | str | None,
    isolated_atoms: Path | None,
    graphs: Sequence[dict],
    elements: Sequence[str],
) -> tuple[dict[str, float], str]:
    """E0s {symbol: eV} and a word on where they came from ("file …", "given", "fitted")."""
    if isolated_atoms is not None:
        return read_isolated_atoms(isolated_atoms, elements), f"read from {isolated_atoms}"
    if isinstance(spec, Mapping):
        missing = [s for s in elements if s not in spec]
        if missing:
            raise ValueError(f"data.e0s lacks element(s) {missing}")
        return {s: float(spec[s]) for s in elements}, "given in the config"
    counts = element_counts(graphs, len(elements))
    energies = np.array([float(g[keys.ref("energy")].sum()) for g in graphs])
    return fit_e0s(counts, energies, elements), "fitted by least squares"


def _batches(graphs: Sequence[dict], size: int):
    for k in range(0, len(graphs), size):
        yield collate(graphs[k:k + size])


@torch.no_grad()
def feature_statistics(
    model: torch.nn.Module, graphs: Sequence[dict], batch_size: int = 64, floor: float = 1e-2
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std (F,) of ``model.features`` over all atoms of ``graphs``.

    The std is floored at ``floor · max(std)`` (and 1e-6) so that nearly
    constant features are not blown up. Computed in float64.
    """
    total, total_sq, n = 0.0, 0.0, 0
    for batch in _batches(graphs, batch_size):
        batch = dict(batch)
        edge_vectors(batch)
        x = model.features(batch).double()
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
    mean residual energy per atom (eV). ``residuals``: (n,) E_ref − Σ E0 in eV."""
    n_atoms = torch.tensor([float(g[keys.N_ATOMS].sum()) for g in graphs], dtype=torch.float64)
    per_atom = residuals.double().cpu() / n_atoms
    shift = float(per_atom.mean())
    forces = [g[keys.ref("forces")] for g in graphs if keys.ref("forces") in g]
    if forces:
        scale = float(torch.cat(forces).double().pow(2).mean().sqrt())
    else:
        scale = float(per_atom.std()) if len(per_atom) > 1 else 1.0
    if not np.isfinite(scale) or scale < 1e-6:
        scale = 1.0
    return scale, shift


def apply_statistics(
    potential, graphs: Sequence[dict], residuals: torch.Tensor
) -> dict[str, float]:
    """Set normalisation buffers of ``potential.terms["short_range"]`` from training data.

    Models that expose ``features`` get ``feature_mean``/``feature_std``; models
    with ``scale``/``shift`` buffers get those. Returns the scalars set (for logs).
    """
    model = potential.terms["short_range"]
    buffers = dict(model.named_buffers(recurse=False))
    info: dict[str, float] = {}
    if "feature_mean" in buffers and "feature_std" in buffers:
        mean, std = feature_statistics(model, graphs)
        model.feature_mean.copy_(mean.to(model.feature_mean))
        model.feature_std.copy_(std.to(model.feature_std))
        info["n_features"] = float(mean.numel())
    if "scale" in buffers and "shift" in buffers:
        scale, shift = scale_shift(graphs, residuals)
        model.scale.fill_(scale)
        model.shift.fill_(shift)
        info.update(scale=scale, shift=shift)
    return info
