"""The Coulomb constant in internal units (stated once)."""

from ase import units as _ase

#: k_e = 1/(4π ε0) in eV·Å/e² (= Hartree · Bohr ≈ 14.399645)
COULOMB_CONSTANT = _ase.Hartree * _ase.Bohr
