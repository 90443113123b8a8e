"""Peak memory of one training epoch: graphs streamed from an ASE database vs cached.

Writes synthetic ASE databases (rattled methanol, water, methane: 6, 3, 5 atoms, with
fixed random labels: energy and forces; what they are does not matter here, only
how much of them is held) of 5k, 20k and 50k structures, then for each case runs,
in a fresh process, ``prepare`` and one epoch (training pass + validation) of a
tiny BP model, float32, batch 32, 5 % validation:

* streaming (``data.streaming: true``), ``data.workers`` DataLoader workers;
* in memory (the graph cache), at 5k and 20k.

Memory: the peak resident set of the training process (``ru_maxrss``) and the
peak, sampled every 0.2 s, of the proportional set size (PSS: shared pages split
between the processes that map them) summed over the process and its workers.

    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE python benchmarks/streaming_memory.py \\
        [--folder /tmp/atomnet_streaming] [--sizes 5000 20000 50000] [--memory-sizes 5000 20000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import ase.db
import numpy as np
import psutil
import yaml
from ase.build import molecule
from ase.calculators.singlepoint import SinglePointCalculator

MODEL = {"type": "bpnn", "cutoff": 4.0, "hidden": [16, 16]}


def write_database(path: Path, n: int, seed: int = 0) -> None:
    """``n`` rattled methanol/water structures with fixed random labels."""
    if path.exists():
        with ase.db.connect(path) as db:
            if db.count() == n:
                return
        path.unlink()
    rng = np.random.default_rng(seed)
    templates = [molecule("CH3OH"), molecule("H2O"), molecule("CH4")]
    e_atom = {1: -13.6, 6: -1030.0, 8: -2040.0}
    with ase.db.connect(path) as db:
        for k in range(n):
            atoms = templates[k % 3].copy()
            atoms.positions += rng.normal(0.0, 0.05, atoms.positions.shape)
            energy = sum(e_atom[int(z)] for z in atoms.numbers) + rng.normal(0.0, 0.1)
            forces = rng.normal(0.0, 0.5, (len(atoms), 3))
            atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces)
            db.write(atoms)


class PeakSampler(threading.Thread):
    """Peak PSS (bytes) of this process plus its children, sampled every ``period`` s."""

    def __init__(self, period: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.period, self.peak, self.done = period, 0, threading.Event()
        self.process = psutil.Process()

    def sample(self) -> None:
        total = 0
        for p in [self.process, *self.process.children(recursive=True)]:
            try:
                total += p.memory_full_info().pss
            except psutil.Error:
                pass
        self.peak = max(self.peak, total)

    def run(self) -> None:
        while not self.done.wait(self.period):
            self.sample()


def measure(db: Path, streaming: bool, workers: int, folder: Path) -> dict:
    """Prepare and one epoch in this process; returns memory (MiB) and times (s)."""
    from tqdm import tqdm

    from atomnet.training import load_config
    from atomnet.training.trainer import setup, train_epoch, validate

    sampler = PeakSampler()
    sampler.start()
    config = {
        "data": {"train": str(db), "valid_fraction": 0.05, "test_fraction": 0.0,
                 "e0s": "fit", "streaming": streaming, "workers": workers},
        "model": MODEL,
        "training": {"epochs": 1, "batch_size": 32, "valid_batch_size": 64, "seed": 0},
        "output": {"dir": str(folder / "out"), "progress": False},
    }
    path = folder / f"config_{os.getpid()}.yaml"
    path.write_text(yaml.safe_dump(config))
    start = time.perf_counter()
    run = setup(load_config(path))
    prepared_s = time.perf_counter() - start
    with tqdm(disable=True) as bar:
        train_epoch(run, 1, bar)
    validate(run)
    epoch_s = time.perf_counter() - start - prepared_s
    sampler.sample()
    sampler.done.set()
    return {"prepare_s": prepared_s, "epoch_s": epoch_s,
            "main_peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "total_peak_pss_mib": sampler.peak / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=Path("/tmp/atomnet_streaming"))
    parser.add_argument("--sizes", type=int, nargs="+", default=[5000, 20000, 50000])
    parser.add_argument("--memory-sizes", type=int, nargs="*", default=[5000, 20000])
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--measure", nargs=3, metavar=("DB", "STREAMING", "WORKERS"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.folder.mkdir(parents=True, exist_ok=True)
    if args.measure:
        db, streaming, workers = args.measure
        print(json.dumps(measure(Path(db), streaming == "1", int(workers), args.folder)))
        return
    rows = []
    cases = [(n, True) for n in args.sizes] + [(n, False) for n in args.memory_sizes]
    for n, streaming in cases:
        db = args.folder / f"synthetic_{n}.db"
        tick = time.perf_counter()
        write_database(db, n)
        written = time.perf_counter() - tick
        workers = args.workers if streaming else 0
        out = subprocess.run(
            [sys.executable, __file__, "--folder", str(args.folder), "--measure", str(db),
             "1" if streaming else "0", str(workers)],
            check=True, capture_output=True, text=True,
        ).stdout.strip().splitlines()[-1]
        row = {"structures": n, "path": "streaming" if streaming else "in memory",
               "workers": workers, "db_mib": db.stat().st_size / 2**20,
               "write_s": written, **json.loads(out)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    print("\n| structures | path | workers | peak RSS, training process (MiB) "
          "| peak PSS, process + workers (MiB) | prepare (s) | epoch (s) |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['structures']:,} | {r['path']} | {r['workers']} "
              f"| {r['main_peak_rss_mib']:.0f} | {r['total_peak_pss_mib']:.0f} "
              f"| {r['prepare_s']:.1f} | {r['epoch_s']:.1f} |")


if __name__ == "__main__":
    main()
