"""Learned models (registered terms): Behler–Parrinello / ANI networks and e3nn
equivariant message passing."""

from .bpnn import BPNN
from .equivariant import Equivariant

__all__ = ["BPNN", "Equivariant"]
