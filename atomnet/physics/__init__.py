"""Analytical terms and stages beside the learned model: reference energies, charges,
Coulomb, D3(BJ) dispersion, ZBL repulsion (see docs/physics.md)."""

from .charges import FixedCharges, LearnedCharges, conserve_charge
from .coulomb import Coulomb
from .dispersion import D3BJ
from .reference import AtomicReference
from .repulsion import ZBL

__all__ = ["ZBL", "AtomicReference", "Coulomb", "D3BJ", "FixedCharges", "LearnedCharges",
           "conserve_charge"]
