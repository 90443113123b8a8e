"""atomnet: machine-learned interatomic potentials with exact derivatives.

Units: eV, Å, e, amu, fs (see :mod:`atomnet.units`).
"""

from .build import build
from .calculators import Calculator
from .io import load, save
from .potential import Potential
from .version import __version__
from .vibrations import vibrations

__all__ = ["Calculator", "Potential", "__version__", "build", "load", "save", "vibrations"]
