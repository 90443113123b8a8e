"""Potential wiring: one pair list per cutoff, stages that write charges, declared outputs.

Test-only terms are registered here under ``test_*`` names: a long-reach pair term
(its own pair list), and an energy term that reads charges written by a stage.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import molecule
from ase.neighborlist import neighbor_list
from conftest import make_water_box

import atomnet
from atomnet import keys, testing
from atomnet.derivatives import evaluate, output_jacobian
from atomnet.descriptors import polynomial_cutoff
from atomnet.errors import UsageError
from atomnet.physics import AtomicReference, FixedCharges
from atomnet.structures import StructureError, collate
from atomnet.terms import Term, register

LONG = 9.0  # Å, reach of the test pair term
CHARGES = {"H": 0.4, "C": -0.2, "O": -0.8}


@register("test_long_pair")
class LongPair(Term):
    """E_i = ½ Σ_j A exp(−r_ij/2) f_c(r_ij), reach ``cutoff`` Å: a stand-in for D3."""

    def __init__(self, elements, cutoff: float = LONG, strength: float = 0.05):
        super().__init__()
        self.pair_cutoff, self.strength = float(cutoff), float(strength)
        self.fields = keys.pairs(self.pair_cutoff)
        self.reads = (self.fields.index, self.fields.lengths)

    def recipe(self):
        return {"cutoff": self.pair_cutoff, "strength": self.strength}

    def forward(self, graph):
        i, _ = graph[self.fields.index]
        r = graph[self.fields.lengths]
        pair = 0.5 * self.strength * torch.exp(-r / 2) * polynomial_cutoff(r, self.pair_cutoff)
        return pair.new_zeros(graph[keys.SPECIES].shape[0]).index_add(0, i, pair)


@register("test_charge_energy")
class ChargeEnergy(Term):
    """E_i = ½ Σ_j q_i q_j f_c(r_ij) / r_ij within 4 Å: reads the charges a stage wrote."""

    def __init__(self, elements, cutoff: float = 4.0):
        super().__init__()
        self.pair_cutoff = float(cutoff)
        self.fields = keys.pairs(self.pair_cutoff)
        self.reads = (self.fields.index, self.fields.lengths, keys.CHARGES)

    def recipe(self):
        return {"cutoff": self.pair_cutoff}

    def forward(self, graph):
        i, j = graph[self.fields.index]
        r, q = graph[self.fields.lengths], graph[keys.CHARGES]
        pair = 0.5 * q[i] * q[j] * polynomial_cutoff(r, self.pair_cutoff) / r
        return pair.new_zeros(q.shape[0]).index_add(0, i, pair)


def _with_long(potential) -> atomnet.Potential:
    terms = {**dict(potential.terms.items()), "long": LongPair(potential.elements)}
    return atomnet.Potential(terms, potential.elements)


def _charged(potential) -> atomnet.Potential:
    elements = potential.elements
    terms = {**dict(potential.terms.items()), "coulombish": ChargeEnergy(elements)}
    return atomnet.Potential(terms, elements,
                             stages={"charges": FixedCharges(elements, CHARGES)})


def _count(atoms, cutoff: float) -> int:
    return len(neighbor_list("i", atoms, cutoff))


# --- one pair list per cutoff ----------------------------------------------
def test_each_cutoff_gets_its_own_list(potential):
    long = _with_long(potential)
    assert long.pair_lists == {5.0: 3.5, LONG: None}
    assert long.cutoff == LONG
    box = make_water_box(n=3)
    graph = long.graph(box)
    for cutoff in (5.0, LONG):
        assert graph[keys.pairs(cutoff).index].shape[1] == _count(box, cutoff)
    assert keys.pairs(LONG).triplets not in graph, "no triplets where no term asks for them"


def test_the_network_never_pays_for_a_long_reach(potential):
    """The BP model reads only its 5 Å list: same edges, same energy, with or without D3-like.

    (The 5 Å list is selected from the longest one, so pairs of one center may come in
    another order: the edge sets are equal and energies agree to rounding.)"""
    box = make_water_box(n=3)
    f = keys.pairs(5.0)
    alone, both = potential.graph(box), _with_long(potential).graph(box)

    def edges(g):
        return sorted(zip(*g[f.index].tolist(), *g[f.shifts].T.tolist()))

    assert edges(alone) == edges(both)
    short = evaluate(potential, alone)
    long = evaluate(_with_long(potential), both)
    torch.testing.assert_close(short.contributions["short_range"],
                               long.contributions["short_range"], rtol=0, atol=1e-12)
    assert float(long.contributions["long"].detach().sum()) > 1e-3
    n_short = potential.graph(box)[keys.pairs(5.0).index].shape[1]
    n_long = _with_long(potential).graph(box)[keys.pairs(LONG).index].shape[1]
    assert n_long > 4 * n_short


def test_terms_with_one_cutoff_share_one_list(potential):
    elements = potential.elements
    pot = atomnet.Potential({"a": LongPair(elements, cutoff=5.0), **potential.terms}, elements)
    assert pot.pair_lists == {5.0: 3.5}


def test_collate_offsets_every_list(potential):
    long = _with_long(potential)
    graphs = [long.graph(a) for a in (molecule("CH3OH"), make_water_box(), molecule("H2O"))]
    batch = collate(graphs)
    for cutoff in (5.0, LONG):
        f = keys.pairs(cutoff)
        atoms = np.cumsum([0] + [len(g[keys.POSITIONS]) for g in graphs])
        want = torch.cat([g[f.index] + int(o) for g, o in zip(graphs, atoms)], 1)
        assert torch.equal(batch[f.index], want)
    f = keys.pairs(5.0)
    edges = np.cumsum([0] + [g[f.index].shape[1] for g in graphs])
    want = torch.cat([g[f.triplets] + int(o) for g, o in zip(graphs, edges)], 1)
    assert torch.equal(batch[f.triplets], want)


def test_physics_battery_with_two_lists(potential):
    long = _with_long(potential)
    results = testing.run_all(long, molecule("CH3CH2OH"), periodic=make_water_box(),
                              gradcheck=False)
    assert results["forces_fd_periodic"] < 1e-5 and results["stress_fd"] < 1e-5


# --- stages and declared outputs -------------------------------------------
def test_a_term_reading_charges_needs_a_stage(potential):
    with pytest.raises(UsageError, match=r"'coulombish' reads \['charges'\]"):
        atomnet.Potential({**potential.terms, "coulombish": ChargeEnergy(potential.elements)},
                          potential.elements)


def test_an_energy_term_is_not_a_stage(potential):
    with pytest.raises(UsageError, match="stage 'e0' is of kind 'energy'"):
        atomnet.Potential(potential.terms, potential.elements,
                          stages={"e0": AtomicReference(potential.elements)})


@pytest.mark.parametrize("total", [0.0, 1.0, -2.0])
def test_charges_conserve_the_total_charge(potential, total):
    pot = _charged(potential)
    assert pot.outputs == (keys.ENERGY, keys.CHARGES, keys.DIPOLE)
    atoms = molecule("CH3CH2OH")
    atoms.info["charge"] = total
    other = molecule("H2O")
    batch = collate([pot.graph(atoms), pot.graph(other)])
    res = evaluate(pot, batch)
    q = res.charges.detach()
    assert float(q[:9].sum()) == pytest.approx(total, abs=1e-12)
    assert float(q[9:].sum()) == pytest.approx(0.0, abs=1e-12)
    raw = np.array([CHARGES[s] for s in atoms.get_chemical_symbols()])
    np.testing.assert_allclose(q[:9].numpy(), raw + (total - raw.sum()) / 9, atol=1e-12)


def test_dipole_is_sum_of_charge_times_position(potential):
    pot = _charged(potential)
    atoms = molecule("CH3CH2OH")
    atoms.info["charge"] = 1.0
    atoms.translate([3.0, -2.0, 7.0])  # charged: the dipole depends on the origin
    res = evaluate(pot, pot.graph(atoms))
    want = res.charges.detach().numpy() @ atoms.positions
    np.testing.assert_allclose(res.dipole[0].detach().numpy(), want, atol=1e-10)


def test_dipole_jacobian_against_finite_differences(potential):
    pot = _charged(potential)
    atoms = molecule("CH3CH2OH")
    atoms.info["charge"] = 1.0
    jac = output_jacobian(pot, pot.graph(atoms), keys.DIPOLE)
    assert jac.shape == (1, 3, 9, 3)
    h = 1e-5
    fd = np.zeros((3, 9, 3))
    for a in range(9):
        for b in range(3):
            mu = []
            for sign in (1, -1):
                moved = atoms.copy()
                moved.positions[a, b] += sign * h
                mu.append(evaluate(pot, pot.graph(moved), forces=False).dipole[0].numpy())
            fd[:, a, b] = (mu[0] - mu[1]) / (2 * h)
    np.testing.assert_allclose(jac[0].numpy(), fd, atol=1e-8)
    q = evaluate(pot, pot.graph(atoms), forces=False).charges.numpy()
    np.testing.assert_allclose(jac[0].numpy(), np.einsum("i,ab->aib", q, np.eye(3)), atol=1e-12)


def test_jacobian_of_an_undeclared_output_is_refused(potential):
    with pytest.raises(ValueError, match="'dipole' is not an output"):
        output_jacobian(potential, potential.graph(molecule("H2O")), keys.DIPOLE)


def test_charged_potential_passes_the_battery(potential):
    testing.run_all(_charged(potential), molecule("CH3CH2OH"), periodic=make_water_box(),
                    gradcheck=False)


# --- total charge in the calculator ------------------------------------------
def test_calculator_recomputes_when_the_charge_changes(potential):
    atoms = molecule("CH3CH2OH")
    atoms.calc = atomnet.Calculator(_charged(potential))
    neutral = atoms.get_potential_energy()
    np.testing.assert_allclose(atoms.get_charges().sum(), 0.0, atol=1e-12)
    atoms.info["charge"] = 1.0
    cation = atoms.get_potential_energy()
    assert abs(cation - neutral) > 1e-3, "stale result: the charge change was not seen"
    np.testing.assert_allclose(atoms.get_charges().sum(), 1.0, atol=1e-12)
    np.testing.assert_allclose(atoms.get_dipole_moment(),
                               atoms.get_charges() @ atoms.positions, atol=1e-10)


def test_calculator_without_charges_has_no_charge_property(potential):
    atoms = molecule("H2O")
    atoms.calc = atomnet.Calculator(potential)
    assert "charges" not in atoms.calc.implemented_properties
    with pytest.raises(Exception, match="charges"):
        atoms.get_charges()


@pytest.mark.parametrize("value", ["abc", None, float("nan"), [1, 2]])
def test_a_bad_total_charge_names_the_field(potential, value):
    atoms = molecule("H2O")
    atoms.info["charge"] = value
    with pytest.raises(StructureError, match=r"water.xyz, frame 3: info\['charge'\]"):
        potential.graph(atoms, source="water.xyz", index=3)


# --- float32 far from the origin ---------------------------------------------
@pytest.mark.parametrize("distance", [1e3, 1e4])
def test_float32_forces_do_not_drift_far_from_the_origin(potential, distance):
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.05, seed=3)
    calc = atomnet.Calculator(potential, dtype="float32")
    near = calc.get_forces(atoms).copy()
    far = atoms.copy()
    far.translate([distance, -0.7 * distance, 0.3 * distance])
    drift = np.abs(calc.get_forces(far) - near).max()
    assert drift < 1e-6, f"float32 forces moved by {drift:.1e} eV/Å at {distance:g} Å"


def test_float32_unwrapped_cell_matches_wrapped(potential):
    box = make_water_box()
    far = box.copy()
    rng = np.random.default_rng(0)
    far.positions += rng.integers(-200, 200, size=(len(far), 3)) @ far.cell.array
    calc = atomnet.Calculator(potential, dtype="float32")
    near = calc.get_forces(box).copy()
    assert np.abs(calc.get_forces(far) - near).max() < 1e-5
