"""ZBL universal nuclear repulsion at very short range, switched off smoothly.

Ziegler, Biersack and Littmark's screened Coulomb repulsion between nuclei,

    e_ij(r) = k_e Z_i Z_j / r · φ(r / a_ij),   a_ij = 0.46850 Å / (Z_i^0.23 + Z_j^0.23),
    φ(x) = 0.18175 e^{−3.19980 x} + 0.50986 e^{−0.94229 x}
         + 0.28022 e^{−0.40290 x} + 0.02817 e^{−0.20162 x},

multiplied by a C² switch that is 1 below ``r_on`` and 0 beyond ``r_off``. The window
scales with each pair's covalent radii (ASE's table): r_on = inner·(R_i + R_j),
r_off = outer·(R_i + R_j), so it sits well inside every bond. It keeps MD and
geometry optimisations stable when atoms come closer than anything in the training
data; the network learns the rest. Parameterless (rebuilt from its recipe).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from ase.data import atomic_numbers, covalent_radii

from .. import keys
from ..errors import UsageError
from ..terms import register
from .coulomb_constant import COULOMB_CONSTANT
from .pairs import PairTerm
from .switching import switch_off

#: ZBL screening function: (coefficient, exponent) pairs
_PHI = ((0.18175, 3.19980), (0.50986, 0.94229), (0.28022, 0.40290), (0.02817, 0.20162))
_A0 = 0.46850  # Å (0.8854 a_0)


@register("zbl")
class ZBL(PairTerm):
    """ZBL repulsion (eV) between every pair closer than ``outer·(R_i + R_j)``.

    Args:
        elements: the model's element symbols.
        inner, outer: the switching window as fractions of the sum of covalent
            radii (ASE's ``covalent_radii``, Å); defaults 0.4 and 0.75 (H–H: 0.25–0.46 Å,
            C–H: 0.43–0.80 Å, C–C: 0.61–1.14 Å).
    """

    skin_safe = True  # each pair switched to exactly 0 beyond its window

    def __init__(self, elements: Sequence[str], inner: float = 0.4, outer: float = 0.75):
        if not 0.0 <= float(inner) < float(outer) <= 1.5:
            raise UsageError(f"zbl: the window needs 0 ≤ inner < outer ≤ 1.5 (fractions of "
                             f"R_i + R_j), got inner={inner}, outer={outer}")
        z = [atomic_numbers[s] for s in elements]
        radii = [float(covalent_radii[n]) for n in z]
        super().__init__(cutoff=round(float(outer) * 2 * max(radii), 6))
        self.inner, self.outer = float(inner), float(outer)
        self.register_buffer("z", torch.tensor(z, dtype=torch.float64), persistent=False)
        self.register_buffer("radii", torch.tensor(radii, dtype=torch.float64),
                             persistent=False)

    def recipe(self) -> dict:
        return {"inner": self.inner, "outer": self.outer}

    def pair_energy(self, graph, r, i, j):
        species = graph[keys.SPECIES]
        si, sj = species[i], species[j]
        zi, zj = self.z[si].to(r), self.z[sj].to(r)
        a = _A0 / (zi**0.23 + zj**0.23)
        x = r / a
        phi = sum(c * torch.exp(-d * x) for c, d in _PHI)
        reach = (self.radii[si] + self.radii[sj]).to(r)
        s = switch_off(r, self.inner * reach, self.outer * reach)
        # pairs beyond their own window: exactly zero (s = 0), and no 1/r blow-up concern
        return COULOMB_CONSTANT * zi * zj / r * phi * s
