"""Checks that use ``torch.autograd`` directly: batch isolation and gradcheck.

Forces compared here come from :func:`atomnet.derivatives.evaluate`; autograd is
called directly only to look at one structure's gradient at a time and for
``torch.autograd.gradcheck`` / ``gradgradcheck``. Everything is float64.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from ase import Atoms
from torch.autograd.gradcheck import GradcheckError

from .. import keys
from ..derivatives import evaluate
from ..structures import collate
from ._tools import float64_copy, graph64, require, worst


def _batch_vs_single(
    model, graphs: list[dict], batch: dict, tol: float, stress: bool
) -> float:
    """Batched energies (eV), forces (eV/Å) and, if asked, stress (eV/Å³) equal single ones."""
    batched = evaluate(model, batch, forces=True, stress=stress)
    singles = [evaluate(model, g, forces=True, stress=stress) for g in graphs]
    energy = torch.cat([s.energy for s in singles])
    e_err, at = worst((batched.energy - energy).detach().cpu().numpy())
    require(e_err, tol, f"batched energy differs from single evaluation (structure {at})", "eV")
    forces = torch.cat([s.forces for s in singles])
    f_err, at = worst((batched.forces - forces).detach().cpu().numpy())
    require(f_err, tol, f"batched forces differ from single evaluation (atom, xyz {at})", "eV/Å")
    if not stress:
        return max(e_err, f_err)
    s_err, at = worst((batched.stress - torch.cat([s.stress for s in singles])).cpu().numpy())
    require(s_err, tol, f"batched stress differs from single evaluation ({at})", "eV/Å^3")
    return max(e_err, f_err, s_err)


def _cross_gradients(model, batch: dict) -> float:
    """Largest |∂E_k/∂r_i| (eV/Å) over atoms i outside structure k; must be exactly 0."""
    graph = dict(batch)
    positions = batch[keys.POSITIONS].detach().requires_grad_(True)
    graph[keys.POSITIONS] = positions
    energy = model(graph)[keys.ENERGY]
    largest = 0.0
    for k in range(energy.shape[0]):
        (grad,) = torch.autograd.grad(
            energy[k], positions, retain_graph=True, materialize_grads=True
        )
        outside = batch[keys.BATCH] != k
        leak = float(grad[outside].abs().max()) if outside.any() else 0.0
        if leak != 0.0:
            raise AssertionError(
                f"cross-talk in a batch: energy of structure {k} depends on positions of "
                f"other structures (largest gradient {leak:.3e} eV/Å, must be exactly 0)"
            )
        largest = max(largest, leak)
    return largest


def check_no_cross_talk(
    potential: torch.nn.Module, structures: Sequence[Atoms], tol: float = 1e-10
) -> float:
    """Structures in one batch do not see each other.

    The gradient of each structure's energy with respect to every other
    structure's positions is exactly zero, and batched energies (eV) and forces
    (eV/Å) equal one-at-a-time ones to ``tol`` (stress too, in eV/Å³, when every
    structure is periodic in 3-D). Returns the largest deviation.
    """
    if len(structures) < 2:
        raise ValueError("check_no_cross_talk needs at least two structures")
    model = float64_copy(potential)
    graphs = [graph64(model, atoms) for atoms in structures]
    batch = collate(graphs)
    stress = all(bool(atoms.pbc.all()) for atoms in structures)
    error = _batch_vs_single(model, graphs, batch, tol, stress)
    return max(error, _cross_gradients(model, batch))


def _energy_function(model, graph: dict, with_cell: bool) -> Callable[..., torch.Tensor]:
    def energy(positions: torch.Tensor, *cell: torch.Tensor) -> torch.Tensor:
        g = dict(graph)
        g[keys.POSITIONS] = positions
        if with_cell:
            g[keys.CELL] = cell[0]
        return model(g)[keys.ENERGY]

    return energy


def check_gradcheck(
    potential: torch.nn.Module,
    atoms: Atoms,
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-3,
    second_order: bool = True,
) -> bool:
    """``torch.autograd.gradcheck`` (and ``gradgradcheck``) of the energy (eV).

    Inputs are the positions (Å) and, for periodic structures, the cell (Å).
    The neighbour list is frozen at ``atoms``; keep the structure small (a few
    atoms to a small molecule): the cost grows with 3N. Returns True or raises
    AssertionError with gradcheck's report.
    """
    model = float64_copy(potential)
    graph = graph64(model, atoms)
    with_cell = bool(atoms.pbc.any())
    inputs = [graph[keys.POSITIONS].detach().clone().requires_grad_(True)]
    if with_cell:
        inputs.append(graph[keys.CELL].detach().clone().requires_grad_(True))
    energy = _energy_function(model, graph, with_cell)
    checks = [("gradcheck", torch.autograd.gradcheck)]
    if second_order:
        checks.append(("gradgradcheck", torch.autograd.gradgradcheck))
    for name, check in checks:
        try:
            check(energy, tuple(inputs), eps=eps, atol=atol, rtol=rtol, raise_exception=True)
        except GradcheckError as exc:
            raise AssertionError(f"{name} of the energy failed: {exc}") from exc
    return True
