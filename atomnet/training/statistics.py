"""Training statistics written into the model before training.

* E0s (eV per isolated atom): read from a file of one-atom structures, given
  as a mapping, or fitted by least squares of the training energies on the
  element counts. Never silently zero.
* Everything else a model needs (feature normalisation, scale, shift, …) is
  asked of the potential: :meth:`atomnet.Potential.fit_statistics`.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from .. import keys
from ..structures import StructureError, get_label, read_structures
from .config import ConfigError


def read_isolated_atoms(
    path: str | Path, elements: Sequence[str], energy_factor: float = 1.0
) -> dict[str, float]:
    """E0s {symbol: eV} from one-atom frames with an energy; extra elements are ignored.

    ``energy_factor``: converts the file's energies into eV (``data.energy_unit``).
    """
    found: dict[str, float] = {}
    for k, atoms in enumerate(read_structures(path)):
        if len(atoms) != 1:
            continue
        energy = get_label(atoms, "energy")
        if energy is None:
            raise StructureError(f"{path}, frame {k}: isolated atom without an energy")
        found[atoms.get_chemical_symbols()[0]] = float(energy) * energy_factor
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
        raise ConfigError("cannot fit E0s without training structures")
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
    energy_factor: float = 1.0,
) -> tuple[dict[str, float], str]:
    """E0s {symbol: eV} and a word on where they came from ("file …", "given", "fitted").

    ``energy_factor`` converts the isolated-atoms file into eV; ``spec`` is in eV.
    """
    if isolated_atoms is not None:
        e0s = read_isolated_atoms(isolated_atoms, elements, energy_factor)
        return e0s, f"read from {isolated_atoms}"
    if isinstance(spec, Mapping):
        missing = [s for s in elements if s not in spec]
        if missing:
            raise ConfigError(f"data.e0s lacks element(s) {missing}")
        return {s: float(spec[s]) for s in elements}, "given in the config"
    counts = element_counts(graphs, len(elements))
    energies = np.array([float(g[keys.ref("energy")].sum()) for g in graphs])
    return fit_e0s(counts, energies, elements), "fitted by least squares"
