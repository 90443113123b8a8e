"""Graphs built on the device from torch tensors: no NumPy, no ``ase.Atoms``.

:func:`device_graph` is :func:`~atomnet.structures.atoms_to_graph` followed by
:func:`~atomnet.structures.collate` for a batch of structures that already lives in
torch tensors (GPU molecular dynamics, TorchSim), with the neighbour search of
``vesin-torch`` on the tensors' device.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from ase.data import chemical_symbols

from .. import keys
from ..errors import UsageError
from ..neighbors.triplets import torch_angular_triplets
from ..neighbors.vesin_backend import VESIN_MAX_CELLS, pair_list
from .errors import StructureError
from .validate import MIN_DISTANCE

try:
    from vesin_torch import NeighborList
except ImportError:  # older vesin: the same class under its former name
    from vesin.torch import NeighborList

#: columns of the per-structure statistics read back in the one host sync before the
#: search: atom count, bad numbers, non-finite positions, non-finite cell, periodic with
#: zero volume, periodic along a zero vector, zero rows of the cell (3), extent of the
#: positions as given (Å), pbc (3)
_COUNT, _BAD_Z, _NAN_POS, _NAN_CELL, _FLAT, _ZERO_PERIODIC, _ZERO_ROWS, _EXTENT, _PBC = \
    0, 1, 2, 3, 4, 5, 6, 9, 10
_WIDTH = 13


def _complete_cell(cell: torch.Tensor, zero_rows: list[bool]) -> torch.Tensor:
    """``ase.geometry.complete_cell`` in torch: zero rows replaced by unit vectors
    orthogonal to the others (what ``wrap_positions`` solves with)."""
    missing = [d for d in range(3) if zero_rows[d]]
    if len(missing) == 3:
        return torch.eye(3, dtype=cell.dtype, device=cell.device)
    if len(missing) == 2:
        u, s, vh = torch.linalg.svd(cell.T)
        out = (u @ torch.diag(torch.stack([s[0], s.new_ones(()), s.new_ones(())])) @ vh).T
        sign = torch.where(torch.linalg.det(out) < 0, -1.0, 1.0).to(out)
        rows = [out[d] * sign if d == missing[0] else out[d] for d in range(3)]
        return torch.stack(rows)
    if len(missing) == 1:
        d = missing[0]
        row = torch.linalg.cross(cell[d - 2], cell[d - 1])
        row = row / torch.linalg.vector_norm(row)
        return torch.stack([row if k == d else cell[k] for k in range(3)])
    return cell


def _wrap(positions: torch.Tensor, cell: torch.Tensor, pbc: torch.Tensor,
          zero_rows: list[bool]) -> torch.Tensor:
    """``ase.geometry.wrap_positions(positions, cell, pbc, eps=0)`` in torch: fractional
    coordinates along periodic directions taken modulo 1."""
    full = _complete_cell(cell, zero_rows)
    fractional = torch.linalg.solve(full.T, positions.T).T
    fractional = torch.where(pbc, torch.remainder(fractional, 1.0), fractional)
    return fractional @ full


def _statistics(positions, numbers, cell, pbc, system, n_structures, z_to_species):
    """Per-structure checks and sizes (B, _WIDTH) float64 and whether ``system`` is ordered,
    as one tensor on the device (read back once)."""
    device = positions.device
    count = torch.bincount(system, minlength=n_structures)[:n_structures]
    in_table = (numbers >= 0) & (numbers < z_to_species.shape[0])
    species = z_to_species[numbers.clamp(0, z_to_species.shape[0] - 1)]
    bad_z = (~in_table) | (species < 0)

    def per_structure(flags: torch.Tensor) -> torch.Tensor:
        return torch.zeros(n_structures, device=device, dtype=torch.float64) \
            .index_add(0, system, flags.to(torch.float64))

    nan_pos = per_structure((~torch.isfinite(positions)).any(1))
    nan_cell = (~torch.isfinite(cell)).flatten(1).any(1)
    finite_cell = torch.nan_to_num(cell, nan=0.0, posinf=0.0, neginf=0.0)
    volume = torch.linalg.det(finite_cell).abs()
    flat = pbc.all(1) & (volume < 1e-8)
    zero_rows = torch.linalg.vector_norm(finite_cell, dim=2) < 1e-8  # (B, 3)
    zero_periodic = (pbc & zero_rows).any(1)
    finite = torch.nan_to_num(positions, nan=0.0, posinf=0.0, neginf=0.0)
    high = torch.full((n_structures, 3), -torch.inf, device=device, dtype=torch.float64)
    low = torch.full((n_structures, 3), torch.inf, device=device, dtype=torch.float64)
    index = system.unsqueeze(1).expand(-1, 3)
    high = high.scatter_reduce(0, index, finite, "amax")
    low = low.scatter_reduce(0, index, finite, "amin")
    extent = torch.nan_to_num((high - low).amax(1), nan=0.0, posinf=0.0, neginf=0.0) \
        .clamp(min=0.0)
    stats = torch.cat([
        count[:, None].to(torch.float64), per_structure(bad_z)[:, None], nan_pos[:, None],
        nan_cell[:, None].to(torch.float64), flat[:, None].to(torch.float64),
        zero_periodic[:, None].to(torch.float64), zero_rows.to(torch.float64),
        extent[:, None], pbc.to(torch.float64)], 1)
    unordered = (system[1:] < system[:-1]).any() | (system.max() >= n_structures) \
        if system.numel() else torch.zeros((), dtype=torch.bool, device=device)
    return stats, unordered, species


def _raise_for(stats: list[list[float]], numbers, system, elements) -> None:
    """The first problem found in the statistics, as a StructureError naming the
    structure (index in the batch)."""
    for k, row in enumerate(stats):
        at = f"structure {k}"
        if row[_COUNT] == 0:
            raise StructureError(f"{at}: structure has no atoms")
        if row[_NAN_POS]:
            raise StructureError(f"{at}: positions contain NaN or inf")
        if row[_NAN_CELL]:
            raise StructureError(f"{at}: cell contains NaN or inf")
        if row[_FLAT]:
            raise StructureError(f"{at}: periodic structure with zero cell volume")
        if row[_ZERO_PERIODIC]:
            raise StructureError(f"{at}: periodic along a cell vector that is zero")
        if row[_BAD_Z]:  # error path only: a second sync is fine here
            z = sorted({int(v) for v in numbers[system == k].tolist()})
            known = {chemical_symbols.index(s) for s in elements}
            names = ", ".join(chemical_symbols[v] if 0 <= v < len(chemical_symbols)
                              else f"Z={v}" for v in z if v not in known)
            raise StructureError(
                f"{at}: element(s) {names} not known to the model "
                f"(model elements: {', '.join(elements)})")


def _search(positions: torch.Tensor, cell: torch.Tensor, pbc: torch.Tensor,
            periodic: bool, cutoff: float, extent: float):
    """(i, j, S) of one structure within ``cutoff`` Å: int64, int64, int64 (E, 3), sorted
    by i, on the positions' device (float64)."""
    if extent / cutoff > VESIN_MAX_CELLS:
        # vesin dies of a floating-point exception when its cell grid is this fine (atoms
        # 10⁵ Å apart); atomnet's NumPy list takes its blocks there (CPU, then moved back)
        index, shifts = pair_list(positions.cpu().numpy(), cell.cpu().numpy(),
                                  pbc.cpu().numpy(), cutoff)
        index = index.to(positions.device)
        return index[0], index[1], shifts.round().long().to(positions.device)
    box = cell if periodic else torch.zeros_like(cell)  # open boundaries: no box
    nl = NeighborList(cutoff=float(cutoff), full_list=True, sorted=True)
    i, j, s = nl.compute(points=positions, box=box, periodic=pbc, quantities="ijS")
    return i.long(), j.long(), s.long()


def device_graph(
    positions: torch.Tensor,
    numbers: torch.Tensor,
    cell: torch.Tensor,
    pbc: torch.Tensor | Sequence[bool] | bool,
    elements: Sequence[str],
    pair_lists: Mapping[float, float | None],
    *,
    system: torch.Tensor | None = None,
    charge: torch.Tensor | None = None,
    skin: float = 0.0,
    check: bool = True,
) -> dict[str, torch.Tensor]:
    """Batch graph of B structures built on the tensors' device, in torch only.

    The same graph as ``collate([atoms_to_graph(atoms_k, elements, pair_lists=pair_lists,
    labels=False, skin=skin) for k in range(B)])`` (same fields, shapes and meaning:
    positions in each structure's local frame, wrapped into the cell along periodic
    directions then centred, ``origin`` (B, 3); batch-global atom indices in the pair
    lists and edge indices in the triplets), every tensor on ``positions.device``, float
    fields (integer-valued shifts included) in ``positions.dtype``. Within a center, pairs
    may come in another order than the NumPy builder's; each list is sorted by center.

    Args:
        positions: (N, 3) Å, atoms of structure 0, then 1, …; detached here.
        numbers: (N,) atomic numbers.
        cell: (B, 3, 3) Å, rows are cell vectors, or (3, 3) for one structure.
        pbc: (B, 3) or (3,) bool (or one bool) periodic directions.
        elements: the model's element symbols; ``species`` indexes this list.
        pair_lists: ``{cutoff: triplet_cutoff or None}`` (Å), as
            :attr:`~atomnet.potential.Potential.pair_lists`.
        system: (N,) int64 structure of each atom, contiguous and ascending; None: one
            structure.
        charge: (B,) total charge of each structure (e); None: zeros.
        skin: Å added to every list's reach and to the triplet cutoffs (a Verlet skin,
            see :func:`~atomnet.structures.graph.add_pair_lists`).
        check: reject unknown elements, non-finite positions or cell, empty structures,
            periodic directions along zero vectors, a flat periodic cell and overlapping
            atoms (closer than :data:`~atomnet.structures.validate.MIN_DISTANCE` Å), with
            a :class:`StructureError` naming the structure (its index in the batch) and
            the element or atoms; an unordered ``system`` is a :class:`UsageError`.

    The search is vesin-torch's (float64; one call per structure and cutoff; mixed
    periodicity is vesin's own, as in the NumPy builder). Host syncs: one read-back of
    per-structure sizes and checks before the search, vesin's own (its output size),
    those of the triplet building (``nonzero``, ``repeat_interleave``: output sizes)
    and, with ``check``, one for the overlap check (the shortest list's closest pair).
    A structure spread over more than :data:`VESIN_MAX_CELLS` cutoffs (as given, before
    wrapping) is searched by atomnet's NumPy list on the CPU instead (vesin would crash).
    """
    if not positions.is_floating_point():
        raise UsageError(f"positions must be a float tensor, got {positions.dtype}")
    device, dtype = positions.device, positions.dtype
    pos = positions.detach().to(torch.float64)
    numbers = numbers.detach().to(device=device, dtype=torch.long)
    cell = cell.detach().to(device=device, dtype=torch.float64)
    if cell.dim() == 2:
        cell = cell.unsqueeze(0)
    n_structures = cell.shape[0]
    pbc = torch.as_tensor(pbc, dtype=torch.bool).to(device)
    pbc = pbc.reshape(-1, 3) if pbc.dim() else pbc.reshape(1, 1)
    pbc = pbc.expand(n_structures, 3).contiguous()
    n = pos.shape[0]
    if system is None:
        if n_structures != 1:
            raise UsageError(f"{n_structures} cells given but no system index")
        system = torch.zeros(n, dtype=torch.long, device=device)
    else:
        system = system.detach().to(device=device, dtype=torch.long)
    table = [-1] * (max(chemical_symbols.index(s) for s in elements) + 1)
    for k, s in enumerate(elements):
        table[chemical_symbols.index(s)] = k
    z_to_species = torch.tensor(table, dtype=torch.long, device=device)

    stats, unordered, species = _statistics(
        pos, numbers, cell, pbc, system, n_structures, z_to_species)
    # host sync 1: sizes (for the per-structure loop) and the checks
    host = torch.cat([stats.flatten(), unordered.reshape(1).to(torch.float64)]).tolist()
    if host[-1]:
        raise UsageError("device_graph needs the atoms ordered by structure, structure "
                         f"indices 0 … {n_structures - 1}")
    rows = [host[k * _WIDTH:(k + 1) * _WIDTH] for k in range(n_structures)]
    counts = [int(r[_COUNT]) for r in rows]
    if sum(counts) != n:
        raise UsageError(f"system index covers {sum(counts)} of {n} atoms")
    if check:
        _raise_for(rows, numbers, system, elements)
    pbc_host = [[bool(v) for v in r[_PBC:_PBC + 3]] for r in rows]

    local, origins = [], []
    for k, part in enumerate(pos.split(counts)):
        zero_rows = [bool(v) for v in rows[k][_ZERO_ROWS:_ZERO_ROWS + 3]]
        if any(pbc_host[k]):
            part = _wrap(part, cell[k], pbc[k], zero_rows)
        origin = part.mean(0)
        local.append(part - origin)
        origins.append(origin)
    pos_local = torch.cat(local)
    graph = {
        keys.POSITIONS: pos_local.to(dtype),
        keys.ORIGIN: torch.stack(origins).to(dtype),
        keys.NUMBERS: numbers,
        keys.SPECIES: species,
        keys.CELL: cell.to(dtype),
        keys.PBC: pbc,
        keys.BATCH: system,
        keys.N_ATOMS: torch.tensor(counts, dtype=torch.long, device=device),
        keys.TOTAL_CHARGE: (torch.zeros(n_structures, device=device, dtype=dtype)
                            if charge is None else
                            charge.detach().to(device=device, dtype=dtype).reshape(-1)),
        keys.WEIGHT: torch.ones(n_structures, device=device, dtype=dtype),
    }
    offsets = [0]
    for c in counts[:-1]:
        offsets.append(offsets[-1] + c)
    closest = None
    for cutoff in sorted(pair_lists):
        triplet_cutoff = pair_lists[cutoff]
        fields = keys.pairs(cutoff)
        # distances for the triplets, and for the overlap check on the shortest list
        measure = triplet_cutoff is not None or (check and closest is None)
        i_parts, j_parts, s_parts, d_parts = [], [], [], []
        for k, part in enumerate(local):
            i, j, s = _search(part, cell[k], pbc[k], any(pbc_host[k]), cutoff + skin,
                              rows[k][_EXTENT])
            s = s.to(torch.float64)
            if measure:  # |r_j − r_i + S @ cell| (float64, as pair_distances): selection only
                d_parts.append(torch.linalg.vector_norm(
                    (part.index_select(0, j) - part.index_select(0, i)).addmm_(s, cell[k]),
                    dim=1))
            i_parts.append(i + offsets[k])
            j_parts.append(j + offsets[k])
            s_parts.append(s)
        i, j = torch.cat(i_parts), torch.cat(j_parts)
        graph[fields.index] = torch.stack([i, j])
        graph[fields.shifts] = torch.cat(s_parts).to(dtype)
        if not measure:
            continue
        distances = torch.cat(d_parts)
        if check and closest is None:  # the shortest list: overlaps are short-range
            closest = (i, j, distances)
        if triplet_cutoff is not None:
            graph[fields.triplets] = torch_angular_triplets(
                i, distances, float(triplet_cutoff) + skin)
    if closest is not None and closest[0].numel():
        i, j, distances = closest
        k = torch.argmin(distances)
        # host sync 2: the closest pair of the batch
        d, a, b, s = torch.stack([distances[k], i[k].double(), j[k].double(),
                                  system[i[k]].double()]).tolist()
        if d < MIN_DISTANCE:
            s = int(s)
            raise StructureError(
                f"structure {s}: atoms {int(a) - offsets[s]} and {int(b) - offsets[s]} are "
                f"{d:.3f} Å apart (closer than {MIN_DISTANCE} Å: overlapping atoms)")
    return graph
