"""What DFT-D3(BJ) costs on atomnet's pair list, against simple-dftd3, and what cutoffs buy.

Periodic water boxes (n³ molecules on a 3.1 Å grid, ≈1 g/cm³, randomly oriented:
192 and 1,536 atoms). A :class:`~atomnet.Potential` holding only the ``d3bj`` term
(PBE, two-body, s-dftd3's default cutoffs 60/40 Bohr) gives energy, forces and
stress through :func:`atomnet.derivatives.evaluate`; simple-dftd3 (``dftd3``
package, Fortran) gives the same through ``DispersionModel.get_dispersion(param,
grad=True)``. Rounds alternate between the three timings (atomnet with and without
building the graph, simple-dftd3); medians are printed (at most 3 rounds for 1,536
atoms), with where atomnet's time goes: the graph (pair list search and assembly),
the edge vectors (``Potential.prepare``), the term (its forward pass computes the
energies and the analytic gradient of their sum) and the backward pass (which
scales that gradient). Then the graph of a 5 Å network beside D3 against the two
alone (each cutoff gets its own search), and an error-vs-cost table on the 192-atom
box: two-body cutoff × CN cutoff, energy error per atom against the default
cutoffs, and time.

    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE python benchmarks/d3_cost.py [--quick]
"""

from __future__ import annotations

import argparse
import gc
import os
import time

import numpy as np
import torch
from ase import Atoms
from water_grid import water_grid  # benchmarks/water_grid.py (the script's folder is on sys.path)

import atomnet
from atomnet import keys
from atomnet.derivatives import evaluate
from atomnet.physics.dispersion import D3BJ
from atomnet.structures import collate
from atomnet.units import BOHR, HARTREE

ELEMENTS = ["H", "O"]


def water_box(n: int, spacing: float = 3.1, seed: int = 0) -> Atoms:
    """n³ randomly oriented water molecules (≈1 g/cm³), periodic."""
    return water_grid(n, spacing, seed)


def potential(cutoff: float = 60 * BOHR, cn_cutoff: float = 40 * BOHR,
              dtype=torch.float64) -> atomnet.Potential:
    term = D3BJ(ELEMENTS, functional="pbe", three_body=False, cutoff=cutoff,
                cn_cutoff=cn_cutoff)
    return atomnet.Potential({"d3": term}, ELEMENTS).to(dtype)


def graph_of(pot: atomnet.Potential, atoms: Atoms, dtype=torch.float64) -> dict:
    g = collate([pot.graph(atoms)])
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in g.items()}


def oracle(atoms: Atoms) -> dict:
    from dftd3.interface import DispersionModel, RationalDampingParam

    model = DispersionModel(atoms.numbers, atoms.positions / BOHR,
                            lattice=atoms.cell.array / BOHR, periodic=atoms.pbc)
    return model.get_dispersion(RationalDampingParam(method="pbe", atm=False), grad=True)


def breakdown(pot: atomnet.Potential, graph: dict) -> dict[str, float]:
    """Seconds of one energy+forces+stress evaluation, by phase (as evaluate does it)."""
    from atomnet.derivatives.core import _strain

    g = dict(graph)
    t0 = time.perf_counter()
    positions = g[keys.POSITIONS].detach().requires_grad_(True)
    g[keys.POSITIONS] = positions
    displacement = _strain(g, 1)
    g = pot.prepare(g)  # edge vectors and lengths from positions and cell
    t1 = time.perf_counter()
    energy = pot.terms["d3"](g).sum()
    t2 = time.perf_counter()
    torch.autograd.grad(energy, [positions, displacement])
    t3 = time.perf_counter()
    return {"edge vectors": t1 - t0, "term": t2 - t1, "backward": t3 - t2}


def graph_costs(n: int, rounds: int) -> dict[str, tuple[float, int]]:
    """Seconds to build the graph (median) and the 5 Å list's pairs, for a 5 Å BP network,
    D3 alone and both in one potential."""
    atoms = water_box(n)
    d3 = potential()
    with torch.random.fork_rng():
        torch.manual_seed(0)
        bp = atomnet.build({"type": "bpnn", "hidden": [16]}, ELEMENTS, cutoff=5.0).double()
    both = atomnet.Potential({**dict(bp.terms), "d3": d3.terms["d3"]}, ELEMENTS)
    out = {}
    for name, pot in (("5 Å network", bp), ("D3", d3), ("both", both)):
        times = []
        for _ in range(rounds):
            gc.collect()
            t0 = time.perf_counter()
            g = pot.graph(atoms)
            times.append(time.perf_counter() - t0)
        short = keys.pairs(5.0).index
        out[name] = (median(times), g[short].shape[1] if short in g else 0)
        del g
    return out


def median(xs) -> float:
    return float(np.median(xs))


def cost(n: int, rounds: int) -> dict:
    atoms = water_box(n)
    pot = potential()
    graph = graph_of(pot, atoms)
    n_edges = graph[pot.terms["d3"].fields.index].shape[1]
    # check once that both agree
    res = evaluate(pot, graph, forces=True, stress=True)
    ref = oracle(atoms)
    de = abs(float(res.energy.detach()[0]) - float(ref["energy"]) * HARTREE)
    df = np.abs(res.forces.detach().numpy() + ref["gradient"] * HARTREE / BOHR).max()
    del res
    times = {"with graph": [], "without graph": [], "graph": [], "s-dftd3": []}
    phases: dict[str, list[float]] = {}
    for _ in range(rounds):
        gc.collect()
        t0 = time.perf_counter()
        g = graph_of(pot, atoms)
        t1 = time.perf_counter()
        evaluate(pot, g, forces=True, stress=True)
        t2 = time.perf_counter()
        times["graph"].append(t1 - t0)
        times["with graph"].append(t2 - t0)
        del g
        gc.collect()
        t0 = time.perf_counter()
        evaluate(pot, graph, forces=True, stress=True)
        times["without graph"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        oracle(atoms)
        times["s-dftd3"].append(time.perf_counter() - t0)
        for k, v in breakdown(pot, graph).items():
            phases.setdefault(k, []).append(v)
    return {"atoms": len(atoms), "pairs": n_edges, "dE": de, "dF": df,
            **{k: median(v) for k, v in times.items()},
            **{k: median(v) for k, v in phases.items()}}


def error_curve(n: int, cutoffs, cn_cutoffs, rounds: int) -> list[dict]:
    atoms = water_box(n)
    pot = potential()
    e_ref = float(evaluate(pot, graph_of(pot, atoms), forces=False).energy[0])
    rows = []
    for rc in cutoffs:
        for rcn in cn_cutoffs:
            pot = potential(rc, rcn)
            times, graph_times = [], []
            for _ in range(rounds):
                t0 = time.perf_counter()
                g = graph_of(pot, atoms)
                t1 = time.perf_counter()
                res = evaluate(pot, g, forces=True, stress=True)
                times.append(time.perf_counter() - t0)
                graph_times.append(t1 - t0)
            energy = float(res.energy.detach()[0])
            rows.append({"cutoff": rc, "cn_cutoff": rcn,
                         "error": 1000 * (energy - e_ref) / len(atoms),
                         "pairs": g[pot.terms["d3"].fields.index].shape[1],
                         "time": median(times), "graph": median(graph_times)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="192-atom box only, 2 rounds, a smaller cutoff grid")
    parser.add_argument("--rounds", type=int, default=None)
    args = parser.parse_args()
    rounds = args.rounds or (2 if args.quick else 5)
    sizes = [4] if args.quick else [4, 8]
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, float64, "
          f"median of {rounds} alternating rounds\n")

    print("| atoms | pairs (directed) | atomnet incl. graph (s) | atomnet excl. graph (s) "
          "| s-dftd3 (s) | graph (s) | edge vectors (s) | D3 term, energies + gradient (s) "
          "| backward (s) | ΔE vs s-dftd3 (eV) | max ΔF (eV/Å) |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in sizes:
        r = cost(n, rounds if n < 8 else min(rounds, 3))  # the 1,536-atom box: ≤ 3 rounds
        print(f"| {r['atoms']} | {r['pairs']:,} | {r['with graph']:.3f} | {r['without graph']:.3f} "
              f"| {r['s-dftd3']:.3f} | {r['graph']:.3f} | {r['edge vectors']:.3f} "
              f"| {r['term']:.3f} | {r['backward']:.3f} | {r['dE']:.1e} | {r['dF']:.1e} |",
              flush=True)
        gc.collect()

    print("\nGraph of a 5 Å network beside D3 (one search per cutoff), seconds and the 5 Å "
          "list's pairs\n")
    print("| atoms | 5 Å network (s) | D3 (s) | both (s) | 5 Å pairs |")
    print("|---:|---:|---:|---:|---:|")
    for n in sizes:
        r = graph_costs(n, rounds if n < 8 else min(rounds, 3))
        print(f"| {3 * n**3} | {r['5 Å network'][0]:.3f} | {r['D3'][0]:.3f} "
              f"| {r['both'][0]:.3f} | {r['both'][1]:,} |", flush=True)
        gc.collect()

    if args.quick:
        cutoffs, cn_cutoffs = [20.0, 60 * BOHR], [10.0, 40 * BOHR]
    else:
        cutoffs, cn_cutoffs = [15.0, 20.0, 25.0, 60 * BOHR], [10.0, 15.0, 40 * BOHR]
    print("\nError vs cost, 192-atom box (reference: cutoff 31.75 Å, cn_cutoff 21.17 Å); "
          "time = graph + energy/forces/stress\n")
    print("| cutoff (Å) | cn_cutoff (Å) | pairs | ΔE (meV/atom) | time (s) | of which graph (s) |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in error_curve(4, cutoffs, cn_cutoffs, rounds):
        print(f"| {r['cutoff']:.2f} | {r['cn_cutoff']:.2f} | {r['pairs']:,} | {r['error']:+.4f} "
              f"| {r['time']:.3f} | {r['graph']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
