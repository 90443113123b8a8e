"""Atom-centred descriptors: Behler–Parrinello / ANI symmetry functions."""

from .cutoff import cosine_cutoff, polynomial_cutoff
from .symmetry_functions import SymmetryFunctions

__all__ = ["SymmetryFunctions", "cosine_cutoff", "polynomial_cutoff"]
