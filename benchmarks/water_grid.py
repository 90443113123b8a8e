"""Periodic water boxes for the physics-tail benchmarks (coulomb_cost.py, d3_cost.py)."""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.build import molecule


def water_grid(n: int, spacing: float = 3.1, seed: int = 0, rattle: float = 0.0) -> Atoms:
    """n³ randomly oriented water molecules on a cubic grid (≈1 g/cm³), periodic;
    optionally rattled by ``rattle`` Å (seed + 1)."""
    rng = np.random.default_rng(seed)
    box = Atoms(cell=np.eye(3) * n * spacing, pbc=True)
    for x in range(n):
        for y in range(n):
            for z in range(n):
                m = molecule("H2O")
                m.rotate(rng.uniform(0.0, 360.0), rng.normal(size=3))
                m.translate((np.array([x, y, z]) + 0.5) * spacing)
                box += m
    if rattle:
        box.rattle(rattle, seed=seed + 1)
    return box
