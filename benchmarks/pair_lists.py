"""One pair list per cutoff: what a 30 Å term (D3-like) costs the 5 Å network.

Builds the 192-atom water box of issue 5 (64 molecules, ≈1 g/cm³), and an
untrained BP potential (5 Å) with and without a smooth 30 Å pair term. Prints
the size of each pair list and median times (alternating rounds) of graph
building and of one energy+forces evaluation, float32.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/pair_lists.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from ase import Atoms
from ase.build import molecule

import atomnet
from atomnet import keys
from atomnet.derivatives import evaluate
from atomnet.descriptors import polynomial_cutoff
from atomnet.structures import to_device
from atomnet.terms import Term, register


@register("bench_long_pair")
class LongPair(Term):
    """A smooth −C/r⁶-like pair energy with a 30 Å reach (stand-in for D3)."""

    def __init__(self, elements, cutoff: float = 30.0):
        super().__init__()
        self.pair_cutoff = float(cutoff)
        self.fields = keys.pairs(self.pair_cutoff)
        self.reads = (self.fields.index, self.fields.lengths)

    def recipe(self):
        return {"cutoff": self.pair_cutoff}

    def forward(self, graph):
        i, _ = graph[self.fields.index]
        r = graph[self.fields.lengths]
        pair = -0.5 / (r**6 + 30.0) * polynomial_cutoff(r, self.pair_cutoff)
        return pair.new_zeros(graph[keys.SPECIES].shape[0]).index_add(0, i, pair)


def water_box(n: int = 4, spacing: float = 3.1) -> Atoms:
    rng = np.random.default_rng(0)
    box = Atoms(cell=np.eye(3) * n * spacing, pbc=True)
    for x in range(n):
        for y in range(n):
            for z in range(n):
                m = molecule("H2O")
                m.rotate(rng.uniform(0, 360), rng.normal(size=3))
                m.translate((np.array([x, y, z]) + 0.5) * spacing)
                box += m
    return box


def timed(fn, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    atoms = water_box()
    bp = atomnet.build({"type": "bpnn"}, ["H", "O"], cutoff=5.0)
    both = atomnet.Potential({**bp.terms, "dispersion": LongPair(bp.elements)}, bp.elements)
    graph = both.graph(atoms)
    for cutoff in both.pair_lists:
        print(f"{cutoff:5.1f} Å list: {graph[keys.pairs(cutoff).index].shape[1]:>9,d} pairs")
    rows = {"graph": {}, "energy+forces": {}}
    bp32 = bp.float()
    for _ in range(args.rounds):  # alternate the two potentials within each round
        for name, pot in (("BP 5 Å only", bp), ("BP 5 Å + 30 Å term", both)):
            model = pot.float()
            rows["graph"].setdefault(name, []).append(timed(lambda p=pot: p.graph(atoms), 1))
            g = to_device(pot.graph(atoms), "cpu", torch.float32)
            rows["energy+forces"].setdefault(name, []).append(
                timed(lambda m=model, g=g: evaluate(m, g), 1))
            short = {k: v for k, v in g.items() if "@30.0" not in k}
            rows["energy+forces"].setdefault(f"{name}: BP term alone", []).append(
                timed(lambda m=bp32, g=short: evaluate(m, g), 1))
    print(f"{len(atoms)} atoms, {torch.get_num_threads()} threads, median of {args.rounds}")
    for what, by_name in rows.items():
        for name, times in by_name.items():
            print(f"  {what:14s} {name:32s} {np.median(times):9.1f} ms")


if __name__ == "__main__":
    main()
