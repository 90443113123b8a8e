"""Turn an ``ase.Atoms`` into the graph dict the models read."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from ase import Atoms
from ase.data import chemical_symbols

from .. import keys
from ..neighbors import neighbor_pairs, pair_distances, pairs_to_graph
from .errors import StructureError, where
from .validate import check_overlap, validate_atoms

#: labels a graph can carry, with their shape per structure (None = per atom)
LABEL_SHAPES = {
    keys.ENERGY: (),
    keys.FORCES: None,
    keys.STRESS: (3, 3),
    keys.DIPOLE: (3,),
}


def get_label(atoms: Atoms, key: str) -> np.ndarray | None:
    """Read label ``key`` (energy, forces, stress, dipole) from ``atoms``.

    Looks in ``atoms.calc.results`` (ASE ≥ 3.23 readers) and then in
    ``atoms.info`` / ``atoms.arrays`` (older files). Stress in Voigt (6,) form is
    returned as (3, 3). Returns None when absent.
    """
    value = None
    calc = atoms.calc
    if calc is not None and key in getattr(calc, "results", {}):
        value = calc.results[key]
    elif key in atoms.info:
        value = atoms.info[key]
    elif key in atoms.arrays:
        value = atoms.arrays[key]
    if value is None:
        return None
    value = np.asarray(value, dtype=np.float64)
    if key == keys.STRESS and value.shape == (6,):
        xx, yy, zz, yz, xz, xy = value
        value = np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
    return value


def _labels(atoms: Atoms, require: Sequence[str], source, index) -> dict[str, torch.Tensor]:
    out = {}
    for key, shape in LABEL_SHAPES.items():
        value = get_label(atoms, key)
        if value is None:
            if key in require:
                raise StructureError(
                    f"{where(source, index)}: missing '{key}' label (required for training; "
                    f"found info keys {sorted(atoms.info)}, array keys {sorted(atoms.arrays)})"
                )
            continue
        expected = (len(atoms), 3) if shape is None else shape
        if value.shape != expected:
            raise StructureError(
                f"{where(source, index)}: '{key}' has shape {value.shape}, expected {expected}"
            )
        if not np.all(np.isfinite(value)):
            raise StructureError(f"{where(source, index)}: '{key}' contains NaN or inf")
        tensor = torch.as_tensor(value, dtype=torch.float64)
        out[keys.ref(key)] = tensor if shape is None else tensor.unsqueeze(0)
    return out


def atoms_to_graph(
    atoms: Atoms,
    elements: Sequence[str],
    *,
    cutoff: float | None = None,
    triplet_cutoff: float | None = None,
    require: Sequence[str] = (),
    source: str | None = None,
    index: int | None = None,
    validate: bool = True,
    labels: bool = True,
) -> dict[str, torch.Tensor]:
    """Graph dict of one structure (float64, on CPU).

    Args:
        atoms: the structure; positions in Å, cell rows in Å.
        elements: the model's element symbols; ``species`` indexes this list.
        cutoff: if given, the neighbour list (pairs and integer shifts) is added.
        triplet_cutoff: if given (with ``cutoff``), angular triplets of edges
            shorter than this (Å) are added too.
        require: labels that must be present (e.g. ``("energy", "forces")``).
        source, index: file and frame, for error messages.
        validate: run :func:`validate_atoms` first.
        labels: read reference labels (``ref_energy``, ``ref_forces``, …); off for
            calculators, where ``atoms.calc`` holds predictions, not labels.

    Total charge is read from ``atoms.info["charge"]`` (e), default 0.
    """
    if validate:  # before the neighbour list: it must not see NaN positions
        validate_atoms(
            atoms, elements=elements, source=source, index=index, overlap=cutoff is None
        )
    pairs = distances = None
    if cutoff is not None:
        pairs = neighbor_pairs(atoms.positions, atoms.cell.array, atoms.pbc, cutoff)
        distances = pair_distances(atoms.positions, atoms.cell.array, pairs)
        if validate:
            check_overlap(atoms, pairs, distances, source, index)
    z_to_species = {chemical_symbols.index(s): k for k, s in enumerate(elements)}
    numbers = atoms.numbers
    charge = float(atoms.info.get("charge", 0.0))
    graph = {
        keys.POSITIONS: torch.as_tensor(atoms.positions, dtype=torch.float64),
        keys.NUMBERS: torch.as_tensor(numbers, dtype=torch.long),
        keys.SPECIES: torch.as_tensor([z_to_species[int(z)] for z in numbers], dtype=torch.long),
        keys.CELL: torch.as_tensor(atoms.cell.array, dtype=torch.float64).unsqueeze(0),
        keys.PBC: torch.as_tensor(atoms.pbc, dtype=torch.bool).unsqueeze(0),
        keys.BATCH: torch.zeros(len(atoms), dtype=torch.long),
        keys.N_ATOMS: torch.tensor([len(atoms)], dtype=torch.long),
        keys.TOTAL_CHARGE: torch.tensor([charge], dtype=torch.float64),
        keys.WEIGHT: torch.tensor([float(atoms.info.get("weight", 1.0))], dtype=torch.float64),
    }
    if labels:
        graph.update(_labels(atoms, require, source, index))
    if pairs is not None:
        pairs_to_graph(graph, pairs, distances, triplet_cutoff)
    return graph
