"""``atomnet md``: ensembles on ASE's integrators, output, restart and the explosion stop."""

from __future__ import annotations

import re

import ase.io
import numpy as np
import pytest

import atomnet
from atomnet.cli.main import main

COLUMNS = ["step", "time_fs", "T_K", "Epot_eV", "Ekin_eV", "Etot_eV"]


@pytest.fixture
def files(potential, ethanol, water_box, tmp_path):
    """A saved untrained model, a molecule and a periodic water box."""
    ase.io.write(tmp_path / "ethanol.xyz", ethanol)
    ase.io.write(tmp_path / "box.xyz", water_box)
    return {"model": str(atomnet.save(potential, tmp_path / "model.atomnet")),
            "ethanol": str(tmp_path / "ethanol.xyz"), "box": str(tmp_path / "box.xyz"),
            "dir": tmp_path}


def _log(path) -> tuple[list[str], np.ndarray]:
    lines = path.read_text().splitlines()
    assert lines[0].startswith("# ")
    return lines[0][2:].split(), np.loadtxt(path, ndmin=2)


def _number(pattern: str, text: str) -> float:
    match = re.search(pattern, text)
    assert match, f"{pattern!r} not in {text!r}"
    return float(match.group(1))


def test_nve_conserves_energy_and_prints_the_drift(files, capsys):
    out = files["dir"] / "nve.xyz"
    assert main(["md", files["model"], files["ethanol"], "--ensemble", "nve", "--steps", "200",
                 "--timestep", "0.25", "--interval", "20", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    drift = _number(r"NVE energy drift ([+-][\d.]+) meV/atom/ps", printed)
    span = _number(r"total energy range ([\d.]+) meV/atom", printed)
    assert abs(drift) < 0.5 and span < 0.1, printed
    assert _number(r"speed ([\d.e+]+) ns/day", printed) > 0
    assert "200 steps, 50.0 fs" in printed
    columns, log = _log(out.with_suffix(".log"))
    assert columns == COLUMNS  # a molecule: no pressure
    assert log[:, 0].tolist() == list(range(0, 201, 20))
    np.testing.assert_allclose(log[:, 5], log[:, 3] + log[:, 4], atol=1e-7)
    assert 1000.0 * np.ptp(log[:, 5]) / 9 <= span + 1e-3  # the log is a subset of the steps
    frames = ase.io.read(out, ":")
    assert len(frames) == 11 and all("momenta" in f.arrays for f in frames)
    assert [f.info["step"] for f in frames] == list(range(0, 201, 20))


@pytest.mark.parametrize("ensemble", ["nve", "nvt-langevin", "nvt-nose-hoover", "npt"])
def test_each_ensemble_runs_and_writes_trajectory_and_log(files, ensemble, capsys):
    periodic = ensemble == "npt"
    suffix = ".traj" if ensemble in ("npt", "nvt-nose-hoover") else ".xyz"
    out = files["dir"] / f"{ensemble}{suffix}"
    log = files["dir"] / "logs" / f"{ensemble}.txt"
    start = files["box"] if periodic else files["ethanol"]
    assert main(["md", files["model"], start, "--ensemble", ensemble, "--steps", "10",
                 "--interval", "5", "--out", str(out), "--log", str(log)]) == 0
    assert f"{out}, log to {log}" in capsys.readouterr().out
    frames = ase.io.read(out, ":")
    assert len(frames) == 3
    assert all(np.abs(f.get_momenta()).sum() > 0 for f in frames)
    columns, rows = _log(log)
    assert columns == COLUMNS + ["P_GPa"] * periodic
    assert rows.shape == (3, len(columns))
    np.testing.assert_allclose(rows[:, 1], [0.0, 2.5, 5.0])
    assert np.all(rows[:, 2] > 0) and np.all(np.isfinite(rows))
    if periodic:
        assert np.all(np.abs(rows[:, 6]) < 50)  # GPa, an untrained model
        assert frames[-1].cell.volume != pytest.approx(frames[0].cell.volume, rel=1e-12)


def test_npt_is_refused_for_a_molecule(files, capsys):
    status = main(["md", files["model"], files["ethanol"], "--ensemble", "npt",
                   "--out", str(files["dir"] / "t.xyz")])
    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith("atomnet: error: --ensemble npt needs a cell periodic in all 3")
    assert not (files["dir"] / "t.xyz").exists()


def test_thermostat_is_a_deprecated_alias(files, capsys):
    out = str(files["dir"] / "t.xyz")
    assert main(["md", files["model"], files["ethanol"], "--thermostat", "nve", "--steps", "4",
                 "--interval", "2", "--out", out]) == 0
    captured = capsys.readouterr()
    assert "--thermostat is deprecated; use --ensemble nve" in captured.err
    assert "NVE energy drift" in captured.out
    assert main(["md", files["model"], files["ethanol"], "--thermostat", "nve",
                 "--ensemble", "npt", "--out", out]) == 2
    assert "contradicts" in capsys.readouterr().err


def test_restart_continues_from_the_last_frame_with_its_velocities(files, capsys):
    common = ["--ensemble", "nve", "--timestep", "0.5", "--interval", "5"]
    straight = files["dir"] / "straight.xyz"
    assert main(["md", files["model"], files["ethanol"], *common, "--steps", "30",
                 "--out", str(straight)]) == 0
    out = files["dir"] / "pieces.xyz"
    assert main(["md", files["model"], files["ethanol"], *common, "--steps", "20",
                 "--out", str(out)]) == 0
    last = ase.io.read(out, -1)
    assert main(["md", files["model"], str(out), *common, "--steps", "10", "--restart"]) == 0
    capsys.readouterr()
    frames = ase.io.read(out, ":")
    assert [f.info["step"] for f in frames] == [0, 5, 10, 15, 20, 25, 30]
    _, log = _log(out.with_suffix(".log"))
    assert log[:, 0].tolist() == [0, 5, 10, 15, 20, 25, 30]  # appended, no repeated header
    np.testing.assert_allclose(log[:, 1], 0.5 * log[:, 0])
    # the restart started from the last frame's momenta: it follows the unbroken run
    np.testing.assert_array_equal(frames[4].get_momenta(), last.get_momenta())
    reference = ase.io.read(straight, ":")
    for a, b in zip(frames[5:], reference[5:]):
        np.testing.assert_allclose(a.positions, b.positions, atol=1e-6)
        np.testing.assert_allclose(a.get_momenta(), b.get_momenta(), atol=1e-6)
    # without momenta there is nothing to continue
    assert main(["md", files["model"], files["ethanol"], "--restart",
                 "--out", str(files["dir"] / "x.xyz")]) == 2
    assert "has no momenta" in capsys.readouterr().err


def test_too_hot_stops_with_the_last_good_frame_kept(files, capsys):
    """Langevin heating from 50 K towards 3000 K crosses --max-temperature 1000 K."""
    out = files["dir"] / "hot.xyz"
    status = main(["md", files["model"], files["ethanol"], "--temperature", "3000",
                   "--initial-temperature", "50", "--max-temperature", "1000",
                   "--steps", "400", "--interval", "10", "--out", str(out)])
    err = capsys.readouterr().err
    assert status == 2
    match = re.search(r"md stopped at step (\d+) \([\d.]+ fs\): temperature (\d+) K exceeds "
                      r"--max-temperature 1000 K; the last good frame \(step (\d+)\)", err)
    assert match, err
    step, temperature, good = map(int, match.groups())
    assert temperature > 1000 and 0 < step < 400 and good == step - 10
    frames = ase.io.read(out, ":")
    assert frames[-1].info["step"] == good and frames[-1].get_temperature() <= 1000
    _, log = _log(out.with_suffix(".log"))
    assert log[-1, 0] == good


def test_atoms_too_close_stop_before_anything_is_written(files, ethanol, capsys):
    ethanol.positions[1] = ethanol.positions[0] + [0.3, 0.0, 0.0]
    start = files["dir"] / "close.xyz"
    ase.io.write(start, ethanol)
    out = files["dir"] / "close_traj.xyz"
    status = main(["md", files["model"], str(start), "--out", str(out)])
    err = capsys.readouterr().err
    assert status == 2
    assert "md stopped at step 0 (the start): atoms 0 and 1 are 0.300 Å apart " \
           "(< --min-distance 0.5 Å)" in err
    assert not out.exists()


def test_compile_flag_refuses_a_model_it_cannot_run(files, tmp_path, capsys):
    """--compile is for plain BP models: one with charges gets a clear error, no output."""
    import torch

    torch.manual_seed(0)
    charged = atomnet.build({"type": "bpnn", "hidden": [8], "physics": {"charges": "learned"}},
                            ["H", "C", "O"], cutoff=4.0)
    path = str(atomnet.save(charged, tmp_path / "charged.atomnet"))
    status = main(["md", path, files["ethanol"], "--compile", "--steps", "2",
                   "--out", str(tmp_path / "c.xyz")])
    err = capsys.readouterr().err
    assert status == 2
    assert "compile=True needs a plain BP model" in err and "charges" in err
    assert not (tmp_path / "c.xyz").exists()
