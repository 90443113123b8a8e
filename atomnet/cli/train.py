"""``atomnet train CONFIG.yaml``: train a potential (resumes from OUTDIR's checkpoint)."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser(
        "train", help="train a potential from a YAML config",
        description="Train a potential. If OUTDIR/checkpoint.atomnet exists (an earlier run "
                    "of the same config), training resumes from it.",
    )
    p.add_argument("config", help="YAML file with data:, model:, training:, output: sections")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..training import train

    train(args.config)
    return 0
