"""Analytical terms and stages beside the learned model (reference energies, charges)."""

from .charges import FixedCharges, conserve_charge
from .reference import AtomicReference

__all__ = ["AtomicReference", "FixedCharges", "conserve_charge"]
