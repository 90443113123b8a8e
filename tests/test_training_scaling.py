"""Training that scales: the closed-form schedule and the time budget, weight EMA,
per-element scale and shift, stage two, and data-parallel training under torchrun
(2 gloo processes on CPU: the same update as one process with the global batch).

Data: EMT-labelled methanol rattles (self-contained); tiny models, a few epochs.
"""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
from pathlib import Path

import ase.io
import numpy as np
import pytest
import torch
import yaml
from ase import Atoms
from safetensors import safe_open
from test_training import TINY_MODEL, labelled, methanol_frames

import atomnet
from atomnet import keys
from atomnet.models.statistics import element_scale_shift
from atomnet.training import load_config, schedule, train
from atomnet.training.checkpoint import read_checkpoint
from atomnet.training.distributed import World
from atomnet.training.ema import EMA
from atomnet.training.trainer import _weights, setup


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """20 methanol frames (17 train, 3 valid: the last global batch of 8 has one
    structure, so one rank of two gets an empty shard) and isolated-atom energies."""
    folder = tmp_path_factory.mktemp("scaling_data")
    ase.io.write(folder / "train.xyz", methanol_frames(20, seed=11), format="extxyz")
    atoms = [labelled(Atoms(s, pbc=False)) for s in ("H", "C", "O")]
    ase.io.write(folder / "e0s.xyz", atoms, format="extxyz")
    return folder


def write(folder: Path, data: Path, **training) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    options = {"epochs": 3, "batch_size": 8, "lr": 5e-3, "seed": 3, "dtype": "float64"}
    options.update(training)
    config = {
        "data": {"train": str(data / "train.xyz"), "isolated_atoms": str(data / "e0s.xyz"),
                 "valid_fraction": 0.15},
        "model": dict(TINY_MODEL),
        "training": options,
        "output": {"dir": str(folder / "out"), "progress": False, "log_every": 1},
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def tensors(path: Path, prefix: str) -> dict[str, torch.Tensor]:
    with safe_open(str(path), framework="pt") as f:
        return {k[len(prefix):]: f.get_tensor(k) for k in f.keys() if k.startswith(prefix)}


def history(path: Path) -> list[dict[str, float]]:
    with open(path) as f:
        return [{k: float(v) for k, v in row.items() if v} for row in csv.DictReader(f)]


# --- the schedule -------------------------------------------------------------


def test_learning_rate_is_a_closed_form_of_progress(tmp_path, data):
    t = load_config(write(tmp_path, data, lr=1e-3, min_lr_factor=0.1)).training
    assert schedule.learning_rate(t, 0.0) == pytest.approx(1e-3)
    assert schedule.learning_rate(t, 0.5) == pytest.approx(1e-4 + 0.9e-3 * 0.5)
    assert schedule.learning_rate(t, 1.0) == pytest.approx(1e-4)
    t.warmup_fraction = 0.2
    assert schedule.learning_rate(t, 0.1) == pytest.approx(0.5e-3)
    assert schedule.learning_rate(t, 0.2) == pytest.approx(1e-3)
    assert schedule.learning_rate(t, 0.6) == pytest.approx(1e-4 + 0.9e-3 * 0.5)
    t.stage_two = {"start": 0.8, "lr_factor": 0.5}
    p = 0.9
    x = (p - 0.2) / 0.8
    assert schedule.learning_rate(t, p) == pytest.approx(
        0.5 * (1e-4 + 0.9e-3 * 0.5 * (1 + math.cos(math.pi * x))))
    # progress: the larger of the epoch fraction and the budget fraction
    t.max_time_minutes = 2.0
    assert schedule.progress(t, 1.0, 60.0) == pytest.approx(0.5)
    assert schedule.progress(t, 2.4, 6.0) == pytest.approx(0.8)
    assert schedule.progress(t, 0.0, 1e6) == 1.0


def test_extending_a_finished_run_continues_the_cosine(tmp_path, data):
    """The review's bug: 4 epochs, then raised to 8, gave a constant lr × min_lr_factor."""
    path = write(tmp_path, data, epochs=4, lr=1e-2, min_lr_factor=0.01)
    train(path)
    config = yaml.safe_load(path.read_text())
    config["training"]["epochs"] = 8
    path.write_text(yaml.safe_dump(config))
    result = train(path)
    t = load_config(path).training
    lrs = [h["lr"] for h in result.state.history]
    assert len(lrs) == 8
    # the last step of epoch e ran at progress (e − 1 + 2/3)/8 (3 batches per epoch)
    for e in (5, 6, 7, 8):
        assert lrs[e - 1] == pytest.approx(schedule.learning_rate(t, (e - 1 + 2 / 3) / 8))
    assert lrs[4] > 10 * t.lr * t.min_lr_factor
    assert all(a > b for a, b in zip(lrs[4:], lrs[5:]))


def test_a_run_cut_by_its_budget_ends_at_the_low_learning_rate(tmp_path, data):
    path = write(tmp_path, data, epochs=100000, batch_size=4, lr=1e-2, min_lr_factor=0.01,
                 max_time_minutes=0.05)
    result = train(path)
    state = result.state
    # 3 s budget, plus at most one step and one validation (generous: CI machines are noisy)
    assert 3 <= state.elapsed_s < 3 + 10, state.elapsed_s
    assert state.epoch < 1000  # the clock ended it, not the epochs
    lr_end = state.history[-1]["lr"]
    assert lr_end < 2 * 1e-2 * 0.01, lr_end  # at the bottom of the cosine
    # and on the way, the lr followed the budget: about half-way down after half the time
    times = np.cumsum([h["time_s"] for h in state.history])
    middle = int(np.searchsorted(times, 1.5))
    assert 2e-3 < state.history[middle]["lr"] < 8e-3, (middle, times, state.history[middle])
    # resuming a spent budget trains no further
    again = train(path)
    assert again.state.epoch == state.epoch


# --- EMA ----------------------------------------------------------------------------


def test_ema_average_and_swap():
    p = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    ema = EMA([p], decay=0.9)
    expected = torch.zeros(3, dtype=torch.float64)
    for n in range(30):
        with torch.no_grad():
            p.add_(1.0)
        d = min(0.9, (1 + n) / (10 + n))
        expected = d * expected + (1 - d) * p.detach()
        ema.update()
    assert torch.allclose(ema.shadow[0], expected, rtol=1e-14)
    with ema.applied():
        assert torch.equal(p.detach(), ema.shadow[0])
    assert torch.equal(p.detach(), torch.full((3,), 30.0, dtype=torch.float64))


def test_ema_weights_are_validated_saved_and_resumed_bit_exactly(tmp_path, data):
    straight = train(write(tmp_path / "straight", data, epochs=4, ema_decay=0.9))
    out = tmp_path / "straight" / "out"
    header, _ = read_checkpoint(out / "checkpoint.atomnet")
    assert header["ema"]["updates"] == 4 * 3
    run = setup(load_config(tmp_path / "straight" / "config.yaml"))  # resumes the finished run
    assert run.ema.updates == 12
    # the saved model is the best epoch's averaged weights, not the raw ones
    model = tensors(straight.model_path, "")
    names = [n for n, p in run.potential.named_parameters() if p.requires_grad]
    if straight.state.best_epoch == 4:
        for name, avg in zip(names, run.ema.shadow):
            key = next(k for k in model if k.endswith(name))
            assert torch.equal(model[key], avg)
            assert not torch.equal(avg, dict(run.potential.named_parameters())[name].detach())

    def kill(epoch: int, entry: dict) -> None:
        if epoch == 2:
            raise KeyboardInterrupt

    path = write(tmp_path / "killed", data, epochs=4, ema_decay=0.9)
    with pytest.raises(KeyboardInterrupt):
        train(path, on_epoch_end=kill)
    resumed = train(path)
    a, b = tensors(straight.model_path, ""), tensors(resumed.model_path, "")
    assert all(torch.equal(a[k], b[k]) for k in a)
    c1 = tensors(out / "checkpoint.atomnet", "ema.")
    c2 = tensors(tmp_path / "killed" / "out" / "checkpoint.atomnet", "ema.")
    assert c1.keys() == c2.keys() and all(torch.equal(c1[k], c2[k]) for k in c1)


def test_checkpoints_are_throttled_but_written_on_interrupt_and_at_the_end(tmp_path, data):
    """``output.checkpoint_seconds``: a crash loses the epochs since the last checkpoint
    (none here: the interval is long); Ctrl-C between epochs and the end write one."""
    def crash(epoch: int, entry: dict) -> None:
        if epoch == 2:
            raise RuntimeError("simulated crash")

    def interrupt(epoch: int, entry: dict) -> None:
        if epoch == 2:
            raise KeyboardInterrupt

    for name, hook, expected in (("crash", crash, None), ("interrupt", interrupt, 2)):
        path = write(tmp_path / name, data, epochs=4)
        config = yaml.safe_load(path.read_text())
        config["output"]["checkpoint_seconds"] = 1e6
        path.write_text(yaml.safe_dump(config))
        with pytest.raises((RuntimeError, KeyboardInterrupt)):
            train(path, on_epoch_end=hook)
        ckpt = tmp_path / name / "out" / "checkpoint.atomnet"
        if expected is None:
            assert not ckpt.exists()
        else:
            assert read_checkpoint(ckpt)[0]["state"]["epoch"] == expected
        assert len(history(tmp_path / name / "out" / "metrics.csv")) == 2
        result = train(path)  # resumes (or restarts) and writes the final checkpoint
        assert read_checkpoint(ckpt)[0]["state"]["epoch"] == 4
        rows = history(tmp_path / name / "out" / "metrics.csv")
        assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
        assert [{k: v for k, v in r.items() if k != "time_s"} for r in rows] == \
            [{k: v for k, v in h.items() if k != "time_s"} for h in result.state.history]


# --- stage two -------------------------------------------------------------------


def test_plateau_refuses_warmup_when_the_config_is_read(tmp_path, data):
    from atomnet.training import ConfigError

    with pytest.raises(ConfigError, match="'plateau' does not combine with warmup_fraction"):
        load_config(write(tmp_path, data, scheduler="plateau", warmup_fraction=0.1))


def test_stage_two_replaces_the_loss_weights_and_scales_the_lr(tmp_path, data):
    path = write(tmp_path, data, energy_weight=1.0, forces_weight=10.0, scheduler="none",
                 stage_two={"start": 0.5, "lr_factor": 0.2, "energy_weight": 100.0})
    run = setup(load_config(path))
    t = run.config.training
    assert _weights(run, 0.4) == run.weights
    assert _weights(run, 0.6).energy == 100.0 and _weights(run, 0.6).forces == 10.0
    assert schedule.learning_rate(t, 0.4) == pytest.approx(5e-3)
    assert schedule.learning_rate(t, 0.6) == pytest.approx(1e-3)
    result = train(path)
    assert [h["lr"] for h in result.state.history] == pytest.approx([5e-3, 1e-3, 1e-3])


# --- per-element scale and shift ----------------------------------------------------


def _graph(species: list[int], forces: np.ndarray, energy: float) -> dict:
    return {keys.SPECIES: torch.tensor(species), keys.N_ATOMS: torch.tensor([len(species)]),
            keys.ref("forces"): torch.tensor(forces), keys.ref("energy"): torch.tensor([energy])}


def test_element_scale_shift_recovers_per_element_energies_and_forces():
    rng = np.random.default_rng(0)
    per_atom = np.array([-0.3, 1.2, 0.5])  # eV per atom of elements 0, 1, 2
    force_sd = np.array([0.2, 1.0, 3.0])  # eV/Å per component
    graphs, residuals = [], []
    for _ in range(60):
        species = rng.integers(0, 3, size=rng.integers(3, 9)).tolist()
        forces = rng.normal(size=(len(species), 3)) * force_sd[species][:, None]
        residuals.append(per_atom[species].sum())
        graphs.append(_graph(species, forces, residuals[-1]))
    scale, shift = element_scale_shift(graphs, torch.tensor(residuals), 3)
    assert np.allclose(shift.numpy(), per_atom, atol=1e-10)
    sq = np.zeros(3)
    n = np.zeros(3)
    for g in graphs:
        s = g[keys.SPECIES].numpy()
        np.add.at(sq, s, (g[keys.ref("forces")].numpy() ** 2).sum(1))
        np.add.at(n, s, 3)
    assert np.allclose(scale.numpy(), np.sqrt(sq / n), rtol=1e-12)
    assert np.allclose(scale.numpy(), force_sd, rtol=0.25)


def test_element_shift_of_a_single_composition_is_the_mean_per_atom():
    """One molecule: the counts do not separate the elements, so each keeps the mean."""
    graphs = [_graph([0, 0, 1], np.zeros((3, 3)), e) for e in (3.0, 3.3, 2.7)]
    scale, shift = element_scale_shift(graphs, torch.tensor([3.0, 3.3, 2.7]), 3)
    assert np.allclose(shift.numpy(), 1.0, atol=1e-12)
    assert torch.equal(scale, torch.ones(3, dtype=torch.float64))  # zero forces: fallback


def test_model_files_with_a_scalar_scale_and_shift_still_load(tmp_path):
    pot = atomnet.build(dict(TINY_MODEL), ["H", "C", "O"], 4.0)
    bp = pot.terms["short_range"]
    state = pot.state_dict()
    prefix = next(k for k in state if k.endswith(".scale"))[:-len("scale")]
    state[prefix + "scale"] = torch.tensor(2.5)
    state[prefix + "shift"] = torch.tensor(-0.5)
    pot.load_state_dict(state)
    assert torch.equal(bp.scale, torch.full((3,), 2.5))
    assert torch.equal(bp.shift, torch.full((3,), -0.5))
    # and through a model file written that way (as atomnet 0.1 wrote them)
    from safetensors.torch import save_file

    path = atomnet.save(pot.double(), tmp_path / "new.atomnet")
    with safe_open(str(path), framework="pt") as f:
        metadata, saved = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    name = next(k for k in saved if k.endswith("short_range.scale"))
    saved[name] = torch.tensor(2.5, dtype=torch.float64)
    saved[name[:-len("scale")] + "shift"] = torch.tensor(-0.5, dtype=torch.float64)
    save_file(saved, str(tmp_path / "old.atomnet"), metadata=metadata)
    old = atomnet.load(tmp_path / "old.atomnet")
    assert torch.equal(old.terms["short_range"].shift,
                       torch.full((3,), -0.5, dtype=torch.float64))
    atoms = methanol_frames(1)[0]
    e_old = atomnet.Calculator(old).get_potential_energy(atoms)
    e_new = atomnet.Calculator(pot).get_potential_energy(atoms)
    assert e_old == pytest.approx(e_new, abs=1e-10)


# --- data-parallel ------------------------------------------------------------------


def test_shards_cover_each_global_batch_in_order():
    batch = list(range(7))
    shards = [World(r, 3).shard(batch) for r in range(3)]
    assert sum(shards, []) == batch
    assert World(0, 2).shard([5]) == [] and World(1, 2).shard([5]) == [5]


def torchrun(config: Path, n: int = 2) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={n}", "-m", "atomnet", "train", str(config)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


def test_two_processes_with_half_batches_equal_one_process(tmp_path, data):
    """2 gloo ranks × batch 4 = 1 rank × batch 8: parameters, EMA and logged losses after
    3 epochs agree to 1e-8 relative (float64); the last batch leaves rank 0 empty."""
    one = train(write(tmp_path / "one", data, batch_size=8, ema_decay=0.9))
    log = torchrun(write(tmp_path / "two", data, batch_size=4, ema_decay=0.9))
    assert "2 processes × batch 4 = global batch 8" in log.stdout
    ckpt1 = tmp_path / "one" / "out" / "checkpoint.atomnet"
    ckpt2 = tmp_path / "two" / "out" / "checkpoint.atomnet"
    for prefix in ("model.", "ema.", "best."):
        a, b = tensors(ckpt1, prefix), tensors(ckpt2, prefix)
        assert a.keys() == b.keys() and a
        for k in a:
            if a[k].is_floating_point():
                scale = a[k].abs().max().clamp_min(1e-30)
                assert float((a[k] - b[k]).abs().max() / scale) < 1e-8, (prefix, k)
    h1, h2 = history(tmp_path / "one" / "out" / "metrics.csv"), \
        history(tmp_path / "two" / "out" / "metrics.csv")
    assert len(h1) == len(h2) == 3
    for x, y in zip(h1, h2):
        for key in ("train_loss", "train_forces_mae", "valid_loss", "valid_forces_mae", "lr"):
            assert y[key] == pytest.approx(x[key], rel=1e-8), key
    assert one.state.epoch == 3


def test_resume_under_torchrun_continues_bit_exactly(tmp_path, data):
    """2 epochs, then the same command raised to 3, equals 3 epochs in one go (constant
    lr, so the schedule does not depend on the epoch count); rank 0 alone writes."""
    torchrun(write(tmp_path / "straight", data, epochs=3, batch_size=4, scheduler="none",
                   ema_decay=0.9))
    path = write(tmp_path / "resumed", data, epochs=2, batch_size=4, scheduler="none",
                 ema_decay=0.9)
    torchrun(path)
    config = yaml.safe_load(path.read_text())
    config["training"]["epochs"] = 3
    path.write_text(yaml.safe_dump(config))
    log = torchrun(path)
    assert "resuming from" in log.stdout and log.stdout.count("resuming from") == 1
    a = tensors(tmp_path / "straight" / "out" / "checkpoint.atomnet", "")
    b = tensors(tmp_path / "resumed" / "out" / "checkpoint.atomnet", "")
    floats = [k for k in a if a[k].is_floating_point() and not k.startswith("rng")]
    assert floats and all(torch.equal(a[k], b[k]) for k in floats)
    files = sorted(p.name for p in (tmp_path / "resumed" / "out").iterdir())
    assert files == sorted(p.name for p in (tmp_path / "straight" / "out").iterdir())
    assert not [f for f in files if f.endswith(".tmp")]
