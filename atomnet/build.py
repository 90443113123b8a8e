"""Assemble a potential from the ``model:`` section of a config."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ase.data import chemical_symbols

from .models import build_model
from .physics import AtomicReference
from .potential import Potential


def build(
    model: Mapping,
    elements: Sequence[str],
    cutoff: float = 5.0,
    e0s: Mapping[str, float] | None = None,
) -> Potential:
    """An untrained potential: E0 reference term + the short-range model.

    Args:
        model: e.g. ``{"type": "bpnn", "hidden": [128, 64]}``.
        elements: element symbols, e.g. ``["H", "C", "O"]``.
        cutoff: neighbour cutoff in Å.
        e0s: isolated-atom energies in eV by symbol (zero until fitted otherwise).
    """
    elements = list(elements)
    bad = [s for s in elements if s not in chemical_symbols[1:]]
    if bad:
        raise ValueError(f"unknown element symbol(s) {bad}")
    if len(set(elements)) != len(elements):
        raise ValueError(f"duplicate elements in {elements}")
    if not cutoff > 0:
        raise ValueError(f"cutoff must be positive (Å), got {cutoff}")
    model = dict(model)
    short_range = build_model(model, elements, cutoff)
    terms = {"e0": AtomicReference(elements, e0s), "short_range": short_range}
    config = {"model": model, "elements": elements, "cutoff": float(cutoff)}
    return Potential(terms, elements, cutoff, config=config)
