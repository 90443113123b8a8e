"""Turn an ``ase.Atoms`` into the graph dict the models read."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from ase import Atoms
from ase.data import chemical_symbols
from ase.geometry import wrap_positions

from .. import keys
from ..neighbors import angular_triplets, pair_distances, pair_list
from .errors import StructureError, where
from .validate import check_overlap, validate_atoms

#: labels a graph can carry, with their shape per structure; a shape that starts with None
#: is per atom (None stands for the structure's atom count)
LABEL_SHAPES = {
    keys.ENERGY: (),
    keys.FORCES: (None, 3),
    keys.STRESS: (3, 3),
    keys.DIPOLE: (3,),
    keys.CHARGES: (None,),
}


def per_atom(key: str) -> bool:
    """Whether label ``key`` has one row per atom (forces, charges)."""
    shape = LABEL_SHAPES[key]
    return bool(shape) and shape[0] is None


def get_label(atoms: Atoms, key: str) -> np.ndarray | None:
    """Read label ``key`` (energy, forces, stress, dipole, charges) from ``atoms``.

    Looks in ``atoms.calc.results`` (ASE ≥ 3.23 readers) and then in
    ``atoms.info`` / ``atoms.arrays`` (older files). Stress in Voigt (6,) form is
    returned as (3, 3). Returns None when absent.

    Stress is defined only for cells periodic in all three directions: a stress
    label on any other structure (some codes write zeros for molecules) is
    ignored, i.e. None is returned.
    """
    if key == keys.STRESS and not atoms.pbc.all():
        return None
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


def label_shape(key: str, n_atoms: int) -> tuple[int, ...]:
    """Shape of label ``key`` in one structure's graph: (n_atoms, …) per atom (forces
    (n_atoms, 3), charges (n_atoms,)), else (1, …)."""
    shape = LABEL_SHAPES[key]
    return (n_atoms, *shape[1:]) if per_atom(key) else (1, *shape)


def _labels(atoms: Atoms, require: Sequence[str], source, index) -> dict[str, torch.Tensor]:
    """Labels ``ref_<key>`` found on ``atoms``; each optional one (all but energy) with
    its mask ``ref_<key>_mask`` = [True] (datasets pad the structures lacking it)."""
    out = {}
    for key in LABEL_SHAPES:
        value = get_label(atoms, key)
        if value is None:
            if key in require:
                note = ("; stress is read only for cells periodic in 3-D"
                        if key == keys.STRESS and not atoms.pbc.all() else "")
                raise StructureError(
                    f"{where(source, index)}: missing '{key}' label (required for training; "
                    f"found info keys {sorted(atoms.info)}, array keys {sorted(atoms.arrays)}"
                    f"{note})"
                )
            continue
        expected = label_shape(key, len(atoms))
        if not per_atom(key):
            expected = expected[1:]
        if value.shape != expected:
            raise StructureError(
                f"{where(source, index)}: '{key}' has shape {value.shape}, expected {expected}"
            )
        if not np.all(np.isfinite(value)):
            raise StructureError(f"{where(source, index)}: '{key}' contains NaN or inf")
        tensor = torch.as_tensor(value, dtype=torch.float64)
        out[keys.ref(key)] = tensor if per_atom(key) else tensor.unsqueeze(0)
        if key != keys.ENERGY:
            out[keys.mask(key)] = torch.ones(1, dtype=torch.bool)
    return out


def _info_number(atoms: Atoms, key: str, default: float, source, index) -> float:
    """A finite number from ``atoms.info[key]`` (e.g. the total charge), else a StructureError."""
    value = atoms.info.get(key, default)
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if isinstance(value, bool) or not np.isfinite(number):
        raise StructureError(
            f"{where(source, index)}: info['{key}'] must be a finite number, got {value!r}"
        )
    return number


def local_positions(atoms: Atoms) -> tuple[np.ndarray, np.ndarray]:
    """Positions (N, 3) Å in a frame near the atoms, and that frame's origin (3,) Å.

    Atoms are wrapped into the cell along periodic directions, then the centroid
    is subtracted, all in float64. The energy is unchanged (it depends on relative
    vectors only), but a float32 model no longer loses digits when a molecule sits
    1,000 Å from the origin or an MD trajectory has drifted over many cells.
    """
    positions = np.asarray(atoms.positions, dtype=np.float64)
    if atoms.pbc.any():
        positions = wrap_positions(positions, atoms.cell.array, atoms.pbc, eps=0.0)
    origin = positions.mean(axis=0)
    return positions - origin, origin


#: reach (Å) of the search for overlapping atoms when no list has distances at hand
OVERLAP_REACH = 1.0


def _check_overlap(graph, atoms: Atoms, source, index) -> None:
    """:func:`check_overlap` on a search of its own at :data:`OVERLAP_REACH`."""
    positions, cell = graph[keys.POSITIONS].numpy(), atoms.cell.array
    pairs_index, shifts = pair_list(positions, cell, atoms.pbc, OVERLAP_REACH)
    i, j = pairs_index.numpy()
    pairs = (i, j, shifts.numpy())
    check_overlap(atoms, pairs, pair_distances(positions, cell, pairs), source, index)


def add_pair_lists(
    graph: dict[str, torch.Tensor],
    atoms: Atoms,
    pair_lists: Mapping[float, float | None],
    check: bool = True,
    source: str | None = None,
    index: int | None = None,
    skin: float = 0.0,
) -> None:
    """Add one integer pair list per cutoff (Å) of ``pair_lists`` ({cutoff: triplet cutoff}).

    ``skin`` (Å, a Verlet skin): each list named for ``cutoff`` holds the pairs closer
    than cutoff + skin, and its triplets the edges shorter than triplet cutoff + skin,
    so that it stays complete while no atom moves more than skin/2; only parts whose
    contributions vanish exactly beyond their cutoff may read such lists
    (``Term.skin_safe``).

    Each cutoff gets its own search (:func:`~atomnet.neighbors.pair_list`: vesin at
    short reach, blocks at long reach), so that a 5 Å list never pays for a 31.75 Å
    one; every list holds exactly the pairs closer than its cutoff, sorted by center.
    Distances (NumPy) are computed only for lists with triplets. ``check``: reject
    overlapping atoms (a short-range matter), on the shortest list's distances when it
    has triplets, else with a search of its own at 1 Å before any list is built.
    """
    positions = graph[keys.POSITIONS].numpy()
    cell, pbc = atoms.cell.array, atoms.pbc
    n_atoms = positions.shape[0]
    cutoffs = sorted(pair_lists)
    if check and pair_lists[cutoffs[0]] is None:
        _check_overlap(graph, atoms, source, index)
        check = False
    for cutoff in cutoffs:
        triplet_cutoff = pair_lists[cutoff]
        fields = keys.pairs(cutoff)
        pairs_index, shifts = pair_list(positions, cell, pbc, cutoff + skin)
        graph[fields.index], graph[fields.shifts] = pairs_index, shifts
        if triplet_cutoff is None:
            continue
        i, j = pairs_index.numpy()
        distances = pair_distances(positions, cell, (i, j, shifts.numpy()))
        if check:  # the shortest list: overlaps are short-range
            check_overlap(atoms, (i, j, shifts.numpy()), distances, source, index)
            check = False
        graph[fields.triplets] = torch.from_numpy(
            angular_triplets(i, distances, triplet_cutoff + skin, n_atoms))


def atoms_to_graph(
    atoms: Atoms,
    elements: Sequence[str],
    *,
    pair_lists: Mapping[float, float | None] | None = None,
    require: Sequence[str] = (),
    source: str | None = None,
    index: int | None = None,
    validate: bool = True,
    labels: bool = True,
    skin: float = 0.0,
) -> dict[str, torch.Tensor]:
    """Graph dict of one structure (float64, on CPU).

    Args:
        atoms: the structure; positions in Å, cell rows in Å.
        elements: the model's element symbols; ``species`` indexes this list.
        pair_lists: ``{cutoff: triplet_cutoff or None}`` (Å): one integer pair list
            per cutoff (fields :func:`atomnet.keys.pairs`), with angular triplets of
            the edges shorter than the triplet cutoff where one is given.
        require: labels that must be present (e.g. ``("energy", "forces")``).
        source, index: file and frame, for error messages.
        validate: run :func:`validate_atoms` first.
        labels: read reference labels (``ref_energy``, ``ref_forces``, …); off for
            calculators, where ``atoms.calc`` holds predictions, not labels.
        skin: Å added to every list's reach (a Verlet skin; see :func:`add_pair_lists`).

    Total charge is read from ``atoms.info["charge"]`` (e), default 0. Positions are
    stored in a local frame (:func:`local_positions`); ``origin`` records where it is.
    """
    if validate:  # before the neighbour list: it must not see NaN positions
        validate_atoms(
            atoms, elements=elements, source=source, index=index, overlap=not pair_lists
        )
    z_to_species = {chemical_symbols.index(s): k for k, s in enumerate(elements)}
    numbers = atoms.numbers
    charge = _info_number(atoms, "charge", 0.0, source, index)
    weight = _info_number(atoms, "weight", 1.0, source, index)
    positions, origin = local_positions(atoms)
    graph = {
        keys.POSITIONS: torch.as_tensor(positions, dtype=torch.float64),
        keys.ORIGIN: torch.as_tensor(origin, dtype=torch.float64).unsqueeze(0),
        keys.NUMBERS: torch.as_tensor(numbers, dtype=torch.long),
        keys.SPECIES: torch.as_tensor([z_to_species[int(z)] for z in numbers], dtype=torch.long),
        keys.CELL: torch.as_tensor(atoms.cell.array, dtype=torch.float64).unsqueeze(0),
        keys.PBC: torch.as_tensor(atoms.pbc, dtype=torch.bool).unsqueeze(0),
        keys.BATCH: torch.zeros(len(atoms), dtype=torch.long),
        keys.N_ATOMS: torch.tensor([len(atoms)], dtype=torch.long),
        keys.TOTAL_CHARGE: torch.tensor([charge], dtype=torch.float64),
        keys.WEIGHT: torch.tensor([weight], dtype=torch.float64),
    }
    if labels:
        graph.update(_labels(atoms, require, source, index))
    if pair_lists:
        add_pair_lists(graph, atoms, pair_lists, validate, source, index, skin=skin)
    return graph
