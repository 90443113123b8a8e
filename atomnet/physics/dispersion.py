"""DFT-D3(BJ) dispersion as an energy term, on the potential's own pair list.

Grimme's D3 model with rational (Becke–Johnson) damping, as in simple-dftd3
(s-dftd3); inside, lengths are in Å and energies in Hartree (the atomic-unit tables
are converted once), per-atom energies come out in eV:

* coordination numbers CN_i = Σ_j 1 / (1 + exp(−16 (R^cov_ij / r_ij − 1))) over the
  pairs closer than ``cn_cutoff`` (a hard cutoff, as s-dftd3), with the D3 covalent
  radii (Pyykkö, ×4/3) R^cov_ij = R^cov_i + R^cov_j;
* Gaussian weights w_ia ∝ exp(−4 (CN_i − CN^ref_ia)²) of each element's reference
  systems, normalised per atom. They are evaluated as a softmax (the largest term
  factored out), which equals s-dftd3's formula wherever that is finite; where the
  normalisation Σ_a exp(−4 ΔCN_a²) is too small to invert in double precision (CN
  more than ~13 above the largest reference), the reference with the largest CN gets
  weight 1 (s-dftd3's fall-back; tad-dftd3 switches only at an exact zero, the weights
  differ there by < e⁻¹⁰⁰);
* C6_ij = Σ_ab w_ia w_jb C6^ref_ij,ab, C8_ij = 3 C6_ij √(Q_i Q_j) (Q from ⟨r⁴⟩/⟨r²⟩);
* E_ij = −s6 C6_ij / (r⁶ + R0⁶) − s8 C8_ij / (r⁸ + R0⁸), R0 = a1 √(C8_ij/C6_ij) + a2,
  over the pairs closer than ``cutoff`` (hard cutoff, periodic images included);
  each atom gets half of each of its pairs;
* optionally the three-body Axilrod–Teller–Muto term (``three_body=True``) with
  s-dftd3's zero damping: E_ijk = s9 √(C6_ij C6_ik C6_jk) (3 cos θ_i cos θ_j cos θ_k + 1)
  / (r_ij r_ik r_jk)³ · 1 / (1 + 6 (r̄/R̄0)^(−16/3)), with R̄0 the product of the
  pairwise D3 van der Waals radii scaled by 4/3 and r̄ = r_ij r_ik r_jk, over the
  triangles whose three sides are shorter than ``three_body_cutoff``; each vertex
  gets a third.

Reference data (reference CNs and C6, ⟨r⁴⟩/⟨r²⟩, covalent and van der Waals radii)
and the functional → (s6, s8, a1, a2) table come from tad-dftd3 (and its tad-mctc),
whose tables are s-dftd3's. Only the slices for the model's elements are kept, as
non-persistent buffers: a model file stores the recipe (functional and the four
parameters), never the tables.

Distances come from the potential (contract 1): positions, cell and the integer pair
list. The cutoffs are hard, as in s-dftd3: the energy jumps by a pair's contribution
when it crosses ``cutoff`` (at 60 Bohr ~1e-8 eV for O–O, ~1e-7 eV for heavy metals),
and by far less when it crosses ``cn_cutoff`` (a count of ~1e-7 enters the CN);
derivatives there are those of the energy on either side.

Cost. At s-dftd3's reach a periodic cell has ~13,500 neighbours per atom (water:
20.75 M directed pairs for 1,536 atoms), so the two-body term never builds an
autograd graph over its pairs. It reads the full pair list as stored (every pair
{i→j+S, j→i−S} twice, center-sorted) in chunks of
:data:`~atomnet.physics.d3_chunks.CHUNK` directed pairs whose
temporaries stay in cache, and gives each direction's share to its center only
(E_i = −½ Σ_(pairs of i) e_ij, CN_i = Σ count_ij). Its autograd function
(:class:`ChunkedTwoBody`) computes in the forward pass, besides the energies, the analytic
gradient of the total energy (forces and stress: pairs directly, then the chain
through the coordination numbers), which its backward scales; other per-atom weights
take the analytic gradient again. A backward pass with ``create_graph`` (Hessians,
force training) recomputes the energy's gradient from positions and cell with
differentiable operations, so that autograd's derivatives of it are exact at any
order. The three-body term keeps one plain autograd expression (:meth:`D3BJ._plain`),
as does the two-body term with it. C6 never forms (pairs × refs × refs) tensors: per
atom it contracts its weights with the reference table of every element,
P_i,t,b = Σ_a w_ia C6^ref_(Z_i,t),ab (N × S × R), and per pair
C6_ij = Σ_b P_i,(Z_j),b w_jb; when N² is small against the pair count (periodic cells,
where each atom pair recurs as many images) the dense N × N matrix of C6 is formed
once by one matrix product instead.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .. import keys
from ..errors import UsageError
from ..terms import Term, register
from ..units import BOHR, HARTREE
from .d3_chunks import ChunkedPairs, ChunkedTwoBody

#: steepness of the D3 counting function
KCN = 16.0
#: exponent factor of the Gaussian reference weights
WEIGHT_FACTOR = 4.0
#: log(1 / largest double): below it s-dftd3's 1/Σ exp(−4 ΔCN²) overflows (weight fall-back)
LOG_TINY_NORM = -math.log(torch.finfo(torch.float64).max)
#: ATM damping: scaling of the van der Waals radii and exponent α + 2 (α = 14)
RS9 = 4.0 / 3.0
ALP3 = 16.0
#: s-dftd3's default cutoffs (Bohr): two-body, three-body, coordination numbers
DISP2_CUTOFF = 60.0 * BOHR
DISP3_CUTOFF = 40.0 * BOHR
CN_CUTOFF = 40.0 * BOHR
#: largest atomic number D3 has reference data for (Lr)
MAX_Z = 103
CPU = torch.device("cpu")


def _tad():
    try:
        import tad_dftd3
        from tad_mctc.data import radii
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise UsageError("the d3bj term needs tad-dftd3 (pip install 'tad-dftd3>=0.7')") \
            from exc
    return tad_dftd3, radii


def known_functionals() -> list[str]:
    """Names of the functionals with D3(BJ) parameters (tad-dftd3's copy of s-dftd3's table)."""
    from importlib import resources

    try:
        import tomllib
    except ModuleNotFoundError:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    text = (resources.files("tad_dftd3.param") / "parameters.toml").read_text()
    table = tomllib.loads(text)["parameter"]
    return sorted(name for name, entry in table.items() if "bj" in entry.get("d3", {}))


def functional_parameters(functional: str) -> dict[str, float]:
    """D3(BJ) parameters ``{s6, s8, a1, a2, s9}`` of a functional (case and hyphens
    ignored, s-dftd3's aliases understood). Raises :class:`UsageError` for unknown names."""
    tad_dftd3, _ = _tad()
    try:
        found = tad_dftd3.param.get_functional_params(str(functional), damping="bj",
                                                       dtype=torch.float64, device=CPU)
    except (KeyError, ValueError):
        raise UsageError(
            f"no D3(BJ) parameters for functional {functional!r}; known: "
            f"{', '.join(known_functionals())} (or give s6, s8, a1 and a2 explicitly)"
        ) from None
    return {k: float(found[k]) for k in ("s6", "s8", "a1", "a2", "s9")}


def _atomic_numbers(elements: Sequence[str]) -> list[int]:
    from ase.data import atomic_numbers

    numbers = []
    for symbol in elements:
        z = atomic_numbers.get(str(symbol), 0)
        if not 1 <= z <= MAX_Z:
            raise UsageError(
                f"D3 has no reference data for element {symbol!r}: it covers H to Lr "
                f"(Z = 1 to {MAX_Z})"
            )
        numbers.append(z)
    return numbers


def _half(i: torch.Tensor, j: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Positions (E',) of one edge of every pair {i→j+S, j→i−S} of a full pair list:
    i < j, or i == j (an atom and its image) with the first non-zero shift positive."""
    keep = i < j
    same = torch.nonzero(i == j).squeeze(1)  # few: N × images within the cutoff
    if same.numel():
        s0, s1, s2 = shifts.index_select(0, same).unbind(-1)
        keep[same] = (s0 > 0) | ((s0 == 0) & ((s1 > 0) | ((s1 == 0) & (s2 > 0))))
    return torch.nonzero(keep).squeeze(1)


@register("d3bj")
class D3BJ(Term):
    """DFT-D3(BJ) dispersion energy (eV per atom) on the pair list of reach ``cutoff``.

    Args:
        elements: the model's element symbols (H to Lr).
        functional: name whose (s6, s8, a1, a2) come from s-dftd3's table (via
            tad-dftd3), e.g. ``"pbe"``, ``"pbe0"``, ``"b3lyp"``, ``"r2scan"``; None when
            s8, a1 and a2 are all given.
        three_body: add the Axilrod–Teller–Muto term (s9 of the table, 1 for almost all).
            Its cost grows with the cube of the neighbours within ``three_body_cutoff``:
            fine for molecules, very expensive for dense periodic cells at the default.
        cutoff: two-body cutoff (Å); s-dftd3's default 60 Bohr.
        cn_cutoff: coordination-number cutoff (Å); s-dftd3's default 40 Bohr.
        three_body_cutoff: ATM cutoff (Å) on each side of a triangle; s-dftd3's 40 Bohr.
        s6, s8, a1, a2: explicit damping parameters (a2 in Bohr), overriding the table.
    """

    kind = "energy"
    #: form the dense N × N C6 matrix when N² ≤ this × (pairs × references); else gather
    #: per pair (0 forces the per-pair path)
    dense_c6_factor: float = 1.0

    def __init__(
        self,
        elements: Sequence[str],
        functional: str | None = "pbe",
        three_body: bool = False,
        cutoff: float = DISP2_CUTOFF,
        cn_cutoff: float = CN_CUTOFF,
        s6: float | None = None,
        s8: float | None = None,
        a1: float | None = None,
        a2: float | None = None,
        three_body_cutoff: float = DISP3_CUTOFF,
    ):
        super().__init__()
        if not isinstance(three_body, bool):
            raise UsageError(f"three_body must be true or false, got {three_body!r}")
        for name, value in (("cutoff", cutoff), ("cn_cutoff", cn_cutoff),
                            ("three_body_cutoff", three_body_cutoff)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise UsageError(f"d3bj: {name} must be a positive length in Å, got {value!r}")
        given = {"s6": s6, "s8": s8, "a1": a1, "a2": a2}
        if functional is None:
            missing = [k for k in ("s8", "a1", "a2") if given[k] is None]
            if missing:
                raise UsageError(
                    f"d3bj without a functional needs s8, a1 and a2; missing {missing}")
            params = {"s6": 1.0, "s9": 1.0}
        else:
            params = functional_parameters(functional)
        params.update({k: float(v) for k, v in given.items() if v is not None})
        self.functional = None if functional is None else str(functional)
        self.three_body = three_body
        self.s6, self.s8, self.a1, self.a2 = (params[k] for k in ("s6", "s8", "a1", "a2"))
        self.s9 = params["s9"] if three_body else 0.0
        self.cutoff, self.cn_cutoff = float(cutoff), float(cn_cutoff)
        self.three_body_cutoff = float(three_body_cutoff)
        self.elements = list(elements)

        reach = [self.cutoff, self.cn_cutoff] + ([self.three_body_cutoff] if three_body else [])
        self.pair_cutoff = max(reach)
        self.triplet_cutoff = self.three_body_cutoff if three_body else None
        self.fields = keys.pairs(self.pair_cutoff)
        f = self.fields
        self.reads = (f.index, f.shifts, f.vectors, f.lengths, keys.SPECIES, keys.POSITIONS,
                      keys.CELL, keys.PBC, keys.BATCH) + ((f.triplets,) if three_body else ())
        self._tables(_atomic_numbers(self.elements))

    def _tables(self, numbers: list[int]) -> None:
        """Per-element slices of the D3 reference data (float64, made on the CPU whatever
        the default device: model files rebuild terms on the meta device)."""
        tad_dftd3, radii = _tad()
        z = torch.tensor(numbers, dtype=torch.long, device=CPU)
        ref = tad_dftd3.reference.Reference(dtype=torch.float64, device=CPU)
        ref_cn = ref.cn[z]  # (S, 7), −1 where an element has fewer references
        n_refs = int((ref_cn >= 0).sum(-1).max()) if len(numbers) else 1
        ref_cn = ref_cn[:, :n_refs]
        # lengths in Å, energies in Hartree (eV only per atom, at the end)
        c6 = ref.c6[z][:, z][..., :n_refs, :n_refs] * BOHR**6  # (S, S, R, R) Eh·Å⁶
        r4r2 = tad_dftd3.data.R4R2(dtype=torch.float64, device=CPU)[z]
        rcov = radii.COV_D3(dtype=torch.float64, device=CPU)[z] * BOHR
        rvdw = radii.VDW_PAIRWISE(dtype=torch.float64, device=CPU)[z][:, z] * BOHR
        q = 3.0 * r4r2[:, None] * r4r2[None, :] * BOHR**2  # C8/C6 (Å²)
        r0 = self.a1 * q.sqrt() + self.a2 * BOHR
        # per species pair (S·S, 4): 16 × covalent radius sum, R0⁶, R0⁸, s8·C8/C6
        pair = torch.stack([KCN * (rcov[:, None] + rcov[None, :]), r0**6, r0**8, self.s8 * q],
                           -1)
        top = (ref_cn.max(-1, keepdim=True).values - ref_cn).abs() < 1e-12
        for name, value in (("ref_cn", ref_cn), ("ref_valid", ref_cn >= 0),
                            ("ref_top", top.to(torch.float64)), ("ref_c6", c6),
                            ("pair_table", pair.reshape(-1, 4)),
                            ("atm_radius", (RS9 * rvdw).reshape(-1))):
            self.register_buffer(name, value, persistent=False)

    def recipe(self) -> dict:
        return {"functional": self.functional, "three_body": self.three_body,
                "cutoff": self.cutoff, "cn_cutoff": self.cn_cutoff,
                "three_body_cutoff": self.three_body_cutoff,
                "s6": self.s6, "s8": self.s8, "a1": self.a1, "a2": self.a2}

    def extra_repr(self) -> str:
        return (f"functional={self.functional!r}, s6={self.s6}, s8={self.s8}, a1={self.a1}, "
                f"a2={self.a2}, three_body={self.three_body}, cutoff={self.cutoff:.4g} Å, "
                f"cn_cutoff={self.cn_cutoff:.4g} Å")

    # --- model ------------------------------------------------------------
    def weights(self, cn: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        """Gaussian reference weights (N, R) of atoms with coordination numbers ``cn``."""
        return self._weights_and_slopes(cn, species)[0]

    def _c6(self, w: torch.Tensor, species: torch.Tensor, n_pairs: int):
        """A function (i, j) → C6_ij (Hartree·Å⁶) of atom index tensors."""
        n, n_refs = w.shape
        n_species = self.ref_c6.shape[0]
        # P_i,t,b = Σ_a w_ia C6ref(Z_i, t)_ab: (N, S, R)
        p = torch.einsum("na,ntab->ntb", w, self.ref_c6.to(w.dtype)[species])
        if n * n <= self.dense_c6_factor * n_pairs * n_refs:  # dense N × N: one GEMM
            onehot = torch.nn.functional.one_hot(species, n_species).to(w.dtype)
            wt = (onehot.unsqueeze(-1) * w.unsqueeze(1)).reshape(n, -1)  # (N, S·R)
            dense = (p.reshape(n, -1) @ wt.T).reshape(-1)
            return lambda i, j: dense.index_select(0, i * n + j)
        flat = p.reshape(n * n_species, n_refs)
        return lambda i, j: (flat.index_select(0, i * n_species + species[j])
                             * w.index_select(0, j)).sum(-1)

    def forward(self, graph: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.three_body:
            return self._plain(graph)
        positions, cell = graph[keys.POSITIONS], graph[keys.CELL]
        f = self.fields
        data = {"index": graph[f.index], "shifts": graph[f.shifts],
                "species": graph[keys.SPECIES], "batch": graph[keys.BATCH],
                "pbc": graph[keys.PBC], "vectors": graph[f.vectors].detach(),
                "lengths": graph[f.lengths].detach()}
        if torch.is_grad_enabled() and (positions.requires_grad or cell.requires_grad):
            return ChunkedTwoBody.apply(positions, cell, self, data)
        with torch.no_grad():
            geometry = ChunkedPairs(data, positions, cell)
            return self._pair_pass(geometry, self._state(geometry), energy=True)[0]

    def _plain(self, graph: dict[str, torch.Tensor]) -> torch.Tensor:
        """The energy as one autograd expression over the half list (i < j, or for an
        atom and its own image the shift whose first non-zero component is positive),
        each pair energy halved between its atoms: with the three-body term; for the
        two-body term alone :meth:`forward` takes the chunked path."""
        f = self.fields
        species = graph[keys.SPECIES]
        n = species.shape[0]
        index = graph[f.index]
        lengths = graph[f.lengths]
        half = _half(index[0], index[1], graph[f.shifts])
        i, j = index[0].index_select(0, half), index[1].index_select(0, half)
        r = lengths.index_select(0, half)
        n_species = self.ref_c6.shape[0]
        pair = species.index_select(0, i) * n_species + species.index_select(0, j)
        table = self.pair_table.to(r.dtype)

        # coordination numbers (hard cutoff)
        ic, jc, rc, pc = i, j, r, pair
        if self.cn_cutoff < self.pair_cutoff:
            sel = torch.nonzero(r.detach() < self.cn_cutoff).squeeze(1)
            ic, jc, rc, pc = (t.index_select(0, sel) for t in (i, j, r, pair))
        # 1 / (1 + exp(−16 (R_cov / r − 1)))
        count = torch.sigmoid(torch.addcdiv(r.new_tensor(-KCN), table[:, 0].index_select(0, pc),
                                            rc))
        cn = r.new_zeros(n).index_add(0, ic, count).index_add(0, jc, count)
        w = self.weights(cn, species)
        c6 = self._c6(w, species, i.numel())

        # two-body energy
        if self.cutoff < self.pair_cutoff:
            sel = torch.nonzero(r.detach() < self.cutoff).squeeze(1)
            i, j, r, pair = (t.index_select(0, sel) for t in (i, j, r, pair))
        t = table.index_select(0, pair)
        r2 = r.square()
        r6 = r2.pow(3)
        six = torch.reciprocal(r6 + t[:, 1])
        if self.s6 != 1.0:
            six = six * self.s6
        e = c6(i, j) * torch.addcmul(six, t[:, 3], torch.reciprocal(r6 * r2 + t[:, 2]))
        energy = e.new_zeros(n).index_add(0, i, e).index_add(0, j, e)  # −2 E_i / Eh
        if self.three_body:
            energy = energy - 2.0 * self._atm(graph, species, c6)
        return energy * (-0.5 * HARTREE)

    # --- chunked two-body path -----------------------------------------------------
    # Every pair {i→j+S, j→i−S} is in the full list twice, with the same distance and C6:
    # the passes below read the list as it is stored (contiguous, center-sorted) and give
    # each directed pair's share to its center only. E_i = −½ Eh Σ_(pairs q of center i)
    # C6_q h(r_q); CN_i = Σ_q count(r_q). For L = Σ_i g_i E_i, the pair's two directions
    # together pull atom i by −c_q v_q, with the symmetric c_q = u_q C6_q h′(r_q) / r_q,
    # u_q = −½ Eh (g_i + g_j) (and likewise through the CN chain), and the cell by
    # ½ S_qᵀ c_q v_q per direction (:meth:`ChunkedPairs.pull`).
    def _state(self, geometry: ChunkedPairs) -> dict:
        """Coordination numbers (one pass over the CN pairs), reference weights and their
        slopes ∂w/∂CN, and what C6 needs (the dense N × N matrix when it pays)."""
        species = geometry.species
        n = species.shape[0]
        dtype = geometry.dtype
        n_species = self.ref_c6.shape[0]
        # per species pair: 16 × covalent radius sum, R0⁶, R0⁸, s8·C8/C6 (contiguous columns)
        table = [column.contiguous() for column in self.pair_table.to(dtype).unbind(-1)]
        cn = geometry.zeros_per_atom()
        cn_rows = []
        reach = self.cn_cutoff if self.cn_cutoff < self.pair_cutoff else None
        for chunk, rows, i, j, _, r, _ in geometry.pairs(within=reach):
            cn_rows.append((chunk, rows))
            pair = species.index_select(0, i) * n_species + species.index_select(0, j)
            # 1 / (1 + exp(−16 (R_cov / r − 1)))
            count = torch.sigmoid(torch.addcdiv(r.new_tensor(-KCN),
                                                table[0].index_select(0, pair), r))
            cn = geometry.add(cn, geometry.center(i), count)
        cn = geometry.fold(cn)
        w, slope = self._weights_and_slopes(cn, species)
        n_refs = w.shape[1]
        # P_i,t,b = Σ_a w_ia C6ref(Z_i, t)_ab: (N, S, R)
        ref = self.ref_c6.to(dtype).index_select(0, species)
        p = torch.einsum("na,ntab->ntb", w, ref)
        state = {"cn": cn, "w": w, "slope": slope, "p": p, "ref": ref, "table": table,
                 "cn_rows": cn_rows}
        n_pairs = geometry.n_edges // 2  # unordered pairs
        if n * n <= self.dense_c6_factor * n_pairs * n_refs:  # dense N × N: one GEMM
            onehot = torch.nn.functional.one_hot(species, n_species).to(dtype)
            wt = (onehot.unsqueeze(-1) * w.unsqueeze(1)).reshape(n, -1)  # (N, S·R)
            state["wt"] = wt
            state["dense"] = (p.reshape(n, -1) @ wt.T).reshape(-1)
        return state

    def _pair_c6(self, state: dict, species, i, j) -> torch.Tensor:
        """C6 of pairs (i, j) by the per-pair contraction (no dense matrix)."""
        n_species = self.ref_c6.shape[0]
        flat = state["p"].reshape(-1, state["p"].shape[-1])
        return (flat.index_select(0, i * n_species + species.index_select(0, j))
                * state["w"].index_select(0, j)).sum(-1)

    def _weights_and_slopes(self, cn: torch.Tensor, species: torch.Tensor):
        """:meth:`weights` (N, R) and their derivatives ∂w/∂CN (N, R), both differentiable."""
        d = cn.unsqueeze(-1) - self.ref_cn.to(cn.dtype).index_select(0, species)
        valid = self.ref_valid.index_select(0, species)
        logits = (-WEIGHT_FACTOR * d * d).masked_fill(~valid, -math.inf)
        w = torch.softmax(logits, dim=-1)
        dlogits = (-2.0 * WEIGHT_FACTOR) * d  # finite; times w = 0 where not valid
        slope = w * (dlogits - (w * dlogits).sum(-1, keepdim=True))
        # s-dftd3's fall-back: where the normalisation Σ_a exp(−4 ΔCN_a²) is too small
        # to invert in double precision, the reference(s) with the largest CN get 1
        vanishing = (torch.logsumexp(logits.detach(), dim=-1) < LOG_TINY_NORM).unsqueeze(-1)
        top = self.ref_top.to(w.dtype).index_select(0, species)
        return (torch.where(vanishing, top, w),
                torch.where(vanishing, torch.zeros_like(slope), slope))

    def _pair_pass(self, geometry: ChunkedPairs, state: dict, energy: bool,
                   weights: torch.Tensor | None = None, uniform: bool = False):
        """One pass over the two-body pairs.

        Returns per-atom energies (N,) eV if ``energy`` (else None) and, for the
        gradient of L = Σ_i g_i E_i (per-atom ``weights`` g, or g = 1 everywhere with
        ``uniform``), ∂L/∂C6 (the dense (N·N,) accumulator, or (∂L/∂P, ∂L/∂w) per
        pair); ∂L/∂(pair vectors) goes into ``geometry``'s accumulators.
        """
        species = geometry.species
        n = species.shape[0]
        n_species = self.ref_c6.shape[0]
        table = state["table"]
        gradient = uniform or weights is not None
        out = geometry.zeros_per_atom() if energy else None
        dense = "dense" in state
        g6 = gw = gh = None
        if gradient:
            g6 = geometry.zeros(n * n) if dense else geometry.zeros(n * n_species,
                                                                   state["w"].shape[1])
            gw = None if dense else geometry.zeros(*state["w"].shape)
            gh = None if uniform else weights * (-0.5 * HARTREE)
        reach = self.cutoff if self.cutoff < self.pair_cutoff else None
        for _, _, i, j, s, r, vectors in geometry.pairs(vectors=gradient, within=reach):
            pair = species.index_select(0, i) * n_species + species.index_select(0, j)
            if dense:
                ij = i * n + j
                c6 = state["dense"].index_select(0, ij)
            else:
                c6 = self._pair_c6(state, species, i, j)
            q = table[3].index_select(0, pair)  # s8 C8/C6
            r2 = r.square()
            r6 = r2.pow(3)
            inv6 = torch.reciprocal(r6 + table[1].index_select(0, pair))
            six = inv6 * self.s6 if self.s6 != 1.0 else inv6
            eight = torch.reciprocal(r6 * r2 + table[2].index_select(0, pair))
            h = torch.addcmul(six, q, eight)
            center = geometry.center(i)
            if energy:
                out = geometry.add(out, center, c6 * h)  # −2 E_i / Eh
            if not gradient:
                continue
            # h′(r)/r = −6 s6 r⁴ / (r⁶ + R0⁶)² − 8 s8 (C8/C6) r⁶ / (r⁸ + R0⁸)²
            dh = torch.addcmul((r2 * inv6).square_().mul_(-6.0 * self.s6), q * r6,
                               eight.square(), value=-8.0)
            # ∂L/∂C6 of this direction: −½ Eh g_i h; pull −u C6 h′/r
            if uniform:  # u = −Eh, a factor applied to the sums after the loop
                g6_pair, coef = h, c6 * dh
            else:
                gi = gh.index_select(0, i)
                g6_pair, coef = gi * h, c6 * dh * -(gi + gh.index_select(0, j))
            geometry.pull(coef, vectors, i, center, s)
            if dense:
                g6 = geometry.add(g6, ij, g6_pair)
            else:
                sj = species.index_select(0, j)
                g6 = geometry.add(g6, i * n_species + sj,
                                  g6_pair.unsqueeze(-1) * state["w"].index_select(0, j))
                flat = state["p"].reshape(-1, state["p"].shape[-1])
                gw = geometry.add(gw, j, g6_pair.unsqueeze(-1)
                                  * flat.index_select(0, i * n_species + sj))
        if uniform:
            geometry.scale(HARTREE)  # (the accumulators held nothing before this pass)
            g6 = g6 * (-0.5 * HARTREE)
            gw = None if gw is None else gw * (-0.5 * HARTREE)
        if energy:
            out = geometry.fold(out) * (-0.5 * HARTREE)
        return out, (g6, gw)

    def _cn_pass(self, geometry: ChunkedPairs, state: dict, g6_gw) -> None:
        """The chain through the coordination numbers: ∂L/∂CN from ∂L/∂C6, then through
        the counting function of every CN pair into ``geometry``'s accumulators."""
        species = geometry.species
        n = species.shape[0]
        n_species = self.ref_c6.shape[0]
        g6, gw = g6_gw
        if "dense" in state:
            g6 = g6.view(n, n)
            gp = (g6 @ state["wt"]).view(n, n_species, -1)
            gw = (g6.T @ state["p"].reshape(n, -1)).view(n, n_species, -1)
            gw = gw[torch.arange(n, device=g6.device), species]
        else:
            gp = g6.view(n, n_species, -1)
        gw = gw + torch.einsum("ntb,ntab->na", gp, state["ref"])
        gcn = (gw * state["slope"]).sum(-1)
        # dcount/dr = −σ(1 − σ) · 16 R_cov / r²
        table = state["table"]
        for _, _, i, j, s, r, vectors in geometry.pairs(vectors=True, subset=state["cn_rows"]):
            pair = species.index_select(0, i) * n_species + species.index_select(0, j)
            k = table[0].index_select(0, pair)
            count = torch.sigmoid(torch.addcdiv(r.new_tensor(-KCN), k, r))
            u = gcn.index_select(0, i) + gcn.index_select(0, j)
            geometry.pull(u * count * (1.0 - count) * k / (r * r.square()), vectors, i,
                          geometry.center(i), s)

    def _atm(self, graph, species, c6) -> torch.Tensor:
        """Axilrod–Teller–Muto energy (N,) Hartree; each triangle appears once per vertex as
        a triplet of two edges at that center, and gives that vertex a third."""
        f = self.fields
        n = species.shape[0]
        e1, e2 = graph[f.triplets]
        index, vectors = graph[f.index], graph[f.vectors]
        i = index[0].index_select(0, e1)
        j, k = index[1].index_select(0, e1), index[1].index_select(0, e2)
        vij, vik = vectors.index_select(0, e1), vectors.index_select(0, e2)
        vjk = vik - vij
        r2jk = (vjk * vjk).sum(-1)
        sel = torch.nonzero(r2jk.detach() <= self.three_body_cutoff**2).squeeze(1)
        i, j, k, vij, vik, r2jk = (t.index_select(0, sel) for t in (i, j, k, vij, vik, r2jk))
        r2ij, r2ik = (vij * vij).sum(-1), (vik * vik).sum(-1)
        n_species = self.ref_c6.shape[0]
        si, sj, sk = (species.index_select(0, a) for a in (i, j, k))
        radius = self.atm_radius.to(r2ij.dtype)
        r0 = radius.index_select(0, si * n_species + sj) \
            * radius.index_select(0, si * n_species + sk) \
            * radius.index_select(0, sj * n_species + sk)
        c9 = self.s9 * torch.sqrt((c6(i, j) * c6(i, k) * c6(j, k)).abs())
        r2 = r2ij * r2ik * r2jk
        r1 = torch.sqrt(r2)
        r3 = r1 * r2
        damp = 1.0 / (1.0 + 6.0 * (r0 / r1) ** (ALP3 / 3.0))
        angular = 0.375 * (r2ij + r2jk - r2ik) * (r2ij - r2jk + r2ik) \
            * (-r2ij + r2jk + r2ik) / (r3 * r2) + 1.0 / r3
        # lengths in Å: C9 ∝ C6^(3/2) scales as length⁹ and the angular factor as length⁻⁹
        e = c9 * angular * damp * (1.0 / 3.0)
        return e.new_zeros(n).index_add(0, i, e)  # Hartree
