"""Derivatives written as plain functions, for evaluations that ``torch.compile`` fuses.

* :func:`energy_gradients`: forces and virial of ``contributions(positions, strain)``
  (the calculator's fast BP path), with ``torch.func`` (traceable by ``torch.compile``,
  one fused graph for energy and gradients) or with autograd (fewer dispatches in eager
  mode).
* :func:`loss_gradients`: a training loss of energies *and forces* and its gradient
  with respect to the parameters, both by ``torch.func.grad`` (nested), so that the
  whole step is one function that ``torch.compile`` traces; a compiled function has
  no double backward, which force training with autograd would need.

Same conventions as :func:`~atomnet.derivatives.evaluate`: F = −∂E/∂r, and the
virial W = −∂E/∂ε for a symmetric strain ε applied to positions and cell.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.func import functional_call

from .. import keys

#: ``contributions(positions (N, 3), strain (3, 3)) -> (terms, N)`` eV per atom and term
Contributions = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def energy_gradients(contributions: Contributions, positions: torch.Tensor,
                     functional: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(contributions (terms, N) eV, forces (N, 3) eV/Å, virial (3, 3) eV) at ``positions``.

    ``functional``: differentiate with ``torch.func.grad`` (inside ``torch.compile``)
    rather than ``torch.autograd.grad``. The strain enters unsymmetrised and its gradient
    is symmetrised, which equals the gradient with respect to a symmetric strain.
    """
    if functional:
        strain = positions.new_zeros(3, 3)

        def total(p: torch.Tensor, s: torch.Tensor):
            parts = contributions(p, s)
            return parts.sum(), parts

        (g_pos, g_strain), parts = torch.func.grad(total, argnums=(0, 1), has_aux=True)(
            positions, strain)
    else:
        positions = positions.detach().requires_grad_(True)
        strain = positions.new_zeros(3, 3, requires_grad=True)
        with torch.enable_grad():
            parts = contributions(positions, strain)
            g_pos, g_strain = torch.autograd.grad(parts.sum(), (positions, strain))
        parts = parts.detach()
    return parts, -g_pos, -0.5 * (g_strain + g_strain.T)


#: ``loss_of(graph out of the potential, forces (N, 3) eV/Å) -> (loss, aux)``
LossOf = Callable[[dict, torch.Tensor], tuple[torch.Tensor, object]]


def loss_gradients(potential: torch.nn.Module, params: dict[str, torch.Tensor],
                   graph: dict[str, torch.Tensor], loss_of: LossOf
                   ) -> tuple[dict[str, torch.Tensor], torch.Tensor, object]:
    """(∂L/∂θ for each of ``params``, L, aux) for L, aux = ``loss_of(out, forces)``.

    ``out`` is ``potential``'s output for ``graph`` evaluated with ``params`` (by name;
    buffers are the module's own) and forces = −∂E/∂r. The same numbers as
    :func:`~atomnet.derivatives.evaluate` with ``create_graph=True`` followed by
    ``L.backward()``.
    """
    def loss(p: dict[str, torch.Tensor]):
        def energy(positions: torch.Tensor):
            inputs = dict(graph)
            inputs[keys.POSITIONS] = positions
            out = functional_call(potential, p, (inputs,))
            return out[keys.ENERGY].sum(), out

        g_positions, out = torch.func.grad(energy, has_aux=True)(graph[keys.POSITIONS])
        value, aux = loss_of(out, -g_positions)
        return value, (value.detach(), aux)

    grads, (value, aux) = torch.func.grad(loss, has_aux=True)(params)
    return grads, value, aux
