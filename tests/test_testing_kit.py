"""Negative tests: each check of atomnet.testing catches the error it is meant to catch.

Every broken term below is added to an otherwise correct potential. The breaks
are small (1e-3 in eV, eV/Å or eV/Å³) compared with the forces of the model.
"""

from __future__ import annotations

import pytest
import torch
from ase.build import molecule
from torch import nn

from atomnet import Potential, keys, testing

SMALL = 1e-3


class _ForceOffset(torch.autograd.Function):
    """Zero energy whose 'gradient' is off by SMALL on atom 0, x: a wrong force."""

    @staticmethod
    def forward(ctx, positions):
        return positions.new_zeros(positions.shape[0])

    @staticmethod
    def backward(ctx, grad):
        offset = torch.zeros(grad.shape[0], 3, dtype=grad.dtype, device=grad.device)
        offset[0, 0] = SMALL
        return grad.sum() * offset


class _CubicNoCurvature(torch.autograd.Function):
    """e_i = SMALL·Σ x³, right gradient, but its own second derivative is dropped."""

    @staticmethod
    def forward(ctx, positions):
        ctx.save_for_backward(positions)
        return SMALL * (positions**3).sum(-1)

    @staticmethod
    def backward(ctx, grad):
        (positions,) = ctx.saved_tensors
        return grad.unsqueeze(-1) * 3 * SMALL * positions.detach() ** 2


class _Term(nn.Module):
    """Wrap a function of the graph as an energy term (N,) eV."""

    reads = (keys.POSITIONS,)

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, graph):
        return self.fn(graph)


def _volume_without_strain(graph):
    """SMALL·V per structure, with the cell detached: stress from autograd misses it."""
    volume = torch.linalg.det(graph[keys.CELL].detach()).abs()
    per_atom = volume[graph[keys.BATCH]] / graph[keys.N_ATOMS][graph[keys.BATCH]]
    return SMALL * per_atom


def _index_weighted(graph):
    """SMALL·i·|r_i − centroid|: rotation and translation invariant, not permutation."""
    pos = graph[keys.POSITIONS]
    distance = torch.linalg.vector_norm(pos - pos.mean(0), dim=-1)
    return SMALL * torch.arange(len(pos), dtype=pos.dtype, device=pos.device) * distance


BROKEN = {
    "wrong_force": lambda g: _ForceOffset.apply(g[keys.POSITIONS]),
    "no_curvature": lambda g: _CubicNoCurvature.apply(  # translation-invariant, as graphs
        g[keys.POSITIONS] - g[keys.POSITIONS].mean(0)  # hold positions in a local frame
    ),
    "absolute_position": lambda g: SMALL * g[keys.POSITIONS][:, 0],
    "permutation_dependent": _index_weighted,
    "batch_mean": lambda g: SMALL * g[keys.POSITIONS][:, 0].mean().expand(len(g[keys.BATCH])),
    "size_dependent": lambda g: SMALL * g[keys.N_ATOMS][g[keys.BATCH]].to(g[keys.POSITIONS]),
    "detached_cell": _volume_without_strain,
}


def _with(potential: Potential, broken: str) -> Potential:
    terms = dict(potential.terms.items())
    terms[broken] = _Term(BROKEN[broken])
    return Potential(terms, potential.elements)


def test_a_wrong_force_is_caught(potential):
    with pytest.raises(AssertionError, match="forces vs finite differences"):
        testing.check_forces_fd(_with(potential, "wrong_force"), molecule("H2O"))


def test_a_wrong_force_fails_gradcheck(potential):
    with pytest.raises(AssertionError, match="gradcheck"):
        testing.check_gradcheck(_with(potential, "wrong_force"), molecule("H2O"))


def test_a_wrong_hessian_is_caught(potential):
    broken = _with(potential, "no_curvature")
    assert testing.check_forces_fd(broken, molecule("H2O")) < 1e-5  # forces are right
    with pytest.raises(AssertionError, match="Hessian vs finite differences"):
        testing.check_hessian_fd(broken, molecule("H2O"))


def test_a_wrong_stress_is_caught(potential, water_cell):
    with pytest.raises(AssertionError, match="stress vs finite differences"):
        testing.check_stress_fd(_with(potential, "detached_cell"), water_cell)


def test_an_orientation_dependent_energy_is_caught(potential):
    with pytest.raises(AssertionError, match="under rotation"):
        testing.check_invariance(_with(potential, "absolute_position"), molecule("H2O"))


def test_a_permutation_dependent_energy_is_caught(potential):
    with pytest.raises(AssertionError, match="not invariant under permutation"):
        testing.check_invariance(_with(potential, "permutation_dependent"), molecule("CH4"))


def test_cross_talk_in_a_batch_is_caught(potential):
    with pytest.raises(AssertionError, match="batched energy|cross-talk"):
        testing.check_no_cross_talk(
            _with(potential, "batch_mean"), [molecule("H2O"), molecule("CH4")]
        )


def test_a_non_separable_energy_is_caught(potential):
    with pytest.raises(AssertionError, match=r"E\(A\+B"):
        testing.check_separability(
            _with(potential, "size_dependent"), molecule("H2O"), molecule("CH4")
        )


def test_kit_leaves_potential_and_atoms_untouched(potential, ethanol):
    """Checks work on copies: the caller's dtype, grads and positions survive."""
    potential = potential.float().train()
    before = ethanol.positions.copy()
    testing.check_forces_fd(potential, ethanol, indices=[0])
    testing.check_invariance(potential, ethanol)
    assert next(potential.parameters()).dtype == torch.float32
    assert all(p.requires_grad for p in potential.parameters())
    assert potential.training
    assert (ethanol.positions == before).all()
    assert ethanol.calc is None
