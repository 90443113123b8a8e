"""The ``atomnet`` command: evaluate, md, train, and plain error messages for user errors."""

from __future__ import annotations

import itertools
import re
import subprocess
import sys
from pathlib import Path

import ase.io
import numpy as np
import pytest
import yaml
from ase import Atoms, units
from ase.build import molecule
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator

import atomnet
from atomnet.cli.main import main

MODEL = {"type": "bpnn", "cutoff": 4.0, "hidden": [8], "n_radial": 6,
         "n_angular_radial": 2, "n_angle_sections": 2}


def methanol(n: int, seed: int = 0, forces: bool = True) -> list[Atoms]:
    """Rattled methanol with EMT energies (and forces) as labels."""
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):
        atoms = molecule("CH3OH")
        atoms.positions += rng.normal(0.0, 0.05, atoms.positions.shape)
        atoms.calc = EMT()
        results = {"energy": atoms.get_potential_energy()}
        if forces:
            results["forces"] = atoms.get_forces()
        atoms.calc = SinglePointCalculator(atoms, **results)
        frames.append(atoms)
    return frames


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """A one-epoch model trained through ``atomnet train`` and a labelled test file."""
    folder = tmp_path_factory.mktemp("cli")
    ase.io.write(folder / "train.xyz", methanol(12), format="extxyz")
    ase.io.write(folder / "test.xyz", methanol(4, seed=1), format="extxyz")
    config = {
        "data": {"train": "train.xyz", "valid_fraction": 0.25,
                 "e0s": {"H": -13.6, "C": -1025.0, "O": -2035.0}},
        "model": MODEL,
        "training": {"epochs": 1, "batch_size": 4, "dtype": "float64"},
        "output": {"dir": "out", "progress": False},
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    assert main(["train", str(folder / "config.yaml")]) == 0
    return {"model": folder / "out" / "model.atomnet", "test": folder / "test.xyz",
            "folder": folder}


def test_evaluate_prints_metrics_table(trained, capsys, tmp_path):
    json_path = tmp_path / "m.json"
    status = main(["evaluate", str(trained["model"]), str(trained["test"]),
                   "--batch-size", "3", "--json", str(json_path)])
    out = capsys.readouterr().out
    assert status == 0
    for column in ("E MAE meV/atom", "E RMSE meV", "F MAE meV/Å", "F RMSE meV/Å"):
        assert column in out
    assert "test.xyz" in out and json_path.is_file()


def test_evaluate_handles_frames_without_forces(trained, capsys, tmp_path):
    mixed = methanol(2, seed=2) + methanol(2, seed=3, forces=False)
    ase.io.write(tmp_path / "mixed.xyz", mixed, format="extxyz")
    assert main(["evaluate", str(trained["model"]), str(tmp_path / "mixed.xyz")]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert "F MAE" in rows[0] and rows[-1].split()[1] == "4"
    ase.io.write(tmp_path / "energies.xyz", methanol(2, forces=False), format="extxyz")
    assert main(["evaluate", str(trained["model"]), str(tmp_path / "energies.xyz")]) == 0
    assert "F MAE" not in capsys.readouterr().out


def _energies(frames: list[Atoms]) -> tuple[np.ndarray, np.ndarray]:
    """Potential and kinetic energy (eV) of each written frame."""
    for atoms in frames:
        assert "momenta" in atoms.arrays, "trajectory frames must carry momenta"
    epot = np.array([atoms.get_potential_energy() for atoms in frames])
    ekin = np.array([atoms.get_kinetic_energy() for atoms in frames])
    return epot, ekin


def _printed(pattern: str, text: str) -> float:
    match = re.search(pattern, text)
    assert match, f"{pattern!r} not in {text!r}"
    return float(match.group(1))


def test_md_nve_conserves_energy_at_a_small_time_step(potential, ethanol, tmp_path, capsys):
    """Velocity Verlet, 100 fs: total energy flat at 0.5 fs, not at 5 fs (error ∝ dt²)."""
    model = atomnet.save(potential, tmp_path / "model.atomnet")
    start = tmp_path / "ethanol.xyz"
    ase.io.write(start, ethanol)
    spans, fluctuation = {}, None
    for dt, steps, interval in [("0.5", 200, 10), ("5", 20, 1)]:
        out = tmp_path / f"nve_{dt}.xyz"
        assert main(["md", str(model), str(start), "--thermostat", "nve", "--steps", str(steps),
                     "--timestep", dt, "--interval", str(interval), "--out", str(out)]) == 0
        printed = capsys.readouterr().out
        frames = ase.io.read(out, ":")
        assert len(frames) == steps // interval + 1
        epot, ekin = _energies(frames)
        spans[dt] = np.ptp(epot + ekin)
        # the printed range covers every step, the frames only every interval-th
        span_printed = _printed(r"total energy range ([\d.]+) meV/atom", printed)
        assert span_printed >= 1000.0 * spans[dt] / len(ethanol) - 1e-3
        if dt == "0.5":
            fluctuation = np.std(epot)
            assert span_printed / 1000.0 * len(ethanol) < 1e-2 * fluctuation
    assert fluctuation > 5e-3, "potential too flat for a meaningful NVE test"
    assert spans["0.5"] < 1e-2 * fluctuation, (spans, fluctuation)
    assert spans["5"] > 1e-2 * fluctuation, "a 10x time step should break conservation"
    assert spans["5"] > 20 * spans["0.5"], spans  # second order: ~100x for 10x the step


def _sparse_cluster() -> Atoms:
    """12 atoms 3 Å apart: inside the 5 Å cutoff, but too far apart to collide in 300 fs.

    The untrained potential binds nothing, so a molecule could fly apart or
    atoms overlap at 300 K; this cluster stays a sane input throughout.
    """
    grid = np.array(list(itertools.product(range(3), range(2), range(2))), dtype=float)
    atoms = Atoms("HCOHCOHCOHHH", positions=3.0 * grid)
    atoms.rattle(0.1, seed=1)
    return atoms


def test_md_langevin_holds_the_target_temperature(potential, tmp_path, capsys):
    """Mean T within 10 % of the target (≈ 7 standard errors of the mean, measured over
    seeds) and canonical fluctuations, std(T)/T ≈ sqrt(2/dof) = 0.25, that NVE lacks.
    Strong friction (0.5/fs) decorrelates T within ~1 fs, so 600 steps suffice."""
    model = atomnet.save(potential, tmp_path / "model.atomnet")
    start = tmp_path / "cluster.xyz"
    atoms = _sparse_cluster()
    ase.io.write(start, atoms)
    out = tmp_path / "langevin.xyz"
    assert main(["md", str(model), str(start), "--steps", "600", "--timestep", "0.5",
                 "--friction", "0.5", "--temperature", "300", "--seed", "0",
                 "--interval", "3", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    frames = ase.io.read(out, ":")
    assert len(frames) == 600 // 3 + 1
    _, ekin = _energies(frames)
    dof = 3 * len(atoms) - 3  # the centre of mass is fixed
    temperature = 2.0 * ekin / (dof * units.kB)
    assert temperature.mean() == pytest.approx(300.0, rel=0.1)
    assert 0.15 < temperature.std() / temperature.mean() < 0.35
    assert _printed(r"T = ([\d.]+) ±", printed) == pytest.approx(temperature.mean(), rel=0.05)
    momenta = np.array([f.get_momenta().sum(0) for f in frames])
    assert np.abs(momenta).max() < 1e-6, "centre of mass must stay at rest"  # extxyz: 8 decimals


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["evaluate", "{folder}/missing.atomnet", "{test}"], "model file not found"),
        (["evaluate", "{model}", "{folder}/missing.xyz"], "file not found"),
        (["evaluate", "{model}", "{folder}/nitrogen.xyz"], "element(s) N not known"),
        (["evaluate", "{model}", "{folder}/unlabelled.xyz"], "no structure carries an energy"),
        (["evaluate", "{model}", "{test}", "--batch-size", "0"], "--batch-size must be >= 1"),
        (["evaluate", "{model}", "{test}", "--device", "gpu"], "'gpu' is not a torch device"),
        (["md", "{model}", "{test}", "--steps", "0"], "--steps must be >= 1"),
        (["md", "{model}", "{test}", "--timestep", "0"], "--timestep must be positive"),
        (["md", "{model}", "{test}", "--device", "gpu"], "'gpu' is not a torch device"),
        (["md", "{model}", "{folder}/nitrogen.xyz"], "nitrogen.xyz, frame 0: element(s) N not"),
        (["train", "{folder}/missing.yaml"], "config file not found"),
        (["train", "{folder}/bad.yaml"], "training.epoch"),
        (["train", "{folder}/tiny.yaml"], "too small for valid_fraction"),
        (["train", "{folder}/activation.yaml"], "activation must be a smooth one"),
        (["train", "{folder}/cutoff_fn.yaml"], "cutoff_fn must be one of"),
        (["train", "{folder}/e0s.yaml"], "data.e0s lacks element(s) ['O']"),
    ],
)
def test_user_errors_print_one_line_and_exit_2(trained, capsys, monkeypatch, tmp_path, argv,
                                               message):
    monkeypatch.chdir(tmp_path)  # md's default --out is ./traj.xyz
    folder = trained["folder"]
    ammonia = molecule("NH3")
    ammonia.calc = SinglePointCalculator(ammonia, energy=-1.0)
    ase.io.write(folder / "nitrogen.xyz", ammonia)
    ase.io.write(folder / "unlabelled.xyz", molecule("CH3OH"))
    bad = yaml.safe_load((folder / "config.yaml").read_text())
    bad["training"]["epoch"] = 3
    (folder / "bad.yaml").write_text(yaml.safe_dump(bad))
    good = yaml.safe_load((folder / "config.yaml").read_text())
    ase.io.write(folder / "two.xyz", methanol(2))
    variants = {
        "tiny": {"data": {**good["data"], "train": "two.xyz", "valid_fraction": 0.5,
                          "test_fraction": 0.4}},
        "activation": {"model": {**good["model"], "activation": "relu"}},
        "cutoff_fn": {"model": {**good["model"], "cutoff_fn": "step"}},
        "e0s": {"data": {**good["data"], "e0s": {"H": -13.6, "C": -1025.0}}},
    }
    for name, change in variants.items():
        config = {**good, **change, "output": {"dir": f"out_{name}", "progress": False}}
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(config))
    fields = {"folder": folder, "model": trained["model"], "test": trained["test"]}
    status = main([a.format(**fields) for a in argv])
    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith("atomnet: error: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_md_rejects_nan_positions_naming_file_and_frame(trained, tmp_path, capsys):
    """Checked before anything runs (it used to fail as 'Eigenvalues did not converge')."""
    good = molecule("CH3OH")
    bad = good.copy()
    bad.positions[2, 1] = np.nan
    path = tmp_path / "start.xyz"
    ase.io.write(path, [good, bad], format="extxyz")
    out = tmp_path / "traj.xyz"
    status = main(["md", str(trained["model"]), str(path), "--index", "1", "--steps", "2",
                   "--out", str(out)])
    err = capsys.readouterr().err
    assert status == 2
    assert err == f"atomnet: error: {path}, frame 1: positions contains NaN or inf\n"
    assert not out.exists()


def _bug(*args, **kwargs):
    raise ValueError("internal bug")


@pytest.mark.parametrize(
    ("argv", "target"),
    [
        (["evaluate", "{model}", "{test}"], "atomnet.cli.evaluate.evaluate_set"),
        (["md", "{model}", "{test}", "--steps", "2", "--out", "{folder}/t.xyz"],
         "atomnet.cli.md.summary"),
        (["train", "{folder}/config.yaml"], "atomnet.training.train"),
    ],
)
def test_internal_errors_are_not_reported_as_user_errors(trained, monkeypatch, capsys,
                                                         argv, target):
    """A plain ValueError from inside atomnet is a bug: it keeps its traceback (no exit 2)."""
    monkeypatch.setattr(target, _bug)
    fields = {"folder": trained["folder"], "model": trained["model"], "test": trained["test"]}
    with pytest.raises(ValueError, match="internal bug"):
        main([a.format(**fields) for a in argv])
    assert "atomnet: error" not in capsys.readouterr().err


def test_command_runs_as_a_process(trained):
    proc = subprocess.run(
        [sys.executable, "-m", "atomnet.cli.main", "evaluate", str(trained["model"]),
         str(trained["folder"] / "missing.xyz")],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert "atomnet: error:" in proc.stderr and "Traceback" not in proc.stderr
