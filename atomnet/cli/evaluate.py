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
from ..training.data import build_graphs, labels_present, make_set, outputs_of, predictable
from ..training.evaluation import evaluate_set
from ..training.metrics import format_table
from ..training.prepare import resolve_device


def add_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="errors of a model on a labelled data file",
                       description="Energy (per structure and per atom), force and stress "
                       "errors in meV units; dipole (me·Å) and charge (me) errors for a model "
                       "with charges.")
    p.add_argument("model", help="a .atomnet model file")
    p.add_argument("data", help="structures with energy (and forces, stress, dipole, "
                   "charges) labels, e.g. test.xyz")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, auto (default cpu)")
    p.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--json", metavar="PATH", help="also write the metrics to this JSON file")
    p.set_defaults(run=run)


def evaluate_file(potential, path: Path, device, dtype, batch_size: int) -> dict[str, float]:
    """Metrics (milli-units, see :mod:`atomnet.training.metrics`) of ``potential`` on ``path``.

    Labels are per structure: force, stress, dipole and charge errors count the
    structures that carry them (stress only on 3-D periodic cells; dipoles and charges
    only for a model with charges, else a note says they are ignored); structures
    without an energy are skipped.
    """
    frames = read_structures(path)
    idx = [k for k, atoms in enumerate(frames) if get_label(atoms, "energy") is not None]
    if not idx:
        raise StructureError(f"{path}: no structure carries an energy label")
    if len(idx) < len(frames):
        print(f"note: {len(frames) - len(idx)} structure(s) without an energy label skipped")
    chosen = [frames[i] for i in idx]
    labels, ignored = predictable(labels_present(chosen), outputs_of(potential))
    for label in ignored:
        print(f"note: {label} labels ignored: the model predicts no charges")
    e0 = potential.reference.e0.detach().double().cpu().clone()
    potential.to(device=device, dtype=dtype).eval()
    graphs = build_graphs(potential, chosen, labels, str(path), idx)
    data = make_set(path.name, str(path), chosen, graphs, labels, e0, device, dtype)
    metrics, _ = evaluate_set(potential, data, batch_size)
    return metrics


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
