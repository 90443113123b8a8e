"""Assemble a potential from the ``model:`` section of a config."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ase.data import chemical_symbols

from .errors import UsageError
from .physics import AtomicReference
from .potential import Potential
from .terms import Term, build_term


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


#: the sections of ``physics:``
PHYSICS = ("charges", "coulomb", "dispersion", "repulsion")
#: term type each ``method`` of a section builds (the first is the default)
METHODS = {"dispersion": {"d3bj": "d3bj"}, "repulsion": {"zbl": "zbl"}}


def _section(physics: Mapping, name: str) -> dict | None:
    value = physics.get(name)
    if value is None or value is False:
        return None
    if value is True:
        value = {}
    if not isinstance(value, Mapping):
        raise UsageError(f"physics.{name} must be a mapping of options, got {value!r}")
    return dict(value)


def _charges_stage(options: Any, elements: list[str], cutoff: float) -> Term:
    """The stage that writes charges: ``learned`` (optionally ``{learned: {options}}``)
    or fixed per-element charges ``{Na: 1.0, Cl: -1.0}``."""
    if options == "learned":
        options = {"learned": {}}
    if isinstance(options, Mapping) and set(options) == {"learned"}:
        learned = dict(options["learned"] or {})
        learned.setdefault("cutoff", cutoff)
        return build_term({"type": "learned_charges", **learned}, elements)
    if isinstance(options, Mapping):
        return build_term({"type": "fixed_charges", "charges": dict(options)}, elements)
    raise UsageError("physics.coulomb.charges must be 'learned', {learned: {options}} or "
                     f"per-element charges such as {{Na: 1.0, Cl: -1.0}}; got {options!r}")


#: physics.dispersion.mode → whether the term is part of the fitted energy
DISPERSION_MODES = {
    "add": False,       # the reference data has no dispersion: fit without D3, add it on top
    "subtract": True,   # the reference data contains D3: fit the network to E_ref − E_D3
}


def _dispersion_mode(mode: Any) -> bool:
    if mode not in DISPERSION_MODES:
        raise UsageError(
            "physics.dispersion.mode must be given: 'add' when the reference data has no "
            "dispersion (D3 is added on top of the fitted model), 'subtract' when it already "
            f"contains D3 (the network fits what D3 leaves); got {mode!r}")
    return DISPERSION_MODES[mode]


def physics_parts(
    physics: Mapping, elements: list[str], cutoff: float
) -> tuple[dict[str, Term], dict[str, Term]]:
    """(stages, energy terms) of a ``physics:`` section (see :func:`build`)."""
    if not isinstance(physics, Mapping):
        raise UsageError(f"physics must be a mapping, got {physics!r}")
    unknown = sorted(set(physics) - set(PHYSICS))
    if unknown:
        raise UsageError(f"unknown physics section(s) {unknown}; known: {sorted(PHYSICS)}")
    stages: dict[str, Term] = {}
    terms: dict[str, Term] = {}
    coulomb = _section(physics, "coulomb")
    charges = physics.get("charges")
    if coulomb is not None and "charges" in coulomb:
        if charges is not None:
            raise UsageError("give the charges once: physics.charges or physics.coulomb.charges")
        charges = coulomb.pop("charges")
    if coulomb is not None and charges is None:
        raise UsageError("physics.coulomb needs 'charges': 'learned' or per-element "
                         "charges such as {Na: 1.0, Cl: -1.0}")
    if charges is not None:  # charges alone: dipoles (IR) without a Coulomb energy
        stages["charges"] = _charges_stage(charges, elements, cutoff)
    if coulomb is not None:
        terms["coulomb"] = build_term({"type": "coulomb", **coulomb}, elements)
    for name, label in (("dispersion", "dispersion"), ("repulsion", "repulsion")):
        options = _section(physics, name)
        if options is None:
            continue
        methods = METHODS[name]
        method = options.pop("method", next(iter(methods)))
        if method not in methods:
            raise UsageError(f"physics.{name}.method must be one of {sorted(methods)}, "
                             f"got {method!r}")
        if name == "dispersion":
            if "three_body" not in options:
                raise UsageError("physics.dispersion.three_body must be given explicitly "
                                 "(true or false): D3 libraries differ in their default")
            fitted = _dispersion_mode(options.pop("mode", None))
            # 'subtract': D3 is subtracted from the labels once, before training
            # (atomnet.training.data.build_graphs); 'add': it is left out of the fit
            options.update({"subtract_from_labels": True} if fitted else {"fitted": False})
        terms[label] = build_term({"type": methods[method], **options}, elements)
    return stages, terms


def build(
    model: Mapping,
    elements: Sequence[str],
    cutoff: float = 5.0,
    e0s: Mapping[str, float] | None = None,
) -> Potential:
    """An untrained potential: the E0 reference term ``e0``, the learned ``short_range``
    term and the physics tails asked for.

    Args:
        model: e.g. ``{"type": "bpnn", "hidden": [128, 64]}`` (any registered model
            type and its options; see :mod:`atomnet.terms`), with an optional
            ``physics`` section: ``{"coulomb": {"charges": "learned", ...},
            "dispersion": {"method": "d3bj", "functional": "pbe", "three_body": False},
            "repulsion": {"method": "zbl"}}`` (see ``docs/physics.md``).
        elements: element symbols, e.g. ``["H", "C", "O"]``.
        cutoff: the model's neighbour cutoff in Å (``model["cutoff"]`` wins if given).
        e0s: isolated-atom energies in eV by symbol (zero until fitted otherwise).

    Parts, in order: stage ``charges`` (with Coulomb), terms ``e0``, ``short_range``,
    ``coulomb``, ``dispersion``, ``repulsion``; each term's per-atom energy stays
    visible in the results' ``contributions``.
    """
    elements = check_elements(elements)
    recipe = dict(model)
    physics = recipe.pop("physics", None) or {}
    recipe.setdefault("cutoff", cutoff)
    if not isinstance(recipe["cutoff"], (int, float)) or not 0 < recipe["cutoff"] < 1e3:
        raise UsageError(f"cutoff must be a positive number of Å, got {recipe['cutoff']!r}")
    short_range = build_term(recipe, elements)
    stages, tails = physics_parts(physics, elements, float(recipe["cutoff"]))
    terms = {"e0": AtomicReference(elements, e0s), "short_range": short_range, **tails}
    return Potential(terms, elements, stages=stages)
