"""Derivatives of the potential's total energy.

Forces F = −∂E/∂r. Stress from a symmetric strain ε applied to positions *and*
cell: σ = (1/V) ∂E/∂ε (ASE sign: positive under tension), virial W = −∂E/∂ε.
Hessian H = ∂²E/∂r∂r, by vmap over vector–Jacobian products (one batched
backward), with a row-by-row loop as fallback.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from .. import keys
from ..errors import UsageError


class Results(NamedTuple):
    """Outputs of :func:`evaluate`. Fields not asked for are None."""

    energy: torch.Tensor  # (B,) eV
    atomic_energies: torch.Tensor  # (N,) eV
    contributions: dict[str, torch.Tensor]  # name -> (N,) eV
    forces: torch.Tensor | None = None  # (N, 3) eV/Å
    stress: torch.Tensor | None = None  # (B, 3, 3) eV/Å³
    virial: torch.Tensor | None = None  # (B, 3, 3) eV
    hessian: torch.Tensor | None = None  # (3N, 3N) eV/Å²
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
            for 3-D periodic cells (volume > 0); other structures get zeros.
        create_graph: keep the graph of the derivatives (for force/stress losses).
    """
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
    grads = torch.autograd.grad(
        energy.sum(), inputs, create_graph=create_graph or hessian,
        materialize_grads=True,
    )
    results["forces"] = -grads[0]
    if stress:
        results["virial"] = -grads[1]
        results["stress"] = _stress(grads[1], graph)
    if hessian:
        results["hessian"] = _hessian_from_gradient(grads[0], positions)
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


def _hessian_from_gradient(gradient: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """(3N, 3N) Hessian from the first derivative (built with ``create_graph``)."""
    flat = gradient.reshape(-1)
    n = flat.numel()
    eye = torch.eye(n, dtype=flat.dtype, device=flat.device)
    try:
        rows = torch.autograd.grad(
            flat, positions, grad_outputs=eye, is_grads_batched=True,
            retain_graph=True, materialize_grads=True,
        )[0]
    except RuntimeError:  # some ops have no batching rule: fall back to a loop
        rows = torch.stack([
            torch.autograd.grad(flat, positions, grad_outputs=eye[k], retain_graph=True,
                                materialize_grads=True)[0]
            for k in range(n)
        ])
    return rows.reshape(n, n).detach()


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


def hessian(potential: torch.nn.Module, graph: dict[str, torch.Tensor]) -> torch.Tensor:
    """Hessian ∂²E/∂r∂r (3N, 3N) in eV/Å² of all atoms in ``graph``."""
    return evaluate(potential, graph, forces=True, hessian=True).hessian
