"""Smooth switching functions for the physics tails (C², so Hessians stay continuous).

``switch_off(r, r_on, r_off)`` is 1 for r ≤ r_on, 0 for r ≥ r_off and the quintic
"smootherstep" in between; value, slope and curvature are continuous everywhere.
``switch_on`` is its complement. Both accept tensors for ``r_on``/``r_off`` (per pair).
"""

from __future__ import annotations

import torch

from ..errors import UsageError


def smootherstep(x: torch.Tensor) -> torch.Tensor:
    """10x³ − 15x⁴ + 6x⁵ on x clamped to [0, 1]: 0 → 1, zero slope and curvature at both ends."""
    x = x.clamp(0.0, 1.0)
    return x**3 * (10.0 + x * (-15.0 + 6.0 * x))


def switch_off(r: torch.Tensor, r_on, r_off) -> torch.Tensor:
    """1 below ``r_on``, 0 above ``r_off`` (Å), C² in between."""
    return 1.0 - smootherstep((r - r_on) / (r_off - r_on))


def switch_on(r: torch.Tensor, r_on, r_off) -> torch.Tensor:
    """0 below ``r_on``, 1 above ``r_off`` (Å), C² in between."""
    return smootherstep((r - r_on) / (r_off - r_on))


def check_window(r_on: float, r_off: float, what: str, limit: float | None = None) -> None:
    """Raise a clear :class:`UsageError` unless 0 ≤ r_on < r_off (≤ ``limit``), all in Å."""
    if not (0.0 <= float(r_on) < float(r_off)):
        raise UsageError(f"{what}: the switching window needs 0 ≤ r_on < r_off (Å), "
                         f"got r_on={r_on}, r_off={r_off}")
    if limit is not None and float(r_off) > float(limit) + 1e-12:
        raise UsageError(f"{what}: r_off={r_off} Å is beyond the pair list's reach {limit} Å")
