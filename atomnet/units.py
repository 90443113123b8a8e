"""Units and constants: the one place they are stated.

Internal units: energy eV, length Å, charge e, mass amu, time fs.
Derived: force eV/Å, stress eV/Å³, Hessian eV/Å², dipole e·Å,
frequencies cm⁻¹. Conversions happen only at the edges (readers, writers,
calculators).
"""

from ase import units as _ase

from .errors import UsageError

ENERGY = "eV"
LENGTH = "Å"
CHARGE = "e"
MASS = "amu"
TIME = "fs"
FORCE = "eV/Å"
STRESS = "eV/Å^3"
HESSIAN = "eV/Å^2"
DIPOLE = "e*Å"

#: the units a model file records
MODEL_UNITS = {
    "energy": ENERGY,
    "length": LENGTH,
    "charge": CHARGE,
    "mass": MASS,
    "time": TIME,
}

HARTREE = _ase.Hartree  # eV
BOHR = _ase.Bohr  # Å
KCAL_PER_MOL = _ase.kcal / _ase.mol  # eV
KJ_PER_MOL = _ase.kJ / _ase.mol  # eV
RYDBERG = _ase.Rydberg  # eV
FS = _ase.fs  # ASE time unit per fs
GPA = _ase.GPa  # eV/Å³ per GPa

#: factors to convert a quantity *into* internal units, by unit name
ENERGY_TO_EV = {"eV": 1.0, "meV": 1e-3, "Hartree": HARTREE, "Ha": HARTREE,
                "kcal/mol": KCAL_PER_MOL, "kJ/mol": KJ_PER_MOL, "Ry": RYDBERG,
                "Rydberg": RYDBERG}
LENGTH_TO_ANGSTROM = {"Å": 1.0, "Angstrom": 1.0, "A": 1.0, "Bohr": BOHR, "nm": 10.0}


def energy_factor(unit: str) -> float:
    """Factor that converts energies given in ``unit`` into eV."""
    try:
        return ENERGY_TO_EV[unit]
    except KeyError:
        raise UsageError(
            f"unknown energy unit {unit!r}; known: {sorted(ENERGY_TO_EV)}"
        ) from None


def length_factor(unit: str) -> float:
    """Factor that converts lengths given in ``unit`` into Å."""
    try:
        return LENGTH_TO_ANGSTROM[unit]
    except KeyError:
        raise UsageError(
            f"unknown length unit {unit!r}; known: {sorted(LENGTH_TO_ANGSTROM)}"
        ) from None


class Conversion:
    """Factors that bring data given in (``energy_unit``, ``length_unit``) into eV and Å.

    Energies scale by ``energy``, lengths (positions, cell) by ``length``, forces by
    energy/length, stress by energy/length³, dipoles (e·length) by ``length``.
    Raises ValueError naming the known units for an unknown one.
    """

    def __init__(self, energy_unit: str = ENERGY, length_unit: str = LENGTH) -> None:
        self.energy = energy_factor(energy_unit)
        self.length = length_factor(length_unit)

    @property
    def identity(self) -> bool:
        return self.energy == 1.0 and self.length == 1.0

    @property
    def force(self) -> float:
        return self.energy / self.length

    @property
    def stress(self) -> float:
        return self.energy / self.length**3

    @property
    def dipole(self) -> float:
        return self.length

    def factor(self, label: str) -> float:
        """Factor for the label ``energy``, ``forces``, ``stress``, ``dipole`` or
        ``charges`` (in e whatever the units: 1)."""
        return {"energy": self.energy, "forces": self.force, "stress": self.stress,
                "dipole": self.dipole, "charges": 1.0}[label]

