"""Switching, ZBL repulsion, learned charges and the ``physics:`` section of build.

Oracles: an independent NumPy ZBL (the published formula), exact charge sums,
dipoles Σ q_i r_i recomputed here from the charges, finite differences.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule
from ase.data import atomic_numbers, covalent_radii
from conftest import make_ethanol

import atomnet
from atomnet import testing
from atomnet.errors import UsageError
from atomnet.physics import ZBL, LearnedCharges
from atomnet.physics.switching import switch_off, switch_on
from atomnet.terms import build_term

ELEMENTS = ["H", "C", "O"]


def zbl_numpy(z1: int, z2: int, r: np.ndarray) -> np.ndarray:
    """ZBL universal screened nuclear repulsion (eV), written out from the paper with
    LAMMPS's constants (pair_style zbl: a = 0.46850 Å / (Z1^0.23 + Z2^0.23))."""
    a = 0.46850 / (z1**0.23 + z2**0.23)
    x = r / a
    phi = (0.18175 * np.exp(-3.1998 * x) + 0.50986 * np.exp(-0.94229 * x)
           + 0.28022 * np.exp(-0.4029 * x) + 0.02817 * np.exp(-0.20162 * x))
    return 14.3996454784 * z1 * z2 / r * phi


def dimer(a: str, b: str, r: float) -> Atoms:
    return Atoms(a + b, positions=[[0, 0, 0], [0, 0, r]], pbc=False)


def tails_only(*terms, stages=None, elements=ELEMENTS) -> atomnet.Potential:
    return atomnet.Potential({t.type_name: t for t in terms}, elements, stages=stages)


# --- switching -----------------------------------------------------------------
def test_switch_is_c2_and_exact_outside_the_window():
    r = torch.linspace(0.5, 3.5, 3001, dtype=torch.float64, requires_grad=True)
    s = switch_off(r, 1.0, 3.0)
    d1 = torch.autograd.grad(s.sum(), r, create_graph=True)[0]
    d2 = torch.autograd.grad(d1.sum(), r)[0]
    inside = (r > 1.0) & (r < 3.0)
    assert torch.all(s[r <= 1.0] == 1.0) and torch.all(s[r >= 3.0] == 0.0)
    assert torch.all(d1[~inside] == 0.0) and torch.all(d2[~inside] == 0.0)
    # continuity: no jump between neighbouring samples larger than the slope allows
    step = float((r[1] - r[0]).detach())
    for f, bound in ((s, 1.875), (d1, 5.8 / 2), (d2, 20.0)):
        f = f.detach()
        assert float((f[1:] - f[:-1]).abs().max()) < bound * step * 1.01 + 1e-12
    assert torch.allclose(switch_on(r, 1.0, 3.0), 1.0 - s)


# --- ZBL -------------------------------------------------------------------
@pytest.mark.parametrize("pair", [("H", "H"), ("C", "H"), ("O", "H"), ("C", "C"), ("C", "O"),
                                  ("O", "O")])
def test_zbl_matches_the_published_formula_inside_its_window(pair):
    a, b = pair
    zbl = ZBL(ELEMENTS)
    pot = tails_only(zbl)
    reach = covalent_radii[atomic_numbers[a]] + covalent_radii[atomic_numbers[b]]
    calc = atomnet.Calculator(pot, dtype="float64")
    z1, z2 = dimer(a, b, 1.0).numbers
    for r in np.linspace(0.1, zbl.inner * reach, 5):
        atoms = dimer(a, b, r)
        atoms.calc = calc
        assert atoms.get_potential_energy() == pytest.approx(zbl_numpy(z1, z2, r), rel=1e-6)
    for r in (zbl.outer * reach * (1 + 1e-9), zbl.outer * reach + 0.01, 2.0):
        atoms = dimer(a, b, r)
        atoms.calc = calc
        assert atoms.get_potential_energy() == 0.0
        assert np.all(atoms.get_forces() == 0.0)


def test_zbl_is_repulsive_and_smooth_through_its_window():
    pot = tails_only(ZBL(ELEMENTS))
    calc = atomnet.Calculator(pot, dtype="float64")
    rs = np.linspace(0.2, 1.3, 221)
    def energy(r: float) -> float:
        atoms = dimer("C", "H", r)
        atoms.calc = calc
        return atoms.get_potential_energy()

    energies, forces = [], []
    for r in rs:
        atoms = dimer("C", "H", r)
        atoms.calc = calc
        energies.append(atoms.get_potential_energy())
        forces.append(atoms.get_forces()[1, 2])  # on H, along +z (away from C)
        h = 1e-5  # the force is minus the slope of the energy (central differences)
        fd = -(energy(r + h) - energy(r - h)) / (2 * h)
        assert forces[-1] == pytest.approx(fd, rel=1e-6, abs=1e-6)
    energies, forces = np.array(energies), np.array(forces)
    assert np.all(np.diff(energies) <= 0.0), "ZBL must decrease monotonically with distance"
    assert np.all(forces >= 0.0), "ZBL pushes atoms apart"
    assert energies[-1] == 0.0 and energies[0] > 100.0


def test_zbl_battery_on_a_squeezed_molecule():
    atoms = make_ethanol()
    atoms.positions *= 0.55  # bonds ~0.6 Å: inside the ZBL windows
    pot = atomnet.build({"type": "bpnn", "hidden": [16], "physics": {"repulsion": {}}},
                        ELEMENTS)
    contributions = atomnet.Calculator(pot, dtype="float64")
    atoms.calc = contributions
    atoms.get_potential_energy()
    assert contributions.results["contributions"]["repulsion"] > 1.0
    scale = float(np.abs(atoms.get_forces()).max())  # ~10² eV/Å: tolerances relative to it
    assert scale > 10.0
    assert testing.check_forces_fd(pot, atoms, tol=1e-7 * scale) < 1e-7 * scale
    assert testing.check_hessian_fd(pot, atoms, tol=1e-6 * scale) < 1e-6 * scale
    assert testing.check_invariance(pot, atoms, tol=1e-8) < 1e-8


def test_zbl_options_are_checked():
    with pytest.raises(UsageError, match="inner < outer"):
        ZBL(ELEMENTS, inner=0.8, outer=0.5)
    term = ZBL(ELEMENTS, inner=0.3, outer=0.6)
    again = build_term({"type": "zbl", **term.recipe()}, ELEMENTS)
    assert (again.inner, again.outer, again.pair_cutoff) == (0.3, 0.6, term.pair_cutoff)


# --- learned charges ---------------------------------------------------------
@pytest.mark.parametrize("total", [0.0, 1.0, -2.0])
def test_learned_charges_conserve_the_total_exactly(total):
    torch.manual_seed(0)
    stage = LearnedCharges(ELEMENTS, hidden=[8])
    with torch.no_grad():  # raw charges far from neutral, so the correction matters
        stage.q0.copy_(torch.tensor([0.3, -0.7, 0.2]))
    pot = atomnet.build({"type": "bpnn", "hidden": [8], "physics": {"charges": "learned"}},
                        ELEMENTS)
    pot.stages["charges"] = stage
    ethanol, water = make_ethanol(), molecule("H2O")
    ethanol.info["charge"], water.info["charge"] = total, -total
    calc = atomnet.Calculator(pot, dtype="float64")
    for atoms, q in ((ethanol, total), (water, -total)):
        atoms.calc = calc
        charges = atoms.get_charges()
        assert abs(charges.sum() - q) < 1e-12
        assert np.ptp(charges) > 1e-2  # not trivially uniform
        # the dipole is Σ q_i r_i in the caller's frame, also far from the origin
        atoms.positions += [300.0, -40.0, 7.0]
        dipole = atoms.get_dipole_moment()
        assert np.allclose(dipole, atoms.get_charges() @ atoms.positions, atol=1e-9)


def test_learned_charges_are_invariant_and_differentiable():
    pot = atomnet.build({"type": "bpnn", "hidden": [8],
                         "physics": {"charges": {"learned": {"hidden": [8]}}}}, ELEMENTS)
    with torch.no_grad():
        pot.stages["charges"].q0.copy_(torch.tensor([0.3, -0.7, 0.2]))
    atoms = make_ethanol()
    calc = atomnet.Calculator(pot, dtype="float64")
    atoms.calc = calc
    q = atoms.get_charges()
    rotated = atoms.copy()
    rotated.rotate(73.0, (1.0, 2.0, -0.5), center="COM")
    rotated.calc = calc
    assert np.allclose(rotated.get_charges(), q, atol=1e-12)
    # permuting the atoms permutes the charges
    order = np.random.default_rng(3).permutation(len(atoms))
    permuted = atoms[order]
    permuted.calc = calc
    assert np.allclose(permuted.get_charges(), q[order], atol=1e-12)


# --- build and model files --------------------------------------------------
@pytest.mark.parametrize("physics, message", [
    ({"gravity": {}}, "unknown physics section"),
    ({"dispersion": {"method": "d3bj", "functional": "pbe", "mode": "add"}},
     "three_body must be given"),
    ({"dispersion": {"functional": "pbe", "three_body": False}}, "mode must be given"),
    ({"dispersion": {"three_body": False, "mode": "on top"}}, "mode must be given"),
    ({"repulsion": {"method": "lj"}}, "must be one of"),
    ({"charges": "fitted"}, "must be 'learned'"),
    ({"charges": {"H": 0.4, "C": -0.4}}, "missing"),
    ({"charges": "learned", "coulomb": {"charges": "learned"}}, "give the charges once"),
    ({"coulomb": {"damping": "none"}}, "needs 'charges'"),
    ({"repulsion": {"inner": 0.9, "outer": 0.1}}, "inner < outer"),
])
def test_bad_physics_sections_are_refused_clearly(physics, message):
    with pytest.raises(UsageError, match=message):
        atomnet.build({"type": "bpnn", "physics": physics}, ELEMENTS)


def test_model_file_round_trip_with_tails(tmp_path):
    pot = atomnet.build({"type": "bpnn", "hidden": [8], "physics": {
        "charges": {"learned": {"hidden": [8]}}, "repulsion": {"inner": 0.35}}}, ELEMENTS)
    with torch.no_grad():
        pot.stages["charges"].q0.copy_(torch.tensor([0.3, -0.7, 0.2]))
    path = tmp_path / "tails.atomnet"
    atomnet.save(pot, path)
    again = atomnet.load(path)
    assert again.recipe() == pot.recipe()
    atoms = make_ethanol()
    atoms.positions *= 0.6
    results = []
    for p in (pot, again):
        atoms.calc = atomnet.Calculator(p, dtype="float64")
        results.append((atoms.get_potential_energy(), atoms.get_charges(),
                        dict(atoms.calc.results["contributions"])))
    assert results[0][0] == pytest.approx(results[1][0], abs=1e-10)
    assert np.allclose(results[0][1], results[1][1], atol=1e-12)
    assert results[0][2] == pytest.approx(results[1][2], abs=1e-10)
    assert results[0][2]["repulsion"] > 0.0


class _Added(ZBL):
    fitted = False


def test_added_terms_are_left_out_when_comparing_with_labels():
    pot = atomnet.Potential({"zbl": _Added(ELEMENTS), "kept": ZBL(ELEMENTS, outer=1.0)},
                            ELEMENTS)
    atoms = dimer("C", "H", 0.5)
    graph = atomnet.structures.collate([pot.graph(atoms)])
    full = pot(graph)["energy"]
    with pot.as_fitted():
        fitted = pot(graph)
    assert set(fitted["contributions"]) == {"kept"}
    assert float(full) > float(fitted["energy"]) > 0.0
    assert pot.added_names == {"zbl"}


def test_dispersion_mode_add_is_recorded_and_left_out_of_the_fitted_energy(tmp_path):
    physics = {"dispersion": {"method": "d3bj", "functional": "pbe", "three_body": False,
                              "mode": "add", "cutoff": 10.0, "cn_cutoff": 8.0}}
    pot = atomnet.build({"type": "bpnn", "hidden": [8], "physics": physics}, ELEMENTS)
    assert pot.added_names == {"dispersion"}
    saved = atomnet.load(atomnet.save(pot, tmp_path / "add.atomnet"))
    assert saved.added_names == {"dispersion"}
    assert {"name": "dispersion", "fitted": False}.items() <= \
        saved.recipe()["terms"][-1].items()
    subtract = atomnet.build({"type": "bpnn", "hidden": [8], "physics": {
        "dispersion": {**physics["dispersion"], "mode": "subtract"}}}, ELEMENTS)
    assert subtract.added_names == set()
    # what training compares with labels: without the added term
    from atomnet.training.evaluation import predict

    pot = pot.double()
    graph = atomnet.structures.collate([pot.graph(make_ethanol())])
    with_d3 = float(pot(graph)["energy"].detach())
    fitted = predict(pot, graph, ("energy", "forces"), create_graph=False)
    d3 = float(pot(graph)["contributions"]["dispersion"].sum().detach())
    assert d3 < -0.01  # ethanol's D3 energy is about −0.1 eV
    assert float(fitted.energy) == pytest.approx(with_d3 - d3, abs=1e-9)


# --- the kit, with every tail switched on ------------------------------------------
def all_tails_potential() -> atomnet.Potential:
    torch.manual_seed(0)
    pot = atomnet.build({"type": "bpnn", "hidden": [16], "physics": {
        "coulomb": {"charges": {"learned": {"hidden": [8]}}, "r_on": 1.0, "r_off": 3.0,
                    "real_space_cutoff": 5.0},
        "dispersion": {"method": "d3bj", "functional": "pbe", "three_body": False,
                       "mode": "add", "cutoff": 9.0, "cn_cutoff": 7.0},
        "repulsion": {"method": "zbl", "outer": 1.0},
    }}, ELEMENTS, cutoff=4.0)
    with torch.no_grad():  # clearly charged atoms, so Coulomb matters
        pot.stages["charges"].q0.copy_(torch.tensor([0.35, -0.3, -0.6]))
    return pot


def test_the_battery_passes_with_every_tail(water_box):
    pot = all_tails_potential()
    molecule_ = make_ethanol()
    molecule_.positions *= 0.85  # C–H ≈ 0.93 Å: inside the (outer = 1.0) ZBL windows
    calc = atomnet.Calculator(pot, dtype="float64")
    for atoms in (molecule_, water_box):
        atoms = atoms.copy()
        atoms.calc = calc
        atoms.get_potential_energy()
        parts = calc.results["contributions"]
        # every tail contributes (ZBL's window reaches the bonds here: outer = 1.0)
        assert abs(parts["coulomb"]) > 1e-2 and parts["dispersion"] < -1e-2
        assert parts["repulsion"] > 1e-2
    results = testing.run_all(pot, molecule=molecule_, periodic=water_box,
                              separability_gap=1e5)
    assert set(results) >= {"forces_fd", "stress_fd", "hessian_fd", "invariance",
                            "separability", "no_cross_talk"}


def test_learned_charges_keep_far_apart_fragments_neutral():
    """Charge moves only between neighbours: a neutral fragment far from the rest of
    its structure keeps exactly zero net charge (separable energies)."""
    pot = all_tails_potential()
    a, b = make_ethanol(), molecule("H2O")
    b.positions += [40.0, 0.0, 0.0]
    both = a + b
    for total in (0.0, 1.0):
        both.info["charge"] = total
        both.calc = atomnet.Calculator(pot, dtype="float64")
        q = both.get_charges()
        assert abs(q.sum() - total) < 1e-12
        spread = total / len(both)  # a charged structure spreads its charge evenly
        assert abs(q[:len(a)].sum() - spread * len(a)) < 1e-12
        assert abs(q[len(a):].sum() - spread * len(b)) < 1e-12
