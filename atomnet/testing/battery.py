"""Run the whole physics battery on one potential."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from ase import Atoms

from .autograd_checks import check_gradcheck, check_no_cross_talk
from .finite_differences import check_forces_fd, check_hessian_fd, check_stress_fd
from .symmetry import check_invariance, check_separability

#: default tolerances: energies eV, forces eV/Å, stress eV/Å³, Hessian eV/Å²
TOLERANCES = {
    "forces_fd": 1e-5,
    "stress_fd": 1e-5,
    "hessian_fd": 1e-4,
    "invariance": 1e-8,
    "separability": 1e-8,
    "no_cross_talk": 1e-10,
}


def _shifted_copy(atoms: Atoms, amplitude: float = 0.05, seed: int = 1) -> Atoms:
    """A rattled copy (Å), so that a batch holds different structures."""
    out = atoms.copy()
    out.rattle(amplitude, seed=seed)
    return out


def run_all(
    potential: torch.nn.Module,
    molecule: Atoms,
    periodic: Atoms | None = None,
    *,
    tolerances: Mapping[str, float] | None = None,
    hessian: bool = True,
    gradcheck: bool = True,
    separability_gap: float | None = None,
) -> dict[str, float]:
    """Every check of the kit; returns ``{check: measured error}`` or raises AssertionError.

    Errors are in the units of :data:`TOLERANCES`; ``gradcheck`` reports 0.0 when it passes.

    Args:
        potential: any atomnet potential (any model family, with or without tails).
        molecule: a small non-periodic structure (gradcheck and Hessian cost grow with 3N).
        periodic: optionally a 3-D periodic structure (stress, periodic invariance).
        tolerances: overrides of :data:`TOLERANCES` (same keys and units).
        hessian, gradcheck: switch the two most expensive checks off.
        separability_gap: Å between the two molecules of the separability check
            (default: the potential's cutoff + 1 Å). A potential with Coulomb between
            all pairs needs a gap where the molecules' multipole interaction is below
            the tolerance (the per-atom energies, ½ q_i φ_i, feel the other
            molecule's dipole as 1/d²: ~10⁵ Å for 1e-8 eV and dipoles of 1 e·Å).
    """
    tol = {**TOLERANCES, **(tolerances or {})}
    other = _shifted_copy(molecule)
    results = {
        "forces_fd": check_forces_fd(potential, molecule, tol["forces_fd"]),
        "invariance": check_invariance(potential, molecule, tol["invariance"]),
        "separability": check_separability(potential, molecule, other, tol["separability"],
                                           gap=separability_gap),
    }
    batch = [molecule, other] + ([periodic] if periodic is not None else [])
    results["no_cross_talk"] = check_no_cross_talk(potential, batch, tol["no_cross_talk"])
    if hessian:
        results["hessian_fd"] = check_hessian_fd(potential, molecule, tol["hessian_fd"])
    if gradcheck:
        check_gradcheck(potential, molecule)
        results["gradcheck"] = 0.0  # pass/fail only: it raised otherwise
    if periodic is not None:
        results["forces_fd_periodic"] = check_forces_fd(potential, periodic, tol["forces_fd"])
        results["stress_fd"] = check_stress_fd(potential, periodic, tol["stress_fd"])
        results["invariance_periodic"] = check_invariance(potential, periodic, tol["invariance"])
    return results
