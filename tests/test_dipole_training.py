"""Training against reference dipoles and per-atom charges (models with charges).

The loss terms are checked by hand on a tiny batch; the denominators the per-structure
tables give (data-parallel runs use them) against those of the loss, in memory and
streamed; a run on the bundled PBE methanol data (``data/methanol_dft.xyz``, PySCF
dipoles in e·Å) with the dipole term against the same run without it; a model without
charges on data with dipoles; and the new config keys.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import ase.io
import numpy as np
import pytest
import torch
import yaml
from ase.calculators.singlepoint import SinglePointCalculator

import atomnet
from atomnet import keys
from atomnet.cli.evaluate import evaluate_file
from atomnet.structures import StructureError, get_label
from atomnet.training import ConfigError, load_config, train
from atomnet.training.data import batch_order
from atomnet.training.evaluation import predict, reference
from atomnet.training.losses import LossWeights, Prediction, Reference, compute_loss, loss_sums
from atomnet.training.metrics import format_table
from atomnet.training.prepare import prepare
from atomnet.training.trainer import _weights, setup

DATA = Path(__file__).resolve().parents[1] / "data"
METHANOL = DATA / "methanol_dft.xyz"
ISOLATED = DATA / "methanol_isolated_atoms.xyz"

SMALL_BP = {"type": "bpnn", "cutoff": 4.0, "hidden": [16, 16], "n_radial": 8,
            "n_angular_radial": 2, "n_angle_sections": 4}
#: a small learned-charges stage (its own symmetry functions and network)
SMALL_CHARGES = {"charges": {"learned": {"hidden": [16], "n_radial": 6, "n_angular_radial": 2,
                                         "n_angle_sections": 2}}}


def write_config(folder: Path, train_file: Path, charges: bool = True, data: dict | None = None,
                 **training) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    options = {"epochs": 2, "batch_size": 16, "lr": 5e-3, "seed": 1, "dtype": "float32"}
    options.update(training)
    model = dict(SMALL_BP, physics=SMALL_CHARGES) if charges else dict(SMALL_BP)
    config = {
        "data": {"train": str(train_file), "isolated_atoms": str(ISOLATED),
                 "valid_fraction": 0.2, **(data or {})},
        "model": model,
        "training": options,
        "output": {"dir": str(folder / "out"), "progress": False, "log_every": 1},
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


# --- the loss terms ---------------------------------------------------------------


def tiny_batch():
    """Two structures (1 and 2 atoms), weights 1 and 3; zero energy error."""
    ref = Reference(
        energy=torch.zeros(2), n_atoms=torch.tensor([1, 2]), weight=torch.tensor([1.0, 3.0]),
        batch=torch.tensor([0, 1, 1]),
        dipole=torch.tensor([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0]]),
        charges=torch.tensor([0.1, -0.2, 0.1]),
    )
    pred = Prediction(energy=torch.zeros(2),
                      dipole=torch.tensor([[0.3, 0.0, 0.0], [1.0, 2.0, 3.6]]),
                      charges=torch.tensor([0.2, -0.2, 0.0]))
    return pred, ref


def test_dipole_and_charge_terms_by_hand():
    pred, ref = tiny_batch()
    weights = LossWeights(energy=1.0, forces=0.0, stress=0.0, dipole=2.0, charges=5.0)
    terms = compute_loss(pred, ref, weights)
    # dipole: Δμ² averaged over components, 0.09/3 and 0.36/3, weighted 1 and 3
    assert float(terms.dipole) == pytest.approx((1 * 0.03 + 3 * 0.12) / 4)
    # charges: Δq² = 0.01, 0, 0.01 on atoms of weight 1, 3, 3
    assert float(terms.charges) == pytest.approx((0.01 + 3 * 0.01) / 7)
    assert float(terms.energy) == 0.0 and terms.forces is None and terms.stress is None
    assert float(terms.total) == pytest.approx(2 * 0.0975 + 5 * 0.04 / 7)


def test_masked_dipole_and_charge_terms_count_labelled_structures_only():
    pred, ref = tiny_batch()
    ref = ref._replace(dipole_mask=torch.tensor([True, False]),
                       charges_mask=torch.tensor([False, True]))
    terms = compute_loss(pred, ref, LossWeights(dipole=1.0, charges=1.0))
    assert float(terms.dipole) == pytest.approx(0.03)  # structure 0 alone
    assert float(terms.charges) == pytest.approx(3 * 0.01 / 6)  # atoms 1, 2 (weight 3)
    sums = loss_sums(pred, ref, LossWeights())
    assert float(sums["dipole"][1]) == 1.0 and float(sums["charges"][1]) == 6.0


def test_terms_are_left_out_without_prediction_or_weight():
    pred, ref = tiny_batch()
    no_charges = compute_loss(pred._replace(dipole=None, charges=None), ref, LossWeights())
    assert no_charges.dipole is None and no_charges.charges is None
    zero = compute_loss(pred, ref, LossWeights(dipole=0.0, charges=0.0))
    assert zero.dipole is None and zero.charges is None and float(zero.total) == 0.0


# --- labels and denominators ---------------------------------------------------------


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> Path:
    """10 methanol frames: dipoles on all but frames 1 and 4, per-atom charges on frames
    0, 2, 3 (as calculator results, and on frame 3 as ``atoms.arrays``), weights 2 and 0.5
    on frames 2 and 5."""
    frames = ase.io.read(METHANOL, ":10")
    for k, atoms in enumerate(frames):
        results = dict(atoms.calc.results)
        if k in (1, 4):
            results.pop("dipole")
        if k in (0, 2):
            results["charges"] = np.array([-0.1, -0.5, 0.1, 0.1, 0.1, 0.3]) + 0.01 * k
            results["charges"] -= results["charges"].mean()
        atoms.calc = SinglePointCalculator(atoms, **results)
        if k == 3:
            atoms.arrays["charges"] = np.array([-0.1, -0.5, 0.1, 0.1, 0.1, 0.3])
    frames[2].info["weight"] = 2.0
    frames[5].info["weight"] = 0.5
    path = tmp_path_factory.mktemp("mixed") / "mixed.xyz"
    ase.io.write(path, frames, format="extxyz")
    return path


def test_charges_are_read_as_a_per_atom_label(mixed):
    frames = ase.io.read(mixed, ":")
    assert get_label(frames[0], "charges").shape == (6,)
    assert get_label(frames[3], "charges") is not None and get_label(frames[1], "charges") is None
    pot = atomnet.build({"type": "bpnn", "physics": {"charges": "learned"}}, ["H", "C", "O"])
    graph = pot.graph(frames[3])
    assert graph[keys.ref("charges")].shape == (6,) and bool(graph[keys.mask("charges")])
    bad = frames[0].copy()
    bad.calc = SinglePointCalculator(bad, energy=0.0, charges=np.zeros(5))
    with pytest.raises(StructureError, match="'charges' has shape"):
        pot.graph(bad)


@pytest.mark.parametrize("streaming", [False, True])
def test_denominators_equal_those_of_the_loss(mixed, tmp_path, streaming):
    """The per-structure table (what data-parallel ranks divide by) gives, for every
    batch, the counts the loss forms from the batch's graphs, dipoles and charges too."""
    config = load_config(write_config(tmp_path, mixed, dtype="float64",
                                      data={"valid_fraction": 0.0, "streaming": streaming}))
    prepared = prepare(config)
    data = prepared.data.train
    assert data.labels == ("energy", "forces", "dipole", "charges")
    table = data.structure_table()
    assert table.has_dipole.tolist() == [k not in (1, 4) for k in range(10)]
    assert table.has_charges.tolist() == [k in (0, 2, 3) for k in range(10)]
    batches = batch_order(len(data), 3, seed=5)
    seen = set()
    for batch, (graph, residuals) in zip(batches, data.iterate(batches)):
        pred = predict(prepared.potential, graph, data.labels, create_graph=False)
        sums = loss_sums(pred, reference(graph, residuals, data.labels), LossWeights())
        expected = table.denominators(batch)
        for name, (_, denominator) in sums.items():
            assert float(denominator) == pytest.approx(expected[name], rel=1e-12), name
        seen |= set(sums)
    assert seen == {"energy", "forces", "dipole", "charges"}


# --- training ---------------------------------------------------------------------------


def _dipole_run(folder: Path, train_file: Path, weight: float):
    result = train(write_config(folder, train_file, epochs=4, dipole_weight=weight,
                                data={"test_fraction": 0.1}))
    return result, folder / "out"


@pytest.fixture(scope="module")
def methanol_subset(tmp_path_factory) -> Path:
    """Every other frame of the bundled PBE methanol data (150 structures)."""
    path = tmp_path_factory.mktemp("methanol") / "methanol.xyz"
    ase.io.write(path, ase.io.read(METHANOL, "::2"), format="extxyz")
    return path


def test_training_on_dipoles_reduces_the_dipole_error(methanol_subset, tmp_path, capsys):
    """Same run (seed, split, model with learned charges) with dipole_weight 10 and 0:
    the term lowers the validation dipole error (the charges start near zero, so without
    it the error is about the reference dipoles' size)."""
    fitted, out = _dipole_run(tmp_path / "fitted", methanol_subset, 10.0)
    log = capsys.readouterr().out
    plain, _ = _dipole_run(tmp_path / "plain", methanol_subset, 0.0)
    with_term = fitted.metrics["valid"]["dipole_mae"]
    without = plain.metrics["valid"]["dipole_mae"]
    assert "note: dipole labels are evaluated but not fitted" in capsys.readouterr().out
    with capsys.disabled():  # shown with pytest -s
        print(f"\nvalid dipole MAE: {with_term:.2f} me·Å with the term, {without:.2f} without")
    assert with_term < 0.3 * without
    # reported in the log, the table, metrics.csv and metrics.json (me·Å)
    assert "μ MAE" in log and "μ MAE me·Å" in log and "labels energy, forces, dipole" in log
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert "valid_dipole_mae" in rows[0] and "train_dipole_rmse" in rows[0]
    assert json.loads((out / "metrics.json").read_text())["test"]["dipole_mae"] > 0
    # the model file gives charges and dipoles: the calculator reproduces the test metric
    calc = atomnet.Calculator(out / "model.atomnet")
    frames = ase.io.read(out / "test.xyz", ":")
    errors = []
    for atoms in frames:
        reference_dipole = get_label(atoms, "dipole")
        atoms.calc = calc
        assert abs(atoms.get_charges().sum()) < 1e-8
        errors.append(atoms.get_dipole_moment() - reference_dipole)
    mae = 1000.0 * float(np.mean(np.abs(errors)))
    assert mae == pytest.approx(fitted.metrics["test"]["dipole_mae"], rel=1e-3)
    # and so does ``atomnet evaluate``
    potential = atomnet.load(out / "model.atomnet")
    metrics = evaluate_file(potential, out / "test.xyz", torch.device("cpu"), torch.float64, 8)
    assert metrics["dipole_mae"] == pytest.approx(mae, rel=1e-6)
    assert "μ MAE me·Å" in format_table({"test": metrics})


def test_charges_labels_are_fitted_and_reported(mixed, tmp_path):
    result = train(write_config(tmp_path, mixed, epochs=1, batch_size=4,
                                data={"valid_fraction": 0.3}, charges_weight=1.0))
    train_metrics = result.metrics["train"]
    assert "charges_mae" in train_metrics and "dipole_mae" in train_metrics
    assert "q MAE me" in format_table(result.metrics)


def test_model_without_charges_trains_and_says_dipoles_are_ignored(methanol_subset, tmp_path,
                                                                    capsys):
    path = write_config(tmp_path, methanol_subset, charges=False, epochs=1, dipole_weight=5.0)
    result = train(path)
    out = capsys.readouterr().out
    assert "the training data carry dipole labels but the model predicts no charges" in out
    assert "labels energy, forces\n" in out
    assert "dipole_mae" not in result.metrics["valid"]
    assert np.isfinite(result.metrics["valid"]["loss"])
    potential = atomnet.load(result.model_path)
    metrics = evaluate_file(potential, methanol_subset, torch.device("cpu"), torch.float64, 64)
    assert "dipole_mae" not in metrics
    assert "note: dipole labels ignored" in capsys.readouterr().out


# --- config -------------------------------------------------------------------------------


@pytest.mark.parametrize(("key", "value", "named"), [
    ("dipole_weight", -1.0, "training.dipole_weight"),
    ("charges_weight", -0.5, "training.charges_weight"),
    ("dipole_weight", "lots", "training.dipole_weight"),
    ("stage_two", {"dipole_weight": -1.0}, "training.stage_two.dipole_weight"),
    ("stage_two", {"charges_weight": -1.0}, "training.stage_two.charges_weight"),
])
def test_bad_dipole_and_charge_weights_are_config_errors(tmp_path, key, value, named):
    path = write_config(tmp_path, METHANOL, **{key: value})
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")) as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_defaults_and_stage_two_weights(mixed, tmp_path):
    config = load_config(write_config(tmp_path, mixed))
    assert (config.training.dipole_weight, config.training.charges_weight) == (10.0, 1.0)
    config = load_config(write_config(
        tmp_path, mixed, dipole_weight=3.0, charges_weight=0.0,
        stage_two={"start": 0.5, "dipole_weight": 30.0, "charges_weight": 2.0}))
    run = setup(config)
    assert (run.weights.dipole, run.weights.charges) == (3.0, 0.0)
    late = _weights(run, 0.75)
    assert (late.dipole, late.charges, late.forces) == (30.0, 2.0, 10.0)
