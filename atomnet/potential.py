"""Potential: ordered stages write fields, energy terms write per-atom energies, summed.

Each part is a :class:`~atomnet.terms.Term` (or any module with the same
attributes) declaring the fields it ``reads``, the fields a stage ``writes`` and
the neighbour reach it needs (``pair_cutoff``, ``triplet_cutoff`` in Å). The
potential

1. recomputes edge vectors of every pair list from positions and cell
   (contract 1: one integer list per distinct cutoff);
2. runs the stages in order (e.g. charges), each adding its fields;
3. runs every energy term, keeps each per-atom contribution visible
   (contract 3) and sums them;
4. returns the declared outputs: ``energy`` always, ``charges`` and ``dipole``
   when a stage writes charges.

The wiring (what each part reads, which lists exist) is checked when the
potential is built, so a mis-wired model fails in ``__init__`` naming the field.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from . import keys
from . import models as _models  # noqa: F401  (registers the model term types)
from . import physics as _physics  # noqa: F401  (registers the physics term types)
from .errors import UsageError
from .neighbors import edge_vectors
from .nn import sum_per_structure
from .terms import StatisticsData, build_term, term_recipe

#: fields every graph provides before any stage runs
PROVIDED = (
    keys.POSITIONS, keys.NUMBERS, keys.SPECIES, keys.CELL, keys.PBC, keys.BATCH,
    keys.N_ATOMS, keys.TOTAL_CHARGE, keys.ORIGIN,
)


def _pair_lists(parts: Sequence[nn.Module]) -> dict[float, float | None]:
    """{cutoff: largest triplet cutoff asked for on it, or None}, sorted by cutoff."""
    lists: dict[float, float | None] = {}
    for part in parts:
        cutoff = getattr(part, "pair_cutoff", None)
        if cutoff is None:
            continue
        cutoff = float(cutoff)
        triplet = getattr(part, "triplet_cutoff", None)
        old = lists.get(cutoff)
        lists[cutoff] = max(t for t in (old, triplet) if t is not None) \
            if (old is not None or triplet is not None) else None
    return dict(sorted(lists.items()))


class Potential(nn.Module):
    """Stages and energy terms over one set of elements.

    Args:
        terms: ``{name: module}`` energy terms; each ``forward(graph)`` returns (N,) eV.
        elements: element symbols; ``species`` indexes this list.
        stages: ``{name: module}`` run in order before the energy terms; each
            ``forward(graph)`` returns ``{field: tensor}`` for the fields it ``writes``.
    """

    def __init__(
        self,
        terms: Mapping[str, nn.Module],
        elements: Sequence[str],
        stages: Mapping[str, nn.Module] | None = None,
    ):
        super().__init__()
        self.elements = list(elements)
        self.stages = nn.ModuleDict(dict(stages or {}))
        self.terms = nn.ModuleDict(dict(terms))
        if not len(self.terms):
            raise UsageError("a potential needs at least one energy term")
        #: {cutoff Å: triplet cutoff Å or None}: the integer pair lists graphs must carry
        self.pair_lists = _pair_lists([*self.stages.values(), *self.terms.values()])
        self.outputs = self._check_wiring()
        self._leave_out: frozenset[str] = frozenset()
        #: the pair lists :meth:`prepare` completes (those of the parts evaluated)
        self._active_lists = self.pair_lists

    @property
    def cutoff(self) -> float:
        """The largest reach (Å) of any part: how far apart two atoms can interact."""
        return max(self.pair_lists, default=0.0)

    def _provided(self) -> set[str]:
        available = set(PROVIDED)
        for cutoff, triplet in self.pair_lists.items():
            f = keys.pairs(cutoff)
            available |= {f.index, f.shifts, f.vectors, f.lengths}
            if triplet is not None:
                available.add(f.triplets)
        return available

    def _check_wiring(self) -> tuple[str, ...]:
        """Check reads/writes in order; return the declared outputs."""
        available = self._provided()
        for group, parts in (("stage", self.stages), ("energy term", self.terms)):
            for name, part in parts.items():
                kind = getattr(part, "kind", "energy")
                if kind != ("stage" if group == "stage" else "energy"):
                    raise UsageError(f"{group} {name!r} is of kind {kind!r}")
                missing = set(getattr(part, "reads", ())) - available
                if missing:
                    raise UsageError(
                        f"{group} {name!r} reads {sorted(missing)}, which no earlier stage writes"
                    )
                available |= set(getattr(part, "writes", ()))
        outputs = [keys.ENERGY]
        if keys.CHARGES in available:
            outputs += [keys.CHARGES, keys.DIPOLE]
        return tuple(outputs)

    # --- parts ------------------------------------------------------------
    @property
    def term_names(self) -> list[str]:
        return list(self.terms)

    @property
    def stage_names(self) -> list[str]:
        return list(self.stages)

    def _parts(self) -> Iterator[tuple[str, nn.Module]]:
        yield from self.stages.items()
        yield from self.terms.items()

    @property
    def reference(self) -> nn.Module | None:
        """The per-element reference-energy term (E0s), or None."""
        found = [t for t in self.terms.values() if getattr(t, "is_reference", False)]
        if len(found) > 1:
            raise UsageError("a potential may hold only one reference-energy term")
        return found[0] if found else None

    @property
    def added_names(self) -> set[str]:
        """Terms added on top of the fitted model (``fitted = False``, e.g. D3 with
        ``mode: add``): left out under :meth:`as_fitted`."""
        return {n for n, t in self.terms.items() if not getattr(t, "fitted", True)}

    @property
    def label_names(self) -> set[str]:
        """Terms subtracted from the reference labels before training
        (``subtract_from_labels = True``, e.g. D3 with ``mode: subtract``): left out
        under :meth:`as_fitted`, their energy being out of the labels already."""
        return {n for n, t in self.terms.items() if getattr(t, "subtract_from_labels", False)}

    @property
    def fitted_pair_lists(self) -> dict[float, float | None]:
        """The pair lists of every part but the :attr:`label_names` and
        :attr:`added_names` terms (neither is evaluated under :meth:`as_fitted`): what
        training graphs carry (see :meth:`fitted_graph`)."""
        leave_out = self.label_names | self.added_names
        return _pair_lists([*self.stages.values(),
                            *(t for n, t in self.terms.items() if n not in leave_out)])

    @contextmanager
    def as_fitted(self) -> Iterator[Potential]:
        """Within the block, evaluate only the terms fitted to the (corrected) reference
        labels: leave out :attr:`added_names` and :attr:`label_names`. What training and
        ``atomnet evaluate`` use; graphs need only :attr:`fitted_pair_lists`."""
        leave_out = frozenset(self.added_names | self.label_names)
        old = self._leave_out, self._active_lists
        self._leave_out = leave_out
        self._active_lists = _pair_lists(
            [*self.stages.values(), *(t for n, t in self.terms.items() if n not in leave_out)])
        try:
            yield self
        finally:
            self._leave_out, self._active_lists = old

    @property
    def reference_names(self) -> set[str]:
        """Names of the reference-energy terms: left out of the residual energies."""
        return {n for n, t in self.terms.items() if getattr(t, "is_reference", False)}

    # --- recipe -----------------------------------------------------------
    def recipe(self) -> dict[str, Any]:
        """JSON-able description that rebuilds this potential (weights aside)."""
        return {
            "elements": list(self.elements),
            "stages": [{"name": n, **term_recipe(t)} for n, t in self.stages.items()],
            "terms": [{"name": n, **term_recipe(t)} for n, t in self.terms.items()],
        }

    @classmethod
    def from_recipe(cls, recipe: Mapping[str, Any], where: str = "recipe") -> Potential:
        """Rebuild a potential (untrained weights) from :meth:`recipe`'s output.

        A part that cannot be built raises :class:`UsageError` naming it as a field of
        ``where`` (e.g. ``'recipe.terms[1]' (type 'bpnn') cannot be built: …``).
        """
        elements = list(recipe["elements"])

        def parts(section: str) -> dict[str, nn.Module]:
            out = {}
            for k, entry in enumerate(recipe.get(section, [])):
                entry = dict(entry)
                name = entry.pop("name")
                if name in out:
                    raise UsageError(f"'{where}.{section}' names two parts {name!r}")
                try:
                    out[name] = build_term(entry, elements)
                except Exception as exc:  # UsageError, or whatever the type's __init__ raises
                    raise UsageError(f"'{where}.{section}[{k}]' (type {entry.get('type')!r}) "
                                     f"cannot be built: {exc}") from exc
            return out

        terms, stages = parts("terms"), parts("stages")
        try:
            return cls(terms, elements, stages=stages)
        except UsageError as exc:
            raise UsageError(f"'{where}' does not make a potential: {exc}") from exc

    # --- evaluation -------------------------------------------------------
    def prepare(self, graph: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A new dict: ``graph`` with edge vectors of every pair list and every stage's fields."""
        graph = dict(graph)
        for cutoff in self._active_lists:
            edge_vectors(graph, keys.pairs(cutoff))
        for stage in self.stages.values():
            graph.update(stage(graph))
        return graph

    def forward(self, graph: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Evaluate all parts. Returns a new dict: the prepared graph plus

        ``contributions`` ({name: (N,) eV}), ``atomic_energies`` (N,) eV,
        ``energy`` (B,) eV and, with charges, ``dipole`` (B, 3) e·Å = Σ q_i r_i
        (r_i in the input frame: the graph's local coordinates plus ``origin``).
        """
        graph = self.prepare(graph)
        contributions = {}
        total = None
        for name, term in self.terms.items():
            if name in self._leave_out:
                continue
            e = term(graph)
            contributions[name] = e
            total = e if total is None else total + e
        n_structures = graph[keys.N_ATOMS].shape[0]
        batch = graph[keys.BATCH]
        graph[keys.CONTRIBUTIONS] = contributions
        graph[keys.ATOMIC_ENERGIES] = total
        graph[keys.ENERGY] = sum_per_structure(total, batch, n_structures)
        if keys.DIPOLE in self.outputs:
            charges = graph[keys.CHARGES]
            moments = charges.unsqueeze(-1) * graph[keys.POSITIONS]
            total = sum_per_structure(charges, batch, n_structures).unsqueeze(-1)
            graph[keys.DIPOLE] = sum_per_structure(moments, batch, n_structures) \
                + total * graph[keys.ORIGIN].to(moments)
        return graph

    def graph(self, atoms, **kwargs) -> dict[str, torch.Tensor]:
        """Graph of ``atoms`` with the pair lists (and triplets) this potential needs.

        Keyword arguments go to :func:`atomnet.structures.atoms_to_graph`.
        """
        from .structures import atoms_to_graph

        return atoms_to_graph(atoms, self.elements, pair_lists=self.pair_lists, **kwargs)

    def fitted_graph(self, atoms, **kwargs) -> dict[str, torch.Tensor]:
        """Graph of ``atoms`` with only :attr:`fitted_pair_lists`: enough for evaluation
        under :meth:`as_fitted` (training graphs; no pair list of a term subtracted from
        the labels, e.g. D3's 30 Å list)."""
        from .structures import atoms_to_graph

        return atoms_to_graph(atoms, self.elements, pair_lists=self.fitted_pair_lists, **kwargs)

    # --- training statistics ---------------------------------------------
    def fit_statistics(
        self, graphs: Sequence[dict], residuals: torch.Tensor, batch_size: int = 64
    ) -> dict[str, float]:
        """Ask every part to set its statistics (normalisation, scale, shift) from
        training ``graphs`` (float64, with labels; :meth:`fitted_graph` suffices) and
        ``residuals`` (n,) eV, with the :attr:`label_names` terms' energy taken out.
        Returns the scalars set, prefixed by part name (for logs and model files)."""
        from .structures import collate

        def batches():
            with torch.no_grad():
                for k in range(0, len(graphs), batch_size):
                    yield self.prepare(collate(graphs[k:k + batch_size]))

        info: dict[str, float] = {}

        def fit_all(parts, data):
            for name, part in parts:
                fit = getattr(part, "fit_statistics", None)
                if fit is not None:
                    info.update({f"{name}.{k}": v for k, v in fit(data).items()})

        # as training sees them: graphs may lack the pair lists of terms subtracted from
        # the labels (training graphs; ``residuals`` then have them out already)
        with self.as_fitted():
            fit_all(self.stages.items(), StatisticsData(graphs, residuals, batches))
            tails = self._analytic_energies(batches)
            if tails is not None:  # the learned terms fit what the analytic tails leave
                residuals = residuals - tails.to(residuals)
            fit_all(self.terms.items(), StatisticsData(graphs, residuals, batches))
        return info

    def _analytic_energies(self, batches) -> torch.Tensor | None:
        """(n,) eV: the energy of the parameterless fitted terms (tails such as D3, ZBL,
        Coulomb between fixed charges) on each training structure, or None when there are
        none. Terms that read what a learned stage writes (Coulomb between learned
        charges) are left out: their energy is not known before training."""
        learned = set()  # fields written by stages with weights (learned charges)
        for stage in self.stages.values():
            if any(True for _ in stage.parameters()):
                learned |= set(getattr(stage, "writes", ()))
        names = [n for n, t in self.terms.items()
                 if n not in self.reference_names and n not in self.added_names
                 and n not in self.label_names
                 and not any(True for _ in t.parameters())
                 and not learned & set(getattr(t, "reads", ()))]
        if not names:
            return None
        out = []
        with torch.no_grad():
            for graph in batches():
                n = graph[keys.N_ATOMS].shape[0]
                atomic = sum(self.terms[k](graph) for k in names)
                out.append(sum_per_structure(atomic, graph[keys.BATCH], n))
        return torch.cat(out).double().cpu()

    def extra_repr(self) -> str:
        return f"elements={self.elements}, pair lists (Å)={list(self.pair_lists)}"
