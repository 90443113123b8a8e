"""Analytical terms and stages beside the learned model (reference energies, charges)."""

from .charges import FixedCharges, LearnedCharges, conserve_charge
from .coulomb import Coulomb
from .reference import AtomicReference
from .repulsion import ZBL

__all__ = ["ZBL", "AtomicReference", "Coulomb", "FixedCharges", "LearnedCharges", "conserve_charge"]
