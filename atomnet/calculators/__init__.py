"""ASE calculator."""

from .ase_calculator import Calculator

__all__ = ["Calculator"]
