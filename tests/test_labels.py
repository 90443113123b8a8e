"""Labels per structure: masks in graphs, losses and metrics; stress only for 3-D cells.

Data are made here with ASE's EMT: rattled periodic Cu cells (energy, forces,
stress) and small isolated Cu clusters (no stress, or all-zero stress as some
codes write), and rattled methanol with forces on only some frames.
"""

from __future__ import annotations

import math
from pathlib import Path

import ase.io
import numpy as np
import pytest
import torch
import yaml
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator

import atomnet
from atomnet import keys
from atomnet.derivatives import evaluate
from atomnet.structures import collate
from atomnet.training import load_config, train
from atomnet.training.evaluation import evaluate_set
from atomnet.training.losses import LossWeights, Prediction, Reference, compute_loss
from atomnet.training.metrics import ErrorAccumulator
from atomnet.training.prepare import prepare

CU_MODEL = {"type": "bpnn", "cutoff": 4.0, "hidden": [8], "n_radial": 6,
            "n_angular_radial": 2, "n_angle_sections": 2}


def emt_labelled(atoms: Atoms, stress: bool | str = False, forces: bool = True) -> Atoms:
    """``atoms`` with EMT labels; ``stress="zeros"`` writes an all-zero stress label."""
    atoms = atoms.copy()
    atoms.calc = EMT()
    results = {"energy": atoms.get_potential_energy()}
    if forces:
        results["forces"] = atoms.get_forces()
    if stress == "zeros":
        results["stress"] = np.zeros(6)
    elif stress:
        results["stress"] = atoms.get_stress()
    atoms.calc = SinglePointCalculator(atoms, **results)
    return atoms


def cu_cell(rng: np.random.Generator) -> Atoms:
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.set_cell(atoms.cell * rng.uniform(0.98, 1.02), scale_atoms=True)
    atoms.rattle(0.05, seed=int(rng.integers(1000)))
    return atoms


def cu_cluster(rng: np.random.Generator, n: int = 4) -> Atoms:
    """A small isolated Cu cluster (fcc fragment, no cell, not periodic)."""
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)[:n]
    atoms.pbc = False
    atoms.cell = np.zeros((3, 3))
    atoms.rattle(0.05, seed=int(rng.integers(1000)))
    return atoms


def mixed_frames(n_cells: int = 6, n_clusters: int = 4, seed: int = 0) -> list[Atoms]:
    """Periodic cells with stress labels interleaved with clusters: half of them carry
    an all-zero stress label (to be ignored), half none."""
    rng = np.random.default_rng(seed)
    frames = [emt_labelled(cu_cell(rng), stress=True) for _ in range(n_cells)]
    for k in range(n_clusters):
        cluster = emt_labelled(cu_cluster(rng, 3 + k % 2), stress="zeros" if k % 2 else False)
        frames.insert(2 * k + 1, cluster)
    return frames


def write_config(folder: Path, frames: list[Atoms], **training) -> Path:
    ase.io.write(folder / "data.xyz", frames, format="extxyz")
    options = {"epochs": 2, "batch_size": 4, "lr": 5e-3, "stress_weight": 10.0,
               "dtype": "float64", "seed": 1}
    options.update(training)
    config = {
        "data": {"train": "data.xyz", "valid_fraction": 0.3, "e0s": {"Cu": 0.0}},
        "model": dict(CU_MODEL),
        "training": options,
        "output": {"dir": "out", "progress": False},
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


# --- graphs ------------------------------------------------------------------


def test_stress_label_of_a_molecule_is_ignored():
    cluster = emt_labelled(cu_cluster(np.random.default_rng(0)), stress="zeros")
    assert atomnet.structures.get_label(cluster, "stress") is None
    graph = atomnet.build(CU_MODEL, ["Cu"]).graph(cluster)
    assert keys.ref("stress") not in graph and keys.mask("stress") not in graph
    assert bool(graph[keys.mask("forces")]) and keys.mask("energy") not in graph


def test_mixed_set_pads_missing_labels_with_masks(tmp_path):
    frames = mixed_frames()
    prepared = prepare(load_config(write_config(tmp_path, frames, epochs=1)))
    data = prepared.data.train
    assert data.labels == ("energy", "forces", "stress")
    for graph, index in zip(data.graphs, prepared.split["train"]):
        periodic = bool(frames[index].pbc.all())
        assert graph[keys.mask("stress")].shape == (1,)
        assert bool(graph[keys.mask("stress")]) == periodic
        assert graph[keys.ref("stress")].shape == (1, 3, 3)
        if not periodic:
            assert not graph[keys.ref("stress")].any()
    batch = collate(data.graphs)
    assert batch[keys.mask("stress")].shape == (len(data),)


# --- derivatives -------------------------------------------------------------


def test_stress_of_a_batch_mixing_a_cell_and_a_molecule_is_finite():
    rng = np.random.default_rng(2)
    potential = atomnet.build(CU_MODEL, ["Cu"]).double()
    cell, cluster = cu_cell(rng), cu_cluster(rng)
    batch = collate([potential.graph(cell), potential.graph(cluster)])
    res = evaluate(potential, batch, forces=True, stress=True, create_graph=True)
    assert torch.isfinite(res.stress).all()
    assert not res.stress[1].any(), "a molecule has no stress"
    alone = evaluate(potential, potential.graph(cell), forces=True, stress=True)
    assert torch.allclose(res.stress[0], alone.stress[0], atol=1e-12)
    assert float(alone.stress.abs().max()) > 1e-6
    params = [p for p in potential.parameters() if p.requires_grad]
    grads = torch.autograd.grad(res.stress.sum(), params, allow_unused=True)
    grads = [g for g in grads if g is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


# --- losses and metrics ------------------------------------------------------


def test_masked_force_and_stress_loss_use_labelled_structures_only():
    ref = Reference(energy=torch.zeros(2), n_atoms=torch.tensor([1, 2]), weight=torch.ones(2),
                    batch=torch.tensor([0, 1, 1]), forces=torch.zeros(3, 3),
                    stress=torch.zeros(2, 3, 3), forces_mask=torch.tensor([False, True]),
                    stress_mask=torch.tensor([True, False]))
    forces = torch.tensor([[1e3, 1e3, 1e3], [1.0, 1.0, 1.0], [1.0, 1.0, 1.0]])
    stress = torch.stack([torch.full((3, 3), 0.5), torch.full((3, 3), 1e3)])
    pred = Prediction(energy=torch.zeros(2), forces=forces, stress=stress)
    terms = compute_loss(pred, ref, LossWeights(1.0, 1.0, 1.0))
    assert float(terms.forces) == pytest.approx(1.0)  # atom 0 (no label) left out
    assert float(terms.stress) == pytest.approx(0.25)  # structure 1 (no label) left out
    acc = ErrorAccumulator()
    acc.update(pred, ref)
    assert (acc.forces.n, acc.stress.n) == (6, 9)
    metrics = acc.compute()
    assert metrics["forces_mae"] == pytest.approx(1000.0)
    assert metrics["stress_mae"] == pytest.approx(500.0)


def test_metric_without_labelled_structures_is_absent():
    ref = Reference(energy=torch.zeros(1), n_atoms=torch.tensor([2]), weight=torch.ones(1),
                    batch=torch.tensor([0, 0]), forces=torch.zeros(2, 3),
                    forces_mask=torch.tensor([False]))
    pred = Prediction(energy=torch.ones(1), forces=torch.ones(2, 3))
    terms = compute_loss(pred, ref, LossWeights())
    assert float(terms.forces) == 0.0 and math.isfinite(float(terms.total))
    acc = ErrorAccumulator()
    acc.update(pred, ref, terms)
    metrics = acc.compute()
    assert "forces_mae" not in metrics and "forces_rmse" not in metrics
    assert metrics["energy_mae"] == pytest.approx(1000.0)


# --- training ----------------------------------------------------------------


def test_cells_mixed_with_clusters_train_and_stress_counts_cells_only(tmp_path, capsys):
    frames = mixed_frames()
    path = write_config(tmp_path, frames)
    result = train(path)
    n_train = len(result.state.split["train"])
    n_cells = sum(frames[i].pbc.all() for i in result.state.split["train"])
    assert f"stress ({n_cells}/{n_train} structures)" in capsys.readouterr().out
    assert len(result.state.history) == 2
    assert all(math.isfinite(h["train_loss"]) for h in result.state.history)
    # the final train metrics are those of the saved (best) model: recompute the stress
    # MAE by hand from its predictions on the periodic training frames
    potential = atomnet.load(result.model_path)
    train_frames = [frames[i] for i in result.state.split["train"]]
    periodic = [a for a in train_frames if a.pbc.all()]
    assert 0 < len(periodic) < len(train_frames)
    errors = []
    for atoms in periodic:
        ref = atomnet.structures.get_label(atoms, "stress")
        res = evaluate(potential, potential.graph(atoms, labels=False), stress=True)
        errors.append(np.abs(res.stress[0].detach().numpy() - ref))
    by_hand = 1000.0 * float(np.mean(errors))
    assert result.metrics["train"]["stress_mae"] == pytest.approx(by_hand, rel=1e-8)
    # and the count behind it is the number of periodic frames
    prepared = prepare(load_config(path))
    acc = ErrorAccumulator()
    evaluate_set(prepared.potential, prepared.data.train, 4, accumulator=acc)
    assert acc.stress.n == 9 * len(periodic)
    n_atoms = sum(len(a) for a in train_frames)
    assert acc.forces.n == 3 * n_atoms


def test_molecules_with_zero_stress_labels_train_with_a_finite_loss(tmp_path):
    rng = np.random.default_rng(4)
    frames = [emt_labelled(cu_cluster(rng, 4), stress="zeros") for _ in range(8)]
    result = train(write_config(tmp_path, frames, epochs=1))
    assert math.isfinite(result.state.history[0]["train_loss"])
    assert "stress_mae" not in result.metrics["train"]


def methanol(n: int, seed: int) -> list[Atoms]:
    rng = np.random.default_rng(seed)
    frames = []
    for k in range(n):
        atoms = molecule("CH3OH")
        atoms.positions += rng.normal(0.0, 0.06, atoms.positions.shape)
        frames.append(emt_labelled(atoms, forces=k % 3 != 0))
    return frames


def test_partial_forces_train_and_force_loss_uses_labelled_frames_only(tmp_path):
    frames = methanol(12, seed=1)
    ase.io.write(tmp_path / "data.xyz", frames, format="extxyz")
    config = {
        "data": {"train": "data.xyz", "valid_fraction": 0.25, "e0s": {"H": -1.0, "C": -2.0,
                                                                      "O": -3.0}},
        "model": {"type": "bpnn", "cutoff": 4.0, "hidden": [8]},
        "training": {"epochs": 2, "batch_size": 4, "dtype": "float64"},
        "output": {"dir": "out", "progress": False},
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    result = train(tmp_path / "c.yaml")
    assert all(math.isfinite(h["train_loss"]) for h in result.state.history)
    assert "forces_mae" in result.metrics["train"]

    prepared = prepare(load_config(tmp_path / "c.yaml"))
    data = prepared.data.train
    with_forces = [bool(frames[i].calc.results.get("forces") is not None)
                   for i in prepared.split["train"]]
    assert any(with_forces) and not all(with_forces)
    masks = [bool(g[keys.mask("forces")]) for g in data.graphs]
    assert masks == with_forces
    # garbage in the padded (unlabelled) force fields changes neither loss nor metrics
    from atomnet.training.data import iterate
    from atomnet.training.evaluation import predict, reference

    batch, residuals = next(iterate(data, [list(range(len(data)))]))
    pred = predict(prepared.potential, batch, data.labels, create_graph=False)
    ref = reference(batch, residuals, data.labels)
    clean = compute_loss(pred, ref, LossWeights())
    atoms_without = ~ref.forces_mask[ref.batch]
    noisy_forces = ref.forces.clone()
    noisy_forces[atoms_without] = 1e6
    noisy = compute_loss(pred, ref._replace(forces=noisy_forces), LossWeights())
    assert float(noisy.forces) == pytest.approx(float(clean.forces), rel=1e-12)
    labelled = ~atoms_without
    by_hand = float(((pred.forces - ref.forces)[labelled] ** 2).mean())
    assert float(clean.forces) == pytest.approx(by_hand, rel=1e-10)


def test_evaluate_cli_counts_labels_per_structure(tmp_path):
    from atomnet.cli.evaluate import evaluate_file

    frames = mixed_frames(seed=3)
    result = train(write_config(tmp_path, frames, epochs=1))
    potential = atomnet.load(result.model_path)
    metrics = evaluate_file(potential, tmp_path / "data.xyz", "cpu", torch.float64, 3)
    assert metrics["n_structures"] == len(frames)
    errors = []
    for atoms in frames:
        if atoms.pbc.all():
            ref = atomnet.structures.get_label(atoms, "stress")
            res = evaluate(potential, potential.graph(atoms, labels=False), stress=True)
            errors.append(np.abs(res.stress[0].detach().numpy() - ref))
    assert metrics["stress_mae"] == pytest.approx(1000.0 * float(np.mean(errors)), rel=1e-8)
