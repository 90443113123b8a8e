"""Derivatives against central finite differences, all through :class:`atomnet.Calculator`.

Everything runs in float64 on a copy of the potential. Errors are maximum
absolute deviations: forces in eV/Å, stress in eV/Å³, Hessian in eV/Å².
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from ase import Atoms
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress

from ._tools import attached, calculator, require, worst


def _indices(atoms: Atoms, indices: Sequence[int] | None) -> list[int]:
    return list(range(len(atoms))) if indices is None else [int(k) for k in indices]


def check_forces_fd(
    potential: torch.nn.Module,
    atoms: Atoms,
    tol: float = 1e-5,
    delta: float = 1e-4,
    indices: Sequence[int] | None = None,
) -> float:
    """Forces (eV/Å) against central differences of the energy, step ``delta`` (Å).

    ``indices``: atoms to displace (all by default; fewer is faster).
    Returns the largest absolute force error in eV/Å.
    """
    probe = attached(atoms, calculator(potential))
    idx = _indices(atoms, indices)
    exact = probe.get_forces()[idx]
    numeric = calculate_numerical_forces(probe, eps=delta, iatoms=idx, force_consistent=True)
    error, at = worst(exact - numeric)
    where = f"atom {idx[at[0]]}, {'xyz'[at[1]]}" if at else "no atoms"
    return require(error, tol, f"forces vs finite differences ({where})", "eV/Å")


def check_stress_fd(
    potential: torch.nn.Module, atoms: Atoms, tol: float = 1e-5, delta: float = 1e-6
) -> float:
    """Stress (eV/Å³, ASE sign, Voigt) against ``ase.calculators.fd.calculate_numerical_stress``.

    ``atoms`` must be periodic in all three directions; ``delta`` is the strain step.
    Returns the largest absolute stress error in eV/Å³.
    """
    if not atoms.pbc.all():
        raise ValueError("check_stress_fd needs a structure periodic in all 3 directions")
    probe = attached(atoms, calculator(potential))
    exact = probe.get_stress(voigt=True)
    numeric = calculate_numerical_stress(probe, eps=delta, voigt=True)
    error, at = worst(exact - numeric)
    names = ("xx", "yy", "zz", "yz", "xz", "xy")
    return require(error, tol, f"stress vs finite differences ({names[at[0]]})", "eV/Å^3")


def _fd_hessian_columns(probe: Atoms, idx: list[int], delta: float) -> np.ndarray:
    """Columns 3a+c (a in idx) of the Hessian, −(F(r+δ) − F(r−δ))/(2δ): (3N, 3·len(idx))."""
    p0 = probe.get_positions()
    cols = []
    for a in idx:
        for c in range(3):
            forces = []
            for sign in (1.0, -1.0):
                p = p0.copy()
                p[a, c] += sign * delta
                probe.set_positions(p, apply_constraint=False)
                forces.append(probe.get_forces(apply_constraint=False).reshape(-1))
            cols.append(-(forces[0] - forces[1]) / (2.0 * delta))
    probe.set_positions(p0, apply_constraint=False)
    return np.stack(cols, axis=1)


def check_hessian_fd(
    potential: torch.nn.Module,
    atoms: Atoms,
    tol: float = 1e-4,
    delta: float = 1e-4,
    indices: Sequence[int] | None = None,
) -> float:
    """Exact Hessian (``Calculator.get_hessian``, eV/Å²) against differences of forces.

    Also checks that the Hessian is symmetric to ``tol``. ``indices``: atoms whose
    columns are compared (all by default). Returns the larger of the two errors (eV/Å²).
    """
    calc = calculator(potential)
    probe = attached(atoms, calc)
    exact = calc.get_hessian(probe)
    n = 3 * len(atoms)
    if exact.shape != (n, n):
        raise AssertionError(f"Hessian has shape {exact.shape}, expected {(n, n)}")
    asym, at = worst(exact - exact.T)
    require(asym, tol, f"Hessian asymmetry (entry {at} vs its transpose)", "eV/Å^2")
    idx = _indices(atoms, indices)
    cols = [3 * a + c for a in idx for c in range(3)]
    numeric = _fd_hessian_columns(probe, idx, delta)
    error, at = worst(exact[:, cols] - numeric)
    where = f"row {at[0]}, column {cols[at[1]]}" if at else "nothing compared"
    require(error, tol, f"Hessian vs finite differences of forces ({where})", "eV/Å^2")
    return max(error, asym)
