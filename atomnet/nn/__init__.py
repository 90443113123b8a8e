"""Neural-network building blocks."""

from .element_mlp import ACTIVATIONS, ElementMLP
from .scatter import sum_per_structure

__all__ = ["ACTIVATIONS", "ElementMLP", "sum_per_structure"]
