"""Analytical terms and stages beside the learned model (reference energies, charges)."""

from .charges import FixedCharges, LearnedCharges, conserve_charge
from .reference import AtomicReference
from .repulsion import ZBL

__all__ = ["ZBL", "AtomicReference", "FixedCharges", "LearnedCharges", "conserve_charge"]
