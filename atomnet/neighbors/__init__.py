"""Neighbour lists (integers only) and differentiable edge vectors.

Contract 1: a backend returns integer pair indices and integer cell shifts
(and, for angular descriptors, integer triplets of edges). Distances are
recomputed in the model from positions and cell, after any strain, so that
forces, stress and Hessians are exact.
"""

from .blocks import block_pairs
from .edges import edge_vectors
from .triplets import angular_triplets, triplets_by_center
from .vesin_backend import (
    neighbor_pairs,
    neighbours_per_atom,
    pair_distances,
    pair_list,
    pairs_to_graph,
)

__all__ = [
    "angular_triplets",
    "block_pairs",
    "edge_vectors",
    "neighbor_pairs",
    "neighbours_per_atom",
    "pair_distances",
    "pair_list",
    "pairs_to_graph",
    "triplets_by_center",
]
