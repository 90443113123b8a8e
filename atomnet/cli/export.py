"""``atomnet export MODEL OUT.pt``: TorchScript module for LAMMPS's ``pair_style atomnet``."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import UsageError


def add_parser(sub) -> None:
    p = sub.add_parser(
        "export", help="write a TorchScript module for LAMMPS (pair_style atomnet)",
        description="Export a model for LAMMPS: a TorchScript module mapping positions, "
                    "species and the pair list to per-atom energies (eV). See docs/lammps.md.",
    )
    p.add_argument("model", help="a .atomnet model file")
    p.add_argument("out", help="output file, e.g. model.pt")
    p.add_argument("--dtype", default="float64", choices=["float32", "float64"],
                   help="precision inside LAMMPS (default float64)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..io import load
    from ..lammps.export import export

    out = Path(args.out)
    if out.is_dir():
        raise UsageError(f"{out}: is a folder; give the output file name, e.g. {out}/model.pt")
    if not out.parent.exists():
        raise UsageError(f"{out.parent}: folder does not exist")
    potential = load(args.model)
    path = export(potential, out, args.dtype)
    print(f"elements {potential.elements}, cutoff {potential.cutoff} Å, {args.dtype}")
    print(path)
    return 0
