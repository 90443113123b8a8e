"""Coulomb energy between per-atom charges, switched off where the network works.

    E = Σ_{i<j, all images} k_e q_i q_j s(r_ij) / r_ij,   s = switch_on(r, r_on, r_off),

with the charges q (e) written by an earlier stage (``keys.CHARGES``, e.g.
:class:`~atomnet.physics.charges.FixedCharges`), k_e = 1/(4π ε0) in eV·Å/e²
(:data:`~atomnet.physics.coulomb_constant.COULOMB_CONSTANT`, from ASE) and ``s`` the
C² smootherstep of :mod:`atomnet.physics.switching`: 0 below ``r_on``, 1 beyond
``r_off``, so the short range the network covers is not counted twice and energies,
forces and Hessians stay continuous. ``damping="none"`` takes s = 1 (bare point charges).

* **Molecules** (no periodic direction): the direct sum over *all* pairs of each
  structure, built from ``batch`` (integers only), vectorised over the batch. Cost and
  memory grow as n² per structure.
* **3-D periodic cells**: Ewald (``method="ewald"``) or particle-mesh Ewald
  (``"pme"``) from torch-pme for the bare 1/r, with forces and stress by autograd
  through it, plus a real-space correction over this term's pair list,
  −Σ_{pairs r<r_off} k_e q_i q_j (1 − s(r))/r. A cell whose charges do not sum to
  zero gets the uniform neutralising background (Ewald's convention: the
  background's energy −π Q² σ²/V, the average potential is zero), so its energy
  depends on that convention as in every periodic code.
* Slabs and wires (periodic in one or two directions only) raise a
  :class:`~atomnet.errors.UsageError`.

Splitting 1/r = erfc(r/√2σ)/r + erf(r/√2σ)/r with smearing σ (Å): the first part is
summed over pairs closer than ``real_space_cutoff`` r_c, the second in reciprocal space.
The defaults are fixed from r_c and ``accuracy`` ε (never timed or tuned per structure):
with p = √(−ln ε),

    σ = r_c / (√2 p)                      real space: exp(−r_c²/2σ²) = ε
    Ewald: k_c = √2 p / σ, λ = 2π/k_c     reciprocal: exp(−k_c² σ²/2) = ε
    PME: mesh_spacing h = σ · PME_SPACING[interpolation_nodes] (torch-pme's meaning:
         2^⌈log2(2|a|/h + 1)⌉ mesh points along each cell vector a)

so both truncations are of the same relative size ε. The Ewald sum takes every
reciprocal vector with |k| ≤ k_c (a sphere, passed to torch-pme; ±k pairs counted
once with weight 2), i.e. every plane wave of wavelength ≥ ``lr_wavelength`` λ.
Per-atom energies: ½ q_i φ_i (φ_i the potential at atom i) for the Ewald/PME part,
half of each pair's energy to either atom for the pair sums.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torchpme

from .. import keys
from ..errors import UsageError
from ..terms import Term, register
from .coulomb_constant import COULOMB_CONSTANT
from .switching import check_window, switch_off, switch_on

#: default PME ``mesh_spacing`` in units of the smearing σ, per number of Lagrange
#: interpolation nodes. torch-pme's mesh then has a spacing of at most half of it; measured
#: on water at 1 g/cm³ (benchmarks/coulomb_cost.py), the interpolation errors at that worst
#: spacing stay ≲ 1e-3 meV/atom and ≲ 0.01 meV/Å (rms force)
PME_SPACING = {3: 0.08, 4: 0.13, 5: 0.25, 6: 0.4, 7: 0.5}

DAMPING = ("switch", "none")
METHODS = ("ewald", "pme")


def _accuracy_exponent(accuracy: float) -> float:
    """p = √(−ln ε): the Gaussian exponent that reaches relative size ε."""
    return math.sqrt(-math.log(accuracy))


def _positive(value, what: str) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"coulomb: {what} must be a number, got {value!r}") from exc
    if not (value > 0.0 and math.isfinite(value)):
        raise UsageError(f"coulomb: {what} must be a positive number, got {value!r}")
    return value


@register("coulomb")
class Coulomb(Term):
    """Coulomb energy (eV) between the charges (e) of an earlier stage.

    Args:
        elements: the model's element symbols (the charges come from a stage).
        damping: ``"switch"`` (default): pair energies times switch_on(r, r_on, r_off),
            zero below ``r_on``; ``"none"``: bare 1/r between all pairs.
        r_on, r_off: the switching window (Å), default 2.0 and 5.0: below 2 Å the
            network alone describes the interaction, beyond 5 Å (a typical model cutoff)
            Coulomb is complete.
        method: ``"ewald"`` (default) or ``"pme"`` for 3-D periodic cells.
        real_space_cutoff: r_c (Å) of the erfc part; default 8.0 (or √2·p·``smearing``
            when only ``smearing`` is given). The term's pair list reaches
            max(r_c, r_off).
        accuracy: ε, the relative size of each truncated part (default 1e-6); sets the
            defaults of the three options below (module docstring).
        smearing: σ (Å) of the Gaussian range separation; default r_c / (√2 p).
        lr_wavelength: λ (Å), Ewald keeps every plane wave with wavelength ≥ λ;
            default π √2 σ / p.
        mesh_spacing: h (Å), torch-pme's PME mesh parameter (the mesh has
            2^⌈log2(2|a|/h + 1)⌉ points along each cell vector a);
            default ``PME_SPACING[interpolation_nodes]`` · σ.
        interpolation_nodes: PME Lagrange interpolation nodes per axis, 3 to 7
            (default 7: degree 6, the most accurate per mesh point).

    The recipe stores every resolved number, so a rebuilt term computes exactly the
    same energies even if the defaults change later.
    """

    kind = "energy"

    def __init__(
        self,
        elements: Sequence[str],
        damping: str = "switch",
        r_on: float = 2.0,
        r_off: float = 5.0,
        method: str = "ewald",
        real_space_cutoff: float | None = None,
        accuracy: float = 1e-6,
        smearing: float | None = None,
        lr_wavelength: float | None = None,
        mesh_spacing: float | None = None,
        interpolation_nodes: int = 7,
    ):
        super().__init__()
        if damping not in DAMPING:
            raise UsageError(f"coulomb: damping must be one of {list(DAMPING)}, "
                             f"got {damping!r}")
        if method not in METHODS:
            raise UsageError(f"coulomb: method must be one of {list(METHODS)}, got {method!r}")
        if interpolation_nodes not in PME_SPACING:
            raise UsageError(f"coulomb: interpolation_nodes must be one of "
                             f"{sorted(PME_SPACING)}, got {interpolation_nodes!r}")
        accuracy = _positive(accuracy, "accuracy")
        if not accuracy < 1.0:
            raise UsageError(f"coulomb: accuracy must be below 1, got {accuracy}")
        self.damping, self.method = damping, method
        self.r_on, self.r_off = float(r_on), float(r_off)
        check_window(self.r_on, self.r_off, "coulomb")
        self.accuracy = accuracy
        p = _accuracy_exponent(accuracy)
        if real_space_cutoff is None:
            real_space_cutoff = 8.0 if smearing is None else math.sqrt(2.0) * p * smearing
        self.real_space_cutoff = _positive(real_space_cutoff, "real_space_cutoff")
        if smearing is None:
            smearing = self.real_space_cutoff / (math.sqrt(2.0) * p)
        self.smearing = _positive(smearing, "smearing")
        if lr_wavelength is None:
            lr_wavelength = math.pi * math.sqrt(2.0) * self.smearing / p
        self.lr_wavelength = _positive(lr_wavelength, "lr_wavelength")
        if mesh_spacing is None:
            mesh_spacing = PME_SPACING[interpolation_nodes] * self.smearing
        self.mesh_spacing = _positive(mesh_spacing, "mesh_spacing")
        self.interpolation_nodes = int(interpolation_nodes)

        reach = self.real_space_cutoff
        if self.damping == "switch":
            reach = max(reach, self.r_off)
        self.pair_cutoff = reach
        self.fields = keys.pairs(reach)
        self.reads = (keys.CHARGES, keys.POSITIONS, keys.CELL, keys.PBC, keys.BATCH,
                      keys.N_ATOMS, self.fields.index, self.fields.lengths)

    def recipe(self) -> dict:
        return {
            "damping": self.damping, "r_on": self.r_on, "r_off": self.r_off,
            "method": self.method, "real_space_cutoff": self.real_space_cutoff,
            "accuracy": self.accuracy, "smearing": self.smearing,
            "lr_wavelength": self.lr_wavelength, "mesh_spacing": self.mesh_spacing,
            "interpolation_nodes": self.interpolation_nodes,
        }

    def extra_repr(self) -> str:
        window = f"r_on={self.r_on}, r_off={self.r_off}, " if self.damping == "switch" else ""
        return (f"damping={self.damping!r}, {window}method={self.method!r}, "
                f"real_space_cutoff={self.real_space_cutoff}, smearing={self.smearing:.4g}")

    # --- pieces -------------------------------------------------------------
    def screening(self, r: torch.Tensor) -> torch.Tensor:
        """s(r): the fraction of k_e q_i q_j / r this term keeps at distance ``r`` (Å)."""
        if self.damping == "none":
            return torch.ones_like(r)
        return switch_on(r, self.r_on, self.r_off)

    def forward(self, graph: dict[str, torch.Tensor]) -> torch.Tensor:
        q = graph[keys.CHARGES]
        positions = graph[keys.POSITIONS]
        pbc = graph[keys.PBC].to(positions.device)
        energies = positions.new_zeros(positions.shape[0])
        periodic = pbc.all(-1)
        partial = pbc.any(-1) & ~periodic
        if bool(partial.any()):
            b = int(torch.nonzero(partial)[0])
            raise UsageError(
                f"coulomb: structure {b} is periodic along {pbc[b].tolist()} only; "
                "Coulomb sums are implemented for molecules (no periodic direction) and "
                "3-D periodic cells, not for slabs or wires")
        if not bool(periodic.all()):
            energies = energies + self._molecules(graph, q, ~periodic)
        if bool(periodic.any()):
            energies = energies + self._periodic(graph, q, periodic)
        return energies

    def _molecules(self, graph, q: torch.Tensor, open_: torch.Tensor) -> torch.Tensor:
        """Per-atom energies (N,) of the direct sum over all pairs of every structure
        flagged in ``open_`` (B,); zero on the other atoms."""
        positions = graph[keys.POSITIONS]
        i, j = all_pairs(graph[keys.BATCH], graph[keys.N_ATOMS], open_)
        n = positions.shape[0]
        if i.numel() == 0:
            return positions.new_zeros(n)
        r = torch.linalg.vector_norm(positions.index_select(0, j) - positions.index_select(0, i),
                                     dim=-1)
        e = COULOMB_CONSTANT * q.index_select(0, i) * q.index_select(0, j) \
            * self.screening(r) / r
        half = 0.5 * e
        return positions.new_zeros(n).index_add(0, i, half).index_add(0, j, half)

    def _periodic(self, graph, q: torch.Tensor, periodic: torch.Tensor) -> torch.Tensor:
        """Per-atom energies (N,) of every 3-D periodic structure flagged in ``periodic``."""
        positions, cell = graph[keys.POSITIONS], graph[keys.CELL]
        batch, n_atoms = graph[keys.BATCH], graph[keys.N_ATOMS]
        index, lengths = graph[self.fields.index], graph[self.fields.lengths]
        starts = torch.cumsum(n_atoms, 0) - n_atoms
        edge_structure = batch.index_select(0, index[0])
        calculator = self._calculator(positions.dtype, positions.device)
        parts, where = [], []
        for b in torch.nonzero(periodic).flatten().tolist():
            start, count = int(starts[b]), int(n_atoms[b])
            atoms = slice(start, start + count)
            volume = torch.linalg.det(cell[b].detach()).abs()
            if not bool(volume > 0):
                raise UsageError(f"coulomb: structure {b} is periodic but its cell is "
                                 f"degenerate (volume {float(volume):.3g} Å³)")
            edges = torch.nonzero(edge_structure == b).flatten()
            pairs = index.index_select(1, edges) - start
            r = lengths.index_select(0, edges)
            charges = q[atoms].unsqueeze(-1)
            kvectors = None
            if self.method == "ewald":
                kvectors = half_sphere_kvectors(cell[b], 2.0 * math.pi / self.lr_wavelength)
            # torch-pme returns V_i = ½ Σ_j q_j v(r_ij) (images and reciprocal space
            # included), so that E = Σ_i q_i V_i: its per-atom energy is q_i V_i
            potential = calculator(charges=charges, cell=cell[b], positions=positions[atoms],
                                   neighbor_indices=pairs.T, neighbor_distances=r,
                                   kvectors=kvectors)
            e = COULOMB_CONSTANT * charges.squeeze(-1) * potential.squeeze(-1)
            if self.damping == "switch":
                e = e - self._short_range(charges.squeeze(-1), pairs, r)
            parts.append(e)
            where.append(torch.arange(start, start + count, device=positions.device))
        out = positions.new_zeros(positions.shape[0])
        return out.index_add(0, torch.cat(where), torch.cat(parts))

    def _short_range(self, q: torch.Tensor, pairs: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """Per-atom ½ Σ_j k_e q_i q_j (1 − s(r_ij))/r_ij over a full pair list (both
        directions): what the bare Ewald sum counts but this term leaves out."""
        inside = torch.nonzero(r < self.r_off).flatten()
        i, j = pairs[0].index_select(0, inside), pairs[1].index_select(0, inside)
        r = r.index_select(0, inside)
        e = 0.5 * COULOMB_CONSTANT * q.index_select(0, i) * q.index_select(0, j) \
            * switch_off(r, self.r_on, self.r_off) / r
        return q.new_zeros(q.shape[0]).index_add(0, i, e)

    def _calculator(self, dtype: torch.dtype, device: torch.device) -> torch.nn.Module:
        """A fresh torch-pme calculator (bare 1/r, prefactor 1) for ``dtype``/``device``.

        Built per call: torch-pme keeps per-call tensors on its modules, which would
        tie them to one autograd graph (and break ``copy.deepcopy`` of the potential).
        """
        if self.method == "ewald":
            calc = torchpme.EwaldCalculator(HalfSpaceCoulomb(smearing=self.smearing),
                                            lr_wavelength=self.lr_wavelength,
                                            full_neighbor_list=True)
        else:
            calc = torchpme.PMECalculator(torchpme.CoulombPotential(smearing=self.smearing),
                                          mesh_spacing=self.mesh_spacing,
                                          interpolation_nodes=self.interpolation_nodes,
                                          full_neighbor_list=True)
        return calc.to(device=device, dtype=dtype)


class HalfSpaceCoulomb(torchpme.CoulombPotential):
    """torch-pme's Coulomb potential for a reciprocal sum over half of k-space: the
    kernel is doubled, since each k stands for the pair ±k (same |k|, and the cos/sin
    structure-factor products are even in k)."""

    def lr_from_k_sq(self, k_sq: torch.Tensor) -> torch.Tensor:
        return 2.0 * super().lr_from_k_sq(k_sq)


def half_sphere_kvectors(cell: torch.Tensor, k_cutoff: float) -> torch.Tensor:
    """Reciprocal vectors k = 2π m·cell⁻ᵀ (K, 3) Å⁻¹ with 0 < |k| ≤ ``k_cutoff``, one of
    each pair ±k (the first nonzero entry of the integer vector m positive).

    Which m are kept is decided without gradients; the vectors themselves are
    differentiable functions of ``cell`` (3, 3), rows the cell vectors (Å).
    """
    reciprocal = 2.0 * math.pi * torch.linalg.inv(cell).T  # rows b_i, a_i·b_j = 2π δ_ij
    with torch.no_grad():
        # |m_i| = |k·a_i| / 2π ≤ k_cutoff |a_i| / 2π
        limits = torch.floor(k_cutoff * torch.linalg.vector_norm(cell, dim=1) / (2.0 * math.pi))
        ranges = [torch.arange(-int(n), int(n) + 1, device=cell.device) for n in limits]
        m = torch.cartesian_prod(*ranges).reshape(-1, 3)
        positive = (m[:, 0] > 0) | ((m[:, 0] == 0) & ((m[:, 1] > 0)
                                                      | ((m[:, 1] == 0) & (m[:, 2] > 0))))
        m = m[positive].to(cell.dtype)
        k_sq = (m @ reciprocal.detach()).square().sum(-1)
        m = m[k_sq <= k_cutoff**2]
    return m @ reciprocal


def all_pairs(batch: torch.Tensor, n_atoms: torch.Tensor, selected: torch.Tensor):
    """Every pair i < j of atoms in the same structure, for the structures flagged in
    ``selected`` (B,) bool: two (P,) int64 tensors of batch-global atom indices.

    Atoms of a structure are contiguous and in structure order (as
    :func:`atomnet.structures.collate` makes them). Integers only.
    """
    device = batch.device
    starts = torch.cumsum(n_atoms, 0) - n_atoms
    atoms = torch.nonzero(selected.index_select(0, batch)).flatten()
    if atoms.numel() == 0:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return empty, empty
    structure = batch.index_select(0, atoms)
    local = atoms - starts.index_select(0, structure)
    later = n_atoms.index_select(0, structure) - 1 - local  # partners j > i
    i = torch.repeat_interleave(atoms, later)
    first = torch.cumsum(later, 0) - later
    rank = torch.arange(i.numel(), device=device) - torch.repeat_interleave(first, later)
    return i, i + 1 + rank
