"""Terms subtracted from the labels before training (D3 with ``mode: subtract``).

The labels are corrected once per structure (energy, forces, stress) and the training
graphs carry no pair list of D3's own; training then matches the old scheme (D3 kept
inside the potential during training) to rounding, the model file keeps the flag and
``atomnet evaluate`` reports the training's test metrics.
"""

from __future__ import annotations

from pathlib import Path

import ase.io
import numpy as np
import pytest
import torch
import yaml
from ase.build import molecule
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from conftest import make_water_box

import atomnet
from atomnet import keys
from atomnet.cli.evaluate import evaluate_file
from atomnet.derivatives import evaluate
from atomnet.errors import UsageError
from atomnet.training import ConfigError, train
from atomnet.training import prepare as prepare_module

D3 = {"method": "d3bj", "functional": "pbe", "three_body": False, "mode": "subtract",
      "cutoff": 8.0, "cn_cutoff": 6.0}
MODEL = {"type": "bpnn", "cutoff": 4.0, "hidden": [8], "n_radial": 6,
         "n_angular_radial": 2, "n_angle_sections": 2, "physics": {"dispersion": D3}}


def labelled(atoms) -> ase.Atoms:
    atoms = atoms.copy()
    atoms.calc = EMT()
    results = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
    if atoms.pbc.all():
        results["stress"] = atoms.get_stress(voigt=False)
    atoms.calc = SinglePointCalculator(atoms, **results)
    return atoms


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    rng = np.random.default_rng(3)
    frames = []
    for seed in range(6):
        box = make_water_box(n=2, seed=seed)
        box.positions += rng.normal(scale=0.03, size=box.positions.shape)
        frames.append(labelled(box))
    for _ in range(6):
        m = molecule("H2O")
        m.positions += rng.normal(scale=0.05, size=m.positions.shape)
        frames.append(labelled(m))
    path = tmp_path_factory.mktemp("label_tails") / "train.xyz"
    ase.io.write(path, frames, format="extxyz")
    return path


def write_config(folder: Path, train_file: Path, **data) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "data": {"train": str(train_file), "valid_fraction": 0.2, "test_fraction": 0.25,
                 "e0s": {"H": -1.0, "O": -2.0}, **data},
        "model": MODEL,
        "training": {"epochs": 3, "batch_size": 3, "lr": 5e-3, "seed": 2, "dtype": "float64",
                     "forces_weight": 1.0, "stress_weight": 10.0, "scheduler": "none"},
        "output": {"dir": str(folder / "out"), "progress": False},
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run(folder: Path, train_file: Path, monkeypatch, subtract: bool, scale=None):
    """Train; ``subtract=False`` flips the flag off on the built D3 term: the previous
    scheme, D3 inside the potential during training, labels as read. ``scale``: the
    network's per-element scale (RMS force) to set after the statistics: the previous
    scheme took it from the raw forces, D3 included, the new one from what the network
    fits (forces minus D3's), the only difference between the two."""
    graphs = {}
    build, make_set = prepare_module.build_potential, prepare_module.make_set

    def built(config, elements):
        potential = build(config, elements)
        assert potential.label_names == {"dispersion"}
        potential.terms["dispersion"].subtract_from_labels = subtract
        if scale is not None:
            fit_statistics = potential.fit_statistics

            def fit_with_scale(*args, **kwargs):
                info = fit_statistics(*args, **kwargs)
                network = potential.terms["short_range"].scale
                assert not np.allclose(network.numpy(), scale.numpy())  # forces differ
                network.copy_(scale.to(network))
                return info

            potential.fit_statistics = fit_with_scale
        return potential

    def keep(name, source, frames, g, *args):
        graphs[name] = g
        return make_set(name, source, frames, g, *args)

    with monkeypatch.context() as m:
        m.setattr(prepare_module, "build_potential", built)
        m.setattr(prepare_module, "make_set", keep)
        result = train(write_config(folder, train_file))
    return result, graphs


@pytest.fixture(scope="module")
def runs(data_file, tmp_path_factory):
    mp = pytest.MonkeyPatch()
    try:
        folder = tmp_path_factory.mktemp("runs")
        new = run(folder / "subtract", data_file, mp, True)
        scale = atomnet.load(new[0].model_path).terms["short_range"].scale.detach().clone()
        return {True: new, False: run(folder / "inside", data_file, mp, False, scale)}
    finally:
        mp.undo()


def test_training_matches_d3_kept_inside_the_potential(runs):
    new, old = runs[True][0], runs[False][0]
    assert set(new.metrics) == {"train", "valid", "test"}
    for split, metrics in old.metrics.items():
        assert metrics.keys() == new.metrics[split].keys()
        for key, value in metrics.items():
            assert new.metrics[split][key] == pytest.approx(value, rel=1e-8, abs=1e-8), \
                (split, key)
    for a, b in zip(old.state.history, new.state.history, strict=True):
        for key, value in a.items():
            if isinstance(value, float) and "time" not in key and "seconds" not in key:
                assert b[key] == pytest.approx(value, rel=1e-8, abs=1e-8), key
    assert new.metrics["test"]["stress_mae"] > 0  # stress was compared


def test_training_graphs_carry_no_d3_pair_list(runs):
    d3 = keys.pairs(8.0).index
    for name, graphs in runs[True][1].items():
        assert graphs and not any(d3 in g for g in graphs), name
        assert all(keys.pairs(4.0).index in g for g in graphs)
    assert all(d3 in g for g in runs[False][1]["train"])  # the previous scheme did


def test_labels_are_corrected_by_d3(runs, data_file):
    """The new graphs' labels are the file's minus D3 (energy, forces, stress)."""
    model = atomnet.load(runs[True][0].model_path)
    d3 = atomnet.Potential({"d3": model.terms["dispersion"]}, model.elements).double()
    new, old = runs[True][1]["train"], runs[False][1]["train"]
    for g_new, g_old in zip(new, old, strict=True):
        res = evaluate(d3, g_old, forces=True, stress=True)
        for label, value in (("energy", res.energy), ("forces", res.forces),
                             ("stress", res.stress)):
            ref = keys.ref(label)
            expected = g_old[ref] - value.detach().reshape(g_old[ref].shape)
            if label == "stress" and not bool(g_old[keys.mask("stress")]):
                expected = g_old[ref]
            np.testing.assert_allclose(g_new[ref].numpy(), expected.numpy(), atol=1e-10)


def test_model_file_keeps_the_flag_and_the_d3_energy(runs, data_file):
    path = runs[True][0].model_path
    model = atomnet.load(path)
    assert model.label_names == {"dispersion"}
    assert model.terms["dispersion"].subtract_from_labels
    entry = next(t for t in model.recipe()["terms"] if t["name"] == "dispersion")
    assert entry["subtract_from_labels"] is True and "fitted" not in entry
    again = atomnet.Potential.from_recipe(model.recipe())
    assert again.terms["dispersion"].subtract_from_labels
    # the model's total energy still includes D3
    atoms = ase.io.read(data_file, 0)
    graph = model.graph(atoms)
    res = evaluate(model.double(), graph, forces=False)
    assert set(res.contributions) >= {"dispersion"}
    with model.as_fitted():
        fitted = evaluate(model, graph, forces=False)
    assert "dispersion" not in fitted.contributions
    d3 = float(res.contributions["dispersion"].sum())
    assert d3 < 0
    assert float(fitted.energy.detach()) == pytest.approx(float(res.energy.detach()) - d3,
                                                          abs=1e-9)


def test_evaluate_reports_the_training_test_metrics(runs):
    result = runs[True][0]
    out = result.model_path.parent
    metrics = evaluate_file(atomnet.load(result.model_path), out / "test.xyz", torch.device("cpu"),
                            torch.float64, 4)
    test = {k: v for k, v in result.metrics["test"].items() if k != "loss"}
    assert test and set(test) <= set(metrics)
    for key, value in test.items():
        assert metrics[key] == pytest.approx(value, rel=1e-8, abs=1e-8), key


def test_streaming_refuses_terms_subtracted_from_labels(data_file, tmp_path):
    path = write_config(tmp_path, data_file, streaming=True)
    with pytest.raises(ConfigError, match="does not yet subtract"):
        train(path)


def test_build_records_subtract_and_add():
    subtract = atomnet.build(MODEL, ["H", "O"])
    assert subtract.label_names == {"dispersion"} and subtract.added_names == set()
    assert 8.0 in subtract.pair_lists and 8.0 not in subtract.fitted_pair_lists
    add = atomnet.build({**MODEL, "physics": {"dispersion": {**D3, "mode": "add"}}},
                        ["H", "O"])
    assert add.label_names == set() and add.added_names == {"dispersion"}
    with pytest.raises(UsageError, match="subtract_from_labels"):
        atomnet.Potential.from_recipe({"elements": ["H"], "terms": [
            {"name": "d", "type": "d3bj", "functional": "pbe", "three_body": False,
             "subtract_from_labels": "yes"}]})


def test_added_terms_need_no_pair_list_in_training_graphs():
    """mode: add leaves D3 out of what is fitted, so training graphs skip its list too;
    the model used as a calculator still has it."""
    physics = {"dispersion": {"method": "d3bj", "functional": "pbe", "three_body": False,
                              "mode": "add", "cutoff": 9.0, "cn_cutoff": 7.0}}
    pot = atomnet.build({"type": "bpnn", "hidden": [8], "physics": physics}, ["H", "O"])
    assert 9.0 in pot.pair_lists and 9.0 not in pot.fitted_pair_lists
    graph = pot.fitted_graph(make_water_box())
    assert not any(key.endswith("@9.0") for key in graph)
