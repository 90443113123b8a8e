"""Smooth cutoff functions f(r): 1 at r = 0, 0 for r ≥ rc."""

from __future__ import annotations

import math

import torch


def polynomial_cutoff(r: torch.Tensor, rc: float | torch.Tensor) -> torch.Tensor:
    """C² polynomial cutoff 1 − 10x³ + 15x⁴ − 6x⁵, x = r/rc (value, slope and curvature → 0).

    Its second derivative vanishes at rc, so Hessians are continuous across the cutoff.
    """
    x = (r / rc).clamp(max=1.0)  # f(1) = 0 exactly, so no branch is needed
    return 1.0 + x**3 * (-10.0 + x * (15.0 - 6.0 * x))


def cosine_cutoff(r: torch.Tensor, rc: float | torch.Tensor) -> torch.Tensor:
    """Behler's cosine cutoff ½(cos(πr/rc) + 1); C¹ only (curvature jumps at rc)."""
    x = (r / rc).clamp(max=1.0)  # cos(π) = −1: zero at and beyond rc
    return 0.5 * (torch.cos(math.pi * x) + 1.0)


CUTOFFS = {"polynomial": polynomial_cutoff, "cosine": cosine_cutoff}
