"""Derivatives of the potential's total energy.

Forces F = −∂E/∂r. Stress from a symmetric strain ε applied to positions *and*
cell: σ = (1/V) ∂E/∂ε (ASE sign: positive under tension), virial W = −∂E/∂ε.
Hessians H = ∂²E/∂r∂r, one per structure, from chunks of batched
vector–Jacobian products of the gradient (bounded memory; see :func:`hessians`).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Sequence
from typing import NamedTuple

import torch

from .. import keys
from ..errors import UsageError
from ..nn.element_mlp import grouped_only

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
    graph = dict(graph)
    n_structures = graph[keys.N_ATOMS].shape[0]
    positions = graph[keys.POSITIONS].detach().requires_grad_(forces or hessian or stress)
    graph[keys.POSITIONS] = positions
    displacement = _strain(graph, n_structures) if stress else None
    with grouped_only() if hessian else contextlib.nullcontext():
        out = potential(graph)
    energy = out[keys.ENERGY]
    results = dict(energy=energy, atomic_energies=out[keys.ATOMIC_ENERGIES],
                   contributions=out[keys.CONTRIBUTIONS], graph=out,
                   charges=out.get(keys.CHARGES), dipole=out.get(keys.DIPOLE))
    if not (forces or stress or hessian):
        return Results(**results)
    inputs = [positions] + ([displacement] if stress else [])
    with grouped_only() if hessian else contextlib.nullcontext():
        grads = torch.autograd.grad(
            energy.sum(), inputs, create_graph=create_graph or hessian,
            materialize_grads=True,
        )
    results["forces"] = -grads[0]
    if stress:
        results["virial"] = -grads[1]
        results["stress"] = _stress(grads[1], graph)
    if hessian:
        rows = _Rows(graph, positions, grads[0], None, HESSIAN_CHUNK)
        results["hessian"] = rows.blocks()
        if not create_graph:
            results["forces"] = results["forces"].detach()
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
        counts = graph[keys.N_ATOMS].tolist()
        starts = [0]
        for n in counts[:-1]:
            starts.append(starts[-1] + n)
        if indices is None:
            self.selected = [torch.arange(s, s + n) for s, n in zip(starts, counts)]
        else:
            if len(counts) != 1:
                raise UsageError("a partial Hessian (indices=...) takes one structure, "
                                 f"got a batch of {len(counts)}")
            self.selected = [_check_indices(indices, counts[0])]
        self.device = positions.device

    def blocks(self) -> list[torch.Tensor]:
        n_rows = 3 * max(len(sel) for sel in self.selected)
        flat = self.gradient.reshape(-1)
        out = [flat.new_empty(3 * len(sel), 3 * len(sel)) for sel in self.selected]
        coords = [torch.stack([3 * sel, 3 * sel + 1, 3 * sel + 2], 1).reshape(-1).to(self.device)
                  for sel in self.selected]
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
        for block in out:
            if not torch.isfinite(block).all():
                raise UsageError("the Hessian has non-finite entries (NaN or inf): check the "
                                 "structure for overlapping atoms and the model for NaN weights")
        return [block.detach() for block in out]

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


def hessians(
    potential: torch.nn.Module,
    graph: dict[str, torch.Tensor],
    *,
    indices: Sequence[int] | None = None,
    chunk: int = HESSIAN_CHUNK,
) -> list[torch.Tensor]:
    """One exact Hessian ∂²E/∂r∂r per structure of ``graph``, in eV/Å².

    Args:
        indices: atoms of a single structure whose Hessian block is wanted (a
            partial Hessian, like ``ase.vibrations.Vibrations(indices=...)``): the
            (3k, 3k) block over those atoms, in ascending atom order, with every
            other atom held fixed. Costs 3k rows, not 3N.
        chunk: rows per batched backward pass. Peak memory grows with it.

    Returns (3n_b, 3n_b) per structure b (or (3k, 3k) with ``indices``), ordered
    (atom, x/y/z). Periodic cells: the Γ-point Hessian (images move with their atom).
    Raises :class:`UsageError` if an entry is not finite.
    """
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
    indices: Sequence[int] | None = None, chunk: int = HESSIAN_CHUNK,
) -> torch.Tensor:
    """Hessian (3n, 3n) in eV/Å² of the one structure in ``graph`` (see :func:`hessians`)."""
    if graph[keys.N_ATOMS].shape[0] != 1:
        raise UsageError("hessian() takes one structure; use hessians() for a batch")
    return hessians(potential, graph, indices=indices, chunk=chunk)[0]
