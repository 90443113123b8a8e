"""Pair lists of long reach (e.g. D3's 60 Bohr): blocks of atoms against their images.

vesin's cell list is the right tool at short range, but at a reach of tens of Å it
visits ~7 candidates per pair and its output sort dominates. Here the structure's
atoms are grouped into compact blocks of about :data:`ROWS` atoms; every image of every
atom within the cutoff of the structure (the periodic "ghosts", images S = 0
included) is listed once; each block keeps the ghosts within the cutoff of its bounding
box (about 1.6 candidates per pair at 31.75 Å in water) and takes the squared
distances to all of them with one small matrix product. Output: the same pairs as
:func:`~atomnet.neighbors.neighbor_pairs` (all (i, j, S) with |r_j − r_i + S @ cell| <
cutoff, i ≠ j or S ≠ 0), sorted by center; within a center ordered by ghost (shift,
then neighbour) rather than by neighbour.

Integers only come out (contract 1): distances are recomputed by the models.
"""

from __future__ import annotations

import math

import numpy as np
import torch

#: atoms per block: fewer prune more candidates, more cost fewer Python iterations
ROWS = 64
#: neighbours per atom (density × sphere volume) above which :func:`pair_list` uses
#: blocks instead of vesin. Measured on water (1 thread, index and shifts as the graph
#: stores them), vesin / blocks: 5 Å (53 neighbours) 1.5 / 3.4 ms at 192 atoms, 9 / 20 ms
#: at 1,536; 7 Å (145) 7 / 4 ms and 23 / 25 ms; 12 Å (729) 14 / 7 ms and 115 / 54 ms;
#: 20 Å (3,375) 64 / 20 ms and 1.0 / 0.23 s; 31.75 Å (D3's reach, 13,500) 4.5 / 0.8 s
#: at 1,536 atoms
BLOCKS_ABOVE = 200.0


def _complete(cell: np.ndarray, pbc: np.ndarray) -> np.ndarray | None:
    """``cell`` with its non-periodic rows replaced by an orthonormal basis of the
    complement of the periodic ones (a full-rank frame for fractional coordinates);
    None if the periodic rows are degenerate."""
    periodic = cell[pbc]
    if periodic.shape[0] and np.linalg.matrix_rank(periodic, tol=1e-8) < periodic.shape[0]:
        return None
    q, _ = np.linalg.qr(periodic.T, mode="complete") if periodic.shape[0] \
        else (np.eye(3), None)
    out = cell.copy()
    out[~pbc] = q[:, periodic.shape[0]:].T
    return out


def _ghosts(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float):
    """Every image r_j + S @ cell within ``cutoff`` of the atoms' bounding box:
    (atom (M,), shift (M, 3) float, position (M, 3), ghost id of each atom's S = 0 image
    (N,)), in shift-major order; None when the cell cannot be completed."""
    n = positions.shape[0]
    lo, hi = positions.min(0), positions.max(0)
    c2 = cutoff * cutoff
    if pbc.any():
        frame = _complete(cell, pbc)
        if frame is None:
            return None
        inverse = np.linalg.inv(frame)
        frac = positions @ inverse
        spacing = 1.0 / np.linalg.norm(inverse, axis=0)  # between lattice planes
        span = frac.max(0) - frac.min(0)
        # |Δf_a + S_a| · spacing_a ≤ |r_j + S @ cell − r_i| < cutoff
        reach = [int(math.ceil(cutoff / spacing[a] + span[a])) if pbc[a] else 0
                 for a in range(3)]
        grid = np.meshgrid(*(np.arange(-k, k + 1) for k in reach), indexing="ij")
        shifts = np.stack([g.reshape(-1) for g in grid], 1).astype(np.float64)
        translations = shifts @ (cell * pbc[:, None])
        # shifts whose image of the bounding box comes within the cutoff of it
        gap = np.maximum(lo - hi - translations, 0) + np.maximum(lo + translations - hi, 0)
        near = np.flatnonzero((gap * gap).sum(1) < c2)
        shifts, translations = shifts[near], translations[near]
    else:
        shifts = translations = np.zeros((1, 3))
    zero = int(np.flatnonzero((shifts == 0).all(1))[0])
    images = (positions[None, :, :] + translations[:, None, :]).reshape(-1, 3)
    gap = np.maximum(lo - images, 0) + np.maximum(images - hi, 0)
    ghost = np.flatnonzero((gap * gap).sum(1) < c2)
    own = np.searchsorted(ghost, zero * n + np.arange(n))
    return ghost % n, shifts[ghost // n], images[ghost], own


def _blocks(positions: np.ndarray, rows: int, cutoff: float) -> list[np.ndarray]:
    """Atom indices (ascending) of compact blocks of about ``rows`` atoms: the cells of
    a grid over the bounding box, sized on its extents (flat and linear structures too)
    and at most two cutoffs wide (sparse structures: fragments far apart stay apart)."""
    n = positions.shape[0]
    lo = positions.min(0)
    extent = positions.max(0) - lo
    side = float(extent.max()) or 1.0
    for _ in range(8):  # side³ · n = rows · volume of the box, thin extents counted as side
        side = (float(np.prod(np.maximum(extent, side))) * rows / n) ** (1.0 / 3.0)
    side = min(side, 2.0 * cutoff)
    dims = np.maximum(np.ceil(extent / side), 1).astype(np.int64)
    cells = np.minimum(((positions - lo) / side).astype(np.int64), dims - 1)
    flat = (cells[:, 0] * dims[1] + cells[:, 1]) * dims[2] + cells[:, 2]
    _, which = np.unique(flat, return_inverse=True)
    order = np.argsort(which, kind="stable")
    return np.split(order, np.cumsum(np.bincount(which))[:-1])


def block_pairs(
    positions: np.ndarray, cell: np.ndarray, pbc, cutoff: float, rows: int = ROWS
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """All (i, j, S) within ``cutoff`` (Å), as (index (2, E) int64, shifts (E, 3) float64)
    torch tensors sorted by center i, or None for a cell whose periodic vectors are
    degenerate (let vesin deal with it)."""
    pbc = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,))
    cell = np.asarray(cell, dtype=np.float64)
    pos = np.ascontiguousarray(positions, dtype=np.float64)
    n = pos.shape[0]
    if not n:
        return torch.zeros(2, 0, dtype=torch.long), torch.zeros(0, 3, dtype=torch.float64)
    found = _ghosts(pos, cell, pbc, cutoff)
    if found is None:
        return None
    atom, shift, image, own = found
    c2 = cutoff * cutoff
    per_atom: list[np.ndarray] = [None] * n  # ghost ids of each center's neighbours
    for block in _blocks(pos, rows, cutoff):
        x = pos[block]
        lo, hi = x.min(0), x.max(0)
        gap = np.maximum(lo - image, 0) + np.maximum(image - hi, 0)
        cols = np.flatnonzero((gap * gap).sum(1) < c2)
        # |x − y|² = |x|² + |y|² − 2 x·y about the block's centre (small magnitudes)
        centre = 0.5 * (lo + hi)
        xc, yc = x - centre, image[cols] - centre
        d2 = xc @ yc.T
        d2 *= -2.0
        d2 += (yc * yc).sum(1)
        d2 += (xc * xc).sum(1)[:, None]
        close = d2 < c2
        # an atom is not its own neighbour (S = 0); its image S = 0 is among the columns
        close[np.arange(block.size), np.searchsorted(cols, own[block])] = False
        # row-major, so by center (NumPy's nonzero is several times faster than torch's)
        ids = cols.astype(np.int32)[np.flatnonzero(close) % cols.size]
        bounds = np.cumsum(np.count_nonzero(close, axis=1))[:-1]
        for a, segment in zip(block.tolist(), np.split(ids, bounds)):
            per_atom[a] = segment
    total = sum(segment.size for segment in per_atom)
    index = torch.empty(2, total, dtype=torch.long)
    shifts = torch.empty(total, 3, dtype=torch.float64)
    centers, neighbours, out = index[0].numpy(), index[1].numpy(), shifts.numpy()
    start = 0
    for a, ids in enumerate(per_atom):  # in the order of the centers
        stop = start + ids.size
        centers[start:stop] = a
        # mode="clip": unbuffered (the default "raise" copies through a buffer)
        np.take(atom, ids, out=neighbours[start:stop], mode="clip")
        np.take(shift, ids, axis=0, out=out[start:stop], mode="clip")
        start = stop
    return index, shifts
