"""Datasets for training: read once, split (seeded), graphs cached in memory, batched by index.

A :class:`GraphSet` holds each structure's graph (on the training device and
dtype) and its *residual* reference energy E_ref − Σ E0 in float64, so that
energy errors stay exact even when the model runs in float32 (a total energy
of −4000 eV has a float32 resolution of about 0.5 meV).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.data import atomic_numbers

from .. import keys
from ..structures import StructureError, collate, get_label, read_structures, to_device

#: labels the trainer can fit, in loss order
FIT_LABELS = ("energy", "forces", "stress")


@dataclass
class GraphSet:
    """Graphs of one dataset, ready for batching.

    Attributes:
        name: e.g. ``"train"``; source: the file the frames came from.
        graphs: graph dicts (device, dtype) with labels ``ref_*`` for ``labels``.
        residuals: (n,) float64 eV, reference energy minus the sum of E0s.
        labels: the labels every structure carries, e.g. ``("energy", "forces")``.
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


def relabel(frames: Sequence[Atoms], names: dict[str, str]) -> list[Atoms]:
    """Frames whose labels are read from non-standard names, e.g. ``{"energy": "REF_E"}``.

    Returns copies carrying the labels in a single-point calculator; the input is
    not modified. Frames without a given label simply lack it.
    """
    if all(k == v for k, v in names.items()):
        return list(frames)
    out = []
    for atoms in frames:
        results = {}
        for key, name in names.items():
            value = get_label(atoms, name)
            if value is not None:
                results[key] = value
        copy = atoms.copy()
        copy.calc = SinglePointCalculator(copy, **results)
        out.append(copy)
    return out


def read_frames(path: Path, names: dict[str, str]) -> list[Atoms]:
    """All frames of ``path`` with labels renamed (see :func:`relabel`); energy required."""
    frames = relabel(read_structures(path), names)
    for k, atoms in enumerate(frames):
        if get_label(atoms, "energy") is None:
            raise StructureError(
                f"{path}, frame {k}: missing energy label '{names['energy']}' "
                f"(info keys {sorted(atoms.info)}; set data.energy_key if it has another name)"
            )
    return frames


def labels_present(frames: Sequence[Atoms]) -> tuple[str, ...]:
    """Labels to fit: energy, plus forces/stress when *any* frame carries them.

    A label carried by only some frames is then required of all, so that the
    graph builder names the first frame that lacks it.
    """
    out = ["energy"]
    for key in ("forces", "stress"):
        if any(get_label(a, key) is not None for a in frames):
            out.append(key)
    return tuple(out)


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
        raise ValueError(
            f"dataset of {n} structures is too small for valid_fraction={valid_fraction} "
            f"and test_fraction={test_fraction}"
        )
    test, valid, train = order[:n_test], order[n_test:n_test + n_valid], order[n_test + n_valid:]
    return sorted(train), sorted(valid), sorted(test)


def build_graphs(
    potential, frames: Sequence[Atoms], labels: Sequence[str], source: str, indices=None
) -> list[dict[str, torch.Tensor]]:
    """Float64 CPU graphs of ``frames`` carrying exactly the ``labels`` (others dropped)."""
    keep = {keys.ref(k) for k in labels}
    drop = {keys.ref(k) for k in ("energy", "forces", "stress", "dipole")} - keep
    graphs = []
    for k, atoms in enumerate(frames):
        index = indices[k] if indices is not None else k
        g = potential.graph(atoms, require=tuple(labels), source=source, index=index)
        graphs.append({key: v for key, v in g.items() if key not in drop})
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
    for idx in batches:
        yield collate([data.graphs[i] for i in idx]), data.residuals[idx]
