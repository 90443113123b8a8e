"""The chunked two-body pass of D3(BJ) (:class:`~atomnet.physics.dispersion.D3BJ`).

:class:`ChunkedPairs` reads one full, center-sorted pair list in chunks and holds the
gradient accumulators; :class:`ChunkedTwoBody` is the autograd function whose forward
computes the energies and, with them, the analytic gradient of the total energy, so
no autograd graph over millions of pairs is kept. The D3 physics (coordination
numbers, C6, damping) stays in the term's ``_state``, ``_pair_pass`` and ``_cn_pass``;
this module only decides how the pairs are walked and how gradients are gathered.
"""

from __future__ import annotations

import numpy as np
import torch

#: directed pairs per chunk of the two-body passes on the CPU: their temporaries stay in
#: cache (and in the allocator's reuse) instead of faulting in fresh pages per operation
CHUNK = 1 << 16
#: the same on other devices, where fewer, larger kernels pay
DEVICE_CHUNK = 1 << 22
#: partial sums per atom on the CPU: the list is sorted by center, and adding a run of
#: values into one element waits on each previous add
LANES = 8


class ChunkedPairs:
    """One full pair list read in chunks as stored (center-sorted), and the gradient
    accumulators.

    Vectors and lengths are the potential's edge vectors and lengths (detached), the
    vectors transposed per chunk into a scratch buffer: gathering, scaling and
    scattering rows of three is several times slower than rows of a (3, k) block. The
    cell gradient then comes without the shifts (:meth:`gradients`; float64). Where the result
    must be differentiable (autograd on, positions or cell requiring grad: a backward
    pass with ``create_graph``) the list is one chunk, vectors and lengths are
    recomputed from positions and cell with autograd (r_j − r_i + S @ cell, as
    :func:`atomnet.neighbors.edge_vectors`), the cell gradient is Σ Sᵀ ∂L/∂v and
    accumulations are out of place. Per-atom accumulators hold ``lanes`` partial sums
    per atom (:meth:`center`, :meth:`fold`).
    """

    def __init__(self, data: dict, positions: torch.Tensor, cell: torch.Tensor,
                 needs: tuple[bool, bool] = (False, False)):
        self.index, self.shifts = data["index"], data["shifts"]
        self.species, self.batch, self.pbc = data["species"], data["batch"], data["pbc"]
        self.periodic = bool(self.pbc.any())
        self.positions, self.cell = positions, cell
        self.n_atoms = positions.shape[0]
        self.dtype, self.device = positions.dtype, positions.device
        self.n_edges = self.index.shape[1]
        self.differentiable = torch.is_grad_enabled() and (positions.requires_grad
                                                           or cell.requires_grad)
        self.lengths = self.vectors = None
        self.lanes = 1
        # the cell gradient from W and G (gradients()): fewer passes over the shifts, but
        # a difference of sums; float32 keeps Σ Sᵀ ∂L/∂v
        self.virial = not self.differentiable and self.dtype == torch.float64
        if self.differentiable:
            self.chunk = max(self.n_edges, 1)
        else:
            self.lengths, self.vectors = data["lengths"], data["vectors"]
            self.chunk = CHUNK if self.device.type == "cpu" else DEVICE_CHUNK
            self._scratch = torch.empty(3, min(self.chunk, self.n_edges), dtype=self.dtype,
                                        device=self.device)
            if self.device.type == "cpu":
                self.lanes = LANES
                self._lane = torch.arange(self.chunk, device=self.device) % LANES
        self.reset(needs)

    def reset(self, needs: tuple[bool, bool]) -> None:
        """Zero the accumulators of ∂L/∂positions (transposed, (3, N · lanes)) and ∂L/∂cell
        (without autograd: Σ coef v ⊗ v per structure, :meth:`gradients`)."""
        cell = needs[1] and self.periodic
        positions = needs[0] or (cell and self.virial)
        self.grad_positions = self.zeros(3, self.n_atoms * self.lanes) if positions else None
        self.grad_cell = self.zeros(*self.cell.shape) if cell else None
        self.needs = needs

    def gradients(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(∂L/∂positions (N, 3), ∂L/∂cell (B, 3, 3)), None where not asked for.

        Without autograd, the cell gradient C = Σ_q ½ S_q ⊗ coef_q v_q (over directed
        pairs) is rebuilt from W = Σ_q coef_q v_q ⊗ v_q and the position gradient G: as
        S_q @ M = v_q − Δr_q for a frame M whose periodic rows are the cell's, and the
        list holds every pair both ways, C = −½ M⁻ᵀ (W + 2 Σ_i r_i ⊗ G_i); its rows along
        non-periodic directions are zero (S has no component there)."""
        gp = self.grad_positions
        if gp is not None:
            gp = gp.view(3, self.n_atoms, self.lanes).sum(-1).T.contiguous()
        gc = self.grad_cell
        if gc is not None and self.virial:
            pos = self.positions.detach()
            outer = self.zeros(*self.cell.shape).index_add_(
                0, self.batch, pos.unsqueeze(2) * gp.unsqueeze(1))
            pbc = self.pbc.to(self.device)
            frames = self.cell.detach().clone()
            for b in torch.nonzero(~pbc.all(-1)).squeeze(1).tolist():
                frames[b] = _frame(frames[b], pbc[b])
            gc = torch.linalg.solve(frames.transpose(1, 2), gc + 2.0 * outer) * -0.5
            gc = gc * pbc.unsqueeze(-1).to(gc.dtype)
        return (gp if self.needs[0] else None), gc

    def zeros(self, *shape: int) -> torch.Tensor:
        return torch.zeros(shape, dtype=self.dtype, device=self.device)

    def scale(self, factor: float) -> None:
        """Multiply the gradient accumulators by ``factor``."""
        if self.grad_positions is not None:
            self.grad_positions = self.grad_positions * factor
        if self.grad_cell is not None:
            self.grad_cell = self.grad_cell * factor

    def zeros_per_atom(self) -> torch.Tensor:
        return self.zeros(self.n_atoms * self.lanes)

    def center(self, i: torch.Tensor) -> torch.Tensor:
        """Where pairs of centers ``i`` accumulate in per-atom accumulators."""
        return i if self.lanes == 1 else i * self.lanes + self._lane[: i.shape[0]]

    def fold(self, acc: torch.Tensor) -> torch.Tensor:
        return acc if self.lanes == 1 else acc.view(self.n_atoms, self.lanes).sum(-1)

    def add(self, acc: torch.Tensor, index: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        if self.differentiable:
            return acc.index_add(0, index, values)
        return acc.index_add_(0, index, values)

    def pairs(self, vectors: bool = False, within: float | None = None,
              subset: list | None = None):
        """Per chunk: (chunk, rows, i, j, S, r, (vᵀ (3, k), v (k, 3))) of its pairs, all of
        them (rows None), those closer than ``within``, or those of ``subset`` (a list of
        (chunk, rows)); the vectors are None unless ``vectors`` (or recomputed), vᵀ is
        scratch (valid until the next chunk)."""
        n_chunks = -(-self.n_edges // self.chunk)
        for chunk, rows in subset if subset is not None else ((c, None) for c in range(n_chunks)):
            start = chunk * self.chunk
            stop = min(start + self.chunk, self.n_edges)
            i, j = self.index[0, start:stop], self.index[1, start:stop]
            s = self.shifts[start:stop]
            if self.differentiable:
                v = self._vectors(i, j, s)
                r = torch.linalg.vector_norm(v, dim=-1)
            else:
                r, v = self.lengths[start:stop], None
            if within is not None:
                rows = torch.nonzero(r.detach() < within).squeeze(1)
            if rows is not None:
                if not rows.numel():
                    continue
                i, j, r = (x.index_select(0, rows) for x in (i, j, r))
            if not (self.differentiable or (vectors and not self.virial)):
                s = None  # not needed
            elif rows is not None:
                s = s.index_select(0, rows)
            vt = None
            if v is not None:
                if rows is not None:
                    v = v.index_select(0, rows)
                vt = v.T
            elif vectors:
                v = self.vectors[start:stop]
                cpu = self.device.type == "cpu"
                if rows is not None:  # (NumPy gathers rows of three several times faster)
                    v = torch.from_numpy(np.take(v.numpy(), rows.numpy(), axis=0)) if cpu \
                        else v.index_select(0, rows)
                vt = self._scratch[:, : v.shape[0]]
                if cpu:  # (and transposes)
                    np.copyto(vt.numpy(), v.numpy().T)
                else:
                    vt.copy_(v.T)
            yield chunk, rows, i, j, s, r, (None if vt is None else (vt, v))

    def _structure(self, i: torch.Tensor) -> int | None:
        """The one structure every pair of ``i`` belongs to, or None."""
        if self.cell.shape[0] == 1:
            return 0
        lo, hi = torch.aminmax(self.batch.index_select(0, i))
        return int(lo) if int(lo) == int(hi) else None

    def _vectors(self, i, j, s) -> torch.Tensor:
        """r_j − r_i + S @ cell (k, 3), as :func:`atomnet.neighbors.edge_vectors`."""
        pos = self.positions
        v = pos.index_select(0, j) - pos.index_select(0, i)
        if not self.periodic:  # molecules: every shift is zero
            return v
        b = self._structure(i)
        if b is not None:
            return torch.addmm(v, s, self.cell[b])
        cells = self.cell.index_select(0, self.batch.index_select(0, i))
        return v + torch.bmm(s.unsqueeze(1), cells).squeeze(1)

    def pull(self, coef: torch.Tensor, vectors, i: torch.Tensor, center, s) -> None:
        """Add coef · v of one direction of pairs (``vectors`` from :meth:`pairs`, centers
        ``i``, accumulator slots ``center``) to their centers' position gradients and
        their share of the cell gradient (the pair's two directions together)."""
        vt, v = vectors
        if self.differentiable:
            gt = vt * coef
            if self.grad_positions is not None:
                self.grad_positions = self.grad_positions.index_add(1, center, gt)
            if self.grad_cell is not None:  # −½ Sᵀ coef v
                b = self._structure(i)
                if b is not None:
                    index = torch.full((1,), b, dtype=torch.long, device=self.device)
                    self.grad_cell = self.grad_cell.index_add(
                        0, index, (s.T @ gt.T).mul(-0.5).unsqueeze(0))
                else:
                    self.grad_cell = self.grad_cell.index_add(
                        0, self.batch.index_select(0, i),
                        s.unsqueeze(-1) * (-0.5 * gt.T).unsqueeze(1))
            return
        gt = vt.mul_(coef)
        if self.grad_positions is not None:
            # (no alpha: index_add_ along dim 1 with alpha ≠ 1 is 20× slower)
            self.grad_positions.index_add_(1, center, gt)
        if self.grad_cell is not None:
            b = self._structure(i)
            if not self.virial:  # −½ Sᵀ coef v
                if b is not None:
                    self.grad_cell[b].addmm_(s.T, gt.T, alpha=-0.5)
                else:
                    self.grad_cell.index_add_(0, self.batch.index_select(0, i),
                                              s.unsqueeze(-1) * (-0.5 * gt.T).unsqueeze(1))
            elif b is not None:  # W = Σ coef v ⊗ v, see gradients()
                self.grad_cell[b].addmm_(gt, v)
            else:
                self.grad_cell.index_add_(0, self.batch.index_select(0, i),
                                          gt.T.unsqueeze(2) * v.unsqueeze(1))


def _frame(cell: torch.Tensor, pbc: torch.Tensor) -> torch.Tensor:
    """``cell`` with its non-periodic rows replaced by an orthonormal basis of the
    complement of the periodic ones (the identity for a molecule)."""
    periodic = cell[pbc]
    if not periodic.shape[0]:
        return torch.eye(3, dtype=cell.dtype, device=cell.device)
    q, _ = torch.linalg.qr(periodic.T, mode="complete")
    out = cell.clone()
    out[~pbc] = q[:, periodic.shape[0]:].T
    return out


def _per_structure(g: torch.Tensor, batch: torch.Tensor, n_structures: int):
    """(B,) values of ``g`` (N,) when it is constant within every structure, else None."""
    value = g.new_zeros(n_structures).scatter_(0, batch, g)
    return value if bool((g == value.index_select(0, batch)).all()) else None


class ChunkedTwoBody(torch.autograd.Function):
    """Two-body D3(BJ) energies (N,) eV of positions and cell, in chunks.

    The forward keeps no graph over the pairs (memory stays bounded) and also takes the
    gradient of the total energy (every atom weighted 1: forces and stress), which the
    backward scales when its weights are constant per structure, as they are for
    forces and stress. Other weights take the analytic gradient again
    (:meth:`D3BJ._pair_pass`, :meth:`D3BJ._cn_pass`). Under ``create_graph`` the backward
    recomputes everything from positions and cell with differentiable operations, so
    that autograd differentiates the gradient (Hessians, force training) exactly, to
    any order.
    """

    @staticmethod
    def forward(ctx, positions, cell, term, data):
        needs = tuple(ctx.needs_input_grad[:2])
        # ctx keeps no reference to the graph dict nor to tensors with autograd history
        # (the potential stores this term's output in that dict: a cycle through the
        # autograd graph would never be freed)
        geometry = ChunkedPairs(data, positions.detach(), cell.detach(), needs)
        state = term._state(geometry)
        energy, g6 = term._pair_pass(geometry, state, energy=True, uniform=True)
        term._cn_pass(geometry, state, g6)
        ctx.save_for_backward(positions, cell)
        ctx.term, ctx.data, ctx.geometry, ctx.state = term, data, geometry, state
        ctx.totals = geometry.gradients()
        return energy

    @staticmethod
    def backward(ctx, g):
        positions, cell = ctx.saved_tensors
        term, needs = ctx.term, tuple(ctx.needs_input_grad[:2])
        if torch.is_grad_enabled():  # create_graph: everything again, differentiably
            geometry = ChunkedPairs(ctx.data, positions, cell, needs)
            state = term._state(geometry)
        else:
            geometry, state = ctx.geometry, ctx.state
            scale = _per_structure(g, geometry.batch, cell.shape[0])
            if scale is not None:
                gp, gc = ctx.totals
                return (None if gp is None or not needs[0] else gp * g.unsqueeze(-1),
                        None if gc is None or not needs[1] else gc * scale.view(-1, 1, 1),
                        None, None)
            geometry.reset(needs)
        term._cn_pass(geometry, state, term._pair_pass(geometry, state, False, weights=g)[1])
        grad_positions, grad_cell = geometry.gradients()
        return grad_positions, grad_cell, None, None
