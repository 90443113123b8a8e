"""The fast BP path for MD (atomnet/calculators/bp_kernel.py) and the calculator's per-call work.

The kernel evaluates a BP potential on index tensors prepared once per list build,
padded to buckets: its energies, forces and stress must equal the reference
evaluation (atomnet.derivatives.evaluate) for molecules and cells, whatever the padding.
Skinned lists cut back to their cutoffs hold exactly a fresh list's pairs and triplets.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import units
from ase.build import molecule
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
from ase.md.verlet import VelocityVerlet
from conftest import make_ethanol, make_water_box

import atomnet
from atomnet import keys
from atomnet.calculators import bp_kernel
from atomnet.calculators.ase_calculator import changes_since
from atomnet.calculators.bp_kernel import BPKernel, bucket, supports
from atomnet.derivatives import evaluate
from atomnet.errors import UsageError
from atomnet.neighbors.trim import trim_pair_lists
from atomnet.structures import to_device

ELEMENTS = ["H", "C", "O"]


def _model(physics=None, e0=True):
    torch.manual_seed(0)
    model = {"type": "bpnn", "hidden": [16, 16]}
    if physics:
        model["physics"] = physics
    pot = atomnet.build(model, ELEMENTS, cutoff=4.0,
                        e0s={"H": -13.6, "C": -1029.0, "O": -2041.0} if e0 else None)
    for term in pot.terms.values():  # non-trivial statistics, so that they are exercised
        if hasattr(term, "feature_std"):
            term.feature_std.uniform_(0.5, 2.0)
            term.scale.uniform_(0.5, 2.0)
            term.shift.uniform_(-1.0, 1.0)
    return pot.double()


def test_bucket_sizes():
    for n in [0, 1, 15, 16, 17, 100, 1000, 12345, 10**6]:
        b = bucket(n)
        assert b > n and b >= bp_kernel.MIN_BUCKET
        assert b <= max(bp_kernel.MIN_BUCKET, 1.125 * (n + 1) + 1)
    sizes = {bucket(n) for n in range(1000, 2000)}
    assert len(sizes) <= 9  # a handful of compiled shapes per octave


@pytest.mark.parametrize("grouped", [False, True])
@pytest.mark.parametrize("make", [make_ethanol, make_water_box])
def test_kernel_equals_reference_evaluation(make, grouped, monkeypatch):
    """Both layouts of the networks: one padded block (small systems) and one matrix
    product per element on atoms sorted by element (large ones)."""
    if grouped:
        monkeypatch.setattr(bp_kernel, "PADDED_MAX_ATOMS", 0)
    pot = _model()
    atoms = make()
    graph = to_device(pot.graph(atoms, labels=False, skin=0.3), "cpu", torch.float64)
    ref = evaluate(pot, graph, forces=True, stress=bool(atoms.pbc.all()))
    kernel = BPKernel(pot)
    x = kernel.inputs(graph)
    assert bool(x.groups) == grouped
    parts, forces, virial = kernel(graph[keys.POSITIONS], x)
    assert kernel.term_names == ["short_range", "e0"]
    assert torch.allclose(parts.sum(0), ref.atomic_energies, atol=1e-12, rtol=0)
    for name, row in zip(kernel.term_names, parts):
        assert torch.allclose(row, ref.contributions[name], atol=1e-12, rtol=0)
    assert torch.allclose(forces, ref.forces, atol=1e-12, rtol=0)
    if atoms.pbc.all():
        assert torch.allclose(virial, ref.virial[0], atol=1e-11, rtol=0)


def test_padding_changes_nothing(monkeypatch):
    """Padded edges sit beyond every cutoff: more padding gives the same numbers."""
    pot = _model()
    graph = to_device(pot.graph(make_water_box(), labels=False), "cpu", torch.float64)
    kernel = BPKernel(pot)
    a = kernel(graph[keys.POSITIONS], kernel.inputs(graph))
    monkeypatch.setattr(bp_kernel, "MIN_BUCKET", 1 << 16)
    x = kernel.inputs(graph)
    assert x.i.numel() >= 1 << 16 and x.e1.numel() >= 1 << 16
    b = kernel(graph[keys.POSITIONS], x)
    for u, v in zip(a, b):
        assert torch.allclose(u, v, atol=1e-13, rtol=0)


def test_supports_names_what_it_cannot_run():
    assert supports(_model()) is None
    assert "stages" in supports(_model({"charges": "learned"}))
    assert "zbl" in supports(_model({"repulsion": {"method": "zbl"}})) or \
        "repulsion" in supports(_model({"repulsion": {"method": "zbl"}}))
    with pytest.raises(UsageError, match="compile=True needs a plain BP model"):
        atomnet.Calculator(_model({"charges": "learned"}), compile=True)


def test_trimmed_lists_are_a_fresh_lists():
    pot = _model()
    atoms = make_water_box()
    skinned = pot.graph(atoms, labels=False, skin=0.5)
    fresh = pot.graph(atoms, labels=False)
    trimmed = trim_pair_lists(skinned, pot.pair_lists)
    f = keys.pairs(4.0)

    def pair_set(g):
        i, j = g[f.index].tolist()
        return {(a, b, *s) for a, b, s in zip(i, j, g[f.shifts].long().tolist())}

    def triplet_set(g):
        i, j = g[f.index]
        s = g[f.shifts].long()
        out = set()
        for a, b in g[f.triplets].T.tolist():
            ends = sorted([(int(j[a]), *s[a].tolist()), (int(j[b]), *s[b].tolist())])
            out.add((int(i[a]), *ends[0], *ends[1]))
        return out

    assert skinned[f.index].shape[1] > fresh[f.index].shape[1]
    assert pair_set(trimmed) == pair_set(fresh)
    assert triplet_set(trimmed) == triplet_set(fresh)
    assert triplet_set(skinned) > triplet_set(fresh)


def test_large_systems_trim_and_match_a_fresh_calculator(monkeypatch):
    """Systems from TRIM_ATOMS atoms on cut their skinned lists back each call: along
    NVE, forces equal a skin-free calculator's (eager kernel and reference path)."""
    from atomnet.calculators import ase_calculator

    monkeypatch.setattr(ase_calculator, "TRIM_ATOMS", 10)  # the 24-atom box trims
    pot = _model()
    atoms = make_water_box()
    for use_kernel in (False, True):
        a = atoms.copy()
        a.calc = atomnet.Calculator(pot, dtype="float64")
        if use_kernel:
            a.calc._kernel = BPKernel(a.calc.potential)
        MaxwellBoltzmannDistribution(a, temperature_K=600, rng=np.random.default_rng(0))
        VelocityVerlet(a, timestep=0.5 * units.fs).run(60)
        fresh = a.copy()
        fresh.calc = atomnet.Calculator(pot, dtype="float64", skin=0.0)
        assert np.abs(a.get_forces() - fresh.get_forces()).max() < 1e-9
        assert np.abs(a.get_stress() - fresh.get_stress()).max() < 1e-9
        assert abs(a.get_potential_energy() - fresh.get_potential_energy()) < 1e-9
        assert a.calc.results["contributions"].keys() == fresh.calc.results["contributions"].keys()


def test_compiled_calculator_follows_the_reference():
    """compile=True (torch.compile of the kernel) along a short NVE run of a small
    molecule, float64: forces equal the reference calculator's at every step."""
    pot = _model()
    atoms = molecule("CH3OH")
    atoms.rattle(0.05, seed=1)
    fast = atoms.copy()
    fast.calc = atomnet.Calculator(pot, dtype="float64", compile=True)
    ref = atoms.copy()
    ref.calc = atomnet.Calculator(pot, dtype="float64")
    MaxwellBoltzmannDistribution(fast, temperature_K=500, rng=np.random.default_rng(1))
    ref.set_momenta(fast.get_momenta())
    dyn_fast = VelocityVerlet(fast, timestep=0.5 * units.fs)
    dyn_ref = VelocityVerlet(ref, timestep=0.5 * units.fs)
    for _ in range(10):
        dyn_fast.run(2)
        dyn_ref.run(2)
        assert np.abs(fast.get_forces() - ref.get_forces()).max() < 1e-9
        assert abs(fast.get_potential_energy() - ref.get_potential_energy()) < 1e-9
    assert np.allclose(fast.calc.results["energies"], ref.calc.results["energies"], atol=1e-10)


def test_state_checks_are_exact():
    atoms = make_ethanol()
    old = atoms.copy()
    assert changes_since(old, atoms) == []
    atoms.positions[3, 1] += 1e-12
    assert changes_since(old, atoms) == ["positions"]
    atoms = old.copy()
    atoms.set_initial_charges([0.1] * len(atoms))
    assert changes_since(old, atoms) == ["initial_charges"]
    atoms = old.copy()
    atoms.cell = [10, 10, 10]
    atoms.pbc = True
    assert set(changes_since(old, atoms)) == {"cell", "pbc"}
    calc = atomnet.Calculator(_model())
    atoms = make_ethanol()
    atoms.calc = calc
    e = atoms.get_potential_energy()
    atoms.get_forces()
    atoms.positions[0, 0] += 1e-10  # any change of the positions recomputes
    assert atoms.get_potential_energy() != e


def test_kernel_on_cuda():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    pot = _model()
    atoms = make_water_box()
    cpu = atoms.copy()
    cpu.calc = atomnet.Calculator(pot, dtype="float64")
    gpu = atoms.copy()
    gpu.calc = atomnet.Calculator(pot, dtype="float64", device="cuda")
    assert gpu.calc._kernel is not None
    assert np.abs(cpu.get_forces() - gpu.get_forces()).max() < 1e-9
    assert np.abs(cpu.get_stress() - gpu.get_stress()).max() < 1e-9


@pytest.mark.parametrize("make", [make_ethanol, make_water_box])
def test_gpu_code_path_on_the_cpu(make):
    """What a CUDA calculator runs (graphs built in torch by vesin-torch, the eager
    kernel, no host sync in the call), run on the CPU: along NVE it follows the
    reference calculator, and the lists are reused."""
    pot = _model()
    atoms = make()
    gpu_like = atoms.copy()
    gpu_like.calc = atomnet.Calculator(pot, dtype="float64")
    gpu_like.calc._device_graphs = True
    gpu_like.calc._kernel = BPKernel(gpu_like.calc.potential)
    ref = atoms.copy()
    ref.calc = atomnet.Calculator(pot, dtype="float64", skin=0.0)
    MaxwellBoltzmannDistribution(gpu_like, temperature_K=600, rng=np.random.default_rng(2))
    ref.set_momenta(gpu_like.get_momenta())
    for dyn in (VelocityVerlet(gpu_like, timestep=0.5 * units.fs),
                VelocityVerlet(ref, timestep=0.5 * units.fs)):
        dyn.run(40)
    assert np.abs(gpu_like.positions - ref.positions).max() < 1e-9
    assert np.abs(gpu_like.get_forces() - ref.get_forces()).max() < 1e-9
    assert 1 <= gpu_like.calc.rebuilds < 40
    if atoms.pbc.all():
        assert np.abs(gpu_like.get_stress() - ref.get_stress()).max() < 1e-9
