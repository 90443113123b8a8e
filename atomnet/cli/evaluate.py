"""``atomnet evaluate MODEL DATA``: error metrics of a model on labelled structures."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from ..dtypes import resolve_dtype
from ..errors import UsageError
from ..io import load
from ..structures import StructureError, get_label, read_structures
from ..training.data import build_graphs, make_set
from ..training.evaluation import evaluate_set
from ..training.metrics import ErrorAccumulator, format_table
from ..training.prepare import resolve_device


def add_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="errors of a model on a labelled data file",
                       description="Energy (per structure and per atom) and force errors, meV.")
    p.add_argument("model", help="a .atomnet model file")
    p.add_argument("data", help="structures with energy (and forces) labels, e.g. test.xyz")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, auto (default cpu)")
    p.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--json", metavar="PATH", help="also write the metrics to this JSON file")
    p.set_defaults(run=run)


def _label_set(atoms) -> tuple[str, ...]:
    labels = ["energy"]
    if get_label(atoms, "forces") is not None:
        labels.append("forces")
    if atoms.pbc.all() and get_label(atoms, "stress") is not None:
        labels.append("stress")
    return tuple(labels)


def group_by_labels(frames) -> tuple[dict[tuple[str, ...], list[int]], int]:
    """Frame indices grouped by the labels they carry; frames without energy are skipped."""
    groups: dict[tuple[str, ...], list[int]] = {}
    skipped = 0
    for k, atoms in enumerate(frames):
        if get_label(atoms, "energy") is None:
            skipped += 1
            continue
        groups.setdefault(_label_set(atoms), []).append(k)
    return groups, skipped


def evaluate_file(potential, path: Path, device, dtype, batch_size: int) -> dict[str, float]:
    """Metrics (meV units, see :mod:`atomnet.training.metrics`) of ``potential`` on ``path``."""
    frames = read_structures(path)
    groups, skipped = group_by_labels(frames)
    if not groups:
        raise StructureError(f"{path}: no structure carries an energy label")
    if skipped:
        print(f"note: {skipped} structure(s) without an energy label skipped")
    e0 = potential.reference.e0.detach().double().cpu().clone()
    potential.to(device=device, dtype=dtype).eval()
    acc = ErrorAccumulator()
    for labels, idx in groups.items():
        chosen = [frames[i] for i in idx]
        graphs = build_graphs(potential, chosen, labels, str(path), idx)
        data = make_set(path.name, str(path), chosen, graphs, labels, e0, device, dtype)
        evaluate_set(potential, data, batch_size, accumulator=acc)
    return acc.compute()


def _device(name: str) -> torch.device:
    """``--device`` as a torch device; a malformed name or absent CUDA is a usage error."""
    if name != "auto":
        try:
            device = torch.device(name)
        except RuntimeError as exc:
            raise UsageError(f"--device {name!r} is not a torch device ({exc})") from exc
        if device.type == "cuda" and not torch.cuda.is_available():
            raise UsageError(f"--device {name!r} requested but CUDA is not available")
    return resolve_device(name)


def run(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        raise UsageError("--batch-size must be >= 1")
    device = _device(args.device)
    dtype = resolve_dtype(args.dtype)
    potential = load(args.model)
    path = Path(args.data)
    metrics = evaluate_file(potential, path, device, dtype, args.batch_size)
    print(format_table({path.name: metrics}))
    if args.json:
        Path(args.json).write_text(json.dumps(metrics, indent=2))
    return 0
