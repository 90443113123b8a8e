"""Checks run on input structures before they reach a model."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols

from ..neighbors import neighbor_pairs, pair_distances
from .errors import StructureError, where

#: atoms closer than this (Å) are rejected as overlapping
MIN_DISTANCE = 0.1


def check_elements(
    numbers: np.ndarray, elements: Sequence[str], source: str | None = None,
    index: int | None = None,
) -> None:
    """Raise if ``numbers`` contains an element outside ``elements``."""
    known = {chemical_symbols.index(s) for s in elements}
    unknown = sorted({int(z) for z in np.unique(numbers)} - known)
    if unknown:
        names = ", ".join(chemical_symbols[z] for z in unknown)
        raise StructureError(
            f"{where(source, index)}: element(s) {names} not known to the model "
            f"(model elements: {', '.join(elements)})"
        )


def _check_finite(name: str, value: np.ndarray, source, index) -> None:
    if not np.all(np.isfinite(value)):
        raise StructureError(f"{where(source, index)}: {name} contains NaN or inf")


def check_overlap(
    atoms: Atoms,
    pairs: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    distances: np.ndarray | None = None,
    source: str | None = None,
    index: int | None = None,
) -> None:
    """Raise if two atoms (or an atom and a periodic image) are closer than MIN_DISTANCE.

    ``pairs`` (i, j, S) from a neighbour list of any cutoff ≥ MIN_DISTANCE, and
    their ``distances`` (Å), are reused when given; otherwise a 1 Å list is made.
    """
    if len(atoms) < 2 and not atoms.pbc.any():
        return
    if pairs is None:
        pairs = neighbor_pairs(atoms.positions, atoms.cell.array, atoms.pbc, 1.0)
    if distances is None:
        distances = pair_distances(atoms.positions, atoms.cell.array, pairs)
    if not len(distances):
        return
    i, j, _ = pairs
    k = int(np.argmin(distances))
    d = float(distances[k])
    if d < MIN_DISTANCE:
        raise StructureError(
            f"{where(source, index)}: atoms {int(i[k])} and {int(j[k])} are {d:.3f} Å apart "
            f"(closer than {MIN_DISTANCE} Å: overlapping atoms)"
        )


def validate_atoms(
    atoms: Atoms,
    *,
    elements: Sequence[str] | None = None,
    source: str | None = None,
    index: int | None = None,
    overlap: bool = True,
) -> None:
    """Check one structure: non-empty, finite, sane cell, known elements, no overlaps.

    ``overlap=False`` skips the overlap check (for callers that run
    :func:`check_overlap` themselves on a neighbour list they need anyway).
    Raises :class:`StructureError` naming ``source`` and ``index``.
    """
    if len(atoms) == 0:
        raise StructureError(f"{where(source, index)}: structure has no atoms")
    _check_finite("positions", atoms.positions, source, index)
    _check_finite("cell", atoms.cell.array, source, index)
    if np.any(atoms.pbc) and abs(atoms.cell.volume) < 1e-8 and np.all(atoms.pbc):
        raise StructureError(f"{where(source, index)}: periodic structure with zero cell volume")
    for d in range(3):
        if atoms.pbc[d] and np.linalg.norm(atoms.cell.array[d]) < 1e-8:
            raise StructureError(
                f"{where(source, index)}: periodic along cell vector {d} but that vector is zero"
            )
    if elements is not None:
        check_elements(atoms.numbers, elements, source, index)
    if overlap:
        check_overlap(atoms, source=source, index=index)
