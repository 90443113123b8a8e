"""Invariance (rotation, translation, permutation) and separability, through the calculator.

Errors are maximum absolute deviations: energies in eV, forces in eV/Å.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from ase import Atoms

from ._tools import attached, calculator, random_rotation, require, worst


class _Outputs(NamedTuple):
    energy: float  # eV
    energies: np.ndarray  # (N,) eV per atom
    forces: np.ndarray  # (N, 3) eV/Å


def _outputs(calc, atoms: Atoms) -> _Outputs:
    probe = attached(atoms, calc)
    forces = probe.get_forces()
    return _Outputs(probe.get_potential_energy(), probe.get_potential_energies(), forces)


def _transformed(atoms: Atoms, rotation: np.ndarray, shift: np.ndarray, perm: np.ndarray) -> Atoms:
    """Atoms permuted by ``perm``, rotated (with the cell: rows → rows @ Rᵀ) and shifted (Å)."""
    return Atoms(
        numbers=atoms.numbers[perm],
        positions=atoms.positions[perm] @ rotation.T + shift,
        cell=atoms.cell.array @ rotation.T,
        pbc=atoms.pbc,
        info=dict(atoms.info),
    )


def _compare(ref: _Outputs, new: _Outputs, rotation, perm, name: str, tol, force_tol) -> float:
    """Check energy, permuted per-atom energies and rotated, permuted forces."""
    e_err = abs(new.energy - ref.energy)
    require(e_err, tol, f"energy not invariant under {name}", "eV")
    err, at = worst(new.energies - ref.energies[perm])
    require(err, tol, f"per-atom energies not permuted along under {name} (atom {at})", "eV")
    f_err, at = worst(new.forces - ref.forces[perm] @ rotation.T)
    require(f_err, force_tol, f"forces not equivariant under {name} (atom, xyz {at})", "eV/Å")
    return max(e_err, err)


def check_invariance(
    potential: torch.nn.Module,
    atoms: Atoms,
    tol: float = 1e-8,
    force_tol: float | None = None,
    seed: int = 0,
) -> float:
    """Energies invariant and forces equivariant under rotation, translation and permutation.

    Each transformation is checked alone and all three together; a periodic cell
    is rotated with the atoms. ``tol`` is in eV (total and per-atom energies),
    ``force_tol`` in eV/Å (defaults to ``tol``). Returns the largest energy error (eV).
    """
    force_tol = tol if force_tol is None else force_tol
    rng = np.random.default_rng(seed)
    calc = calculator(potential)
    ref = _outputs(calc, atoms)
    n = len(atoms)
    identity, no_shift, same = np.eye(3), np.zeros(3), np.arange(n)
    rotation, shift, perm = random_rotation(rng), rng.normal(scale=3.0, size=3), rng.permutation(n)
    cases = {
        "rotation": (rotation, no_shift, same),
        "translation": (identity, shift, same),
        "permutation": (identity, no_shift, perm),
        "rotation + translation + permutation": (rotation, shift, perm),
    }
    errors = []
    for name, (rot, sh, pm) in cases.items():
        new = _outputs(calc, _transformed(atoms, rot, sh, pm))
        errors.append(_compare(ref, new, rot, pm, name, tol, force_tol))
    return max(errors)


def _far_apart(atoms_a: Atoms, atoms_b: Atoms, gap: float) -> Atoms:
    """A + B, with B shifted along x so that the two are at least ``gap`` Å apart."""
    shift = atoms_a.positions[:, 0].max() - atoms_b.positions[:, 0].min() + gap
    b = atoms_b.copy()
    b.positions[:, 0] += shift
    both = Atoms(
        numbers=np.concatenate([atoms_a.numbers, b.numbers]),
        positions=np.concatenate([atoms_a.positions, b.positions]),
    )
    return both


def check_separability(
    potential: torch.nn.Module,
    atoms_a: Atoms,
    atoms_b: Atoms,
    tol: float = 1e-8,
    gap: float | None = None,
) -> float:
    """E(A + B far apart) = E(A) + E(B); per-atom energies and forces unchanged too.

    Both structures must be non-periodic. ``gap`` (Å) defaults to the potential's
    cutoff + 1 Å. ``tol`` is in eV for energies and eV/Å for forces.
    Returns the largest energy error (eV).
    """
    if atoms_a.pbc.any() or atoms_b.pbc.any():
        raise ValueError("check_separability needs non-periodic structures")
    gap = float(potential.cutoff) + 1.0 if gap is None else gap
    calc = calculator(potential)
    a, b = _outputs(calc, atoms_a), _outputs(calc, atoms_b)
    both = _outputs(calc, _far_apart(atoms_a, atoms_b, gap))
    e_err = abs(both.energy - (a.energy + b.energy))
    require(e_err, tol, f"E(A+B, {gap:.1f} Å apart) != E(A) + E(B)", "eV")
    err, at = worst(both.energies - np.concatenate([a.energies, b.energies]))
    require(err, tol, f"per-atom energies change when B is {gap:.1f} Å away (atom {at})", "eV")
    f_err, at = worst(both.forces - np.concatenate([a.forces, b.forces]))
    require(f_err, tol, f"forces change when B is {gap:.1f} Å away (atom, xyz {at})", "eV/Å")
    return max(e_err, err)
