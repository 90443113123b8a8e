"""Short-range models and the name → builder registry."""

from .bpnn import BPNN
from .registry import MODELS, build_model, register

__all__ = ["BPNN", "MODELS", "build_model", "register"]
