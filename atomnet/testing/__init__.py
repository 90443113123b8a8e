"""The physics test kit: a battery any atomnet potential can be run through.

Each ``check_*`` function takes a potential (and structures as ``ase.Atoms``),
works on a float64 copy (the caller's potential and atoms are never modified),
returns the measured error and raises ``AssertionError`` with a clear message
when it exceeds the tolerance. Units: energies eV, forces eV/Å, stress eV/Å³,
Hessians eV/Å², lengths Å.

Forces, stress and Hessians are read through :class:`atomnet.Calculator` and
:func:`atomnet.derivatives.evaluate`, never recomputed here.

Example::

    from atomnet.testing import run_all
    run_all(potential, molecule=ethanol, periodic=water_box)
"""

from .autograd_checks import check_gradcheck, check_no_cross_talk
from .battery import TOLERANCES, run_all
from .finite_differences import check_forces_fd, check_hessian_fd, check_stress_fd
from .symmetry import check_invariance, check_separability

__all__ = [
    "TOLERANCES",
    "check_forces_fd",
    "check_gradcheck",
    "check_hessian_fd",
    "check_invariance",
    "check_no_cross_talk",
    "check_separability",
    "check_stress_fd",
    "run_all",
]
