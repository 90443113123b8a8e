"""Everything before the first step: seeds, datasets and their split, the model, E0s, statistics.

Order matters and is spelled out in :func:`prepare`: frames are read, the
elements found, the potential built (seeded), graphs made once (float64, CPU),
E0s resolved and set, normalisation statistics computed on the training
graphs, and finally the graphs moved to the training device and dtype.

With ``data.streaming`` (:func:`_prepare_streaming`) the same steps run without
a graph cache: one scan of each file gives the split, elements, labels and the
E0 fit; statistics come from training graphs built on demand (at most
:data:`~atomnet.training.streaming.STATISTICS_STRUCTURES` of them); the data
sets read and build their graphs batch by batch (:mod:`.streaming`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from ase import Atoms

from .. import keys
from ..build import build
from ..dtypes import resolve_dtype
from ..errors import AtomnetError
from .config import Config, ConfigError
from .data import (
    GraphSet,
    build_graphs,
    e0_sums,
    elements_of,
    labels_present,
    make_set,
    outputs_of,
    predictable,
    read_frames,
    split_indices,
)
from .statistics import resolve_e0s
from .streaming import (
    STATISTICS_CACHE_MIB,
    CompositionGraphs,
    GraphDataset,
    GraphRecipe,
    LazyGraphs,
    Scan,
    StreamingSet,
    StructureFile,
    scan,
    statistics_sample,
)


@dataclass
class Datasets:
    """Train, validation and test sets (the latter two optional)."""

    train: GraphSet | StreamingSet
    valid: GraphSet | StreamingSet | None
    test: GraphSet | StreamingSet | None


@dataclass
class Prepared:
    """The result of :func:`prepare`: a potential with E0s and statistics set, and data."""

    potential: torch.nn.Module
    data: Datasets
    e0s: dict[str, float]
    e0_source: str
    statistics: dict[str, float]
    split: dict[str, list[int]]
    #: labels the training data carry that the potential cannot be fitted to (dipoles or
    #: charges without a charges stage), left out of every set
    ignored: tuple[str, ...] = ()


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda``, ``cuda:1``… or ``auto`` (CUDA when available)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"training.device is {name!r} but CUDA is not available")
    return device


def split_seed(config: Config) -> int:
    """Seed of the train/valid/test split: ``training.split_seed``, else ``training.seed``."""
    t = config.training
    return t.seed if t.split_seed is None else t.split_seed


def _names(config: Config) -> dict[str, str]:
    d = config.data
    return {"energy": d.energy_key, "forces": d.forces_key, "stress": d.stress_key}


def read_splits(config: Config) -> tuple[dict[str, list[Atoms]], dict[str, list[int]], dict]:
    """Frames by split name, the train-file indices of each split, and their sources."""
    d, names = config.data, _names(config)
    units = d.units()
    frames = read_frames(d.train, names, units)
    valid_fraction = 0.0 if d.valid is not None else d.valid_fraction
    test_fraction = 0.0 if d.test is not None else d.test_fraction
    train_idx, valid_idx, test_idx = split_indices(
        len(frames), valid_fraction, test_fraction, split_seed(config)
    )
    split = {"train": train_idx, "valid": valid_idx, "test": test_idx}
    out = {name: [frames[i] for i in idx] for name, idx in split.items()}
    sources = {name: str(d.train) for name in split}
    for name, path in (("valid", d.valid), ("test", d.test)):
        if path is not None:
            out[name] = read_frames(path, names, units)
            split[name] = list(range(len(out[name])))
            sources[name] = str(path)
    return out, split, sources


def build_potential(config: Config, elements: list[str]) -> torch.nn.Module:
    """The untrained potential from the ``model:`` section (``cutoff``/``elements`` popped)."""
    model = dict(config.model)
    cutoff = model.pop("cutoff", 5.0)
    elements = list(model.pop("elements", elements))
    try:
        return build(model, elements, float(cutoff))
    except AtomnetError as exc:
        raise ConfigError(f"{config.source or '<config>'}: model: {exc}") from exc


def prepare(config: Config) -> Prepared:
    """Seeded model and datasets for ``config`` (see the module docstring): graphs
    cached in memory, or streamed from the files when ``data.streaming``."""
    seed_everything(config.training.seed)
    if config.data.streaming:
        return _prepare_streaming(config)
    frames, split, sources = read_splits(config)
    if not frames["train"]:
        raise ConfigError(f"{config.data.train}: no training structures left after the split")
    potential = build_potential(config, elements_of(frames["train"]))
    fitted, ignored = predictable(labels_present(frames["train"]), outputs_of(potential))
    # labels are per structure (masked where absent); a set without any structure
    # carrying a label (e.g. a valid file without forces) leaves it out altogether
    labels = {name: tuple(k for k in fitted if k in labels_present(f))
              for name, f in frames.items() if f}
    graphs = {
        name: build_graphs(potential, frames[name], labels[name], sources[name],
                           split[name] if sources[name] == str(config.data.train) else None)
        for name in labels
    }
    e0s, e0_source = resolve_e0s(
        config.data.e0s, config.data.isolated_atoms, graphs["train"], potential.elements,
        config.data.units().energy,
    )
    potential.reference.set(e0s)
    e0 = potential.reference.e0
    energies = torch.cat([g[keys.ref("energy")] for g in graphs["train"]])
    # in float64, as the graphs are: stages (e.g. learned charges) run on them meanwhile
    potential.double()
    stats = potential.fit_statistics(graphs["train"], energies - e0_sums(graphs["train"], e0))
    device, dtype = resolve_device(config.training.device), resolve_dtype(config.training.dtype)
    sets = {
        name: make_set(name, sources[name], frames[name], g, labels[name], e0, device, dtype)
        for name, g in graphs.items()
    }
    potential.to(device=device, dtype=dtype)
    data = Datasets(sets["train"], sets.get("valid"), sets.get("test"))
    return Prepared(potential, data, e0s, e0_source, stats, split, ignored)


def scan_splits(config: Config) -> tuple[dict[str, tuple[StructureFile, Scan]], dict]:
    """Streaming counterpart of :func:`read_splits`: each split's (file, scan) and the
    indices of its structures in that file (the same split as the in-memory path)."""
    d, names = config.data, _names(config)
    train = StructureFile(d.train, names, d.units())
    scanned = {"train": (train, scan(train))}
    valid_fraction = 0.0 if d.valid is not None else d.valid_fraction
    test_fraction = 0.0 if d.test is not None else d.test_fraction
    train_idx, valid_idx, test_idx = split_indices(
        len(train), valid_fraction, test_fraction, split_seed(config)
    )
    split = {"train": train_idx, "valid": valid_idx, "test": test_idx}
    files = {name: scanned["train"] for name in split}
    for name, path in (("valid", d.valid), ("test", d.test)):
        if path is not None:
            file = StructureFile(path, names, d.units())
            files[name] = (file, scan(file))
            split[name] = list(range(len(file)))
    return files, split


def _prepare_streaming(config: Config) -> Prepared:
    """:func:`prepare` without a graph cache: E0s from a scan of the files, statistics
    from at most :data:`~.streaming.STATISTICS_STRUCTURES` training structures built
    on demand, and :class:`~.streaming.StreamingSet` data sets."""
    files, split = scan_splits(config)
    train_file, train_scan = files["train"]
    if not split["train"]:
        raise ConfigError(f"{config.data.train}: no training structures left after the split")
    potential = build_potential(config, train_scan.elements(split["train"]))
    if getattr(potential, "label_names", None):
        raise ConfigError(
            f"data.streaming does not yet subtract terms from the labels (the model's "
            f"{sorted(potential.label_names)}, e.g. physics.dispersion with mode: subtract): "
            f"train without data.streaming, or subtract them from the data file beforehand "
            f"and use mode: add")
    fitted, ignored = predictable(train_scan.labels(split["train"]), outputs_of(potential))
    labels = {name: tuple(k for k in fitted if k in files[name][1].labels(idx))
              for name, idx in split.items() if idx}
    for name in labels:
        files[name][1].check_elements(split[name], potential.elements)
    compositions = CompositionGraphs(train_scan, split["train"], potential.elements)
    e0s, e0_source = resolve_e0s(
        config.data.e0s, config.data.isolated_atoms, compositions, potential.elements,
        config.data.units().energy,
    )
    potential.reference.set(e0s)
    e0 = potential.reference.e0.detach().cpu().double()
    recipe, workers = GraphRecipe.of(potential), config.data.workers
    datasets = {name: GraphDataset(files[name][0], split[name], recipe, labels[name])
                for name in labels}
    sample = statistics_sample(len(split["train"]), split_seed(config))
    chosen = [split["train"][i] for i in sample]
    graphs = LazyGraphs(GraphDataset(train_file, chosen, recipe, labels["train"]), workers,
                        cache_mib=STATISTICS_CACHE_MIB)
    for _ in graphs:  # one pass in the workers fills the cache the statistics then read
        pass
    composition = CompositionGraphs(train_scan, chosen, potential.elements)
    residuals = torch.from_numpy(train_scan.energies[chosen]) - e0_sums(composition, e0)
    potential.double()  # as the graphs are (see prepare)
    stats = potential.fit_statistics(graphs, residuals)
    device, dtype = resolve_device(config.training.device), resolve_dtype(config.training.dtype)
    sets = {name: StreamingSet(name, ds, files[name][1], e0, device, dtype, workers)
            for name, ds in datasets.items()}
    potential.to(device=device, dtype=dtype)
    data = Datasets(sets["train"], sets.get("valid"), sets.get("test"))
    return Prepared(potential, data, e0s, e0_source, stats, split, ignored)


def write_split(prepared: Prepared, outdir: Path, train_file: Path) -> None:
    """Write the held-out test frames taken from the training file to ``outdir/test.xyz``."""
    import ase.io

    test = prepared.data.test
    if test is not None and test.source == str(train_file):
        ase.io.write(outdir / "test.xyz", test.frames, format="extxyz")
