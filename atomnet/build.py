"""Assemble a potential from the ``model:`` section of a config."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ase.data import chemical_symbols

from .errors import UsageError
from .physics import AtomicReference
from .potential import Potential
from .terms import build_term


def check_elements(elements: Sequence[str]) -> list[str]:
    """The element symbols as a list; raises for unknown or repeated symbols."""
    if isinstance(elements, str) or not isinstance(elements, Sequence):
        raise UsageError(f"elements must be a list of element symbols, got {elements!r}")
    elements = list(elements)
    bad = [s for s in elements if s not in chemical_symbols[1:]]
    if bad:
        raise UsageError(f"unknown element symbol(s) {bad}")
    if len(set(elements)) != len(elements):
        raise UsageError(f"duplicate elements in {elements}")
    if not elements:
        raise UsageError("a potential needs at least one element")
    return elements


def build(
    model: Mapping,
    elements: Sequence[str],
    cutoff: float = 5.0,
    e0s: Mapping[str, float] | None = None,
) -> Potential:
    """An untrained potential: the E0 reference term ``e0`` + the learned ``short_range`` term.

    Args:
        model: e.g. ``{"type": "bpnn", "hidden": [128, 64]}`` (any registered model
            type and its options; see :mod:`atomnet.terms`).
        elements: element symbols, e.g. ``["H", "C", "O"]``.
        cutoff: the model's neighbour cutoff in Å (``model["cutoff"]`` wins if given).
        e0s: isolated-atom energies in eV by symbol (zero until fitted otherwise).
    """
    elements = check_elements(elements)
    recipe = dict(model)
    recipe.setdefault("cutoff", cutoff)
    if not isinstance(recipe["cutoff"], (int, float)) or not 0 < recipe["cutoff"] < 1e3:
        raise UsageError(f"cutoff must be a positive number of Å, got {recipe['cutoff']!r}")
    short_range = build_term(recipe, elements)
    return Potential({"e0": AtomicReference(elements, e0s), "short_range": short_range}, elements)
