"""Vibrational analysis from exact Hessians: frequencies, normal modes, IR, thermochemistry.

    from atomnet import vibrations
    vib = vibrations(atoms, calc)      # calc: atomnet.Calculator, Potential or .atomnet path
    vib.frequencies                    # cm⁻¹, imaginary modes negative
    vib.thermo(T=298.15, p=101325)     # ZPE, H, S, G via ase.thermochemistry
"""

from .analysis import (
    KM_PER_MOL_PER_E2_AMU,
    broadened_spectrum,
    frequencies_cm,
    harmonic_modes,
    ir_intensities,
    projected_spectrum,
    rigid_body_basis,
)
from .harmonic import FMAX_WARN, Thermo, VibrationalAnalysis, VibrationWarning, vibrations

__all__ = [
    "FMAX_WARN", "KM_PER_MOL_PER_E2_AMU", "Thermo", "VibrationWarning", "VibrationalAnalysis",
    "broadened_spectrum", "frequencies_cm", "harmonic_modes", "ir_intensities",
    "projected_spectrum", "rigid_body_basis", "vibrations",
]
