"""Learned models (registered terms): Behler–Parrinello / ANI networks."""

from .bpnn import BPNN

__all__ = ["BPNN"]
