"""Training: config errors, E0 statistics, losses, the loop, determinism, resume, checkpoints.

Data are made here with ASE's EMT (methanol rattles, a rattled Cu cell with stress):
self-contained and fast. Each training run is a few epochs of a tiny model.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import ase.io
import numpy as np
import pytest
import torch
import yaml
from ase import Atoms
from ase.build import molecule
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from safetensors import safe_open

import atomnet
from atomnet.training import ConfigError, TrainingError, fit_e0s, load_config, train
from atomnet.training.checkpoint import read_checkpoint
from atomnet.training.data import split_indices
from atomnet.training.losses import LossWeights, Prediction, Reference, compute_loss
from atomnet.training.statistics import read_isolated_atoms
from atomnet.training.trainer import fit, setup, validate

TINY_MODEL = {"type": "bpnn", "cutoff": 4.0, "hidden": [16, 16], "n_radial": 8,
              "n_angular_radial": 2, "n_angle_sections": 4}


def labelled(atoms: Atoms, stress: bool = False) -> Atoms:
    """``atoms`` with EMT energy, forces (and stress) stored as labels."""
    atoms = atoms.copy()
    atoms.calc = EMT()
    results = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
    if stress:
        results["stress"] = atoms.get_stress()
    atoms.calc = SinglePointCalculator(atoms, **results)
    return atoms


def methanol_frames(n: int, seed: int = 0) -> list[Atoms]:
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):
        atoms = molecule("CH3OH")
        atoms.positions += rng.normal(0.0, 0.06, atoms.positions.shape)
        frames.append(labelled(atoms))
    return frames


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> dict[str, Path]:
    """20 labelled methanol structures and a file of isolated-atom energies."""
    folder = tmp_path_factory.mktemp("data")
    ase.io.write(folder / "train.xyz", methanol_frames(20), format="extxyz")
    atoms = [labelled(Atoms(s, pbc=False)) for s in ("H", "C", "O")]
    ase.io.write(folder / "e0s.xyz", atoms, format="extxyz")
    return {"train": folder / "train.xyz", "e0s": folder / "e0s.xyz"}


def write_config(folder: Path, dataset: dict, **training) -> Path:
    """A YAML config in ``folder`` with relative data paths; ``training`` overrides."""
    folder.mkdir(parents=True, exist_ok=True)
    options = {"epochs": 3, "batch_size": 4, "lr": 5e-3, "seed": 3, "dtype": "float64"}
    options.update(training)
    config = {
        "data": {"train": str(Path("..") / "data" / dataset["train"].name),
                 "isolated_atoms": str(dataset["e0s"]), "valid_fraction": 0.2,
                 "test_fraction": 0.1},
        "model": dict(TINY_MODEL),
        "training": options,
        "output": {"dir": "out", "progress": False},
    }
    # data lives in <tmp>/data; put configs in <tmp>/<name>/ so "../data" resolves
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def config_dir(dataset, tmp_path) -> Path:
    """A folder next to the dataset's folder (so that ``../data/train.xyz`` resolves)."""
    link = tmp_path / "data"
    link.symlink_to(dataset["train"].parent)
    return tmp_path / "run"


# --- config ----------------------------------------------------------------


def test_config_resolves_relative_paths_and_numbers(dataset, config_dir):
    path = write_config(config_dir, dataset, lr="1e-3")
    cfg = load_config(path)
    assert cfg.data.train == config_dir.parent / "data" / "train.xyz"
    assert cfg.output.dir == config_dir / "out"
    assert cfg.training.lr == 1e-3  # YAML reads "1e-3" as a string: accepted as a float


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c["training"].update(lrr=0.1), "training.lrr"),
        (lambda c: c["data"].pop("train"), "missing required key 'data.train'"),
        (lambda c: c.pop("model"), "missing required section 'model'"),
        (lambda c: c.update(extra={}), "unknown section"),
        (lambda c: c["training"].update(epochs="many"), "training.epochs: expected int"),
        (lambda c: c["training"].update(scheduler="step"), "training.scheduler"),
        (lambda c: c["data"].update(e0s={"H": 0.0}), "not both"),
    ],
)
def test_config_errors_name_key_and_file(dataset, config_dir, edit, message):
    path = write_config(config_dir, dataset)
    raw = yaml.safe_load(path.read_text())
    edit(raw)
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("output", "log_every", 0),  # was a ZeroDivisionError after epoch 1
        ("training", "forces_weight", -1.0),  # was silently energy-only training
        ("training", "energy_weight", -0.5),
        ("training", "stress_weight", -1.0),
        ("training", "patience", 0),  # was a stop after one epoch
        ("training", "grad_clip", 0.0),
        ("training", "grad_clip", -1.0),
        ("training", "min_lr_factor", 0.0),
        ("training", "min_lr_factor", 1.5),
        ("training", "weight_decay", -1e-4),
        ("training", "scheduler_patience", 0),
        ("training", "max_time_minutes", 0.0),
        ("training", "lr", float("nan")),
        ("training", "forces_weight", float("nan")),
    ],
)
def test_out_of_range_values_are_config_errors_naming_the_key(
    dataset, config_dir, section, key, value
):
    path = write_config(config_dir, dataset)
    raw = yaml.safe_load(path.read_text())
    raw[section][key] = value
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert f"{section}.{key}" in str(info.value) and str(path) in str(info.value)


def test_all_loss_weights_zero_is_a_config_error(dataset, config_dir):
    path = write_config(config_dir, dataset, energy_weight=0.0, forces_weight=0.0,
                        stress_weight=0.0)
    with pytest.raises(ConfigError, match="all 0"):
        load_config(path)


@pytest.mark.parametrize(("key", "value"), [("grad_clip", None), ("patience", None),
                                            ("max_time_minutes", None), ("min_lr_factor", 1.0),
                                            ("forces_weight", 0.0), ("patience", 1)])
def test_edge_values_that_are_allowed(dataset, config_dir, key, value):
    cfg = load_config(write_config(config_dir, dataset, **{key: value}))
    assert getattr(cfg.training, key) == value


def test_unknown_model_option_is_a_config_error(dataset, config_dir):
    path = write_config(config_dir, dataset)
    raw = yaml.safe_load(path.read_text())
    raw["model"]["hiden"] = [8]
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="hiden"):
        train(path)


# --- statistics and losses --------------------------------------------------


def test_least_squares_e0s_recover_known_values():
    rng = np.random.default_rng(0)
    e0 = np.array([-13.6, -1025.3, -2035.6])
    counts = rng.integers(0, 7, size=(40, 3)).astype(float)
    energies = counts @ e0 + rng.normal(0.0, 1e-3, 40)
    fitted = fit_e0s(counts, energies, ["H", "C", "O"])
    assert np.allclose([fitted[s] for s in ("H", "C", "O")], e0, atol=2e-3)


def test_e0_fit_warns_when_compositions_do_not_determine_it():
    counts = np.array([[4.0, 1.0, 1.0]] * 5)
    with pytest.warns(UserWarning, match="not unique"):
        fitted = fit_e0s(counts, np.full(5, -3000.0), ["H", "C", "O"])
    assert counts[0] @ np.array(list(fitted.values())) == pytest.approx(-3000.0)


def test_isolated_atoms_missing_element_is_named(dataset):
    with pytest.raises(atomnet.structures.StructureError, match="'N'"):
        read_isolated_atoms(dataset["e0s"], ["H", "C", "N"])


def test_split_is_seeded_and_disjoint():
    a = split_indices(50, 0.2, 0.1, seed=1)
    assert a == split_indices(50, 0.2, 0.1, seed=1)
    assert a != split_indices(50, 0.2, 0.1, seed=2)
    assert sorted(a[0] + a[1] + a[2]) == list(range(50))
    assert (len(a[1]), len(a[2])) == (10, 5)


def test_loss_is_energy_per_atom_and_force_component_mse():
    ref = Reference(energy=torch.tensor([1.0, 2.0]), n_atoms=torch.tensor([2, 4]),
                    weight=torch.ones(2), batch=torch.tensor([0, 0, 1, 1, 1, 1]),
                    forces=torch.zeros(6, 3))
    pred = Prediction(energy=torch.tensor([3.0, 2.0]), forces=torch.full((6, 3), 0.5))
    terms = compute_loss(pred, ref, LossWeights(energy=1.0, forces=2.0))
    assert float(terms.energy) == pytest.approx(((2.0 / 2) ** 2 + 0.0) / 2)
    assert float(terms.forces) == pytest.approx(0.25)
    assert float(terms.total) == pytest.approx(0.5 + 2 * 0.25)


# --- the loop ----------------------------------------------------------------


def test_training_lowers_loss_and_writes_outputs(dataset, config_dir):
    result = train(write_config(config_dir, dataset, epochs=4))
    out = config_dir / "out"
    history = result.state.history
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    for name in ("model.atomnet", "checkpoint.atomnet", "metrics.csv", "metrics.json",
                 "learning_curve.png", "force_parity.png", "test.xyz"):
        assert (out / name).is_file(), name
    lines = (out / "metrics.csv").read_text().splitlines()
    assert len(lines) == 5 and "valid_forces_mae" in lines[0]
    potential = atomnet.load(out / "model.atomnet")
    header = potential.header
    assert header["info"]["n_train"] == 14 and "test" in header["info"]["metrics"]
    # E0s are stored exactly as read, not silently zero
    e0s = read_isolated_atoms(dataset["e0s"], ["H", "C", "O"])
    assert atomnet.load(result.model_path).reference.as_dict() == e0s
    assert set(result.metrics) == {"train", "valid", "test"}
    assert len(ase.io.read(out / "test.xyz", ":")) == 2


def test_float32_training_keeps_e0s_exact(dataset, config_dir):
    path = write_config(config_dir, dataset, epochs=1, dtype="float32")
    train(path)
    loaded = atomnet.load(config_dir / "out" / "model.atomnet")
    assert loaded.reference.as_dict() == read_isolated_atoms(dataset["e0s"], ["H", "C", "O"])


def test_same_seed_gives_identical_metrics(dataset, tmp_path, config_dir):
    runs = []
    for name in ("a", "b"):
        path = write_config(config_dir.parent / name, dataset, epochs=2)
        history = train(path).state.history
        runs.append([{k: v for k, v in h.items() if k != "time_s"} for h in history])
    assert runs[0] == runs[1]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def test_resume_after_kill_matches_uninterrupted_run(dataset, config_dir):
    straight = train(write_config(config_dir.parent / "straight", dataset, epochs=4))

    def kill(epoch: int, entry: dict) -> None:
        if epoch == 2:
            raise KeyboardInterrupt

    path = write_config(config_dir.parent / "killed", dataset, epochs=4)
    with pytest.raises(KeyboardInterrupt):
        train(path, on_epoch_end=kill)
    out = path.parent / "out"
    assert not (out / "model.atomnet").exists()
    header, _ = read_checkpoint(out / "checkpoint.atomnet")
    assert header["state"]["epoch"] == 2
    epochs_run = []
    resumed = train(path, on_epoch_end=lambda epoch, entry: epochs_run.append(epoch))
    assert epochs_run == [3, 4]
    assert [h["epoch"] for h in resumed.state.history] == [1, 2, 3, 4]
    a = _weights(straight.model_path)
    b = _weights(resumed.model_path)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    strip = [{k: v for k, v in h.items() if k != "time_s"} for h in straight.state.history]
    assert strip == [{k: v for k, v in h.items() if k != "time_s"}
                     for h in resumed.state.history]


def test_resume_refuses_a_changed_config(dataset, config_dir):
    path = write_config(config_dir, dataset, epochs=1)
    train(path)
    write_config(config_dir, dataset, epochs=1, lr=1e-2)
    with pytest.raises(atomnet.training.CheckpointError, match="training.lr"):
        train(path)


def test_checkpoint_is_safetensors_with_json_header(dataset, config_dir):
    path = write_config(config_dir, dataset, epochs=1)
    train(path)
    raw = (config_dir / "out" / "checkpoint.atomnet").read_bytes()
    (size,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + size])  # safetensors: JSON header, then raw tensor bytes
    # not a pickle (0x80, protocol 2-5) nor a zip (torch.save): 8-byte length, then JSON
    assert not (raw[0] == 0x80 and 2 <= raw[1] <= 5) and b"PK\x03\x04" not in raw[:8]
    assert raw[8:9] == b"{"
    tensors = {k for k in header if k != "__metadata__"}
    assert any(k.startswith("optimizer.") and k.endswith("exp_avg_sq") for k in tensors)
    assert any(k.startswith("best.") for k in tensors) and "rng.torch" in tensors
    meta = json.loads(header["__metadata__"]["atomnet_checkpoint"])
    assert meta["state"]["epoch"] == 1 and meta["optimizer"]["param_groups"]


def test_nan_loss_raises_a_clear_error(dataset, config_dir):
    path = write_config(config_dir, dataset, epochs=2, lr=1e12, grad_clip=None,
                        dtype="float32")
    with pytest.raises(TrainingError, match=r"epoch \d+, batch \d+.*lower training.lr"):
        train(path)


CU_EMT = Path(__file__).resolve().parents[1] / "data" / "cu_emt.xyz"


def test_stress_labels_are_fitted(tmp_path):
    """Training on EMT Cu cells (energy, forces, stress) lowers the validation stress
    error well below the untrained model's."""
    ase.io.write(tmp_path / "cu.xyz", ase.io.read(CU_EMT, ":40"), format="extxyz")
    config = {
        "data": {"train": "cu.xyz", "valid_fraction": 0.25, "e0s": {"Cu": 0.0}},
        "model": {"type": "bpnn", "cutoff": 4.0, "hidden": [16], "n_radial": 6,
                  "n_angular_radial": 2, "n_angle_sections": 2},
        "training": {"epochs": 5, "batch_size": 5, "lr": 5e-3, "stress_weight": 100.0,
                     "forces_weight": 1.0, "scheduler": "none", "dtype": "float64"},
        "output": {"dir": "out", "progress": False},
    }
    (tmp_path / "cu.yaml").write_text(yaml.safe_dump(config))
    run = setup(load_config(tmp_path / "cu.yaml"))
    assert run.prepared.data.train.labels == ("energy", "forces", "stress")
    before = validate(run)
    fit(run)
    after = validate(run)
    assert before["n_structures"] == after["n_structures"] == 10
    assert after["stress_mae"] < 0.3 * before["stress_mae"], (before, after)
    assert after["stress_rmse"] < 0.3 * before["stress_rmse"]
    assert "train_stress_mae" in run.state.history[0]


def test_time_budget_stops_within_the_first_epoch(dataset, config_dir, capsys):
    path = write_config(config_dir, dataset, epochs=50, max_time_minutes=1e-4)
    result = train(path)
    assert len(result.state.history) == 1
    assert "time budget of 0.0001 min used" in capsys.readouterr().out
    assert (config_dir / "out" / "model.atomnet").is_file()


def test_separate_valid_file_without_forces(dataset, tmp_path):
    frames = methanol_frames(3, seed=5)
    for atoms in frames:
        atoms.calc = SinglePointCalculator(atoms, energy=atoms.get_potential_energy())
    ase.io.write(tmp_path / "valid.xyz", frames, format="extxyz")
    config = {
        "data": {"train": str(dataset["train"]), "valid": "valid.xyz", "e0s": "fit"},
        "model": dict(TINY_MODEL),
        "training": {"epochs": 1, "batch_size": 8},
        "output": {"dir": "out", "progress": False},
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    with pytest.warns(UserWarning, match="not unique"):  # one molecule: E0s not determined
        result = train(tmp_path / "c.yaml")
    assert "forces_mae" in result.metrics["train"]
    assert "forces_mae" not in result.metrics["valid"]
    assert "energy_mae" in result.metrics["valid"]
