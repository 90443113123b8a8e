"""The e3nn equivariant message-passing model (atomnet/models/equivariant.py).

Physics: the kit's battery in float64 (forces, stress and Hessian against finite
differences, invariance, separability, no cross-talk) for a molecule and a small cell in
which atoms see their own images; equivariance of each block and of the node features
under rotations and reflections; messages that vanish beyond the cutoff (skinned lists).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.build import molecule
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
from ase.md.verlet import VelocityVerlet
from e3nn import o3
from e3nn.util.test import assert_equivariant

import atomnet
from atomnet import keys, testing
from atomnet.errors import UsageError
from atomnet.io.model_file import ModelFileError
from atomnet.models.equivariant import (
    PRESETS,
    Equivariant,
    RadialMLP,
    bessel_basis,
    envelope,
    second_moment_gain,
)
from atomnet.structures import collate, to_device
from atomnet.terms import StatisticsData

ELEMENTS = ["H", "C", "O"]


def _model(**options):
    torch.manual_seed(0)
    recipe = {"type": "equivariant", "size": "small", **options}
    pot = atomnet.build(recipe, ELEMENTS, cutoff=options.pop("cutoff", 4.0)).double()
    term = pot.terms["short_range"]
    term.scale.uniform_(0.5, 2.0)
    term.shift.uniform_(-1.0, 1.0)
    term.avg_num_neighbors.fill_(7.0)
    return pot


def _small_cell() -> Atoms:
    """Two waters in a 3.2–3.4 Å triclinic cell: with a 4 Å cutoff atoms see their images."""
    return Atoms("OH2OH2", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0],
                                      [1.6, 1.7, 1.6], [2.5, 1.8, 1.6], [1.4, 2.6, 1.8]],
                 cell=[[3.4, 0, 0], [0.3, 3.2, 0], [0.1, 0.2, 3.3]], pbc=True)


def test_kit_battery_float64():
    results = testing.run_all(_model(), molecule("CH3OH"), periodic=_small_cell())
    assert results["forces_fd"] < 1e-6 and results["stress_fd"] < 1e-6


def _block_inputs(term: Equivariant):
    pot_graph = to_device(atomnet.Potential({"m": term}, ELEMENTS).prepare(
        _model().graph(molecule("CH3CH2OH"), labels=False)), "cpu", torch.float64)
    f = term.fields
    i, j = pot_graph[f.index]
    species = pot_graph[keys.SPECIES]
    one_hot = torch.nn.functional.one_hot(species, len(ELEMENTS)).double()
    basis = bessel_basis(pot_graph[f.lengths], term.pair_cutoff, term.hparams["num_radial"])
    return pot_graph, i, j, species, one_hot, basis


def test_each_block_is_equivariant_under_rotations_and_reflections():
    term = _model().terms["short_range"]
    _, i, j, species, one_hot, basis = _block_inputs(term)
    inv = torch.tensor(1.0 / 7.0, dtype=torch.float64)
    irreps_in = o3.Irreps(f"{term.hparams['channels']}x0e")
    for interaction in term.interactions:
        def block(h, sh, interaction=interaction):
            return interaction(h, one_hot, species, sh, basis, i, j, inv)

        h = irreps_in.randn(species.numel(), -1, dtype=torch.float64)
        sh = term.irreps_sh.randn(i.numel(), -1, dtype=torch.float64)
        scale = float(block(h, sh).detach().abs().max())
        assert scale > 1e-2
        errors = assert_equivariant(block, args_in=[h, sh],
                                    irreps_in=[irreps_in, term.irreps_sh],
                                    irreps_out=[term.hidden], do_parity=True,
                                    tolerance=1e-10 * max(scale, 1.0) * 1e3)
        assert max(float(e) for e in errors.values()) < 1e-10 * max(scale, 1.0) * 1e3
        irreps_in = term.hidden


@pytest.mark.parametrize("det", [1.0, -1.0])
def test_node_features_rotate_with_the_molecule(det):
    """h(R x) = h(x) D(R)ᵀ for the vector features, R a rotation or a rotoreflection."""
    pot = _model()
    term = pot.terms["short_range"]
    atoms = molecule("CH3CH2OH")
    rng = np.random.default_rng(3)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.linalg.det(q)) * det
    moved = atoms.copy()
    moved.positions = atoms.positions @ q.T

    def features(a):
        g = pot.prepare(to_device(pot.graph(a, labels=False), "cpu", torch.float64))
        return term.node_features(g)

    matrix = torch.as_tensor(q, dtype=torch.float64)
    d = term.hidden.D_from_matrix(matrix)
    for h, h_moved in zip(features(atoms), features(moved)):
        # scalars to rounding; vectors to e3nn's D(R), which goes through Euler angles
        c = term.hparams["channels"]
        assert torch.allclose(h_moved[:, :c], h[:, :c], atol=1e-12)
        assert torch.allclose(h_moved, h @ d.T, atol=1e-7)
        assert h[:, term.hparams["channels"]:].abs().max() > 1e-3  # vectors are not zero


def test_messages_vanish_beyond_the_cutoff():
    x = torch.linspace(3.9, 5.0, 12, dtype=torch.float64, requires_grad=True)
    b = bessel_basis(x, 4.0, 8)
    assert torch.all(b[x >= 4.0] == 0)
    (g,) = torch.autograd.grad(b.sum(), x, create_graph=True)
    (g2,) = torch.autograd.grad(g.sum(), x)
    assert torch.all(g[x >= 4.0] == 0) and torch.all(g2[x >= 4.0] == 0)
    assert float(envelope(torch.tensor(0.0), 4.0)) == 1.0


def test_skinned_lists_along_md_equal_a_fresh_calculator():
    pot = _model()
    atoms = molecule("CH3CH2OH")
    atoms.calc = atomnet.Calculator(pot, dtype="float64")
    assert atoms.calc.active_skin == 0.5
    MaxwellBoltzmannDistribution(atoms, temperature_K=600, rng=np.random.default_rng(0))
    VelocityVerlet(atoms, timestep=0.5 * units.fs).run(40)
    fresh = atoms.copy()
    fresh.calc = atomnet.Calculator(pot, dtype="float64", skin=0.0)
    assert np.abs(atoms.get_forces() - fresh.get_forces()).max() < 1e-9


def test_float32_and_stress_through_the_calculator():
    pot = _model()
    cell = _small_cell()
    out = {}
    for dtype in ("float64", "float32"):
        a = cell.copy()
        a.calc = atomnet.Calculator(pot, dtype=dtype)
        out[dtype] = (a.get_potential_energy(), a.get_forces(), a.get_stress())
    assert abs(out["float64"][0] - out["float32"][0]) < 1e-4
    assert np.abs(out["float64"][1] - out["float32"][1]).max() < 1e-4
    assert np.abs(out["float64"][2] - out["float32"][2]).max() < 1e-5


def test_model_file_round_trip_and_bounds(tmp_path):
    pot = _model()
    path = atomnet.save(pot, tmp_path / "eq.atomnet")
    loaded = atomnet.load(path)
    recipe = loaded.terms["short_range"].recipe()
    assert recipe == {"cutoff": 4.0, "size": "small", **PRESETS["small"]}
    a = molecule("CH3OH")
    e = []
    for p in (pot, loaded):
        a.calc = atomnet.Calculator(p, dtype="float64")
        e.append(a.get_potential_energy())
    assert e[0] == pytest.approx(e[1], abs=1e-12)
    with pytest.raises(UsageError, match="size must be one of"):
        atomnet.build({"type": "equivariant", "size": "huge"}, ELEMENTS)
    with pytest.raises(UsageError, match="channels must be a positive integer"):
        atomnet.build({"type": "equivariant", "channels": 0}, ELEMENTS)
    from atomnet.io.header import validate_header
    from atomnet.io.model_file import read_header

    header = read_header(path)  # a header asking for a huge e3nn build is refused
    header["potential"]["terms"][1]["channels"] = 100000
    with pytest.raises(ModelFileError, match="channels"):
        validate_header(header, "x.atomnet")


def test_initialisation_preserves_the_signal_scale():
    """The untrained radial network neither shrinks nor blows up its input (with
    PyTorch's default init it shrank it ~20×, and training started ~500× too small)."""
    assert second_moment_gain(torch.nn.functional.silu) == pytest.approx(1.6765, abs=2e-3)
    torch.manual_seed(0)
    x = torch.randn(20000, 8, dtype=torch.float64)
    y = RadialMLP([8, 64, 64, 64, 300]).double()(x)
    assert 0.6 < float(y.pow(2).mean()) < 1.6
    term = Equivariant(["H", "C", "O"], cutoff=5.0).double()
    assert float(term.embed.weight.std()) == pytest.approx(1.0, abs=0.3)


def test_statistics_set_the_neighbour_count():
    pot = _model()
    term = pot.terms["short_range"]
    frames = [molecule("CH3CH2OH"), molecule("CH3OH")]
    for k, a in enumerate(frames):
        a.info["energy"] = -1.0 - k
        a.arrays["forces"] = np.full((len(a), 3), 0.1)
    graphs = [pot.graph(a, require=("energy",)) for a in frames]

    def batches():
        yield pot.prepare(collate(graphs))

    info = term.fit_statistics(StatisticsData(graphs, torch.tensor([-1.0, -2.0]), batches))
    pairs = sum(int((a.get_all_distances() < 4.0).sum() - len(a)) for a in frames)
    assert info["avg_num_neighbors"] == pytest.approx(pairs / sum(len(a) for a in frames))
    assert float(term.avg_num_neighbors) == pytest.approx(info["avg_num_neighbors"])


def test_compiled_calculator_follows_the_eager_one():
    """compile=True (torch.compile of the term, dynamic shapes) along a short NVE run:
    forces equal the eager calculator's; Hessians still work (run eagerly); the model
    given to the calculator is not touched."""
    pot = _model()
    atoms = molecule("CH3OH")
    atoms.rattle(0.05, seed=2)
    fast = atoms.copy()
    fast.calc = atomnet.Calculator(pot, dtype="float64", compile=True)
    ref = atoms.copy()
    ref.calc = atomnet.Calculator(pot, dtype="float64")
    assert "forward" not in pot.terms["short_range"].__dict__
    MaxwellBoltzmannDistribution(fast, temperature_K=500, rng=np.random.default_rng(1))
    ref.set_momenta(fast.get_momenta())
    dyn_fast = VelocityVerlet(fast, timestep=0.5 * units.fs)
    dyn_ref = VelocityVerlet(ref, timestep=0.5 * units.fs)
    for _ in range(3):
        dyn_fast.run(2)
        dyn_ref.run(2)
        assert np.abs(fast.get_forces() - ref.get_forces()).max() < 1e-9
    assert np.abs(fast.calc.get_hessian() - ref.calc.get_hessian()).max() < 1e-8
    assert np.abs(fast.get_forces() - ref.get_forces()).max() < 1e-9  # compiled again
