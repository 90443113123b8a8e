"""DFT-D3(BJ) term against simple-dftd3 (the ``dftd3`` package, an independent Fortran code).

simple-dftd3 takes positions and cells in Bohr and returns Hartree, Hartree/Bohr and
its virial ∂E/∂ε in Hartree; here everything is converted to eV and Å with
atomnet.units. Hard numbers (float64): energies and forces ≤ 1e-6 eV, eV/Å (they
agree to ~1e-10); stress ≤ 1e-7 eV/Å³; Hessian vs simple-dftd3's analytical one
≤ 1e-6 eV/Å² and vs finite differences ≤ 1e-4 eV/Å².
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule

import atomnet
from atomnet import testing
from atomnet.derivatives import evaluate
from atomnet.errors import UsageError
from atomnet.physics.dispersion import D3BJ, functional_parameters, known_functionals
from atomnet.structures import collate
from atomnet.terms import TERMS, build_term
from atomnet.units import BOHR, HARTREE

interface = pytest.importorskip(
    "dftd3.interface", reason="needs the optional package dftd3 (simple-dftd3, the oracle)"
)
DispersionModel, RationalDampingParam = interface.DispersionModel, interface.RationalDampingParam

TOL = 1e-6  # eV and eV/Å


def mixed_molecule() -> Atoms:
    """Acetamide beside chloromethane (H, C, N, O, Cl), rattled: no symmetry."""
    atoms = molecule("CH3CONH2")
    other = molecule("CH3Cl")
    other.translate([0.5, 3.6, 0.8])
    atoms += other
    atoms.rattle(0.05, seed=3)
    return atoms


def copper() -> Atoms:
    """fcc Cu, primitive (non-orthorhombic) one-atom cell, slightly strained: a metal
    with CN ≈ 9, far above copper's largest reference CN (0.96)."""
    atoms = bulk("Cu", "fcc", a=3.61)
    cell = atoms.cell.array.copy()
    cell[0, 1] += 0.07
    atoms.set_cell(cell, scale_atoms=True)
    return atoms


def elements_of(atoms: Atoms) -> list[str]:
    return sorted(set(atoms.get_chemical_symbols()))


def d3_potential(elements, dtype=torch.float64, **options) -> atomnet.Potential:
    options.setdefault("three_body", False)
    return atomnet.Potential({"d3": D3BJ(elements, **options)}, elements).to(dtype)


def ours(atoms: Atoms, dtype=torch.float64, hessian=False, **options):
    pot = d3_potential(elements_of(atoms), dtype, **options)
    graph = collate([pot.graph(atoms)])
    graph = {k: v.to(dtype) if v.is_floating_point() else v for k, v in graph.items()}
    res = evaluate(pot, graph, forces=True, stress=bool(atoms.pbc.all()), hessian=hessian)
    out = {"energy": float(res.energy.detach()[0]), "forces": res.forces.detach().numpy(),
           "atomic": res.atomic_energies.detach().numpy()}
    if atoms.pbc.all():
        out["stress"] = res.stress.detach()[0].numpy()
    if hessian:
        out["hessian"] = res.hessian[0].numpy()
    return out


def oracle_model(atoms: Atoms, cutoffs=None) -> DispersionModel:
    periodic = bool(atoms.pbc.any())
    model = DispersionModel(
        atoms.numbers, atoms.positions / BOHR,
        lattice=atoms.cell.array / BOHR if periodic else None,
        periodic=np.array(atoms.pbc) if periodic else None,
    )
    if cutoffs is not None:  # (disp2, disp3, cn) in Bohr
        model.set_realspace_cutoff(*cutoffs)
    return model


def oracle(atoms: Atoms, param=None, cutoffs=None, atm=False):
    if param is None:
        param = RationalDampingParam(method="pbe", atm=atm)
    model = oracle_model(atoms, cutoffs)
    res = model.get_dispersion(param, grad=True)
    out = {"energy": float(res["energy"]) * HARTREE,
           "forces": -res["gradient"] * HARTREE / BOHR}
    if atoms.pbc.all():  # simple-dftd3's virial is ∂E/∂ε: ASE stress is that over V
        out["stress"] = res["virial"] * HARTREE / atoms.get_volume()
    return out


def assert_close(a: dict, b: dict, tol: float = TOL, stress_tol: float = 1e-7) -> None:
    assert abs(a["energy"] - b["energy"]) <= tol, (a["energy"], b["energy"])
    assert np.abs(a["forces"] - b["forces"]).max() <= tol
    if "stress" in a and "stress" in b:
        assert np.abs(a["stress"] - b["stress"]).max() <= stress_tol


# --- against simple-dftd3 ---------------------------------------------------------
@pytest.mark.parametrize("make", [lambda: molecule("CH3CH2OH"), mixed_molecule])
def test_molecule_vs_simple_dftd3(make):
    atoms = make()
    atoms.rattle(0.05, seed=1)
    mine, ref = ours(atoms), oracle(atoms)
    assert ref["energy"] < -0.05  # the comparison means something
    assert np.abs(ref["forces"]).max() > 1e-3
    assert_close(mine, ref)
    # per-atom energies: half of each pair to each atom, as simple-dftd3's pairwise split
    pairs = oracle_model(atoms).get_pairwise_dispersion(
        RationalDampingParam(method="pbe", atm=False))["additive pairwise energy"]
    assert np.abs(mine["atomic"] - pairs.sum(1) * HARTREE).max() <= TOL


@pytest.mark.parametrize("name", ["water_box", "water_cell", "water_slab", "copper"])
def test_periodic_vs_simple_dftd3(name, request):
    """Sheared (non-orthorhombic) water cells, a slab and primitive fcc copper: every
    periodic image within 60 Bohr, stress against simple-dftd3's virial."""
    atoms = copper() if name == "copper" else request.getfixturevalue(name)
    mine, ref = ours(atoms), oracle(atoms)
    assert_close(mine, ref)
    if atoms.pbc.all():
        assert np.abs(ref["stress"]).max() > 1e-4


def test_cutoff_defaults_are_simple_dftd3s(water_cell):
    term = D3BJ(["H", "O"])
    assert (term.cutoff, term.cn_cutoff, term.three_body_cutoff) == \
        pytest.approx((60 * BOHR, 40 * BOHR, 40 * BOHR), rel=1e-15)
    assert term.pair_cutoff == term.cutoff and term.triplet_cutoff is None
    assert oracle(water_cell, atm=True)["energy"] == \
        oracle(water_cell, atm=True, cutoffs=(60.0, 40.0, 40.0))["energy"]
    # set_realspace_cutoff's order is (two-body, three-body, CN): the others' tests rely on it
    two_body = oracle(water_cell)["energy"]
    assert oracle(water_cell, cutoffs=(60.0, 20.0, 40.0))["energy"] == two_body
    assert abs(oracle(water_cell, cutoffs=(50.0, 40.0, 40.0))["energy"] - two_body) > 1e-6
    assert abs(oracle(water_cell, cutoffs=(60.0, 40.0, 10.0))["energy"] - two_body) > 1e-6


@pytest.mark.parametrize("cutoff, cn_cutoff", [(10.0, 6.0), (8.0, 12.0)])
def test_other_cutoffs_vs_simple_dftd3(water_box, cutoff, cn_cutoff):
    """A CN cutoff below and above the two-body cutoff (one pair list at the larger)."""
    mine = ours(water_box, cutoff=cutoff, cn_cutoff=cn_cutoff)
    ref = oracle(water_box, cutoffs=(cutoff / BOHR, 40.0, cn_cutoff / BOHR))
    assert_close(mine, ref)
    assert abs(ref["energy"] - oracle(water_box)["energy"]) > 1e-4  # the cutoffs matter


def test_three_body_vs_simple_dftd3(ethanol, water_cell):
    mine, ref = ours(ethanol, three_body=True, hessian=True), oracle(ethanol, atm=True)
    assert abs(ref["energy"] - oracle(ethanol)["energy"]) > 1e-5  # ATM is not negligible
    assert_close(mine, ref)
    hessian = oracle_model(ethanol).get_hessian(RationalDampingParam(method="pbe", atm=True))
    assert np.abs(mine["hessian"] - hessian["hessian"] * HARTREE / BOHR**2).max() <= TOL
    # periodic, with a short three-body cutoff (the default one is very costly in cells)
    r3 = 10.0  # Bohr
    mine = ours(water_cell, three_body=True, three_body_cutoff=r3 * BOHR)
    assert_close(mine, oracle(water_cell, atm=True, cutoffs=(60.0, r3, 40.0)))


def test_hessian_vs_simple_dftd3_and_finite_differences(ethanol):
    mine = ours(ethanol, hessian=True)
    ref = oracle_model(ethanol).get_hessian(RationalDampingParam(method="pbe", atm=False))
    assert np.abs(mine["hessian"] - ref["hessian"] * HARTREE / BOHR**2).max() <= TOL
    pot = d3_potential(elements_of(ethanol))
    assert testing.check_hessian_fd(pot, ethanol, tol=1e-4, indices=[0, 2, 5]) < 1e-4


def test_stress_and_forces_vs_finite_differences(water_cell):
    pot = d3_potential(["H", "O"])
    assert testing.check_stress_fd(pot, water_cell, tol=1e-6) < 1e-6
    assert testing.check_forces_fd(pot, water_cell, tol=1e-6) < 1e-6


# --- parameters -------------------------------------------------------------------
FUNCTIONALS = ["pbe", "pbe0", "b3lyp", "tpss", "r2scan", "b97-d", "revpbe", "blyp", "bp86",
               "pw6b95", "b2plyp", "PBEh"]


@pytest.mark.parametrize("name", FUNCTIONALS)
def test_functional_table_vs_simple_dftd3(name, ethanol):
    """Our (s6, s8, a1, a2) give simple-dftd3's energy both when simple-dftd3 looks the
    functional up itself and when it is handed our four numbers."""
    p = functional_parameters(name)
    mine = ours(ethanol, functional=name)
    by_name = oracle(ethanol, RationalDampingParam(method=name, atm=False))
    ours_there = oracle(ethanol, RationalDampingParam(
        s6=p["s6"], s8=p["s8"], a1=p["a1"], a2=p["a2"], s9=0.0))
    assert by_name["energy"] == pytest.approx(ours_there["energy"], rel=1e-14, abs=0)
    assert_close(mine, by_name)


def test_explicit_parameters_override_the_table(ethanol):
    term = D3BJ(["H", "C", "O"], functional="pbe", a2=5.0)
    assert (term.s6, term.s8, term.a1, term.a2) == (1.0, 0.7875, 0.4289, 5.0)
    custom = dict(s6=0.9, s8=1.2, a1=0.3, a2=4.0)
    mine = ours(ethanol, functional=None, **custom)
    assert_close(mine, oracle(ethanol, RationalDampingParam(**custom, s9=0.0)))


def test_bad_options():
    with pytest.raises(UsageError, match=r"known: .*pbe0.*r2scan"):
        D3BJ(["H"], functional="pbe-d9")
    with pytest.raises(UsageError, match="Rf"):
        D3BJ(["H", "Rf"])  # Z = 104: beyond D3's reference data
    with pytest.raises(UsageError, match="Xx"):
        D3BJ(["Xx"])
    with pytest.raises(UsageError, match="s8, a1 and a2"):
        D3BJ(["H"], functional=None, a1=0.4)
    with pytest.raises(UsageError, match="three_body"):
        D3BJ(["H"], three_body="yes")
    with pytest.raises(UsageError, match="cn_cutoff"):
        D3BJ(["H"], cn_cutoff=-1.0)
    assert {"pbe", "pbe0", "b3lyp", "r2scan", "tpss"} <= set(known_functionals())


# --- the term in atomnet ----------------------------------------------------------
def test_recipe_round_trip_and_small_model_files(ethanol, tmp_path):
    elements = ["H", "C", "O", "Cu"]
    term = D3BJ(elements, functional="b3lyp", three_body=True, cutoff=20.0, cn_cutoff=15.0)
    recipe = json.loads(json.dumps(term.recipe()))
    assert TERMS["d3bj"] is D3BJ and recipe["functional"] == "b3lyp"
    again = build_term({"type": "d3bj", **recipe}, elements)
    assert again.recipe() == term.recipe()
    assert term.state_dict() == {}  # reference tables are rebuilt, never stored
    pots = [atomnet.Potential({"d3": t}, elements) for t in (term, again)]
    pots.append(atomnet.Potential.from_recipe(pots[0].recipe()))
    path = atomnet.save(pots[0], tmp_path / "d3.atomnet")  # rebuilt on the meta device first
    assert path.stat().st_size < 2000
    pots.append(atomnet.load(path))
    energies = [float(evaluate(p, collate([p.graph(ethanol)]), forces=False).energy[0])
                for p in pots]
    assert energies[0] < 0 and len(set(energies)) == 1


def test_float32_follows_positions(water_box):
    e64 = ours(water_box, cutoff=12.0, cn_cutoff=10.0)
    e32 = ours(water_box, dtype=torch.float32, cutoff=12.0, cn_cutoff=10.0)
    assert abs(e32["energy"] - e64["energy"]) < 1e-5 * abs(e64["energy"])
    assert np.abs(e32["forces"] - e64["forces"]).max() < 1e-5
    assert np.abs(e32["stress"] - e64["stress"]).max() < 1e-7


def test_dense_and_per_pair_c6_agree(water_box, ethanol):
    for atoms in (water_box, ethanol):
        pot = d3_potential(elements_of(atoms), cutoff=12.0, cn_cutoff=10.0)
        graph = collate([pot.graph(atoms)])
        results = []
        for factor in (0.0, float("inf")):
            pot.terms["d3"].dense_c6_factor = factor
            res = evaluate(pot, graph, forces=True, stress=bool(atoms.pbc.all()))
            results.append((res.atomic_energies.detach(), res.forces))
        assert torch.allclose(results[0][0], results[1][0], rtol=0, atol=1e-12)
        assert torch.allclose(results[0][1], results[1][1], rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_reference_weights_vs_tad_dftd3(dtype):
    """Gaussian weights, including tad-dftd3/s-dftd3's fall-back where every Gaussian
    underflows (CN far above the largest reference: that reference gets weight 1)."""
    import tad_dftd3

    elements = ["H", "C", "Cu", "Cr", "Ce", "U"]
    term = D3BJ(elements).to(dtype)
    numbers = torch.tensor([1, 6, 29, 24, 58, 92])
    cn = torch.linspace(0.0, 40.0, 161, dtype=dtype)
    species = torch.arange(len(elements)).repeat_interleave(cn.numel())
    cns = cn.repeat(len(elements))
    ref = tad_dftd3.reference.Reference(dtype=dtype)
    expected = tad_dftd3.model.weight_references(numbers.repeat_interleave(cn.numel()), cns, ref)
    got = term.weights(cns, species)
    atol = 1e-12 if dtype == torch.float64 else 1e-5
    assert torch.allclose(got, expected[:, : got.shape[1]], rtol=0, atol=atol)
    assert torch.isfinite(got).all()
    far = term.weights(torch.full((1,), 40.0, dtype=dtype), torch.tensor([0]))
    assert far[0].tolist()[:2] == [1.0, 0.0]  # H: the reference with CN 0.91


def test_batches_do_not_talk_and_energy_is_invariant(ethanol, water_cell):
    pot = d3_potential(["H", "C", "O"], cutoff=10.0, cn_cutoff=8.0)
    assert testing.check_no_cross_talk(pot, [ethanol, water_cell, ethanol]) < 1e-10
    assert testing.check_invariance(pot, water_cell, tol=1e-9) < 1e-9


# --- the chunked two-body path against the plain autograd expression ---------------
def _energy_and_derivatives(term, graph, plain: bool, weights):
    """Per-atom energies, ∂(Σ g_i E_i)/∂(positions, strain) for per-atom weights g, and a
    second-order product (through a create_graph gradient)."""
    from atomnet.derivatives.core import _strain

    pot = atomnet.Potential({"d3": term}, term.elements)
    graph = dict(graph)
    positions = graph[atomnet.keys.POSITIONS].detach().requires_grad_(True)
    graph[atomnet.keys.POSITIONS] = positions
    strain = _strain(graph, graph[atomnet.keys.N_ATOMS].shape[0])
    graph = pot.prepare(graph)
    e = term._plain(graph) if plain else term(graph)
    out = [e.detach()]
    out += torch.autograd.grad(e, [positions, strain], weights, retain_graph=True)
    gp, gs = torch.autograd.grad(e, [positions, strain], weights, create_graph=True)
    direction = torch.linspace(-1.0, 1.0, gp.numel(), dtype=gp.dtype).view_as(gp)
    out += torch.autograd.grad((gp * direction).sum() + gs.sum(), [positions, strain])
    return out


@pytest.mark.parametrize("dense", [True, False])
def test_chunked_path_equals_the_plain_expression(ethanol, water_box, water_cell, dense,
                                                  monkeypatch):
    """Per-atom energies, gradients for uniform, per-structure and arbitrary per-atom
    weights, and second derivatives (create_graph) agree with autograd through the plain
    expression: a batch of a molecule and two cells, many chunks, dense and per-pair C6,
    a CN cutoff below and above the two-body one."""
    import atomnet.physics.d3_chunks as d3_chunks

    monkeypatch.setattr(d3_chunks, "CHUNK", 997)
    structures = [ethanol, water_box, water_cell]
    elements = ["H", "C", "O"]
    for cutoff, cn_cutoff in ((12.0, 9.0), (8.0, 11.0)):
        term = D3BJ(elements, cutoff=cutoff, cn_cutoff=cn_cutoff)
        term.dense_c6_factor = float("inf") if dense else 0.0
        graph = collate([term_graph(term, a) for a in structures])
        n = graph[atomnet.keys.N_ATOMS].tolist()
        per_structure = torch.repeat_interleave(torch.tensor([1.0, -2.0, 0.5]),
                                                torch.tensor(n)).double()
        arbitrary = torch.linspace(-1.0, 2.0, sum(n), dtype=torch.float64)
        for weights in (torch.ones(sum(n), dtype=torch.float64), per_structure, arbitrary):
            fast = _energy_and_derivatives(term, graph, False, weights)
            plain = _energy_and_derivatives(term, graph, True, weights)
            for a, b in zip(fast, plain):
                assert torch.allclose(a, b, rtol=1e-12, atol=1e-13), (a - b).abs().max()


def term_graph(term: D3BJ, atoms: Atoms) -> dict:
    return atomnet.Potential({"d3": term}, term.elements).graph(atoms)


def test_periodic_hessian_equals_the_plain_expression(water_cell):
    """The Hessian of a cell (create_graph through the chunked path's backward) is the
    plain expression's, and finite differences agree."""
    term = D3BJ(["H", "O"], cutoff=15.0, cn_cutoff=10.0)
    pot = atomnet.Potential({"d3": term}, ["H", "O"])
    graph = collate([pot.graph(water_cell)])
    fast = evaluate(pot, graph, forces=True, hessian=True).hessian[0]
    term.forward = term._plain
    plain = evaluate(pot, graph, forces=True, hessian=True).hessian[0]
    assert torch.allclose(fast, plain, rtol=0, atol=1e-12)
    del term.forward
    assert testing.check_hessian_fd(pot, water_cell, tol=1e-4) < 1e-4


def test_forward_keeps_no_graph_over_the_pairs(water_box):
    """Energies without gradients take the chunked path under no_grad; with gradients
    the only autograd node is the term's own (no per-pair graph kept)."""
    term = D3BJ(["H", "O"], cutoff=12.0, cn_cutoff=9.0)
    pot = atomnet.Potential({"d3": term}, ["H", "O"])
    graph = collate([pot.graph(water_box)])
    graph[atomnet.keys.POSITIONS].requires_grad_(True)
    e = term(pot.prepare(graph))
    assert type(e.grad_fn).__name__ == "ChunkedTwoBodyBackward"
    with torch.no_grad():
        again = term(pot.prepare(graph))
    assert again.grad_fn is None and torch.equal(again, e.detach())


def test_results_are_freed(water_box):
    """The term's autograd function keeps no reference to the graph dict (which the
    potential fills with the term's own output): nothing of an evaluation outlives it."""
    import gc
    import weakref

    term = D3BJ(["H", "O"], cutoff=10.0, cn_cutoff=8.0)
    pot = atomnet.Potential({"d3": term}, ["H", "O"])
    res = evaluate(pot, collate([pot.graph(water_box)]), forces=True, stress=True)
    vectors = weakref.ref(res.graph[term.fields.vectors])
    del res
    gc.collect()
    assert vectors() is None
