"""Field names of the pipeline state, one constant each.

A graph is a plain ``dict[str, torch.Tensor]``. Each entry below gives
``(shape) | unit | meaning``. ``N`` = atoms in the batch, ``E`` = edges
(directed pairs), ``B`` = structures in the batch, ``T`` = angular triplets.
"""

from typing import NamedTuple

# --- structure -------------------------------------------------------------
POSITIONS = "positions"  # (N, 3) | Å | Cartesian positions
NUMBERS = "numbers"  # (N,) int64 | - | atomic numbers
SPECIES = "species"  # (N,) int64 | - | index of the element in the model's element list
CELL = "cell"  # (B, 3, 3) | Å | cell vectors as rows (zeros for molecules)
PBC = "pbc"  # (B, 3) bool | - | periodic directions
BATCH = "batch"  # (N,) int64 | - | structure index of each atom
N_ATOMS = "n_atoms"  # (B,) int64 | - | atoms per structure
ORIGIN = "origin"  # (B, 3) | Å | input-frame point where the graph's coordinates are zero
TOTAL_CHARGE = "total_charge"  # (B,) | e | net charge of each structure
WEIGHT = "weight"  # (B,) | - | per-structure loss weight (1 by default)

# --- neighbours (integers only: contract 1) -------------------------------
# One pair list per distinct cutoff a term needs. Its fields are named
# ``<base>@<cutoff>``, e.g. ``edge_index@5.0``: see :func:`pairs`.
EDGE_INDEX = "edge_index"  # (2, E) int64 | - | (center i, neighbour j), batch-global
EDGE_SHIFTS = "edge_shifts"  # (E, 3) | - | integer cell shifts S: r_ij = r_j - r_i + S @ cell
TRIPLET_EDGES = "triplet_edges"  # (2, T) int64 | - | pairs of edges sharing their center
# derived inside the model (differentiable)
EDGE_VECTORS = "edge_vectors"  # (E, 3) | Å | r_j - r_i + S @ cell
EDGE_LENGTHS = "edge_lengths"  # (E,) | Å | |edge_vectors|


class PairKeys(NamedTuple):
    """Field names of the pair list of one cutoff (see the base names above)."""

    index: str
    shifts: str
    vectors: str
    lengths: str
    triplets: str


def pairs(cutoff: float) -> PairKeys:
    """Field names of the pair list of all pairs closer than ``cutoff`` (Å)."""
    tag = f"@{float(cutoff)!r}"
    return PairKeys(*(base + tag for base in
                      (EDGE_INDEX, EDGE_SHIFTS, EDGE_VECTORS, EDGE_LENGTHS, TRIPLET_EDGES)))


def base_name(key: str) -> str:
    """``edge_index@5.0`` → ``edge_index``; other keys unchanged."""
    return key.split("@", 1)[0]


def sibling(key: str, base: str) -> str:
    """The field ``base`` of the same pair list as ``key`` (``triplet_edges@5.0`` →
    ``edge_index@5.0`` for base ``edge_index``)."""
    _, _, tag = key.partition("@")
    return f"{base}@{tag}" if tag else base


# --- outputs ---------------------------------------------------------------
ATOMIC_ENERGIES = "atomic_energies"  # (N,) | eV | sum of every term's per-atom energy
ENERGY = "energy"  # (B,) | eV | total energy
CONTRIBUTIONS = "contributions"  # dict name -> (N,) | eV | per-atom energy of each term
FORCES = "forces"  # (N, 3) | eV/Å | -dE/dr
STRESS = "stress"  # (B, 3, 3) | eV/Å³ | (1/V) dE/dε, ASE sign convention
VIRIAL = "virial"  # (B, 3, 3) | eV | -dE/dε
HESSIAN = "hessian"  # (3N, 3N) | eV/Å² | d²E/dr dr (single structure)
CHARGES = "charges"  # (N,) | e | atomic partial charges (models with charges)
DIPOLE = "dipole"  # (B, 3) | e·Å | dipole moment

# label keys (reference data) carry the same names with this prefix
REF_PREFIX = "ref_"


def ref(key: str) -> str:
    """Name of the reference (label) field for ``key``, e.g. ``ref_energy``."""
    return REF_PREFIX + key


def mask(key: str) -> str:
    """Name of the per-structure mask (B,) bool saying which structures carry label ``key``."""
    return REF_PREFIX + key + "_mask"
