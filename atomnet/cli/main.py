"""``atomnet`` entry point: parse arguments, run a subcommand, report user errors plainly.

User errors (:class:`~atomnet.errors.AtomnetError`: bad config, structure
file, model file, checkpoint or option) print ``atomnet: error: …`` and exit
with status 2, without a traceback (``--debug`` shows it). A diverging training
run (:class:`~atomnet.training.TrainingError`) exits with status 1. Any other
exception is a bug in atomnet and propagates with its traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ..errors import AtomnetError
from ..training import TrainingError
from ..version import __version__
from . import evaluate, export, lammps, md, train, vib

COMMANDS = (train, evaluate, md, vib, export, lammps)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="atomnet", description="Machine-learned interatomic potentials (units: eV, Å, fs)."
    )
    parser.add_argument("--version", action="version", version=f"atomnet {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def _error(message: str, status: int) -> int:
    print(f"atomnet: error: {message}", file=sys.stderr)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``atomnet`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except TrainingError as exc:
        if args.debug:
            raise
        return _error(str(exc), 1)
    except AtomnetError as exc:
        if args.debug:
            raise
        return _error(str(exc), 2)
    except KeyboardInterrupt:
        hint = " (run the same command again to resume from the last checkpoint)" \
            if args.command == "train" else ""
        return _error("interrupted" + hint, 130)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
