"""Neighbour lists (integers only) and differentiable edge vectors.

Contract 1: a backend returns integer pair indices and integer cell shifts.
Distances are recomputed in the model from positions and cell, after any
strain, so that forces, stress and Hessians are exact.
"""

from .edges import edge_vectors
from .vesin_backend import add_neighbors, neighbor_pairs

__all__ = ["add_neighbors", "edge_vectors", "neighbor_pairs"]
