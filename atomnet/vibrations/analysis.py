"""Harmonic analysis of a Hessian: mass weighting, Eckart projection, frequencies, IR.

Pure NumPy on float64 arrays; no model and no autograd here. Units in and out:
Hessian eV/Å², masses amu, positions Å, dipole derivatives e (e·Å per Å),
frequencies cm⁻¹, force constants eV/Å², reduced masses amu, IR intensities km/mol.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from ase import units

#: ħ·sqrt(eV/(Å² amu)) in eV: an eigenvalue λ of the mass-weighted Hessian (eV/Å²/amu)
#: is the vibrational energy ħω = EV_PER_SQRT_EIGENVALUE·sqrt(λ) (ase.vibrations' constant)
EV_PER_SQRT_EIGENVALUE = units._hbar * 1e10 / np.sqrt(units._e * units._amu)
#: cm⁻¹ per eV
INVCM_PER_EV = 1.0 / units.invcm
#: IR intensity in km/mol of a mode with |dμ/dQ|² = 1 e²/amu (Q mass-weighted, Å·amu^½):
#: N_A e² / (12 ε₀ c² amu), i.e. N_A π/(3c²)·|dμ/dQ|²/(4πε₀). Equals 974.86, the
#: familiar 42.2561 km/mol per (D/Å)²/amu times (4.80320 D per e·Å)².
KM_PER_MOL_PER_E2_AMU = (
    units._Nav * units._e**2 / (12.0 * units._eps0 * units._c**2 * units._amu) / 1000.0
)


def frequencies_cm(eigenvalues: np.ndarray) -> np.ndarray:
    """Frequencies in cm⁻¹ from mass-weighted eigenvalues (eV/Å²/amu).

    Convention: an imaginary frequency (negative eigenvalue) is returned as a
    *negative* number, −|ω|, so the array stays real and sorts with the
    imaginary modes first.
    """
    lam = np.asarray(eigenvalues, dtype=float)
    return np.sign(lam) * np.sqrt(np.abs(lam)) * EV_PER_SQRT_EIGENVALUE * INVCM_PER_EV


def rigid_body_basis(positions: np.ndarray, masses: np.ndarray, rotations: bool = True,
                     tol: float = 1e-6) -> np.ndarray:
    """Orthonormal basis (3N, k) of the mass-weighted rigid translations and rotations.

    Translations: sqrt(m_i) e_a. Rotations about the centre of mass: sqrt(m_i) (e_a × r_i).
    Rank deficiency is detected, not assumed: a linear molecule gives k = 5, a single
    atom k = 3. ``rotations=False`` (periodic cells) gives the 3 translations only.
    """
    m = np.sqrt(np.asarray(masses, dtype=float))
    n = len(m)
    com = (np.asarray(masses)[:, None] * positions).sum(0) / np.sum(masses)
    r = positions - com
    vectors = []
    for a in range(3):
        t = np.zeros((n, 3))
        t[:, a] = m
        vectors.append(t.reshape(-1))
    if rotations:
        for a in range(3):
            axis = np.zeros(3)
            axis[a] = 1.0
            vectors.append((np.cross(axis, r) * m[:, None]).reshape(-1))
    u, s, _ = np.linalg.svd(np.stack(vectors, 1), full_matrices=False)
    return u[:, s > tol * s.max()]


class Modes(NamedTuple):
    """Result of :func:`harmonic_modes`; mode k is column/row k, ascending frequency."""

    frequencies: np.ndarray  # (M,) cm⁻¹, imaginary ones negative
    eigenvalues: np.ndarray  # (M,) eV/Å²/amu
    mass_weighted_modes: np.ndarray  # (M, 3N) orthonormal, ⟂ the projected rigid motions
    cartesian_modes: np.ndarray  # (M, N, 3) displacements x = q/sqrt(m), normalised to |x| = 1
    reduced_masses: np.ndarray  # (M,) amu, 1/|q/sqrt(m)|²
    force_constants: np.ndarray  # (M,) eV/Å², λ·μ (negative for imaginary modes)
    rigid_frequencies: np.ndarray  # (k,) cm⁻¹ of the rigid-body block of the unprojected Hessian
    n_rigid: int  # k, the number of projected motions


def harmonic_modes(hessian: np.ndarray, masses: np.ndarray, positions: np.ndarray | None = None,
                   project: str = "rigid") -> Modes:
    """Normal modes of a Hessian (3N, 3N) eV/Å² for atoms of ``masses`` (N,) amu.

    ``project``: ``"rigid"`` removes translations and rotations (Eckart conditions;
    molecules, linear ones included), ``"translations"`` removes the 3 translations
    only (periodic cells at Γ), ``"none"`` keeps all 3N (partial Hessians: the other
    atoms are clamped, so nothing is a zero mode). The projected problem is solved
    in the orthogonal complement of the rigid motions, so exactly 3N − k modes
    come back and none of them is a spurious near-zero "rigid" mode.
    """
    h = np.asarray(hessian, dtype=float)
    masses = np.asarray(masses, dtype=float)
    n = len(masses)
    if h.shape != (3 * n, 3 * n):
        raise ValueError(f"Hessian shape {h.shape} does not match {n} atoms")
    if not np.isfinite(h).all():
        raise ValueError("the Hessian has non-finite entries")
    if (masses <= 0).any():
        raise ValueError("masses must be positive")
    h = 0.5 * (h + h.T)
    inv_sqrt_m = np.repeat(1.0 / np.sqrt(masses), 3)
    hm = h * inv_sqrt_m[:, None] * inv_sqrt_m[None, :]
    if project == "none":
        rigid = np.zeros((3 * n, 0))
    elif project in ("rigid", "translations"):
        if positions is None:
            raise ValueError("projection needs the positions")
        rigid = rigid_body_basis(np.asarray(positions, float), masses,
                                 rotations=(project == "rigid"))
    else:
        raise ValueError(f"project must be 'rigid', 'translations' or 'none', got {project!r}")
    k = rigid.shape[1]
    # complement: the left singular vectors beyond the rigid span
    if k:
        q, _ = np.linalg.qr(np.concatenate([rigid, np.eye(3 * n)], axis=1))
        complement = q[:, k:3 * n]
        rigid_block = rigid.T @ hm @ rigid
        rigid_freq = frequencies_cm(np.linalg.eigvalsh(0.5 * (rigid_block + rigid_block.T)))
    else:
        complement = np.eye(3 * n)
        rigid_freq = np.zeros(0)
    internal = complement.T @ hm @ complement
    lam, vec = np.linalg.eigh(0.5 * (internal + internal.T))
    q_modes = (complement @ vec).T  # (M, 3N)
    x = q_modes * inv_sqrt_m[None, :]
    norm2 = (x * x).sum(1)
    reduced = 1.0 / norm2
    cart = (x / np.sqrt(norm2)[:, None]).reshape(-1, n, 3)
    return Modes(
        frequencies=frequencies_cm(lam), eigenvalues=lam, mass_weighted_modes=q_modes,
        cartesian_modes=cart, reduced_masses=reduced, force_constants=lam * reduced,
        rigid_frequencies=rigid_freq, n_rigid=k,
    )


def projected_spectrum(hessian: np.ndarray, masses: np.ndarray, positions: np.ndarray,
                       project: str = "rigid") -> np.ndarray:
    """All 3N frequencies (cm⁻¹, ascending) of P·H_m·P, P the projector off the rigid motions.

    The k projected motions appear as zeros: a check that the projection works
    (and the spectrum to compare with programs that print all 3N).
    """
    masses = np.asarray(masses, float)
    inv_sqrt_m = np.repeat(1.0 / np.sqrt(masses), 3)
    hm = 0.5 * (hessian + hessian.T) * inv_sqrt_m[:, None] * inv_sqrt_m[None, :]
    rigid = (rigid_body_basis(np.asarray(positions, float), masses,
                              rotations=(project == "rigid"))
             if project != "none" else np.zeros((len(hm), 0)))
    p = np.eye(len(hm)) - rigid @ rigid.T
    return np.sort(frequencies_cm(np.linalg.eigvalsh(p @ hm @ p)))


def ir_intensities(dipole_derivatives: np.ndarray, modes: Modes, masses: np.ndarray) -> np.ndarray:
    """IR intensities (M,) km/mol from ∂μ_a/∂r_ib (3, N, 3) in e and the normal modes.

    dμ/dQ_k = Σ_ib ∂μ/∂r_ib q_k,ib / sqrt(m_i) for the mass-weighted mode q_k; the
    intensity is KM_PER_MOL_PER_E2_AMU·|dμ/dQ_k|² (double-harmonic approximation).
    """
    apt = np.asarray(dipole_derivatives, float).reshape(3, -1)  # (3, 3N)
    inv_sqrt_m = np.repeat(1.0 / np.sqrt(np.asarray(masses, float)), 3)
    dmu_dq = (modes.mass_weighted_modes * inv_sqrt_m[None, :]) @ apt.T  # (M, 3) e/amu^½
    return KM_PER_MOL_PER_E2_AMU * (dmu_dq**2).sum(1)


def broadened_spectrum(frequencies: np.ndarray, intensities: np.ndarray, grid: np.ndarray,
                       fwhm: float = 20.0) -> np.ndarray:
    """Lorentzian-broadened IR spectrum on ``grid`` (cm⁻¹): km/mol per cm⁻¹.

    Each stick keeps its integrated intensity (a normalised Lorentzian of full
    width at half maximum ``fwhm`` cm⁻¹). Imaginary modes are left out.
    """
    gamma = 0.5 * fwhm
    real = np.asarray(frequencies) > 0
    f, s = np.asarray(frequencies)[real], np.asarray(intensities)[real]
    shape = gamma / np.pi / ((grid[:, None] - f[None, :]) ** 2 + gamma**2)
    return shape @ s
