"""Datasets for training: read once, split (seeded), graphs cached in memory, batched by index.

Frames are converted to eV and Å once, when read (:func:`read_frames`, from the
config's ``data.energy_unit``/``data.length_unit``). Labels are per structure:
when any structure of a set carries forces, stress, a dipole or charges, every
graph of the set carries the field (zeros where absent) and its mask
``ref_<label>_mask``. Dipoles and charges are kept only for a potential that
predicts them (:func:`predictable`).

A :class:`GraphSet` holds each structure's graph (on the training device and
dtype) and its *residual* reference energy E_ref − Σ E0 in float64, so that
energy errors stay exact even when the model runs in float32 (a total energy
of −4000 eV has a float32 resolution of about 0.5 meV).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.data import atomic_numbers

from .. import keys
from ..structures import StructureError, collate, get_label, read_structures, to_device
from ..structures.errors import where as structure_where
from ..structures.graph import label_shape
from ..units import Conversion
from .config import ConfigError
from .sources import DbSource, is_database

#: labels the trainer can fit, in loss order
FIT_LABELS = ("energy", "forces", "stress", "dipole", "charges")
#: labels a structure may lack (masked where absent)
OPTIONAL_LABELS = FIT_LABELS[1:]
#: labels that need an output of the potential besides the energy: label -> output
NEEDS_OUTPUT = {"dipole": keys.DIPOLE, "charges": keys.CHARGES}


@dataclass
class StructureTable:
    """What the loss normalisation needs of each structure of a set (n,)."""

    weight: np.ndarray  # float64, per-structure loss weight
    n_atoms: np.ndarray  # int64
    has_forces: np.ndarray  # bool
    has_stress: np.ndarray  # bool
    has_dipole: np.ndarray  # bool
    has_charges: np.ndarray  # bool

    @classmethod
    def of(cls, weight: np.ndarray, n_atoms: np.ndarray,
           has: dict[str, np.ndarray]) -> StructureTable:
        """From the flags ``has`` {label: (n,) bool} (a label absent: no structure has it)."""
        none = np.zeros(len(weight), bool)
        return cls(weight, n_atoms, *(has.get(k, none) for k in OPTIONAL_LABELS))

    def denominators(self, batch: list[int]) -> dict[str, float]:
        """The loss terms' denominators over the structures ``batch`` (the same sums as
        :func:`~atomnet.training.losses.loss_sums` forms from the batch's graphs):
        weighted structures, or atoms for the per-atom labels, that carry the label."""
        w, n = self.weight[batch], self.n_atoms[batch]
        return {"energy": float(w.sum()),
                "forces": float((w * n * self.has_forces[batch]).sum()),
                "stress": float((w * self.has_stress[batch]).sum()),
                "dipole": float((w * self.has_dipole[batch]).sum()),
                "charges": float((w * n * self.has_charges[batch]).sum())}


@dataclass
class GraphSet:
    """Graphs of one dataset, ready for batching.

    Attributes:
        name: e.g. ``"train"``; source: the file the frames came from.
        graphs: graph dicts (device, dtype) with labels ``ref_*`` for ``labels`` and,
            for each label but energy, its mask ``ref_*_mask`` (1,) bool.
        residuals: (n,) float64 eV, reference energy minus the sum of E0s.
        labels: the labels some structure carries, e.g. ``("energy", "forces")``
            (energy: every structure; dipole/charges only for a potential with charges).
        frames: the ASE structures (for writing the split to disk).
    """

    name: str
    source: str
    graphs: list[dict[str, torch.Tensor]]
    residuals: torch.Tensor
    labels: tuple[str, ...]
    frames: list[Atoms]

    def __len__(self) -> int:
        return len(self.graphs)

    @property
    def n_atoms(self) -> int:
        return sum(int(g[keys.N_ATOMS].sum()) for g in self.graphs)

    def structure_table(self) -> StructureTable:
        """Per-structure weights, atom counts and label flags (for loss denominators)."""
        def flags(label: str) -> np.ndarray:
            if keys.mask(label) not in self.graphs[0]:
                return np.ones(len(self), bool)
            return np.array([bool(g[keys.mask(label)]) for g in self.graphs])

        return StructureTable.of(
            np.array([float(g[keys.WEIGHT].sum()) for g in self.graphs]),
            np.array([int(g[keys.N_ATOMS].sum()) for g in self.graphs]),
            {k: flags(k) for k in OPTIONAL_LABELS if k in self.labels})

    def label_counts(self) -> dict[str, int]:
        """{label: number of structures carrying it} for each of ``labels``."""
        return {label: sum(bool(g[keys.mask(label)]) for g in self.graphs)
                if self.graphs and keys.mask(label) in self.graphs[0] else len(self)
                for label in self.labels}

    def iterate(
        self, batches: list[list[int]]
    ) -> Iterator[tuple[dict[str, torch.Tensor], torch.Tensor]]:
        """Yield (batch graph on the training device, residual energies (B,) float64)
        for each list of structure indices in ``batches``."""
        for idx in batches:
            yield collate([self.graphs[i] for i in idx]), self.residuals[idx]


def relabel(
    frames: Sequence[Atoms], names: dict[str, str], units: Conversion | None = None
) -> list[Atoms]:
    """Frames with labels read from their names in the file (e.g. ``{"energy": "REF_E"}``)
    and converted into eV and Å by ``units`` (positions and cell too).

    Returns copies carrying the labels in a single-point calculator; the input is
    not modified. Frames without a given label simply lack it; dipole and charges
    labels are carried (the dipole converted) as well. With standard names and units
    the frames are returned as they are.
    """
    units = units or Conversion()
    if units.identity and all(k == v for k, v in names.items()):
        return list(frames)
    names = {"dipole": "dipole", "charges": "charges", **names}
    out = []
    for atoms in frames:
        results = {}
        for key, name in names.items():
            value = get_label(atoms, name)
            if key == "stress" and not atoms.pbc.all():
                value = None  # ignored (see get_label); also under another name
            if value is not None:
                results[key] = value * units.factor(key)
        copy = atoms.copy()
        for name in names.values():  # no unconverted copy of a label stays behind
            copy.info.pop(name, None)
            if name not in ("positions", "numbers"):
                copy.arrays.pop(name, None)
        if units.length != 1.0:
            copy.set_cell(copy.cell.array * units.length, scale_atoms=False)
            copy.positions = copy.positions * units.length
        copy.calc = SinglePointCalculator(copy, **results)
        out.append(copy)
    return out


def read_frames(path: Path, names: dict[str, str], units: Conversion | None = None) -> list[Atoms]:
    """All frames of ``path`` with labels renamed and converted to eV/Å (see
    :func:`relabel`); energy required. An ASE database's rows are read as
    :func:`~atomnet.training.sources.row_atoms` makes them (key-value pairs in ``info``),
    as the streaming path reads them."""
    if is_database(path):
        source = DbSource(path)
        frames, where = list(source.iterate()), source.where
    else:
        frames, where = read_structures(path), partial(structure_where, path)
    frames = relabel(frames, names, units)
    for k, atoms in enumerate(frames):
        if get_label(atoms, "energy") is None:
            raise missing_energy(where(k), atoms, names["energy"])
    return frames


def missing_energy(where: str, atoms: Atoms, name: str) -> StructureError:
    """The error for a structure without its energy label ``name``."""
    return StructureError(
        f"{where}: missing energy label '{name}' (info keys {sorted(atoms.info)}; "
        f"set data.energy_key if it has another name)"
    )


def labels_present(frames: Sequence[Atoms]) -> tuple[str, ...]:
    """Labels to fit: energy, plus forces/stress/dipole/charges when *any* frame carries
    them (stress only counts on 3-D periodic frames). Frames lacking one are masked."""
    out = ["energy"]
    for key in OPTIONAL_LABELS:
        if any(get_label(a, key) is not None for a in frames):
            out.append(key)
    return tuple(out)


def outputs_of(potential) -> tuple[str, ...]:
    """The outputs ``potential`` declares (``energy`` alone when it declares none)."""
    return tuple(getattr(potential, "outputs", (keys.ENERGY,)))


def predictable(
    labels: Sequence[str], outputs: Sequence[str]
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(the ``labels`` a potential with ``outputs`` can be compared with, those it
    cannot): dipoles and charges need a potential that predicts charges."""
    kept = tuple(k for k in labels if NEEDS_OUTPUT.get(k, keys.ENERGY) in outputs)
    return kept, tuple(k for k in labels if k not in kept)


def elements_of(frames: Sequence[Atoms]) -> list[str]:
    """Element symbols present in ``frames``, by atomic number."""
    numbers = sorted({int(z) for a in frames for z in np.unique(a.numbers)})
    symbols = {v: k for k, v in atomic_numbers.items()}
    return [symbols[z] for z in numbers]


def split_indices(
    n: int, valid_fraction: float, test_fraction: float, seed: int
) -> tuple[list[int], list[int], list[int]]:
    """Seeded random split of ``range(n)`` into (train, valid, test) index lists.

    Fractions are rounded; a non-zero fraction holds at least one structure.
    """
    order = np.random.default_rng(seed).permutation(n).tolist()
    n_test = max(1, round(test_fraction * n)) if test_fraction > 0 else 0
    n_valid = max(1, round(valid_fraction * n)) if valid_fraction > 0 else 0
    if n_test + n_valid >= n:
        raise ConfigError(
            f"dataset of {n} structures is too small for valid_fraction={valid_fraction} "
            f"and test_fraction={test_fraction}"
        )
    test, valid, train = order[:n_test], order[n_test:n_test + n_valid], order[n_test + n_valid:]
    return sorted(train), sorted(valid), sorted(test)


def label_terms(potential):
    """A float64 CPU potential of ``potential``'s terms subtracted from the labels
    (:attr:`atomnet.Potential.label_names`, e.g. D3 with ``mode: subtract``), or None."""
    import copy

    from ..potential import Potential

    names = sorted(getattr(potential, "label_names", ()))
    if not names:
        return None
    terms = {n: copy.deepcopy(potential.terms[n]).to("cpu", torch.float64) for n in names}
    return Potential(terms, potential.elements).eval()


def subtract_label_terms(tails, atoms: Atoms, graph: dict[str, torch.Tensor],
                         source: str | None = None, index: int | None = None) -> None:
    """Subtract the energy, forces and (3-D periodic cells) stress of ``tails``
    (:func:`label_terms`) on ``atoms`` from the labels ``ref_*`` of ``graph``, in place
    (float64; a label absent or masked out is left alone)."""
    from ..derivatives import evaluate

    def carried(label: str) -> bool:
        m = graph.get(keys.mask(label))
        return keys.ref(label) in graph and (m is None or bool(m.all()))

    forces, stress = carried(keys.FORCES), carried(keys.STRESS) and bool(atoms.pbc.all())
    g = tails.graph(atoms, source=source, index=index, labels=False)
    res = evaluate(tails, g, forces=forces, stress=stress)
    ref = keys.ref
    graph[ref(keys.ENERGY)] = graph[ref(keys.ENERGY)] - res.energy.detach().double().reshape(
        graph[ref(keys.ENERGY)].shape)
    if forces:
        graph[ref(keys.FORCES)] = graph[ref(keys.FORCES)] - res.forces.detach().double()
    if stress:
        graph[ref(keys.STRESS)] = graph[ref(keys.STRESS)] - res.stress.detach().double(
            ).reshape(graph[ref(keys.STRESS)].shape)


def build_graphs(
    potential, frames: Sequence[Atoms], labels: Sequence[str], source: str, indices=None
) -> list[dict[str, torch.Tensor]]:
    """Float64 CPU graphs of ``frames`` carrying exactly the ``labels`` (others dropped).

    Energy is required of every frame. Each other label gets its mask
    ``ref_<label>_mask`` (1,) bool: True where the frame carries it, else False with
    a zero label, so that every graph has the same fields and batches collate.

    Terms subtracted from the labels (:attr:`atomnet.Potential.label_names`, e.g. D3
    with ``mode: subtract``) are computed once per frame and subtracted from its energy,
    forces and stress labels; the graphs carry only the pair lists of the other parts
    (:meth:`atomnet.Potential.fitted_graph`), to be evaluated under
    :meth:`atomnet.Potential.as_fitted`.
    """
    optional = [k for k in labels if k != keys.ENERGY]
    keep = {keys.ref(k) for k in labels} | {keys.mask(k) for k in optional}
    tails = label_terms(potential)
    make = potential.fitted_graph if tails is not None else potential.graph
    graphs = []
    for k, atoms in enumerate(frames):
        index = indices[k] if indices is not None else k
        g = make(atoms, require=(keys.ENERGY,), source=source, index=index)
        g = {key: v for key, v in g.items()
             if key in keep or not key.startswith(keys.REF_PREFIX)}
        if tails is not None:
            subtract_label_terms(tails, atoms, g, source, index)
        for label in optional:
            if keys.ref(label) not in g:
                shape = label_shape(label, len(atoms))
                g[keys.ref(label)] = torch.zeros(shape, dtype=torch.float64)
                g[keys.mask(label)] = torch.zeros(1, dtype=torch.bool)
        graphs.append(g)
    return graphs


def e0_sums(graphs: Sequence[dict], e0: torch.Tensor) -> torch.Tensor:
    """(n,) float64 Σ_i E0[species_i] per graph, eV. ``e0``: (S,) float64 by species."""
    e0 = e0.detach().to("cpu", torch.float64)
    return torch.stack([e0[g[keys.SPECIES].cpu()].sum() for g in graphs])


def make_set(
    name: str, source: str, frames: list[Atoms], graphs: list[dict], labels: tuple[str, ...],
    e0: torch.Tensor, device: torch.device, dtype: torch.dtype,
) -> GraphSet:
    """A :class:`GraphSet` from float64 CPU graphs: residuals computed, graphs moved."""
    energies = torch.cat([g[keys.ref("energy")].cpu().double() for g in graphs])
    residuals = energies - e0_sums(graphs, e0)
    moved = [to_device(g, device, dtype) for g in graphs]
    return GraphSet(name, source, moved, residuals, labels, list(frames))


def batch_order(n: int, batch_size: int, seed: int | None = None) -> list[list[int]]:
    """Index batches covering ``range(n)``; shuffled by ``seed`` when given.

    The order depends only on ``seed`` (use e.g. ``[seed, epoch]``), so a
    resumed run sees exactly the batches an uninterrupted one would.
    """
    order = np.arange(n) if seed is None else np.random.default_rng(seed).permutation(n)
    return [order[k:k + batch_size].tolist() for k in range(0, n, batch_size)]


def iterate(
    data: GraphSet, batches: list[list[int]]
) -> Iterator[tuple[dict[str, torch.Tensor], torch.Tensor]]:
    """Yield (batch graph, residual reference energies (B,) float64) per index batch."""
    return data.iterate(batches)
