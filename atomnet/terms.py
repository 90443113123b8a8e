"""What a potential is made of: stages and energy terms, each rebuilt from a recipe.

A :class:`Term` is one named part of a :class:`~atomnet.potential.Potential`:

* a **stage** (``kind = "stage"``) writes fields that later parts read, e.g.
  per-atom ``charges``; its ``forward(graph)`` returns ``{field: tensor}`` with
  exactly the fields in ``writes``;
* an **energy term** (``kind = "energy"``) returns per-atom energies (N,) in eV;
  the potential sums them and keeps each one visible (contract 3).

Every part declares the fields it ``reads`` (checked when the potential is
built), the neighbour reach it needs (``pair_cutoff``, Å, and
``triplet_cutoff`` for angular terms) and a JSON-able :meth:`Term.recipe`: its
registered type name plus the keyword arguments that rebuild it. A model file
stores recipes, never code (contract 5); :func:`build_term` turns a recipe back
into a module. Register a new type with :func:`register`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import torch
from torch import nn

from .errors import UsageError

#: type name → class of every registered stage and energy term
TERMS: dict[str, type[Term]] = {}


class StatisticsData(NamedTuple):
    """Training data offered to :meth:`Term.fit_statistics`.

    graphs: the training graphs (float64, CPU, with labels ``ref_*``).
    residuals: (n,) float64 eV, reference energy minus the reference terms (E0s).
    batches: ``batches()`` yields collated training batches with edge vectors
        and every stage's fields computed (no energies).
    """

    graphs: Sequence[dict[str, torch.Tensor]]
    residuals: torch.Tensor
    batches: Callable[[], Iterator[dict[str, torch.Tensor]]]


class LocalStructure(NamedTuple):
    """How an energy term factorises over one pair list (see :meth:`Term.local_structure`).

    E_i = ``head(lift(G, species), species)[i]`` with G (N, F) =
    ``assemble(edge_terms(v), triplet_terms(v1, v2))``, linear in its two arguments,
    where every row of ``edge_terms`` depends only on its own edge vector v_e (E, 3),
    every row of ``triplet_terms`` only on the two edge vectors of its triplet, and
    E_i only on G_i. ``lift`` is linear (no offset; e.g. the first layer of a network
    without its bias, or the identity) and ``head`` the rest; both work row by row, on
    any rows with their atoms' species. Edge e's terms land in column block
    ``edge_blocks[e]`` of the first ``n_edge_blocks · edge_width`` columns of G_i (i its
    center); triplet t's in block ``triplet_blocks[t]`` of the columns after them.
    The derivatives module builds exact Hessians from these local pieces: a fixed
    number of small derivative passes instead of 3N passes over the whole graph.
    """

    fields: Any  # keys.PairKeys of the pair list read
    edge_terms: Callable[[torch.Tensor], torch.Tensor]  # (E, 3) → (E, edge_width)
    triplet_terms: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # → (T, triplet_width)
    edge_blocks: torch.Tensor  # (E,) int64
    triplet_blocks: torch.Tensor  # (T,) int64
    n_edge_blocks: int
    n_triplet_blocks: int
    assemble: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # → G (N, F)
    lift: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # G, species → Z (linear)
    head: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # Z, species → (N,) eV


class Term(nn.Module):
    """Base class of stages and energy terms (see the module docstring).

    Class attributes a subclass sets: ``kind``, ``reads``, ``writes`` and
    ``is_reference`` (per-element reference energies: left out of the residual
    energies training fits). Instance attributes: ``pair_cutoff`` and
    ``triplet_cutoff`` (Å, or None).
    """

    kind: str = "energy"
    reads: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()
    is_reference: bool = False
    #: False for a term added on top of a model fitted without it (e.g. D3 with
    #: ``mode: add`` when the reference data has no dispersion): left out of the
    #: energies and forces compared with labels (training, ``atomnet evaluate``)
    fitted: bool = True
    #: True for a parameterless term the reference labels already contain that is
    #: subtracted from the labels once, before training (e.g. D3 with ``mode: subtract``):
    #: training graphs then carry no pair list of its own and training and ``atomnet
    #: evaluate`` leave it out (:meth:`atomnet.Potential.as_fitted`); the model keeps it
    subtract_from_labels: bool = False
    #: True when the term's contributions (and all their derivatives) vanish exactly for
    #: pairs beyond its ``pair_cutoff`` (and triplets beyond ``triplet_cutoff``), so that
    #: it may read lists built with a Verlet skin (smooth cutoffs: yes; hard truncations
    #: or sums over every listed pair, such as D3's and Ewald's real space: no)
    skin_safe: bool = False
    #: buffers older model files stored as one scalar for all elements (loaded broadcast
    #: by the term's ``_load_from_state_dict``)
    scalar_compatible: tuple[str, ...] = ()
    #: set by :func:`register`
    type_name: str = ""

    def __init__(self) -> None:
        super().__init__()
        self.pair_cutoff: float | None = None
        self.triplet_cutoff: float | None = None

    def recipe(self) -> dict[str, Any]:
        """Keyword arguments (JSON-able, without ``elements``) that rebuild this term."""
        return {}

    def fit_statistics(self, data: StatisticsData) -> dict[str, float]:
        """Set normalisation buffers from training data; returns the scalars set (for logs)."""
        return {}

    def local_structure(self, graph: dict[str, torch.Tensor]) -> LocalStructure | None:
        """The term's factorisation over local pieces (:class:`LocalStructure`), for fast
        exact Hessians; ``None`` (the default) when it has none: Hessians then take
        3N derivative passes over the whole graph."""
        return None


def register(name: str):
    """Class decorator: make a :class:`Term` subclass buildable as ``{"type": name, ...}``."""

    def wrap(cls):
        old = TERMS.get(name)
        same = old is not None and (old.__module__, old.__qualname__) == \
            (cls.__module__, cls.__qualname__)  # a re-run of the same definition
        if old is not None and old is not cls and not same:
            raise UsageError(f"term type {name!r} is already registered ({TERMS[name]})")
        cls.type_name = name
        TERMS[name] = cls
        return cls

    return wrap


def term_recipe(term: nn.Module) -> dict[str, Any]:
    """``{"type": ..., **kwargs}`` of a registered term; raises for unregistered modules.
    A term added on top of the fitted model also records ``"fitted": false``; one
    subtracted from the labels before training ``"subtract_from_labels": true``."""
    name = getattr(term, "type_name", "")
    if TERMS.get(name) is not type(term):
        raise UsageError(
            f"{type(term).__name__} is not a registered term type, so it cannot be saved "
            f"and rebuilt; decorate it with @atomnet.terms.register(name)"
        )
    extra = {} if getattr(term, "fitted", True) else {"fitted": False}
    if getattr(term, "subtract_from_labels", False):
        extra["subtract_from_labels"] = True
    return {"type": name, **term.recipe(), **extra}


#: recipe keys every term accepts besides its own options: ``fitted`` (bool, default
#: true; false for a term added on top of a model fitted without it, see ``Term.fitted``)
#: and ``subtract_from_labels`` (bool, default false, see ``Term.subtract_from_labels``)
COMMON_OPTIONS = ("fitted", "subtract_from_labels")


def allowed_options(cls: type) -> set[str]:
    """Keys a term type accepts in its recipe (``elements`` excluded), the
    :data:`COMMON_OPTIONS` included."""
    return (set(inspect.signature(cls.__init__).parameters) - {"self", "elements"}) \
        | set(COMMON_OPTIONS)


def build_term(recipe: Mapping[str, Any], elements: Sequence[str]) -> Term:
    """Build the term described by ``recipe`` (its ``type`` plus options) for ``elements``."""
    options = dict(recipe)
    if "type" not in options:
        raise UsageError(f"a term recipe needs a 'type' (one of {sorted(TERMS)})")
    kind = options.pop("type")
    if kind not in TERMS:
        raise UsageError(f"unknown term type {kind!r}; known: {sorted(TERMS)}")
    cls = TERMS[kind]
    allowed = allowed_options(cls)
    unknown = set(options) - allowed
    if unknown:
        raise UsageError(
            f"unknown option(s) {sorted(unknown)} for type {kind!r}; allowed: {sorted(allowed)}"
        )
    fitted = options.pop("fitted", True)
    if not isinstance(fitted, bool):
        raise UsageError(f"type {kind!r}: 'fitted' must be true or false, got {fitted!r}")
    subtract = options.pop("subtract_from_labels", False)
    if not isinstance(subtract, bool):
        raise UsageError(f"type {kind!r}: 'subtract_from_labels' must be true or false, "
                         f"got {subtract!r}")
    if subtract and not fitted:
        raise UsageError(f"type {kind!r}: a term subtracted from the labels is part of the "
                         f"fitted energy ('fitted' cannot be false)")
    try:
        term = cls(elements=list(elements), **options)
    except TypeError as exc:  # e.g. a missing required option
        raise UsageError(f"type {kind!r}: {exc}") from exc
    if not fitted:
        term.fitted = False
    if subtract:
        if any(True for _ in term.parameters()):
            raise UsageError(f"type {kind!r}: only a term without weights can be subtracted "
                             f"from the labels")
        term.subtract_from_labels = True
    return term
