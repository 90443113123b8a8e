"""The ``atomnet`` command: evaluate, md, train, and plain error messages for user errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import ase.io
import numpy as np
import pytest
import yaml
from ase import Atoms
from ase.build import molecule
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator

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


def test_md_nve_reports_drift_and_writes_trajectory(trained, capsys, tmp_path):
    out = tmp_path / "traj.xyz"
    status = main(["md", str(trained["model"]), str(trained["test"]), "--steps", "20",
                   "--thermostat", "nve", "--interval", "5", "--out", str(out)])
    assert status == 0
    assert "meV/atom/ps" in capsys.readouterr().out
    assert len(ase.io.read(out, ":")) == 5


def test_md_langevin_runs(trained, capsys, tmp_path):
    status = main(["md", str(trained["model"]), str(trained["test"]), "--steps", "5",
                   "--temperature", "500", "--out", str(tmp_path / "t.xyz")])
    assert status == 0
    assert "Langevin" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["evaluate", "{folder}/missing.atomnet", "{test}"], "model file not found"),
        (["evaluate", "{model}", "{folder}/missing.xyz"], "file not found"),
        (["evaluate", "{model}", "{folder}/nitrogen.xyz"], "element(s) N not known"),
        (["md", "{model}", "{test}", "--steps", "0"], "--steps must be >= 1"),
        (["train", "{folder}/missing.yaml"], "config file not found"),
        (["train", "{folder}/bad.yaml"], "training.epoch"),
    ],
)
def test_user_errors_print_one_line_and_exit_2(trained, capsys, argv, message):
    folder = trained["folder"]
    ammonia = molecule("NH3")
    ammonia.calc = SinglePointCalculator(ammonia, energy=-1.0)
    ase.io.write(folder / "nitrogen.xyz", ammonia)
    bad = yaml.safe_load((folder / "config.yaml").read_text())
    bad["training"]["epoch"] = 3
    (folder / "bad.yaml").write_text(yaml.safe_dump(bad))
    fields = {"folder": folder, "model": trained["model"], "test": trained["test"]}
    status = main([a.format(**fields) for a in argv])
    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith("atomnet: error: ") and message in err
    assert "Traceback" not in err


def test_command_runs_as_a_process(trained):
    proc = subprocess.run(
        [sys.executable, "-m", "atomnet.cli.main", "evaluate", str(trained["model"]),
         str(trained["folder"] / "missing.xyz")],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert "atomnet: error:" in proc.stderr and "Traceback" not in proc.stderr
