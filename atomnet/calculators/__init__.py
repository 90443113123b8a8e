"""ASE calculators: one potential, or a committee of them (mean and spread)."""

from .ase_calculator import Calculator
from .committee import CommitteeCalculator, read_committee

__all__ = ["Calculator", "CommitteeCalculator", "read_committee"]
