"""Training data streamed from disk: graphs built in DataLoader workers as batches are needed.

With ``data.streaming: true`` no graph is cached: a :class:`StreamingSet` holds
the file's index (:mod:`.sources`), the structure positions of its split and a
few numbers per structure from one :func:`scan` (atoms, energy, which labels,
element counts). Each batch is read and turned into graphs by
``data.workers`` DataLoader processes (0: in the training process), collated
there with its residual energies E_ref − Σ E0 (float64), and moved to the
training device and dtype in the training process. Memory then stays flat as
the data set grows: what grows is a few numbers per structure.

Plain :mod:`torch.utils.data` does the work: a batch sampler that is the
trainer's list of index lists, a collate function that is atomnet's
:func:`~atomnet.structures.collate` (which already knows how every field is
offset). torch-geometric's loaders would add a conversion to its ``Data``
objects and nothing else.

The result equals the in-memory path's (:class:`~atomnet.training.data.GraphSet`):
the same graphs, the same residuals, batch for batch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from ase import Atoms
from ase.data import chemical_symbols

from .. import keys
from ..structures import check_elements, collate, get_label, to_device, validate_atoms
from ..structures.graph import _info_number, atoms_to_graph
from ..units import Conversion
from .data import (
    OPTIONAL_LABELS,
    StructureTable,
    build_graphs,
    e0_sums,
    missing_energy,
    relabel,
)
from .sources import Source, open_source

#: training structures the normalisation statistics are computed from (a seeded subset
#: when the training set is larger; all of them, in order, otherwise)
STATISTICS_STRUCTURES = 5_000
#: MiB of statistics graphs kept between the passes of ``fit_statistics`` (see LazyGraphs)
STATISTICS_CACHE_MIB = 256.0
#: bytes a tensor costs beyond its data, roughly (for LazyGraphs' cache budget)
TENSOR_OVERHEAD = 512


class StructureFile:
    """A structure file read by index, labels renamed and converted to eV/Å on reading."""

    def __init__(self, path, names: dict[str, str], units: Conversion | None = None) -> None:
        self.source: Source = open_source(path)
        self.path = str(path)
        self.names, self.units = dict(names), units or Conversion()

    def __len__(self) -> int:
        return len(self.source)

    def atoms(self, k: int) -> Atoms:
        """Structure ``k`` with its labels as :func:`~atomnet.training.data.read_frames` gives."""
        return relabel([self.source.read(k)], self.names, self.units)[0]

    def iterate(self) -> Iterator[Atoms]:
        """Every structure in file order, labelled as :meth:`atoms` gives them."""
        for atoms in self.source.iterate():
            yield relabel([atoms], self.names, self.units)[0]


@dataclass
class Scan:
    """What one pass over a file keeps per structure (n structures, Z elements seen).

    n_atoms: (n,) int64. energies: (n,) float64 eV. has: {label: (n,) bool} for each
    optional label (forces, stress, dipole, charges).
    weights: (n,) float64 per-structure loss weights (``info["weight"]``, default 1).
    numbers: (Z,) atomic numbers seen, ascending; counts: (n, Z) int32 atoms of each.
    """

    path: str
    n_atoms: np.ndarray
    energies: np.ndarray
    has: dict[str, np.ndarray]
    numbers: np.ndarray
    counts: np.ndarray
    weights: np.ndarray

    def labels(self, indices: Sequence[int]) -> tuple[str, ...]:
        """Energy, plus each optional label (forces, stress, dipole, charges) that any of
        the structures ``indices`` carries."""
        return ("energy", *(k for k in OPTIONAL_LABELS if self.has[k][indices].any()))

    def label_counts(self, indices: Sequence[int], labels: Sequence[str]) -> dict[str, int]:
        return {k: int(self.has[k][indices].sum()) if k in self.has else len(indices)
                for k in labels}

    def elements(self, indices: Sequence[int]) -> list[str]:
        """Element symbols present in the structures ``indices``, by atomic number."""
        present = self.counts[indices].any(axis=0)
        return [chemical_symbols[int(z)] for z in self.numbers[present]]

    def check_elements(self, indices: Sequence[int], elements: Sequence[str]) -> None:
        """Raise naming the first structure with an element outside ``elements``."""
        known = {chemical_symbols.index(s) for s in elements}
        for column, z in enumerate(self.numbers):
            if int(z) not in known:
                hits = np.nonzero(self.counts[indices, column])[0]
                if len(hits):
                    check_elements(np.array([z]), elements, self.path, int(indices[hits[0]]))


def scan(file: StructureFile) -> Scan:
    """One pass over ``file``: atom counts, energies, labels present, element counts.

    Raises :class:`StructureError` naming the file and structure (and database row)
    for a structure without atoms, with NaN positions or without an energy.
    """
    n = len(file)
    n_atoms, energies = np.zeros(n, np.int64), np.zeros(n, np.float64)
    weights = np.ones(n, np.float64)
    has = {k: np.zeros(n, bool) for k in OPTIONAL_LABELS}
    columns: dict[int, int] = {}
    counts = np.zeros((n, 0), np.int32)
    for k, atoms in enumerate(file.iterate()):
        where = file.source.where(k)
        validate_atoms(atoms, source=where, overlap=False)
        energy = get_label(atoms, "energy")
        if energy is None:
            raise missing_energy(where, atoms, file.names["energy"])
        n_atoms[k], energies[k] = len(atoms), float(energy)
        weights[k] = _info_number(atoms, "weight", 1.0, where, None)
        for label, flags in has.items():
            flags[k] = get_label(atoms, label) is not None
        z, c = np.unique(atoms.numbers, return_counts=True)
        for zi in z:
            if int(zi) not in columns:
                columns[int(zi)] = len(columns)
                counts = np.concatenate([counts, np.zeros((n, 1), np.int32)], axis=1)
        counts[k, [columns[int(zi)] for zi in z]] = c
    order = sorted(columns)
    return Scan(file.path, n_atoms, energies, has, np.array(order, dtype=np.int64),
                counts[:, [columns[z] for z in order]], weights)


class CompositionGraphs(Sequence):
    """Graphs with only ``species`` and ``ref_energy``, made from a :class:`Scan`, for
    the E0 fit (:func:`~atomnet.training.statistics.resolve_e0s`) and for residuals
    (:func:`~atomnet.training.data.e0_sums`). Made when indexed; nothing is kept."""

    def __init__(self, scan: Scan, indices: Sequence[int], elements: Sequence[str]) -> None:
        self.scan, self.indices = scan, np.asarray(indices, dtype=np.int64)
        species = {chemical_symbols.index(s): k for k, s in enumerate(elements)}
        # -1: an element absent from ``indices`` (its count is 0 there); see check_elements
        self.species = torch.tensor([species.get(int(z), -1) for z in scan.numbers],
                                    dtype=torch.long)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        k = int(self.indices[i])
        counts = torch.as_tensor(self.scan.counts[k], dtype=torch.long)
        return {keys.SPECIES: self.species.repeat_interleave(counts),
                keys.ref("energy"): torch.tensor([self.scan.energies[k]], dtype=torch.float64)}


@dataclass(frozen=True)
class GraphRecipe:
    """What a worker needs to build a potential's graphs (no weights: cheap to copy)."""

    elements: tuple[str, ...]
    pair_lists: dict[float, float | None]

    @classmethod
    def of(cls, potential: torch.nn.Module) -> GraphRecipe:
        return cls(tuple(potential.elements), dict(potential.pair_lists))

    def graph(self, atoms: Atoms, **kwargs) -> dict[str, torch.Tensor]:
        """As :meth:`atomnet.Potential.graph`."""
        return atoms_to_graph(atoms, list(self.elements), pair_lists=self.pair_lists, **kwargs)


class GraphDataset(torch.utils.data.Dataset):
    """Item ``i``: the float64 CPU graph of structure ``indices[i]`` of ``file`` with
    exactly ``labels`` (masked where absent), as :func:`~.data.build_graphs` makes it."""

    def __init__(self, file: StructureFile, indices: Sequence[int], recipe: GraphRecipe,
                 labels: tuple[str, ...]) -> None:
        self.file, self.indices = file, np.asarray(indices, dtype=np.int64)
        self.recipe, self.labels = recipe, labels

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        k = int(self.indices[i])
        atoms = self.file.atoms(k)
        return build_graphs(self.recipe, [atoms], self.labels, self.file.path, [k])[0]


def collate_with_residuals(
    graphs: list[dict[str, torch.Tensor]], e0: torch.Tensor
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """(batch graph, residuals (B,) float64 eV = E_ref − Σ E0) of float64 CPU graphs,
    as NumPy arrays (see :func:`as_arrays`)."""
    energies = torch.cat([g[keys.ref("energy")].double() for g in graphs])
    return as_arrays(collate(graphs)), (energies - e0_sums(graphs, e0)).numpy()


def as_arrays(graph: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """The graph's tensors as NumPy arrays (no copy). A worker hands batches over this
    way: arrays are pickled into one message, whereas every tensor would go through
    its own shared-memory file and handshake (about 1 ms each)."""
    return {k: v.numpy() for k, v in graph.items()}


def as_tensors(graph: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Inverse of :func:`as_arrays` (no copy)."""
    return {k: torch.from_numpy(v) for k, v in graph.items()}


def _arrays_of_list(graphs: list[dict[str, torch.Tensor]]) -> list[dict[str, np.ndarray]]:
    return [as_arrays(g) for g in graphs]


class LazyGraphs(Sequence):
    """The graphs of a :class:`GraphDataset` as a sequence, built when indexed (for
    :meth:`atomnet.Potential.fit_statistics`, which passes over them several times).

    Graphs built are kept up to about ``cache_mib`` MiB (tensor bytes plus
    :data:`TENSOR_OVERHEAD` each), so that for small structures a statistics sample is
    built once; the rest are rebuilt on each pass. Iteration builds what is not kept
    in ``workers`` DataLoader processes.
    """

    def __init__(self, dataset: GraphDataset, workers: int = 0, chunk: int = 64,
                 cache_mib: float = 0.0) -> None:
        self.dataset, self.workers, self.chunk = dataset, workers, chunk
        self.cache_bytes, self._cache, self._cached = cache_mib * 2**20, {}, 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        i %= len(self)
        graph = self._cache.get(i)
        return self._keep(i, self.dataset[i]) if graph is None else graph

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        built = self._build([i for i in range(len(self)) if i not in self._cache])
        for i in range(len(self)):
            graph = self._cache.get(i)
            yield self._keep(i, next(built)) if graph is None else graph

    def _keep(self, i: int, graph: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        size = sum(v.nbytes + TENSOR_OVERHEAD for v in graph.values())
        if self._cached + size <= self.cache_bytes:
            self._cache[i] = graph
            self._cached += size
        return graph

    def _build(self, indices: list[int]) -> Iterator[dict[str, torch.Tensor]]:
        if self.workers == 0 or not indices:
            yield from (self.dataset[i] for i in indices)
            return
        loader = torch.utils.data.DataLoader(
            torch.utils.data.Subset(self.dataset, indices), batch_size=self.chunk,
            num_workers=self.workers, collate_fn=_arrays_of_list)
        for chunk in loader:
            yield from (as_tensors(g) for g in chunk)


class _Batches:
    """A batch sampler whose index lists are set before each pass (so that persistent
    workers serve every epoch's new order)."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class StreamingSet:
    """One data set read from its file as batches are needed (interface of
    :class:`~atomnet.training.data.GraphSet`: ``len``, :meth:`iterate`, ``labels``,
    ``name``, ``source``, ``n_atoms``, :meth:`label_counts`, ``frames``).

    Args:
        dataset: the set's structures and how their graphs are built.
        scan: the file's :class:`Scan` (atom counts and labels present).
        e0: (S,) float64 eV per species, for the residuals.
        device, dtype: where and how batches are yielded.
        workers: DataLoader worker processes (0: build graphs in this process); they
            persist across passes. One :meth:`iterate` at a time per set.
    """

    def __init__(self, name: str, dataset: GraphDataset, scan: Scan, e0: torch.Tensor,
                 device: torch.device, dtype: torch.dtype, workers: int = 0) -> None:
        self.name, self.source, self.labels = name, dataset.file.path, dataset.labels
        self.dataset, self.scan = dataset, scan
        self.device, self.dtype, self.workers = torch.device(device), dtype, workers
        self._batches = _Batches()
        self._loader = torch.utils.data.DataLoader(
            dataset, batch_sampler=self._batches, num_workers=workers,
            collate_fn=partial(collate_with_residuals, e0=e0.detach().to("cpu", torch.float64)),
            persistent_workers=workers > 0,
        )

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def n_atoms(self) -> int:
        return int(self.scan.n_atoms[self.dataset.indices].sum())

    def label_counts(self) -> dict[str, int]:
        """{label: number of structures carrying it} for each of ``labels``."""
        return self.scan.label_counts(self.dataset.indices, self.labels)

    def structure_table(self) -> StructureTable:
        """Per-structure weights, atom counts and label flags (for loss denominators)."""
        idx = self.dataset.indices
        return StructureTable.of(self.scan.weights[idx], self.scan.n_atoms[idx],
                                 {k: self.scan.has[k][idx] for k in self.labels if k in
                                  self.scan.has})

    @property
    def frames(self) -> Sequence[Atoms]:
        """The structures (read when indexed), labelled and in eV/Å."""
        return LazyFrames(self.dataset)

    def iterate(
        self, batches: list[list[int]]
    ) -> Iterator[tuple[dict[str, torch.Tensor], torch.Tensor]]:
        """Yield (batch graph on the training device, residual energies (B,) float64)
        for each list of structure positions in ``batches``, in order."""
        self._batches.batches = [list(b) for b in batches]
        for graph, residuals in self._loader:
            yield to_device(as_tensors(graph), self.device, self.dtype), \
                torch.from_numpy(residuals)


class LazyFrames(Sequence):
    """The Atoms of a :class:`GraphDataset`, read when indexed."""

    def __init__(self, dataset: GraphDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return self.dataset.file.atoms(int(self.dataset.indices[i]))


def statistics_sample(n: int, seed: int, limit: int | None = None) -> np.ndarray:
    """Positions ``0..n-1`` of the training structures statistics are computed from:
    all of them when ``n <= limit``, else ``limit`` of them (seeded), ascending.
    ``limit``: default :data:`STATISTICS_STRUCTURES`."""
    limit = STATISTICS_STRUCTURES if limit is None else limit
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))
