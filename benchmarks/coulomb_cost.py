"""What the Coulomb term costs in periodic cells, Ewald against PME, and how accurate it is.

Periodic water boxes (n³ randomly oriented molecules on a 3.1 Å grid, ≈1 g/cm³:
192 and 1,536 atoms) with fixed charges O −0.8 e, H +0.4 e. A
:class:`~atomnet.Potential` holding the charge stage and the ``coulomb`` term
(default switching window 2–5 Å) gives energy, forces and stress through
:func:`atomnet.derivatives.evaluate` on a prebuilt graph; medians of repeated calls
are printed, with where the time goes (building the graph with its pair list, once;
the real-space part: torch-pme's erfc sum plus the switched correction; the reciprocal
part: Ewald's sum over k or PME's mesh; each forward + backward to positions and cell).
Errors are against a tight Ewald reference (accuracy 1e-12, real-space cutoff 12 Å) of
the same term.

    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE python benchmarks/coulomb_cost.py [--quick]

``--sweep`` adds error and time for other real-space cutoffs, accuracies and PME
interpolation orders (how the defaults were chosen).
"""

from __future__ import annotations

import argparse
import math
import os
import time

import numpy as np
import torch
import torchpme
from ase import Atoms
from water_grid import water_grid  # benchmarks/water_grid.py (the script's folder is on sys.path)

import atomnet
from atomnet import keys
from atomnet.derivatives import evaluate
from atomnet.neighbors import edge_vectors
from atomnet.physics.charges import FixedCharges
from atomnet.physics.coulomb import Coulomb, half_sphere_kvectors
from atomnet.structures import collate, to_device

ELEMENTS = ["H", "O"]
CHARGES = {"H": 0.4, "O": -0.8}
REFERENCE = {"method": "ewald", "accuracy": 1e-12, "real_space_cutoff": 12.0}


def water_box(n: int, spacing: float = 3.1, seed: int = 0) -> Atoms:
    """n³ randomly oriented water molecules (≈1 g/cm³), periodic, rattled 0.05 Å."""
    return water_grid(n, spacing, seed, rattle=0.05)


def potential(**options) -> atomnet.Potential:
    term = Coulomb(ELEMENTS, **options)
    return atomnet.Potential({"coulomb": term}, ELEMENTS,
                             stages={"charges": FixedCharges(ELEMENTS, CHARGES)}).double()


def graph_of(pot: atomnet.Potential, atoms: Atoms) -> dict:
    return collate([to_device(pot.graph(atoms, labels=False), "cpu", torch.float64)])


def median_s(fn, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def results(pot: atomnet.Potential, graph: dict):
    r = evaluate(pot, graph, forces=True, stress=True)
    return (float(r.energy.detach().sum()), r.forces.detach().numpy(),
            r.stress.detach().numpy()[0])


def parts(pot: atomnet.Potential, graph: dict, repeats: int) -> tuple[float, float]:
    """Median seconds of (real-space part, reciprocal part), each forward + backward to
    positions and cell, called on torch-pme's calculator as the term calls it."""
    term = pot.terms["coulomb"]
    g = pot.prepare(graph)
    q = g[keys.CHARGES].detach().unsqueeze(-1)

    def inputs():
        h = dict(g)
        h[keys.POSITIONS] = g[keys.POSITIONS].detach().requires_grad_(True)
        h[keys.CELL] = g[keys.CELL].detach().requires_grad_(True)
        return h

    def real():
        h = inputs()
        _, r = edge_vectors(h, term.fields)
        pairs = h[term.fields.index]
        calc = term._calculator(torch.float64, torch.device("cpu"))
        v = calc._compute_rspace(q, pairs.T, r)
        e = (q * v).sum() - term._short_range(q.squeeze(-1), pairs, r).sum()
        torch.autograd.grad(e, [h[keys.POSITIONS], h[keys.CELL]])

    def reciprocal():
        h = inputs()
        cell = h[keys.CELL][0]
        calc = term._calculator(torch.float64, torch.device("cpu"))
        k = None
        if term.method == "ewald":
            k = half_sphere_kvectors(cell, 2.0 * math.pi / term.lr_wavelength)
        v = calc._compute_kspace(q, cell, h[keys.POSITIONS], kvectors=k)
        torch.autograd.grad((q * v).sum(), [h[keys.POSITIONS], h[keys.CELL]])

    return median_s(real, repeats), median_s(reciprocal, repeats)


def describe(term: Coulomb, atoms: Atoms) -> str:
    cell = torch.tensor(atoms.cell.array)
    text = f"r_c {term.real_space_cutoff:g} Å, σ {term.smearing:.3f} Å"
    if term.method == "ewald":
        k = half_sphere_kvectors(cell, 2.0 * math.pi / term.lr_wavelength).shape[0]
        return text + f", λ {term.lr_wavelength:.3f} Å ({k} k-vectors, ±k once)"
    ns = torchpme.lib.get_ns_mesh(cell, term.mesh_spacing).tolist()
    return text + f", mesh {'×'.join(map(str, ns))}, {term.interpolation_nodes} nodes"


def row(atoms: Atoms, reference, options: dict, repeats: int, breakdown: bool) -> str:
    pot = potential(**options)
    term = pot.terms["coulomb"]
    t0 = time.perf_counter()
    graph = graph_of(pot, atoms)
    t_graph = time.perf_counter() - t0
    t_all = median_s(lambda: results(pot, graph), repeats)
    e, f, s = results(pot, graph)
    n = len(atoms)
    de = 1e3 * abs(e - reference[0]) / n
    df = 1e3 * np.abs(f - reference[1])
    ds = 1e3 * np.abs(s - reference[2]).max()
    where = ""
    if breakdown:
        real, reciprocal = parts(pot, graph, repeats)
        where = f"{1e3 * t_graph:.0f} | {1e3 * real:.0f} | {1e3 * reciprocal:.0f} | "
    else:
        where = f"{1e3 * t_graph:.0f} | | | "
    return (f"| {n} | {term.method} | {describe(term, atoms)} | {1e3 * t_all:.0f} | {where}"
            f"{de:.1e} | {np.sqrt((df**2).mean()):.1e} | {df.max():.1e} | {ds:.1e} |")


HEADER = ("| atoms | method | settings | E+F+S (ms) | graph + pair list (ms) | real space (ms) | "
          "reciprocal (ms) | ΔE (meV/atom) | ΔF rms (meV/Å) | ΔF max (meV/Å) | "
          "Δσ max (meV/Å³) |\n|---|---|---|---|---|---|---|---|---|---|---|")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="192 atoms only, 3 repeats")
    parser.add_argument("--sweep", action="store_true",
                        help="also other cutoffs, accuracies and PME orders")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    repeats = args.repeats or (3 if args.quick else 7)
    sizes = [4] if args.quick else [4, 8]
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    print(f"torch {torch.__version__}, torch-pme {torchpme.__version__}, "
          f"{torch.get_num_threads()} thread(s), float64, median of {repeats}")
    print(HEADER)
    for n in sizes:
        atoms = water_box(n)
        reference = results(ref := potential(**REFERENCE), graph_of(ref, atoms))
        for method in ("ewald", "pme"):
            print(row(atoms, reference, {"method": method}, repeats, True), flush=True)
        if not args.sweep:
            continue
        for rc in (8.0, 10.0, 12.0):
            for accuracy in (1e-5, 1e-6):
                print(row(atoms, reference, {"method": "ewald", "real_space_cutoff": rc,
                                             "accuracy": accuracy}, repeats, False),
                      flush=True)
                for nodes in (3, 4, 5, 6, 7):
                    print(row(atoms, reference, {
                        "method": "pme", "real_space_cutoff": rc, "accuracy": accuracy,
                        "interpolation_nodes": nodes}, repeats, False), flush=True)


if __name__ == "__main__":
    main()
