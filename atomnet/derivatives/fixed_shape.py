"""Forces and virial of an energy written as a plain function of positions and strain.

For fixed-shape evaluations (the calculator's fast BP path) that ``torch.compile`` fuses
together with their derivatives: :func:`energy_gradients` differentiates
``contributions(positions, strain)`` with ``torch.func`` (traceable by ``torch.compile``,
one fused graph for energy and gradients) or with autograd (fewer dispatches in eager
mode). Same conventions as :func:`~atomnet.derivatives.evaluate`: F = −∂E/∂r, and the
virial W = −∂E/∂ε for a symmetric strain ε applied to positions and cell.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

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
