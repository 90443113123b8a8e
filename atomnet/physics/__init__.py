"""Analytical energy terms added to the learned short-range energy."""

from .reference import AtomicReference

__all__ = ["AtomicReference"]
