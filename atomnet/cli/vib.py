"""``atomnet vib MODEL STRUCTURE``: harmonic frequencies, normal modes, IR and thermochemistry.

Runs :func:`atomnet.vibrations` (exact autograd Hessian) on one structure, prints the
mode table and the thermochemistry, and writes into ``--out`` (default
``<stem>_vib/`` next to the structure file):

- ``modes.xyz``: extended XYZ, every mode animated (``info``: ``mode``,
  ``frequency_cm``, ``imaginary``);
- ``frequencies.csv``: one row per mode (cm⁻¹, imaginary negative; amu; eV/Å²; km/mol);
- ``thermo.json``: ZPE, H (or U), S, G (or F) at ``--temperature`` and ``--pressure``;
- ``optimized.xyz`` with ``--optimize``; ``ir_spectrum.png`` when the model has charges.

Every file is written to a temporary name in the same folder and then renamed, so a
file is either the old one or the complete new one.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import ase.io
import numpy as np
from ase import Atoms, units
from ase.calculators.singlepoint import SinglePointCalculator

from ..calculators import Calculator
from ..errors import UsageError
from ..io.atomic import write_atomically
from ..structures import StructureError, check_elements, read_structures, validate_atoms
from ..vibrations import VibrationalAnalysis, VibrationWarning, broadened_spectrum, vibrations

#: J/(mol K) per eV/K
J_PER_MOL_K_PER_EV_K = units._e * units._Nav
#: largest atomic displacement (Å) in the mode animations
MAX_AMPLITUDE = 0.5
#: modes.xyz is not written beyond this many atom lines (about 60 bytes each)
MAX_ANIMATION_LINES = 20_000_000


def add_parser(sub) -> None:
    p = sub.add_parser(
        "vib", help="vibrational frequencies, normal modes, IR and thermochemistry",
        description="Harmonic analysis from the exact Hessian of one structure: mode table "
                    "and thermochemistry on screen; modes.xyz, frequencies.csv, thermo.json "
                    "(and optimized.xyz, ir_spectrum.png) in --out.")
    p.add_argument("model", help="a .atomnet model file")
    p.add_argument("structure", help="the structure (any file ase.io reads)")
    p.add_argument("--index", type=int, default=-1,
                   help="frame of STRUCTURE to analyse (default: the last)")
    p.add_argument("--optimize", action="store_true",
                   help="relax the geometry first (ASE BFGS) to --fmax")
    p.add_argument("--fmax", type=float, default=1e-4,
                   help="force threshold of --optimize, eV/Å (default 1e-4)")
    p.add_argument("--indices", metavar="I,J,...",
                   help="atoms that move (a partial Hessian; the others are clamped), "
                        "e.g. 0,1,2")
    p.add_argument("--temperature", type=float, default=298.15,
                   help="K, of the thermochemistry and the animation amplitude (default 298.15)")
    p.add_argument("--pressure", type=float, default=101325.0,
                   help="Pa, ideal-gas thermochemistry only (default 101325)")
    p.add_argument("--symmetry-number", type=int, default=1,
                   help="rotational symmetry number, e.g. 2 for H2O (default 1)")
    p.add_argument("--spin", type=float, default=0.0,
                   help="total electronic spin S: 0 singlet, 0.5 doublet, 1 triplet (default 0)")
    p.add_argument("--out", metavar="DIR",
                   help="output folder (default: <structure stem>_vib/ next to STRUCTURE)")
    p.add_argument("--frames", type=int, default=20,
                   help="frames per mode in modes.xyz (default 20; 0: no modes.xyz)")
    p.add_argument("--fwhm", type=float, default=20.0,
                   help="Lorentzian FWHM of the IR spectrum, cm⁻¹ (default 20)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 (default cpu)")
    p.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    p.set_defaults(run=run)


def _check(args: argparse.Namespace) -> None:
    for name, unit in (("fmax", "eV/Å"), ("temperature", "K"), ("pressure", "Pa"),
                       ("fwhm", "cm⁻¹")):
        value = getattr(args, name)
        if not (np.isfinite(value) and value > 0):
            raise UsageError(f"--{name} must be positive ({unit}), got {value}")
    if args.symmetry_number < 1:
        raise UsageError(f"--symmetry-number must be >= 1, got {args.symmetry_number}")
    if not (np.isfinite(args.spin) and args.spin >= 0 and (2 * args.spin).is_integer()):
        raise UsageError(f"--spin must be 0, 0.5, 1, …, got {args.spin}")
    if args.frames < 0:
        raise UsageError(f"--frames must be >= 0, got {args.frames}")


def parse_indices(text: str | None, n_atoms: int) -> np.ndarray | None:
    """``--indices "0,1,2"`` as sorted distinct atom indices below ``n_atoms``."""
    if text is None:
        return None
    try:
        idx = [int(item) for item in text.split(",")]
    except ValueError:
        raise UsageError(f"--indices must be comma-separated atom indices such as 0,1,2, "
                         f"got {text!r}") from None
    bad = [i for i in idx if not 0 <= i < n_atoms]
    if bad:
        raise UsageError(f"--indices {text!r}: atom(s) {bad} out of range "
                         f"(the structure has {n_atoms} atoms, 0 to {n_atoms - 1})")
    if len(set(idx)) != len(idx):
        raise UsageError(f"--indices {text!r} repeats an atom")
    return np.array(sorted(idx))


def read_frame(path: str, index: int) -> tuple[Atoms, int]:
    """Frame ``index`` (negative counts from the end) of ``path`` and its number."""
    frames = read_structures(path)
    if not -len(frames) <= index < len(frames):
        raise StructureError(f"{path}: no frame {index} (the file holds {len(frames)} "
                             f"structure{'s' if len(frames) != 1 else ''})")
    k = index % len(frames)
    return frames[k], k


@contextmanager
def plain_warnings() -> Iterator[None]:
    """Show every :class:`VibrationWarning` as one ``warning: …`` line on stderr."""
    with warnings.catch_warnings():
        warnings.simplefilter("always", VibrationWarning)
        show = warnings.showwarning

        def _show(message, category, filename, lineno, file=None, line=None):
            if issubclass(category, VibrationWarning):
                print(f"warning: {message}", file=sys.stderr)
            else:
                show(message, category, filename, lineno, file, line)

        warnings.showwarning = _show
        yield


def animate(vib: VibrationalAnalysis, temperature: float = 300.0,
            frames: int = 20) -> list[Atoms]:
    """Frames of every mode about the analysed geometry, ``frames`` per mode (one period).

    The amplitude is the classical thermal one at ``temperature`` K, as in ASE's
    ``iter_animated_mode`` (|x| = sqrt(kT/|ħω|/μ), Å with μ in amu), capped so that
    no atom moves more than :data:`MAX_AMPLITUDE` Å.
    """
    base = vib.atoms
    out = []
    for k, freq in enumerate(vib.frequencies):
        unit = vib.modes[k]  # (n, 3), unit norm
        energy = abs(float(vib.energies[k]))
        amp = (np.sqrt(units.kB * temperature / energy / vib.reduced_masses[k])
               if energy > 0 else np.inf)
        amp = min(amp, MAX_AMPLITUDE / np.linalg.norm(unit, axis=1).max())
        for phase in np.linspace(0.0, 2.0 * np.pi, frames, endpoint=False):
            atoms = Atoms(base.numbers, base.positions.copy(), cell=base.cell, pbc=base.pbc)
            atoms.positions[vib.indices] += amp * np.sin(phase) * unit
            atoms.info.update(mode=k, frequency_cm=float(freq),
                              imaginary=bool(vib.imaginary[k]))
            out.append(atoms)
    return out


def frequency_rows(vib: VibrationalAnalysis) -> tuple[list[str], list[list]]:
    """Header and rows of ``frequencies.csv``."""
    header = ["mode", "frequency_cm", "imaginary", "reduced_mass_amu", "force_constant_eV_per_A2"]
    ir = vib.ir_intensities
    if ir is not None:
        header.append("ir_km_per_mol")
    rows = []
    for k, freq in enumerate(vib.frequencies):
        row = [k, f"{freq:.10g}", int(vib.imaginary[k]), f"{vib.reduced_masses[k]:.10g}",
               f"{vib.force_constants[k]:.10g}"]
        if ir is not None:
            row.append(f"{ir[k]:.10g}")
        rows.append(row)
    return header, rows


def thermo_summary(vib: VibrationalAnalysis, args: argparse.Namespace) -> dict:
    """Thermochemistry as a JSON-able dict (eV, eV/K, J/(mol K), K, Pa)."""
    th = vib.thermo(args.temperature, args.pressure, symmetrynumber=args.symmetry_number,
                    spin=args.spin)
    ideal = th.kind == "ideal_gas"
    s = float(th.entropy)
    out = {
        "model": "ideal_gas" if ideal else "harmonic",
        "temperature_K": th.temperature,
        "pressure_Pa": th.pressure,
    }
    if ideal:
        out.update(geometry=th.model.geometry, symmetry_number=args.symmetry_number,
                   spin=args.spin)
    out.update({
        "potential_energy_eV": float(vib.energy),
        "zpe_eV": float(th.zpe),
        "enthalpy_eV" if ideal else "internal_energy_eV": float(th.enthalpy),
        "entropy_eV_per_K": s,
        "entropy_J_per_mol_K": s * J_PER_MOL_K_PER_EV_K,
        "gibbs_energy_eV" if ideal else "helmholtz_energy_eV": float(th.gibbs),
        "n_modes": len(vib.frequencies),
        "n_imaginary": int(vib.imaginary.sum()),
        "max_force_eV_per_A": float(vib.max_force),
        "projection": vib.projection,
    })
    return out


def format_thermo(th: dict, vib: VibrationalAnalysis) -> str:
    """The thermochemistry as printed lines."""
    ideal = th["model"] == "ideal_gas"
    if ideal:
        head = (f"thermochemistry (ideal gas, rigid rotor, harmonic oscillator; "
                f"{th['geometry']}, symmetry number {th['symmetry_number']}, "
                f"spin {th['spin']:g}) at T = {th['temperature_K']:g} K, "
                f"p = {th['pressure_Pa']:g} Pa:")
        h, g = ("enthalpy H", th["enthalpy_eV"]), ("Gibbs energy G", th["gibbs_energy_eV"])
    else:
        n, k = len(vib.atoms), len(vib.indices)
        why = ("periodic cell" if vib.atoms.pbc.any() and k == n
               else f"partial Hessian over {k} of {n} atoms")
        head = (f"thermochemistry (harmonic: {why}; every mode vibrational, no translation, "
                f"rotation or pressure term) at T = {th['temperature_K']:g} K:")
        h = ("internal energy U", th["internal_energy_eV"])
        g = ("Helmholtz energy F", th["helmholtz_energy_eV"])
    rows = [("potential energy E", f"{th['potential_energy_eV']:.6f} eV"),
            ("zero-point energy ZPE", f"{th['zpe_eV']:.6f} eV"),
            (h[0], f"{h[1]:.6f} eV"),
            ("entropy S", f"{th['entropy_eV_per_K']:.6e} eV/K = "
                          f"{th['entropy_J_per_mol_K']:.3f} J/(mol K)"),
            (g[0], f"{g[1]:.6f} eV")]
    return "\n".join([head] + [f"  {name:<22} {value}" for name, value in rows])


def plot_ir(vib: VibrationalAnalysis, path: Path, fwhm: float, title: str) -> None:
    """Sticks (km/mol) and the Lorentzian-broadened spectrum, wavenumber high → low."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    real = vib.frequencies > 0
    freqs, intens = vib.frequencies[real], vib.ir_intensities[real]
    top = float(np.ceil((freqs.max() + 5 * fwhm) / 100.0) * 100.0)
    grid = np.linspace(0.0, top, 4000)
    # a normalised Lorentzian peaks at 2/(π·FWHM): scaled by π·FWHM/2, an isolated
    # band peaks at its stick's height, so both share the km/mol axis
    curve = broadened_spectrum(freqs, intens, grid, fwhm) * np.pi * fwhm / 2.0
    fig, ax = plt.subplots(figsize=(7.0, 4.0))
    ax.plot(grid, curve, color="C0", lw=1.2,
            label=f"Lorentzian, FWHM {fwhm:g} cm$^{{-1}}$ (peak = stick height)")
    ax.vlines(freqs, 0.0, intens, color="C3", lw=1.5, label="modes")
    ax.set_xlim(top, 0.0)
    ax.set_ylim(0.0, 1.08 * max(float(curve.max()), float(intens.max()), 1e-12))
    ax.set_xlabel("wavenumber / cm$^{-1}$")
    ax.set_ylabel("IR intensity / km mol$^{-1}$")
    ax.set_title(title)
    ax.legend(frameon=False)
    fig.tight_layout()
    try:
        fig.savefig(path, format="png", dpi=120)
    finally:
        plt.close(fig)


def run(args: argparse.Namespace) -> int:
    _check(args)
    atoms, k = read_frame(args.structure, args.index)
    validate_atoms(atoms, source=args.structure, index=k)
    calc = Calculator(args.model, device=args.device, dtype=args.dtype)
    check_elements(atoms.numbers, calc.elements, args.structure, k)
    indices = parse_indices(args.indices, len(atoms))
    source = Path(args.structure)
    out = Path(args.out) if args.out else source.with_name(f"{source.stem}_vib")
    if out.exists() and not out.is_dir():
        raise UsageError(f"output folder {out} exists and is not a folder")

    print(f"{source}, frame {k}: {atoms.get_chemical_formula()}, {len(atoms)} atoms"
          + (f", {len(indices)} moving" if indices is not None else ""))
    with plain_warnings():
        vib = vibrations(atoms, calc, optimize=args.optimize, fmax=args.fmax, indices=indices)
    print(vib.table())
    thermo = None
    with plain_warnings():
        try:
            thermo = thermo_summary(vib, args)
        except UsageError as exc:  # e.g. imaginary modes of a molecule: no ideal-gas thermo
            print(f"warning: no thermochemistry: {exc}", file=sys.stderr)
    if thermo is not None:
        print()
        print(format_thermo(thermo, vib))
        if thermo["model"] == "harmonic" and (args.symmetry_number != 1 or args.spin != 0):
            print("note: --symmetry-number and --spin do not enter harmonic thermochemistry")

    out.mkdir(parents=True, exist_ok=True)
    written = []
    if args.optimize:
        relaxed = vib.atoms.copy()
        relaxed.calc = SinglePointCalculator(relaxed, energy=vib.energy)
        written.append(write_atomically(out / "optimized.xyz", lambda p: ase.io.write(
            p, relaxed, format="extxyz")))
    lines = len(vib.frequencies) * args.frames * len(vib.atoms)
    if lines > MAX_ANIMATION_LINES:
        print(f"warning: modes.xyz not written: {len(vib.frequencies)} modes × {args.frames} "
              f"frames × {len(vib.atoms)} atoms is too large; pass fewer --frames",
              file=sys.stderr)
    elif args.frames:
        written.append(write_atomically(out / "modes.xyz", lambda p: ase.io.write(
            p, animate(vib, args.temperature, args.frames), format="extxyz")))
    header, rows = frequency_rows(vib)

    def _csv(p: Path) -> None:
        with open(p, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows(rows)

    written.append(write_atomically(out / "frequencies.csv", _csv))
    if thermo is not None:
        written.append(write_atomically(out / "thermo.json", lambda p: p.write_text(
            json.dumps(thermo, indent=2) + "\n")))
    if vib.ir_intensities is not None and (vib.frequencies > 0).any():
        written.append(write_atomically(out / "ir_spectrum.png", lambda p: plot_ir(
            vib, p, args.fwhm, f"IR spectrum: {source.name}")))
    stale = [out / name for name in ("optimized.xyz", "modes.xyz", "thermo.json",
                                     "ir_spectrum.png")
             if (out / name).exists() and out / name not in written]
    print()
    for path in stale:
        print(f"note: {path} is from an earlier run (not rewritten)")
    print("written:")
    for path in written:
        print(path)
    return 0
