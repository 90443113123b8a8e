"""``atomnet vib``: its files agree with ``atomnet.vibrations``; user errors are one line."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import ase.io
import numpy as np
import pytest
import torch
from ase.build import molecule
from conftest import ELEMENTS

import atomnet
from atomnet.cli.main import main
from atomnet.physics import FixedCharges
from atomnet.vibrations import VibrationWarning

#: tiny and fast; the untrained water molecule relaxes to a minimum (all modes real)
TINY = {"type": "bpnn", "hidden": [8]}
CHARGES = {"H": 0.4, "C": -0.2, "O": -0.8}
FRAMES = 20  # the default --frames


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """Two model files with the same network: ``plain`` and ``charged`` (fixed charges)."""
    folder = tmp_path_factory.mktemp("vib_models")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        plain = atomnet.build(TINY, ELEMENTS, cutoff=4.0)
    charged = atomnet.Potential(dict(plain.terms), ELEMENTS,
                                stages={"charges": FixedCharges(ELEMENTS, CHARGES)})
    return {"plain": atomnet.save(plain, folder / "plain.atomnet"),
            "charged": atomnet.save(charged, folder / "charged.atomnet")}


@pytest.fixture
def water(tmp_path) -> Path:
    """Two frames: a rattled water and the ideal one (the last, which vib analyses)."""
    rattled = molecule("H2O")
    rattled.rattle(0.05, seed=3)
    path = tmp_path / "water.xyz"
    ase.io.write(path, [rattled, molecule("H2O")], format="extxyz")
    return path


def _csv(path: Path) -> tuple[list[str], np.ndarray]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], np.array(rows[1:], dtype=float)


def _written(stdout: str) -> list[Path]:
    lines = stdout.rstrip("\n").splitlines()
    return [Path(p) for p in lines[lines.index("written:") + 1:]]


def _residual_force(stdout: str) -> float:
    match = re.search(r"max residual force ([-+.\de]+) eV/Å", stdout)
    assert match, stdout
    return float(match.group(1))


def test_vib_writes_every_file_and_agrees_with_the_api(models, water, capsys):
    assert main(["vib", str(models["plain"]), str(water), "--optimize"]) == 0
    out, err = capsys.readouterr()
    folder = water.with_name("water_vib")  # the default --out
    names = {"optimized.xyz", "modes.xyz", "frequencies.csv", "thermo.json"}
    assert {p.name for p in folder.iterdir()} == names  # no IR plot, no temporary files
    assert _written(out) == [folder / n for n in
                             ("optimized.xyz", "modes.xyz", "frequencies.csv", "thermo.json")]
    assert "frame 1: H2O" in out and "warning" not in err

    vib = atomnet.vibrations(ase.io.read(water, index=-1), models["plain"], optimize=True,
                             fmax=1e-4)
    assert not vib.imaginary.any()
    header, table = _csv(folder / "frequencies.csv")
    assert header == ["mode", "frequency_cm", "imaginary", "reduced_mass_amu",
                      "force_constant_eV_per_A2"]
    np.testing.assert_array_equal(table[:, 0], np.arange(3))
    np.testing.assert_allclose(table[:, 1], vib.frequencies, rtol=1e-8)
    np.testing.assert_allclose(table[:, 3], vib.reduced_masses, rtol=1e-8)
    np.testing.assert_allclose(table[:, 4], vib.force_constants, rtol=1e-8)
    assert not table[:, 2].any()

    relaxed = ase.io.read(folder / "optimized.xyz")
    np.testing.assert_allclose(relaxed.positions, vib.atoms.positions, atol=1e-7)

    thermo = json.loads((folder / "thermo.json").read_text())
    ref = vib.thermo(298.15, 101325.0)
    assert thermo["model"] == "ideal_gas" and thermo["geometry"] == "nonlinear"
    for key, value in [("zpe_eV", ref.zpe), ("enthalpy_eV", ref.enthalpy),
                       ("entropy_eV_per_K", ref.entropy), ("gibbs_energy_eV", ref.gibbs)]:
        assert thermo[key] == pytest.approx(value, rel=1e-10), key
    assert thermo["entropy_J_per_mol_K"] == pytest.approx(ref.entropy * 96485.332, rel=1e-6)
    assert f"{thermo['gibbs_energy_eV']:.6f} eV" in out and "J/(mol K)" in out


def test_modes_xyz_animates_every_mode_along_its_vector(models, water, tmp_path, capsys):
    out = tmp_path / "here"
    assert main(["vib", str(models["plain"]), str(water), "--index", "0", "--out", str(out),
                 "--frames", "8"]) == 0
    capsys.readouterr()
    start = ase.io.read(water, index=0)
    with pytest.warns(VibrationWarning, match="not a stationary point"):
        vib = atomnet.vibrations(start, models["plain"])
    frames = ase.io.read(out / "modes.xyz", ":")
    assert len(frames) == 8 * len(vib.frequencies) == 8 * 3
    for k in range(3):
        mode = frames[8 * k: 8 * (k + 1)]
        assert {f.info["mode"] for f in mode} == {k}
        assert all(f.info["frequency_cm"] == pytest.approx(vib.frequencies[k], rel=1e-10)
                   for f in mode)
        np.testing.assert_allclose(mode[0].positions, start.positions, atol=1e-7)  # phase 0
        step = (mode[2].positions - start.positions).reshape(-1)  # quarter period: largest
        assert 0.01 < np.abs(step).max() <= 0.5 + 1e-6
        cosine = step @ vib.modes[k].reshape(-1) / np.linalg.norm(step)
        assert abs(cosine) == pytest.approx(1.0, abs=1e-6)


def test_ir_spectrum_and_column_only_with_charges(models, water, tmp_path, capsys):
    charged, plain = tmp_path / "charged", tmp_path / "plain"
    assert main(["vib", str(models["charged"]), str(water), "--out", str(charged)]) == 0
    out = capsys.readouterr().out
    png = charged / "ir_spectrum.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert png in _written(out) and "IR/km/mol" in out
    header, table = _csv(charged / "frequencies.csv")
    assert header[-1] == "ir_km_per_mol"
    with pytest.warns(VibrationWarning, match="not a stationary point"):
        vib = atomnet.vibrations(ase.io.read(water, index=-1), models["charged"])
    np.testing.assert_allclose(table[:, -1], vib.ir_intensities, rtol=1e-8)
    assert (vib.ir_intensities > 1.0).all()  # charged water: every mode IR-active

    assert main(["vib", str(models["plain"]), str(water), "--out", str(plain)]) == 0
    out = capsys.readouterr().out
    assert not (plain / "ir_spectrum.png").exists() and "IR/km/mol" not in out
    header, _ = _csv(plain / "frequencies.csv")
    assert "ir_km_per_mol" not in header


def test_optimize_lowers_the_residual_force(models, water, tmp_path, capsys):
    rattled = ["--index", "0", "--out", str(tmp_path / "v")]
    assert main(["vib", str(models["plain"]), str(water), *rattled]) == 0
    out, err = capsys.readouterr()
    before = _residual_force(out)
    assert before > 1e-2
    # the warning is a plain line, not a Python warning with file and line
    assert re.search(r"^warning: residual force .* not a stationary point", err, re.M)
    assert "VibrationWarning" not in err and ".py:" not in err
    assert main(["vib", str(models["plain"]), str(water), *rattled, "--optimize",
                 "--fmax", "1e-4"]) == 0
    out, err = capsys.readouterr()
    after = _residual_force(out)
    assert after < 1e-4 < before and "residual force" not in err
    frames = ase.io.read(tmp_path / "v" / "modes.xyz", ":")
    relaxed = ase.io.read(tmp_path / "v" / "optimized.xyz")
    np.testing.assert_allclose(frames[0].positions, relaxed.positions, atol=1e-7)


def test_frames_zero_skips_the_animation(models, water, tmp_path, capsys):
    out = tmp_path / "v"
    assert main(["vib", str(models["plain"]), str(water), "--frames", "0",
                 "--out", str(out)]) == 0
    assert {p.name for p in out.iterdir()} == {"frequencies.csv", "thermo.json"}
    assert out / "modes.xyz" not in _written(capsys.readouterr().out)


def test_partial_hessian_gives_harmonic_thermochemistry(models, water, tmp_path, capsys):
    out = tmp_path / "partial"
    assert main(["vib", str(models["plain"]), str(water), "--indices", "1,2",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "harmonic: partial Hessian over 2 of 3 atoms" in printed
    thermo = json.loads((out / "thermo.json").read_text())
    assert thermo["model"] == "harmonic" and thermo["pressure_Pa"] is None
    assert "internal_energy_eV" in thermo and "helmholtz_energy_eV" in thermo
    _, table = _csv(out / "frequencies.csv")
    with pytest.warns(VibrationWarning, match="not a stationary point"):
        vib = atomnet.vibrations(ase.io.read(water), models["plain"], indices=[1, 2])
    assert len(table) == 6  # 3 × 2 atoms, nothing projected
    np.testing.assert_allclose(table[:, 1], vib.frequencies, rtol=1e-8)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["{missing}"], "missing.xyz: file not found"),
        (["{empty}"], "empty.xyz: file is empty"),
        (["{garbage}"], "garbage.xyz: could not be read as a structure file"),
        (["{water}", "--index", "2"], "water.xyz: no frame 2 (the file holds 2 structures)"),
        (["{ammonia}"], "ammonia.xyz, frame 0: element(s) N not known"),
        (["{water}", "--indices", "0,x"], "--indices must be comma-separated atom indices"),
        (["{water}", "--indices", "0,3"], "atom(s) [3] out of range"),
        (["{water}", "--indices", "1,1"], "repeats an atom"),
        (["{water}", "--temperature", "0"], "--temperature must be positive"),
        (["{water}", "--fmax", "-1"], "--fmax must be positive"),
        (["{water}", "--frames", "-1"], "--frames must be >= 0"),
        (["{water}", "--device", "gpu"], "'gpu' is not a torch device"),
        (["{water}", "--out", "{empty}"], "empty.xyz exists and is not a folder"),
    ],
)
def test_user_errors_print_one_line_and_exit_2(models, water, tmp_path, capsys, argv, message):
    (tmp_path / "empty.xyz").write_text("")
    (tmp_path / "garbage.xyz").write_text("not a structure\n")
    ase.io.write(tmp_path / "ammonia.xyz", molecule("NH3"))
    fields = {name: tmp_path / f"{name}.xyz" for name in ("missing", "empty", "garbage",
                                                          "ammonia")}
    status = main(["vib", str(models["plain"]), *[a.format(water=water, **fields)
                                                   for a in argv]])
    out, err = capsys.readouterr()
    assert status == 2
    assert err.startswith("atomnet: error: ") and message in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not list(tmp_path.glob("*_vib"))  # nothing written


def test_internal_errors_keep_their_traceback(models, water, monkeypatch, capsys):
    """A plain ValueError from inside atomnet is a bug, not a user error (no exit 2)."""
    def bug(*args, **kwargs):
        raise ValueError("internal bug")

    monkeypatch.setattr("atomnet.cli.vib.vibrations", bug)
    with pytest.raises(ValueError, match="internal bug"):
        main(["vib", str(models["plain"]), str(water)])
    assert "atomnet: error" not in capsys.readouterr().err
