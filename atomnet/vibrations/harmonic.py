"""``vibrations(atoms, calc)``: frequencies, modes, IR and thermochemistry from exact Hessians."""

from __future__ import annotations

import copy
import os
import warnings
from dataclasses import dataclass, field

import numpy as np
from ase import Atoms

from .. import keys
from ..calculators import Calculator
from ..derivatives import output_jacobian
from ..errors import UsageError
from ..potential import Potential
from .analysis import (
    INVCM_PER_EV,
    Modes,
    harmonic_modes,
    ir_intensities,
    projected_spectrum,
)

#: largest residual force (eV/Å) at which a harmonic analysis is trusted without a warning
FMAX_WARN = 1e-3


class VibrationWarning(UserWarning):
    """The analysis ran, but its premise (a stationary point) does not hold well."""


@dataclass
class Thermo:
    """Ideal-gas (or harmonic) thermochemistry at one temperature and pressure, in eV."""

    kind: str  # "ideal_gas" (H, G) or "harmonic" (U in ``enthalpy``, F in ``gibbs``)
    temperature: float  # K
    pressure: float | None  # Pa (None: harmonic, no pressure dependence)
    zpe: float  # zero-point energy, eV
    enthalpy: float  # H (ideal gas) or internal energy U (harmonic), eV
    entropy: float  # S, eV/K
    gibbs: float  # G = H − TS (ideal gas) or F = U − TS (harmonic), eV
    model: object = field(repr=False, default=None)  # the ase.thermochemistry object


@dataclass
class VibrationalAnalysis:
    """Harmonic vibrational analysis of one structure (see :func:`vibrations`).

    Attributes (mode k ordered by ascending frequency):
        atoms: the analysed structure (optimised, if asked), with its calculator removed.
        hessian: (3n, 3n) exact Hessian, eV/Å², over ``indices`` (all atoms by default).
        indices: the atoms that move (a partial Hessian clamps the others).
        frequencies: (M,) cm⁻¹. **Imaginary modes are negative numbers** (−|ω|);
            ``imaginary`` flags them.
        modes: (M, n, 3) Cartesian displacement vectors, each of unit norm.
        reduced_masses: (M,) amu, 1/Σ x² for the Cartesian mode x of a unit
            mass-weighted mode (Gaussian's convention; for a diatomic this is
            M²μ/(m₁² + m₂²), not the textbook μ). force_constants: (M,) eV/Å², k = μω².
        ir_intensities: (M,) km/mol, or ``None`` when the model has no dipole
            (absent, not zero).
        projection: "rigid" (molecules), "translations" (periodic in any direction:
            cells, slabs, wires) or "none" (partial Hessians).
        rigid_frequencies: frequencies (cm⁻¹) of the projected-out block of the
            *unprojected* Hessian: a diagnostic; large values mean the structure is far
            from a stationary point or the model breaks rotational invariance.
        max_force: the largest residual force, eV/Å.
    """

    atoms: Atoms
    hessian: np.ndarray
    indices: np.ndarray
    masses: np.ndarray
    energy: float
    max_force: float
    projection: str
    _modes: Modes = field(repr=False)
    dipole_derivatives: np.ndarray | None = field(default=None, repr=False)
    ir_intensities: np.ndarray | None = None

    @property
    def frequencies(self) -> np.ndarray:
        return self._modes.frequencies

    @property
    def imaginary(self) -> np.ndarray:
        return self._modes.eigenvalues < 0

    @property
    def modes(self) -> np.ndarray:
        return self._modes.cartesian_modes

    @property
    def mass_weighted_modes(self) -> np.ndarray:
        return self._modes.mass_weighted_modes

    @property
    def reduced_masses(self) -> np.ndarray:
        return self._modes.reduced_masses

    @property
    def force_constants(self) -> np.ndarray:
        return self._modes.force_constants

    @property
    def rigid_frequencies(self) -> np.ndarray:
        return self._modes.rigid_frequencies

    @property
    def energies(self) -> np.ndarray:
        """Vibrational energies ħω (M,) in eV (imaginary ones negative)."""
        return self.frequencies / INVCM_PER_EV

    def all_frequencies(self) -> np.ndarray:
        """All 3n frequencies (cm⁻¹) of the projected mass-weighted Hessian, with the
        projected rigid motions as zeros."""
        return projected_spectrum(self.hessian, self.masses,
                                  self.atoms.positions[self.indices], self.projection)

    def thermo(self, T: float = 298.15, p: float = 101325.0, symmetrynumber: int = 1,
               spin: float = 0, geometry: str | None = None) -> Thermo:
        """Thermochemistry through ``ase.thermochemistry`` (eV, eV/K).

        Molecules (full Hessian, no cell): ``IdealGasThermo`` (rigid rotor, harmonic
        oscillator, ideal gas at pressure ``p`` in Pa); ``geometry`` is found from the
        number of projected motions unless given. Periodic cells and partial
        Hessians (adsorbates): ``HarmonicThermo`` (all modes vibrational, no
        pressure); imaginary modes are left out there, with a warning. A molecule
        with imaginary modes is not at a minimum: :class:`UsageError`.
        """
        from ase.thermochemistry import HarmonicThermo, IdealGasThermo

        if T <= 0 or (p is not None and p <= 0):
            raise UsageError(f"temperature and pressure must be positive, got T={T}, p={p}")
        energies = self.energies
        n_imag = int(self.imaginary.sum())
        if n_imag and self.projection == "rigid":
            raise UsageError(
                f"{n_imag} imaginary mode(s) ({np.round(self.frequencies[self.imaginary], 1)} "
                "cm⁻¹): ideal-gas thermochemistry needs a minimum; relax first "
                "(optimize=True), or check the model")
        if n_imag:
            warnings.warn(f"{n_imag} imaginary mode(s) left out of the harmonic "
                          "thermochemistry", VibrationWarning, stacklevel=2)
        real = energies[~self.imaginary]
        if self.projection == "rigid":
            if geometry is None:
                geometry = {3: "monatomic", 5: "linear"}.get(self._modes.n_rigid, "nonlinear")
            # IdealGasThermo wants exactly the 3N−5/3N−6 vibrational energies
            model = IdealGasThermo(real, geometry=geometry, potentialenergy=self.energy,
                                   atoms=self.atoms, symmetrynumber=symmetrynumber, spin=spin,
                                   ignore_imag_modes=True)
            h = model.get_enthalpy(T, verbose=False)
            s = model.get_entropy(T, p, verbose=False)
            return Thermo("ideal_gas", T, p, model.get_ZPE_correction(), h, s, h - T * s, model)
        model = HarmonicThermo(real, potentialenergy=self.energy, ignore_imag_modes=True)
        u = model.get_internal_energy(T, verbose=False)
        s = model.get_entropy(T, verbose=False)
        return Thermo("harmonic", T, None, model.get_ZPE_correction(), u, s, u - T * s, model)

    def to_ase(self):
        """``ase.vibrations.VibrationsData`` of the same (unprojected) Hessian: mode
        animations, ``write_jmol``, ``get_dos`` and ASE's own tools. ASE does not
        project rigid motions, so its near-zero modes differ slightly from ours."""
        from ase.vibrations import VibrationsData

        atoms = self.atoms.copy()
        atoms.set_masses(self.atoms.get_masses())
        return VibrationsData.from_2d(atoms, self.hessian, indices=self.indices)

    def table(self) -> str:
        """The modes as a text table (cm⁻¹, meV, amu, eV/Å², km/mol)."""
        head = f"{'mode':>4} {'freq/cm-1':>11} {'meV':>9} {'mu/amu':>8} {'k/eV/A2':>9}"
        if self.ir_intensities is not None:
            head += f" {'IR/km/mol':>10}"
        lines = [head]
        for k, f in enumerate(self.frequencies):
            label = f"{abs(f):10.2f}i" if f < 0 else f"{f:11.2f}"
            line = (f"{k:4d} {label} {1000 * self.energies[k]:9.2f} "
                    f"{self.reduced_masses[k]:8.3f} {self.force_constants[k]:9.3f}")
            if self.ir_intensities is not None:
                line += f" {self.ir_intensities[k]:10.3f}"
            lines.append(line)
        zpe = 0.5 * self.energies[~self.imaginary].sum()
        lines.append(f"zero-point energy {zpe:.4f} eV; max residual force {self.max_force:.2e} "
                     f"eV/Å; projected: {self.projection} ({self._modes.n_rigid} motions)")
        return "\n".join(lines)


def _calculator(calc, device: str, dtype) -> Calculator:
    if calc is None:
        raise UsageError("vibrations needs a calculator: pass calc= or set atoms.calc")
    if isinstance(calc, Calculator):
        return calc
    if isinstance(calc, (Potential, str, os.PathLike)):
        return Calculator(calc, device=device, dtype=dtype)
    raise UsageError("vibrations needs an atomnet.Calculator, a Potential or a .atomnet path, "
                     f"got {type(calc).__name__}")


def _optimise(atoms: Atoms, calc: Calculator, fmax: float, steps: int, moving) -> None:
    from ase.constraints import FixAtoms
    from ase.optimize import BFGS

    original = list(atoms.constraints)
    if moving is not None:  # relax what moves; the clamped atoms stay where they are
        fixed = np.setdiff1d(np.arange(len(atoms)), moving)
        atoms.set_constraint([*original, FixAtoms(indices=fixed)])
    atoms.calc = calc
    opt = BFGS(atoms, logfile=None)
    converged = opt.run(fmax=fmax, steps=steps)
    atoms.set_constraint(original)
    if not converged:
        fmax_now = np.linalg.norm(atoms.get_forces(), axis=1).max()
        warnings.warn(f"optimisation stopped after {steps} steps at max force "
                      f"{fmax_now:.2e} eV/Å (asked {fmax:g})",
                      VibrationWarning, stacklevel=3)


def vibrations(
    atoms: Atoms,
    calc=None,
    *,
    optimize: bool = False,
    fmax: float = 1e-4,
    steps: int = 1000,
    indices=None,
    ir: bool | None = None,
    device: str = "cpu",
    dtype="float64",
) -> VibrationalAnalysis:
    """Harmonic vibrational analysis of ``atoms`` from the exact (autograd) Hessian.

    Args:
        atoms: a molecule, or a periodic cell (Γ-point modes). Not modified.
        calc: an :class:`atomnet.Calculator`, a :class:`~atomnet.Potential` or a path
            to a ``.atomnet`` file (default: ``atoms.calc``).
        optimize: first relax the geometry with ASE's BFGS to ``fmax`` (eV/Å); with
            ``indices``, only those atoms move.
            Without it, a residual force above ``FMAX_WARN`` = 1e-3 eV/Å triggers a
            :class:`VibrationWarning` that names it.
        indices: atoms that move (a partial Hessian, e.g. an adsorbate on a fixed
            slab); the others are clamped and nothing is projected.
        ir: compute IR intensities (default: whenever the model outputs a dipole).
        device, dtype: used when ``calc`` is not already a Calculator.

    Returns a :class:`VibrationalAnalysis`. Frequencies are in cm⁻¹ with imaginary
    modes as negative numbers.
    """
    if not isinstance(atoms, Atoms):
        raise UsageError(f"vibrations needs an ase.Atoms, got {type(atoms).__name__}")
    calc = _calculator(calc if calc is not None else atoms.calc, device, dtype)
    atoms = atoms.copy()
    atoms.info = copy.deepcopy(atoms.info)
    if indices is not None:
        idx = np.asarray(indices).reshape(-1)
        if idx.size == 0 or not np.issubdtype(idx.dtype, np.integer) \
                or len(np.unique(idx)) != idx.size or idx.min() < 0 or idx.max() >= len(atoms):
            raise UsageError(f"indices must be distinct atom indices below {len(atoms)}, "
                             f"got {indices!r}")
        idx = np.sort(idx)
    else:
        idx = np.arange(len(atoms))
    if optimize:
        _optimise(atoms, calc, fmax, steps, None if indices is None else idx)
    has_dipole = keys.DIPOLE in calc.outputs
    if ir and not has_dipole:
        raise UsageError("IR intensities need a model with charges (a dipole output); "
                         f"this one outputs {list(calc.outputs)}")
    ir = has_dipole if ir is None else ir
    atoms.calc = calc
    energy = float(atoms.get_potential_energy())
    forces = atoms.get_forces(apply_constraint=False)
    atoms.calc = None
    if not np.isfinite(forces).all() or not np.isfinite(energy):
        raise UsageError("the model gives a non-finite energy or forces for this structure")
    max_force = float(np.linalg.norm(forces[idx], axis=1).max())
    if max_force > FMAX_WARN:
        warnings.warn(
            f"residual force {max_force:.2e} eV/Å > {FMAX_WARN:g}: not a stationary point, "
            "so the harmonic frequencies are approximate; relax first (optimize=True)",
            VibrationWarning, stacklevel=2)
    h = calc.get_hessian(atoms, indices=None if indices is None else idx)
    masses = atoms.get_masses()[idx]
    if indices is not None:
        projection = "none"  # the clamped atoms pin the rest: no zero modes
    elif atoms.pbc.any():
        projection = "translations"  # cells, slabs, wires: rigid shifts cost nothing
    else:
        projection = "rigid"
    modes = harmonic_modes(h, masses, atoms.positions[idx], projection)
    analysis = VibrationalAnalysis(atoms=atoms, hessian=h, indices=idx, masses=masses,
                                   energy=energy, max_force=max_force, projection=projection,
                                   _modes=modes)
    if ir:
        jac = output_jacobian(calc.potential, calc._graph(atoms), keys.DIPOLE)  # (1, 3, N, 3)
        apt = jac[0].cpu().double().numpy()[:, idx, :]
        analysis.dipole_derivatives = apt
        analysis.ir_intensities = ir_intensities(apt, modes, masses)
    return analysis


__all__ = ["FMAX_WARN", "Thermo", "VibrationWarning",
           "VibrationalAnalysis", "vibrations"]
