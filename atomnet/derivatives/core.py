"""Derivatives of the potential's total energy.

Forces F = −∂E/∂r. Stress from a symmetric strain ε applied to positions *and*
cell: σ = (1/V) ∂E/∂ε (ASE sign: positive under tension), virial W = −∂E/∂ε.
Hessians H = ∂²E/∂r∂r, one per structure, from chunks of batched
vector–Jacobian products of the gradient (bounded memory; see :func:`hessians`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import NamedTuple

import torch

from .. import keys
from ..errors import UsageError
from ..nn.element_mlp import grouped_only
from ..potential import Potential
from ..terms import Term

#: Hessian rows per batched backward pass: measured fastest on CPU for 9–100 atoms
#: (3BPA, float64: 0.23 s at 4, 0.15 s at 32, 0.26 s with all 81 rows at once)
HESSIAN_CHUNK = 32


class Results(NamedTuple):
    """Outputs of :func:`evaluate`. Fields not asked for are None."""

    energy: torch.Tensor  # (B,) eV
    atomic_energies: torch.Tensor  # (N,) eV
    contributions: dict[str, torch.Tensor]  # name -> (N,) eV
    forces: torch.Tensor | None = None  # (N, 3) eV/Å
    stress: torch.Tensor | None = None  # (B, 3, 3) eV/Å³
    virial: torch.Tensor | None = None  # (B, 3, 3) eV
    hessian: list[torch.Tensor] | None = None  # per structure (3n, 3n) eV/Å²
    charges: torch.Tensor | None = None  # (N,) e, when the potential declares charges
    dipole: torch.Tensor | None = None  # (B, 3) e·Å, Σ q_i r_i, with charges
    graph: dict | None = None  # the evaluated pipeline state


def _strain(graph: dict, n_structures: int) -> torch.Tensor:
    """Apply a zero symmetric strain (requires grad) to positions and cell, in place."""
    pos, cell = graph[keys.POSITIONS], graph[keys.CELL]
    displacement = torch.zeros(
        (n_structures, 3, 3), dtype=pos.dtype, device=pos.device, requires_grad=True
    )
    eps = 0.5 * (displacement + displacement.transpose(1, 2))
    graph[keys.POSITIONS] = pos + torch.einsum("na,nab->nb", pos, eps[graph[keys.BATCH]])
    graph[keys.CELL] = cell + torch.bmm(cell, eps)
    return displacement


def evaluate(
    potential: torch.nn.Module,
    graph: dict[str, torch.Tensor],
    *,
    forces: bool = True,
    stress: bool = False,
    hessian: bool = False,
    create_graph: bool = False,
) -> Results:
    """Energy and the derivatives asked for.

    Args:
        potential: maps a graph to a dict with ``energy`` (B,) in eV.
        graph: batch of structures (not modified).
        forces, stress, hessian: which derivatives to compute. Stress is defined
            for 3-D periodic cells (volume > 0); other structures get zeros. The
            Hessian is a list with one (3n, 3n) matrix per structure (see :func:`hessians`).
        create_graph: keep the graph of the derivatives (for force/stress losses).
    """
    given = graph
    graph = dict(graph)
    n_structures = graph[keys.N_ATOMS].shape[0]
    positions = graph[keys.POSITIONS].detach().requires_grad_(forces or hessian or stress)
    graph[keys.POSITIONS] = positions
    displacement = _strain(graph, n_structures) if stress else None
    out = potential(graph)
    energy = out[keys.ENERGY]
    results = dict(energy=energy, atomic_energies=out[keys.ATOMIC_ENERGIES],
                   contributions=out[keys.CONTRIBUTIONS], graph=out,
                   charges=out.get(keys.CHARGES), dipole=out.get(keys.DIPOLE))
    if not (forces or stress or hessian):
        return Results(**results)
    inputs = [positions] + ([displacement] if stress else [])
    grads = torch.autograd.grad(energy.sum(), inputs, create_graph=create_graph,
                                materialize_grads=True)
    results["forces"] = -grads[0]
    if stress:
        results["virial"] = -grads[1]
        results["stress"] = _stress(grads[1], graph)
    if hessian:
        results["hessian"] = hessians(potential, given)
    return Results(**results)


def _stress(de_deps: torch.Tensor, graph: dict) -> torch.Tensor:
    """(B, 3, 3) σ = (1/V) ∂E/∂ε for 3-D periodic structures, zeros for the others.

    A volume of 1 stands in where the structure is not periodic (or its cell is
    degenerate), so that neither σ nor its gradients become inf or NaN; the
    ``where`` then gives those structures zero stress and zero gradient.
    """
    cell = graph[keys.CELL].detach()
    volume = torch.linalg.det(cell).abs()
    defined = volume > 0
    if keys.PBC in graph:
        defined = defined & graph[keys.PBC].to(cell.device).all(-1)
    safe = torch.where(defined, volume, torch.ones_like(volume)).view(-1, 1, 1)
    return torch.where(defined.view(-1, 1, 1), de_deps / safe, torch.zeros_like(de_deps))


class _Rows:
    """Hessian rows of every structure in a batch, computed together.

    Structures do not interact, so one backward pass with a unit vector on the
    k-th selected coordinate of *every* structure gives the k-th Hessian row of
    each of them: a batch costs 3·max(n) rows, not 3·Σn. Rows go in chunks of
    ``chunk`` batched vector–Jacobian products (``is_grads_batched``), so peak
    memory grows with ``chunk``, not with 3N.
    """

    def __init__(self, graph, positions, gradient, indices, chunk):
        self.positions, self.gradient = positions, gradient
        self.chunk = int(chunk)
        if self.chunk < 1:
            raise UsageError(f"chunk must be a positive number of rows, got {chunk}")
        self.coords = [c.to(positions.device) for c in _selected_coordinates(graph, indices)]
        self.device = positions.device

    def blocks(self) -> list[torch.Tensor]:
        coords = self.coords
        n_rows = max(c.numel() for c in coords)
        flat = self.gradient.reshape(-1)
        out = [flat.new_empty(c.numel(), c.numel()) for c in coords]
        for start in range(0, n_rows, self.chunk):
            stop = min(start + self.chunk, n_rows)
            seeds = flat.new_zeros(stop - start, flat.numel())
            for c in coords:
                if start < c.numel():
                    k = torch.arange(start, min(stop, c.numel()), device=self.device)
                    seeds[k - start, c[k]] = 1.0
            rows = self._vjp(flat, seeds)
            for block, c in zip(out, coords):
                m = min(stop, c.numel())
                if m > start:
                    block[start:m] = rows[: m - start][:, c]
        return _finite([block.detach() for block in out])

    def _vjp(self, flat: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
        try:
            rows = torch.autograd.grad(flat, self.positions, grad_outputs=seeds,
                                       is_grads_batched=True, retain_graph=True,
                                       materialize_grads=True)[0]
        except torch.OutOfMemoryError:
            raise
        except RuntimeError as exc:  # an op without a batching rule: one row at a time
            if "out of memory" in str(exc):
                raise
            warnings.warn(f"batched Hessian rows failed ({exc}); computing rows one by one",
                          RuntimeWarning, stacklevel=4)
            rows = torch.stack([
                torch.autograd.grad(flat, self.positions, grad_outputs=v, retain_graph=True,
                                    materialize_grads=True)[0]
                for v in seeds
            ])
        return rows.reshape(seeds.shape[0], -1)


def _selected_coordinates(graph: dict[str, torch.Tensor], indices) -> list[torch.Tensor]:
    """Batch-global coordinate numbers (3k,) of the atoms whose Hessian block is wanted:
    every atom of every structure, or ``indices`` of a single structure."""
    counts = graph[keys.N_ATOMS].tolist()
    if indices is None:
        starts = [sum(counts[:b]) for b in range(len(counts))]
        atoms = [torch.arange(s, s + n) for s, n in zip(starts, counts)]
    elif len(counts) != 1:
        raise UsageError("a partial Hessian (indices=...) takes one structure, "
                         f"got a batch of {len(counts)}")
    else:
        atoms = [_check_indices(indices, counts[0])]
    return [torch.stack([3 * a, 3 * a + 1, 3 * a + 2], 1).reshape(-1) for a in atoms]


def _finite(blocks: list[torch.Tensor]) -> list[torch.Tensor]:
    for block in blocks:
        if not torch.isfinite(block).all():
            raise UsageError("the Hessian has non-finite entries (NaN or inf): check the "
                             "structure for overlapping atoms and the model for NaN weights")
    return blocks


def _check_indices(indices, n_atoms: int) -> torch.Tensor:
    """Sorted unique atom indices as a tensor; raises for out-of-range or repeated ones."""
    try:
        idx = torch.as_tensor(indices if torch.is_tensor(indices) else list(indices))
    except (TypeError, ValueError, RuntimeError) as exc:
        raise UsageError(f"indices must be a list of atom indices, got {indices!r}") from exc
    if idx.ndim != 1 or idx.numel() == 0 or idx.dtype.is_floating_point or idx.dtype == torch.bool:
        raise UsageError(f"indices must be a non-empty list of atom indices, got {indices!r}")
    idx = idx.long()
    if bool((idx < 0).any()) or bool((idx >= n_atoms).any()):
        raise UsageError(f"indices {idx.tolist()} out of range for {n_atoms} atoms")
    if torch.unique(idx).numel() != idx.numel():
        raise UsageError(f"indices {idx.tolist()} contain repeats")
    return torch.sort(idx).values


#: fields whose values move with the atoms: a part that reads none of them adds nothing
#: to a Hessian
_GEOMETRIC = {keys.POSITIONS, keys.CELL, keys.EDGE_VECTORS, keys.EDGE_LENGTHS}


def _moves(part: torch.nn.Module) -> bool:
    return any(keys.base_name(k) in _GEOMETRIC for k in part.reads)


def _local_structures(potential: Potential, graph: dict[str, torch.Tensor]):
    """The :class:`~atomnet.terms.LocalStructure` of every energy term that depends on
    the positions, or None if some part (a stage, or a term without one) prevents it."""
    if any(_moves(s) for s in potential.stages.values()):
        return None
    found = []
    for term in potential.terms.values():
        if not _moves(term):
            continue
        local = term.local_structure(graph) if isinstance(term, Term) else None
        if local is None:
            return None
        found.append(local)
    return found


def _padded_slots(center: torch.Tensor, n_atoms: int):
    """Slot of each edge among its center's edges: (slot (E,), table (N, K) of edge ids
    with E for empty slots, K)."""
    n_edges = center.numel()
    counts = torch.bincount(center, minlength=n_atoms)
    order = torch.argsort(center, stable=True)
    first = torch.cumsum(counts, 0) - counts
    slot = torch.empty_like(center)
    slot[order] = torch.arange(n_edges, device=center.device) - first[center[order]]
    k = int(counts.max()) if n_edges else 0
    table = torch.full((n_atoms, k), n_edges, dtype=torch.long, device=center.device)
    table[center, slot] = torch.arange(n_edges, device=center.device)
    return slot, table, k


def _row_derivatives(fn, inputs: list[torch.Tensor], weights: torch.Tensor):
    """Per-row Jacobian and weighted curvature of a row-wise function.

    ``fn(*inputs)`` maps rows (R, 3) each → (R, W), row r depending on row r of the
    inputs only. Returns J (R, W, D) = ∂fn/∂x and K (R, D, D) = ∂²(weights·fn)/∂x² for
    x = the inputs side by side (D = 3·len(inputs)). Rows being independent, a pass
    with the same unit seed on every row gives every row's column: two batched passes
    of D seeds each.
    """
    x = [t.detach().requires_grad_(True) for t in inputs]
    with torch.enable_grad():
        out = fn(*x)
        w = torch.zeros_like(out, requires_grad=True)  # J·t = ∂/∂w ⟨∂⟨w, out⟩/∂x, t⟩
        pullback = torch.cat(torch.autograd.grad(out, x, grad_outputs=w, create_graph=True), 1)
        grad = torch.cat(torch.autograd.grad(out, x, grad_outputs=weights, create_graph=True), 1)
    d = pullback.shape[1]
    seeds = torch.eye(d, dtype=grad.dtype, device=grad.device).unsqueeze(1).expand(
        d, grad.shape[0], d)
    jac = torch.autograd.grad(pullback, w, grad_outputs=seeds, is_grads_batched=True,
                              retain_graph=True)[0]  # (D, R, W)
    curv = torch.autograd.grad(grad, x, grad_outputs=seeds, is_grads_batched=True,
                               materialize_grads=True)  # each (D, R, 3)
    return jac.permute(1, 2, 0).detach(), torch.cat(curv, -1).permute(1, 0, 2).detach()


#: ``method="auto"`` assembles Hessians from local pieces from this many atoms per
#: structure on; below it 3N row passes are cheaper. Measured on one CPU thread,
#: float64, untrained default BP model: water (3 atoms) 8–13 ms by rows vs 22–25 ms
#: local; ethanol (9) 26–42 vs 23–36; 3BPA (27) 270–310 vs 80–90; C16H34 (50)
#: 1.6–1.8 s vs 0.13–0.17 s.
LOCAL_MIN_ATOMS = 8

#: readout rows per batched curvature product in :func:`_local_hessian` (bounds memory)
READOUT_ROWS = 8192


def _local_hessian(local, graph: dict[str, torch.Tensor]) -> torch.Tensor:
    """(3N, 3N) Hessian of one factorised term (see :class:`~atomnet.terms.LocalStructure`).

    With G = Σ_edges φ_e(v_e) + Σ_triplets ψ_t(v_t1, v_t2) and E = Σ_i f_i(G_i):
    ∂²E/∂v∂v = Jᵀ A J + Σ b·∂²G, where J = ∂G/∂v (per edge), A_i = ∂²f_i/∂G_i² (applied
    to every column of J_i at once, on one readout row per (edge, direction)),
    b = ∂E/∂G, and b·∂²G is a 3×3 block per edge and 6×6 per triplet. The edge-space
    blocks of each center are then mapped to atoms (v_e = r_j − r_i + S·cell). Cost: a
    dozen passes over the local pieces and one over 3E readout rows, instead of 3N
    passes over the whole graph.
    """
    f = local.fields
    n = graph[keys.POSITIONS].shape[0]
    if graph[f.index].shape[1] == 0:  # no pairs within reach: no curvature from this term
        return graph[keys.POSITIONS].new_zeros(3 * n, 3 * n)
    center, neighbour = graph[f.index]
    species = graph[keys.SPECIES]
    e1, e2 = graph[f.triplets]
    v = graph[f.vectors].detach()
    n_edges = v.shape[0]
    v1, v2 = v.index_select(0, e1), v.index_select(0, e2)

    with torch.enable_grad():
        edge_feats = local.edge_terms(v)
        triplet_feats = local.triplet_terms(v1, v2)
        features = local.assemble(edge_feats, triplet_feats).detach()
        z = local.lift(features, species).requires_grad_(True)
        dz = torch.autograd.grad(local.head(z, species).sum(), z)[0]
        g = features.requires_grad_(True)
        b = torch.autograd.grad(local.lift(g, species), g, grad_outputs=dz)[0]  # ∂E/∂G
    width_e, width_t = edge_feats.shape[1], triplet_feats.shape[1]
    n_e, n_t = local.n_edge_blocks, local.n_triplet_blocks
    f_edge = n_e * width_e
    blocks_e, blocks_t = local.edge_blocks, local.triplet_blocks
    # b restricted to each edge's / triplet's own columns
    b_edge = b[:, :f_edge].reshape(n, n_e, width_e)[center, blocks_e]
    b_trip = b[:, f_edge:].reshape(n, n_t, width_t)[center[e1], blocks_t]
    jac_e, k_edge = _row_derivatives(local.edge_terms, [v], b_edge)  # (E, We, 3), (E, 3, 3)
    if e1.numel():
        jac_t, k_trip = _row_derivatives(local.triplet_terms, [v1, v2], b_trip)  # (T, Wt, 6)
    else:  # no angular triplets (e.g. a diatomic)
        jac_t, k_trip = v.new_zeros(0, width_t, 6), v.new_zeros(0, 6, 6)

    # J_e = ∂G_center/∂v_e for every edge, in G's columns: (E, F, 3)
    rad = v.new_zeros(n_edges, n_e, width_e, 3)
    rad[torch.arange(n_edges, device=v.device), blocks_e] = jac_e
    ang = v.new_zeros(n_edges * n_t, width_t, 3)
    ang.index_add_(0, e1 * n_t + blocks_t, jac_t[..., :3])
    ang.index_add_(0, e2 * n_t + blocks_t, jac_t[..., 3:])
    jac = torch.cat([rad.reshape(n_edges, f_edge, 3), ang.reshape(n_edges, -1, 3)], 1)

    # A_center J_e[:, c] for every (edge, c), in the lifted space (lift is linear, so
    # Jᵀ A J = (L J)ᵀ A_head (L J)): the head is per atom, so each product is one row of a
    # batch (the center's lifted features, seeded with L J_e[:, c])
    rows_center = center.repeat(3)
    lj = local.lift(jac.permute(2, 0, 1).reshape(3 * n_edges, -1), species[rows_center])
    z = z.detach()
    aj = []
    for start in range(0, 3 * n_edges, READOUT_ROWS):
        idx = rows_center[start:start + READOUT_ROWS]
        x = z[idx].requires_grad_(True)
        with torch.enable_grad():
            gz = torch.autograd.grad(local.head(x, species[idx]).sum(), x, create_graph=True)[0]
        aj.append(torch.autograd.grad(gz, x, grad_outputs=lj[start:start + READOUT_ROWS])[0])
    aj = torch.cat(aj).view(3, n_edges, -1)
    lj = lj.view(3, n_edges, -1).permute(1, 2, 0)  # (E, Z, 3)
    slot, table, k = _padded_slots(center, n)
    pad = torch.cat([lj, lj.new_zeros(1, *lj.shape[1:])])[table]  # (N, K, Z, 3)
    aj_pad = torch.cat([aj, aj.new_zeros(3, 1, aj.shape[2])], 1)[:, table]  # (3, N, K, F)
    hv = torch.einsum("cimf,infd->imncd", aj_pad, pad).contiguous()  # (N, K, K, 3, 3)
    flat = hv.view(-1, 3, 3)
    flat.index_add_(0, (center * k + slot) * k + slot, k_edge)
    s1, s2, ct = slot[e1], slot[e2], center[e1]
    for a, sa in ((0, s1), (1, s2)):
        for c, sc in ((0, s1), (1, s2)):
            flat.index_add_(0, (ct * k + sa) * k + sc, k_trip[:, 3 * a:3 * a + 3, 3 * c:3 * c + 3])
    # edge space → atoms: v_(i,m) = r_j(i,m) − r_i
    rows = hv.sum(2)  # (N, K, 3, 3): Σ_m' H[m, m']
    cols = hv.sum(1)  # (N, K, 3, 3): Σ_m H[m, m']
    full = v.new_zeros(n, k + 1, k + 1, 3, 3)
    full[:, :k, :k] = hv
    full[:, :k, k] = -rows
    full[:, k, :k] = -cols
    full[:, k, k] = rows.sum(1)
    atoms = torch.cat([torch.cat([neighbour, neighbour.new_tensor([n])])[table],
                       torch.arange(n, device=v.device).unsqueeze(1)], 1)  # (N, K+1)
    coord = (3 * atoms).unsqueeze(-1) + torch.arange(3, device=v.device)  # (N, K+1, 3)
    size = 3 * (n + 1)
    index = coord[:, :, None, :, None] * size + coord[:, None, :, None, :]
    out = v.new_zeros(size * size)
    out.index_add_(0, index.reshape(-1), full.reshape(-1))
    return out.view(size, size)[:3 * n, :3 * n]


def _hessians_local(graph, locals_, indices) -> list[torch.Tensor]:
    coords = _selected_coordinates(graph, indices)  # checks indices before the work
    total = None
    for local in locals_:
        h = _local_hessian(local, graph)
        total = h if total is None else total + h
    n = graph[keys.POSITIONS].shape[0]
    if total is None:
        total = graph[keys.POSITIONS].new_zeros(3 * n, 3 * n)
    blocks = _finite([total[c][:, c] for c in (c.to(total.device) for c in coords)])
    return [0.5 * (blk + blk.T) for blk in blocks]


def hessians(
    potential: torch.nn.Module,
    graph: dict[str, torch.Tensor],
    *,
    indices: Sequence[int] | None = None,
    chunk: int = HESSIAN_CHUNK,
    method: str = "auto",
) -> list[torch.Tensor]:
    """One exact Hessian ∂²E/∂r∂r per structure of ``graph``, in eV/Å².

    Args:
        indices: atoms of a single structure whose Hessian block is wanted (a
            partial Hessian, like ``ase.vibrations.Vibrations(indices=...)``): the
            (3k, 3k) block over those atoms, in ascending atom order, with every
            other atom held fixed. By rows it costs 3k rows, not 3N.
        chunk: rows per batched backward pass. Peak memory grows with it.
        method: ``"local"`` assembles the Hessian from the local pieces of terms that
            factorise (:class:`~atomnet.terms.LocalStructure`: the BP model; pair
            terms), ``"rows"`` computes 3N rows by batched backward passes over the
            whole graph (any potential), ``"auto"`` (default) takes ``local`` when every
            position-dependent part factorises and no stage depends on positions, and
            the structures have at least ``LOCAL_MIN_ATOMS`` atoms.

    Returns (3n_b, 3n_b) per structure b (or (3k, 3k) with ``indices``), ordered
    (atom, x/y/z). Periodic cells: the Γ-point Hessian (images move with their atom).
    Raises :class:`UsageError` if an entry is not finite.
    """
    if method not in ("auto", "local", "rows"):
        raise UsageError(f"method must be 'auto', 'local' or 'rows', got {method!r}")
    small = int(graph[keys.N_ATOMS].max()) < LOCAL_MIN_ATOMS
    if method == "local" or (method == "auto" and not small):
        locals_ = None
        if isinstance(potential, Potential):
            with torch.no_grad():
                prepared = potential.prepare(graph)
            locals_ = _local_structures(potential, prepared)
        if locals_ is not None:
            return _hessians_local(prepared, locals_, indices)
        if method == "local":
            raise UsageError("this potential has a part that does not factorise into local "
                             "pieces (or a stage that depends on positions): use method='rows'")
    graph = dict(graph)
    positions = graph[keys.POSITIONS].detach().requires_grad_(True)
    graph[keys.POSITIONS] = positions
    with grouped_only():
        energy = potential(graph)[keys.ENERGY]
        gradient = torch.autograd.grad(energy.sum(), positions, create_graph=True,
                                       materialize_grads=True)[0]
        return _Rows(graph, positions, gradient, indices, chunk).blocks()


def output_jacobian(
    potential: torch.nn.Module, graph: dict[str, torch.Tensor], key: str = keys.DIPOLE,
    chunk: int = 64,
) -> torch.Tensor:
    """Jacobian of a declared output with respect to the positions.

    For ``key="dipole"`` of one structure this is ∂μ_a/∂r_ib, shape (3, N, 3) in e
    (e·Å per Å): the atomic polar tensors that IR intensities need. In general
    the shape is ``output.shape + positions.shape``. Rows are computed in chunks
    of ``chunk`` vector–Jacobian products (bounded memory).
    """
    if key not in getattr(potential, "outputs", (keys.ENERGY,)):
        raise UsageError(
            f"{key!r} is not an output of this potential (outputs: {list(potential.outputs)})"
        )
    graph = dict(graph)
    positions = graph[keys.POSITIONS].detach().requires_grad_(True)
    graph[keys.POSITIONS] = positions
    value = potential(graph)[key]
    flat = value.reshape(-1)
    rows = []
    for start in range(0, flat.numel(), chunk):
        eye = torch.zeros(min(chunk, flat.numel() - start), flat.numel(),
                          dtype=flat.dtype, device=flat.device)
        eye[:, start:start + eye.shape[0]] = torch.eye(eye.shape[0], dtype=flat.dtype,
                                                       device=flat.device)
        rows.append(torch.autograd.grad(
            flat, positions, grad_outputs=eye, is_grads_batched=True, retain_graph=True,
            materialize_grads=True,
        )[0])
    return torch.cat(rows).reshape(*value.shape, *positions.shape).detach()


def hessian(
    potential: torch.nn.Module, graph: dict[str, torch.Tensor], *,
    indices: Sequence[int] | None = None, chunk: int = HESSIAN_CHUNK, method: str = "auto",
) -> torch.Tensor:
    """Hessian (3n, 3n) in eV/Å² of the one structure in ``graph`` (see :func:`hessians`)."""
    if graph[keys.N_ATOMS].shape[0] != 1:
        raise UsageError("hessian() takes one structure; use hessians() for a batch")
    return hessians(potential, graph, indices=indices, chunk=chunk, method=method)[0]
