"""Shared helpers of the test kit: float64 copies, calculators, graphs, rotations."""

from __future__ import annotations

import copy

import numpy as np
import torch
from ase import Atoms

from ..calculators import Calculator
from ..structures import to_device


def device_of(potential: torch.nn.Module) -> torch.device:
    """The device holding the potential's first parameter or buffer (CPU if it has none)."""
    for tensor in potential.parameters():
        return tensor.device
    for tensor in potential.buffers():
        return tensor.device
    return torch.device("cpu")


def float64_copy(potential: torch.nn.Module) -> torch.nn.Module:
    """A frozen float64 copy in eval mode; the caller's potential is never modified."""
    model = copy.deepcopy(potential).to(torch.float64).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def calculator(potential: torch.nn.Module) -> Calculator:
    """An :class:`atomnet.Calculator` (float64) on a copy of ``potential``."""
    return Calculator(float64_copy(potential), device=device_of(potential), dtype="float64")


def attached(atoms: Atoms, calc: Calculator) -> Atoms:
    """A copy of ``atoms`` with ``calc`` attached (the caller's atoms stay untouched)."""
    out = atoms.copy()
    out.calc = calc
    return out


def graph64(potential: torch.nn.Module, atoms: Atoms) -> dict[str, torch.Tensor]:
    """Graph of ``atoms`` for ``potential``, float64, on the potential's device.

    Reference labels are not read, so labelled and unlabelled structures can
    share a batch.
    """
    return to_device(potential.graph(atoms, labels=False), device_of(potential), torch.float64)


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random proper rotation matrix (3, 3), det = +1."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def require(error: float, tol: float, what: str, unit: str) -> float:
    """Return ``error``; raise AssertionError naming ``what`` when it exceeds ``tol``.

    A NaN error always fails.
    """
    if not error <= tol:
        raise AssertionError(f"{what}: error {error:.3e} {unit} exceeds tolerance {tol:.1e} {unit}")
    return float(error)


def worst(diff: np.ndarray) -> tuple[float, tuple[int, ...]]:
    """Largest absolute entry of ``diff`` (NaN if any entry is NaN) and its index."""
    diff = np.abs(np.asarray(diff, dtype=np.float64))
    if diff.size == 0:
        return 0.0, ()
    if np.isnan(diff).any():
        k = np.unravel_index(int(np.argmax(np.isnan(diff))), diff.shape)
        return float("nan"), tuple(int(x) for x in k)
    k = np.unravel_index(int(np.argmax(diff)), diff.shape)
    return float(diff[k]), tuple(int(x) for x in k)
