"""E(3)-equivariant message passing of the NequIP/MACE kind, on e3nn.

Per atom i and layer t, with edge vectors r_ij of the pair list at the cutoff:

* radial basis: Bessel functions √(2/r_c) sin(nπ r/r_c)/r times a C² polynomial
  envelope (NequIP's, p = 6), fed to a bias-free SiLU network, so that every weight and
  message vanishes exactly at and beyond the cutoff (skinned lists change nothing);
* messages: h_j (channels × irreps up to ``l_max``) ⊗ Y(r̂_ij) (spherical harmonics up to
  ``sh_l_max``), channel-wise ("uvu") with per-edge weights from the radial network,
  summed over j and divided by the average neighbour count (a training statistic):
  the atomic basis A_i;
* the atomic basis A keeps every degree of the harmonics (l ≤ ``sh_l_max``), as MACE's;
* many-body features: products A ⊗ A, A ⊗ A ⊗ A, … up to ``correlation``, channel-wise
  with element-dependent weights (MACE's product basis, built as successive tensor
  products whose intermediates keep l ≤ ``sh_l_max``), projected onto the hidden irreps
  (l ≤ ``l_max``) and added to a self-connection that depends on the element;
* no gate: the products are the nonlinearity (as in MACE); an invariant read-out per
  layer, the last through a SiLU network; E_i = scale_Z Σ_t readout_t(h_i) + shift_Z.

Energies in eV, lengths in Å. Every activation is smooth, so Hessians are exact.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from e3nn import get_optimization_defaults, o3, set_optimization_defaults
from torch import nn

from .. import keys
from ..errors import UsageError
from ..terms import StatisticsData, Term, register
from .statistics import element_scale_shift
from .tensor_products import ChannelwiseProduct

#: named sizes: data, not code (``{"type": "equivariant", "size": "medium"}``); explicit
#: keys override them. ``medium`` is MACE's 32 channels, L = 1, correlation 3, 2 layers.
PRESETS: dict[str, dict] = {
    "small": {"channels": 16, "l_max": 1, "sh_l_max": 2, "correlation": 2, "layers": 2,
              "num_radial": 8, "radial_mlp": [32]},
    "medium": {"channels": 32, "l_max": 1, "sh_l_max": 3, "correlation": 3, "layers": 2,
               "num_radial": 8, "radial_mlp": [64, 64]},
    "large": {"channels": 128, "l_max": 1, "sh_l_max": 3, "correlation": 3, "layers": 2,
              "num_radial": 8, "radial_mlp": [64, 64, 64]},
}

#: the polynomial envelope's exponent (NequIP's default): value, slope and curvature → 0
ENVELOPE_P = 6


def bessel_basis(r: torch.Tensor, cutoff: float, n: int) -> torch.Tensor:
    """(E, n) √(2/r_c) sin(kπ r/r_c)/r, k = 1…n (Å⁻¹·⁵), times the envelope of
    :func:`envelope` (zero at and beyond the cutoff)."""
    k = torch.arange(1, n + 1, dtype=r.dtype, device=r.device) * (math.pi / cutoff)
    rr = r.unsqueeze(-1)
    return math.sqrt(2.0 / cutoff) * torch.sin(k * rr) / rr * envelope(rr, cutoff)


def envelope(r: torch.Tensor, cutoff: float, p: int = ENVELOPE_P) -> torch.Tensor:
    """NequIP's polynomial envelope 1 − (p+1)(p+2)/2 x^p + p(p+2) x^(p+1) − p(p+1)/2 x^(p+2),
    x = r/r_c clamped at 1: 1 at 0; value, slope and curvature 0 at r_c."""
    x = (r / cutoff).clamp(max=1.0)
    return 1.0 - (p + 1) * (p + 2) / 2 * x**p + p * (p + 2) * x ** (p + 1) \
        - p * (p + 1) / 2 * x ** (p + 2)


def hidden_irreps(channels: int, l_max: int) -> o3.Irreps:
    """channels × (0e + 1o + 2e + … up to l_max): the natural parity of vectors."""
    return o3.Irreps([(channels, (l, (-1) ** l)) for l in range(l_max + 1)])


def second_moment_gain(f, points: int = 200) -> float:
    """1/√E[f(x)²] for x ~ N(0, 1), by Gauss–Hermite quadrature (deterministic): the
    factor that keeps an activation's output at unit second moment (e3nn's
    ``normalize2mom``, without its sampling)."""
    x, w = np.polynomial.hermite_e.hermegauss(points)
    y = f(torch.from_numpy(x)).numpy()
    return float(1.0 / math.sqrt((w * y**2).sum() / w.sum()))


class RadialMLP(nn.Module):
    """Bias-free SiLU network: zero in, zero out (messages vanish beyond the cutoff).

    Variance-preserving at initialisation (weights N(0, 1/fan_in), SiLU scaled to unit
    second moment), as e3nn's ``FullyConnectedNet``: with PyTorch's default init the
    per-edge weights came out ~20× smaller than the basis, and the untrained model
    predicted energies and forces ~500× smaller than the data, which slowed training.
    """

    def __init__(self, widths: Sequence[int]):
        super().__init__()
        layers: list[nn.Module] = []
        for k, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            linear = nn.Linear(a, b, bias=False)
            nn.init.normal_(linear.weight, std=1.0 / math.sqrt(a))
            layers.append(linear)
            if k < len(widths) - 2:
                layers.append(ScaledSiLU())
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ScaledSiLU(nn.Module):
    """SiLU times the constant that gives it unit second moment on N(0, 1) inputs."""

    def __init__(self):
        super().__init__()
        self.gain = second_moment_gain(nn.functional.silu)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.silu(x) * self.gain


def _channelwise(irreps1: o3.Irreps, irreps2: o3.Irreps, targets: o3.Irreps, mode: str):
    """Output irreps and instructions of a channel-wise tensor product: every path
    (ir1 ⊗ ir2 → ir) whose ir is in ``targets``."""
    wanted = {ir for _, ir in targets}
    out, instructions = [], []
    for i1, (mul, ir1) in enumerate(irreps1):
        for i2, (_, ir2) in enumerate(irreps2):
            for ir in ir1 * ir2:
                if ir in wanted:
                    k = len(out)
                    out.append((mul, ir))
                    instructions.append((i1, i2, k, mode, True))
    return o3.Irreps(out), instructions


class Interaction(nn.Module):
    """One message-passing layer of MACE's form: messages into an atomic basis A with
    every degree of the edge harmonics, the product basis of A up to ``correlation``
    projected onto the hidden irreps, plus an element-dependent self-connection.

    There is no gate: the products are the nonlinearity (as in MACE). Intermediate
    products keep every degree up to ``sh_l_max``, so that couplings such as
    (2 ⊗ 2 → 2) ⊗ 2 → 0 of the third order reach the output, not only those through
    l ≤ ``l_max``.
    """

    def __init__(self, irreps_in: o3.Irreps, irreps_sh: o3.Irreps, hidden: o3.Irreps,
                 n_species: int, num_radial: int, radial_mlp: Sequence[int],
                 correlation: int):
        super().__init__()
        channels = hidden[0].mul
        basis = hidden_irreps(channels, irreps_sh.lmax)  # the atomic basis A
        self.up = o3.Linear(irreps_in, irreps_in)
        mid, instructions = _channelwise(irreps_in, irreps_sh, basis, "uvu")
        self.conv = ChannelwiseProduct(irreps_in, irreps_sh, mid, instructions)
        self.radial = RadialMLP([num_radial, *radial_mlp, self.conv.weight_numel])
        self.down = o3.Linear(mid, basis)
        #: A^k for k = 2 … correlation: a channel-wise product with element weights,
        #: then a linear map back to A's irreps (the last one straight to the hidden ones)
        self.products = nn.ModuleList()
        self.product_weights = nn.ParameterList()
        for k in range(2, correlation + 1):
            target = hidden if k == correlation else basis
            out, ins = _channelwise(basis, basis, target, "uuu")
            tp = ChannelwiseProduct(basis, basis, out, ins)
            self.products.append(nn.ModuleList([tp, o3.Linear(out, target)]))
            self.product_weights.append(
                nn.Parameter(torch.randn(n_species, tp.weight_numel) / math.sqrt(2.0)))
        #: each order's projection onto the hidden irreps (the last order is there
        #: already, unless the correlation is 1 and A itself is the last)
        self.project = nn.ModuleList(
            [o3.Linear(basis, hidden) for _ in range(1, correlation)])
        self.last = o3.Linear(basis, hidden) if correlation == 1 else nn.Identity()
        self.skip = o3.FullyConnectedTensorProduct(
            irreps_in, o3.Irreps(f"{n_species}x0e"), hidden)

    def forward(self, h: torch.Tensor, one_hot: torch.Tensor, species: torch.Tensor,
                sh: torch.Tensor, basis: torch.Tensor, i: torch.Tensor, j: torch.Tensor,
                inv_neighbours: torch.Tensor) -> torch.Tensor:
        # the conv's layout changes happen on atoms, not edges: channels first, gather
        # the neighbours, contract, sum over neighbours, back to e3nn's layout
        x = self.conv.left_channels(self.up(h))
        messages = self.conv.contract(x.index_select(0, j), sh, self.radial(basis))
        a = messages.new_zeros(h.shape[0], messages.shape[1]).index_add(0, i, messages)
        a = self.down(self.conv.to_e3nn(a) * inv_neighbours)
        out = self.skip(h, one_hot)
        power = a
        for k, ((tp, linear), weights) in enumerate(zip(self.products, self.product_weights)):
            out = out + self.project[k](power)
            power = linear(tp(power, a, weights.index_select(0, species)))
        return out + self.last(power)


@register("equivariant")
class Equivariant(Term):
    """E(3)-equivariant message-passing energy term (see the module docstring).

    Args:
        elements: element symbols.
        cutoff: Å, the pair list's reach (messages vanish smoothly at it).
        size: a preset of :data:`PRESETS` (default ``medium``); explicit keys override it.
        channels, l_max (hidden irreps), sh_l_max (edge spherical harmonics),
        correlation (body order of the product basis per layer), layers, num_radial
        (Bessel functions), radial_mlp (hidden widths of the radial network).

    ``avg_num_neighbors`` and the per-element ``scale`` (eV) and ``shift`` (eV/atom) are
    buffers set by :meth:`fit_statistics` and saved in model files.
    """

    skin_safe = True  # bias-free radial weights times the envelope: zero beyond the cutoff
    meta_buildable = False  # e3nn computes Clebsch–Gordan constants while building
    compilable = True  # Calculator(compile=True) wraps forward in torch.compile

    def __init__(self, elements: Sequence[str], cutoff: float = 5.0, size: str = "medium",
                 channels: int | None = None, l_max: int | None = None,
                 sh_l_max: int | None = None, correlation: int | None = None,
                 layers: int | None = None, num_radial: int | None = None,
                 radial_mlp: Sequence[int] | None = None):
        super().__init__()
        if size not in PRESETS:
            raise UsageError(f"size must be one of {sorted(PRESETS)}, got {size!r}")
        given = {"channels": channels, "l_max": l_max, "sh_l_max": sh_l_max,
                 "correlation": correlation, "layers": layers, "num_radial": num_radial,
                 "radial_mlp": radial_mlp}
        hp = {**PRESETS[size], **{k: v for k, v in given.items() if v is not None}}
        for key in ("channels", "sh_l_max", "correlation", "layers", "num_radial"):
            if not isinstance(hp[key], int) or hp[key] < 1:
                raise UsageError(f"{key} must be a positive integer, got {hp[key]!r}")
        if not isinstance(hp["l_max"], int) or hp["l_max"] < 0:
            raise UsageError(f"l_max must be a non-negative integer, got {hp['l_max']!r}")
        self.symbols = list(elements)
        self.hparams = {"cutoff": float(cutoff), "size": size,
                        **{k: (list(v) if k == "radial_mlp" else int(v)) for k, v in hp.items()}}
        self.pair_cutoff = float(cutoff)
        self.triplet_cutoff = None
        self.fields = keys.pairs(self.pair_cutoff)
        self.reads = (self.fields.index, self.fields.vectors, self.fields.lengths, keys.SPECIES)
        # e3nn's tensor products without TorchScript: the same numbers and eager speed, and
        # torch.compile traces them (ethanol compiles in ~8 s instead of ~100 s)
        previous = get_optimization_defaults()
        set_optimization_defaults(jit_script_fx=False)
        try:
            self._build(elements, hp)
        finally:
            set_optimization_defaults(**previous)
        self.register_buffer("avg_num_neighbors", torch.tensor(10.0))
        self.register_buffer("scale", torch.ones(len(elements)))
        self.register_buffer("shift", torch.zeros(len(elements)))

    def _build(self, elements: Sequence[str], hp: dict) -> None:
        n_species = len(elements)
        c = hp["channels"]
        self.irreps_sh = o3.Irreps.spherical_harmonics(hp["sh_l_max"])
        #: degrees of the edge harmonics as plain ints (what torch.compile can guard on)
        self.sh_ls = list(range(hp["sh_l_max"] + 1))
        hidden = hidden_irreps(c, hp["l_max"])
        #: irreps of the node features between layers
        self.hidden = hidden
        self.embed = nn.Linear(n_species, c, bias=False)
        nn.init.normal_(self.embed.weight)  # one-hot in: unit-variance features out
        irreps_in = o3.Irreps(f"{c}x0e")
        self.interactions = nn.ModuleList()
        self.readouts = nn.ModuleList()
        for t in range(hp["layers"]):
            self.interactions.append(Interaction(
                irreps_in, self.irreps_sh, hidden, n_species, hp["num_radial"],
                hp["radial_mlp"], hp["correlation"]))
            irreps_in = hidden
            last = t == hp["layers"] - 1
            self.readouts.append(o3.Linear(hidden, o3.Irreps("16x0e" if last else "1x0e")))
        self.head = nn.Sequential(nn.SiLU(), nn.Linear(16, 1))

    def recipe(self) -> dict:
        return dict(self.hparams)

    def node_features(self, graph: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        """Each layer's equivariant node features (N, dim of :attr:`hidden`): scalars,
        then vectors (and higher l) in e3nn's layout."""
        f = self.fields
        i, j = graph[f.index]
        vectors, lengths = graph[f.vectors], graph[f.lengths]
        species = graph[keys.SPECIES]
        one_hot = nn.functional.one_hot(species, len(self.symbols)).to(vectors.dtype)
        sh = o3.spherical_harmonics(self.sh_ls, vectors, normalize=True,
                                    normalization="component")
        basis = bessel_basis(lengths, self.pair_cutoff, self.hparams["num_radial"])
        inv_neighbours = 1.0 / self.avg_num_neighbors
        h = self.embed(one_hot)
        features = []
        for interaction in self.interactions:
            h = interaction(h, one_hot, species, sh, basis, i, j, inv_neighbours)
            features.append(h)
        return features

    def forward(self, graph: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-atom energies (N,) in eV: the invariant read-outs of every layer."""
        species = graph[keys.SPECIES]
        features = self.node_features(graph)
        energy = features[0].new_zeros(species.shape[0])
        for t, (h, readout) in enumerate(zip(features, self.readouts)):
            out = readout(h)
            energy = energy + (self.head(out) if t == len(features) - 1 else out).squeeze(-1)
        return self.scale.index_select(0, species) * energy \
            + self.shift.index_select(0, species)

    @torch.no_grad()
    def fit_statistics(self, data: StatisticsData) -> dict[str, float]:
        """Average neighbour count (pairs per atom within the cutoff); per-element scale
        (RMS force, eV/Å) and shift (mean residual energy per atom, eV)."""
        edges, atoms = 0, 0
        for batch in data.batches():
            edges += int((batch[self.fields.lengths] < self.pair_cutoff).sum())
            atoms += int(batch[keys.SPECIES].numel())
        average = edges / max(atoms, 1)
        self.avg_num_neighbors.fill_(max(average, 1.0))
        scale, shift = element_scale_shift(data.graphs, data.residuals, len(self.scale))
        self.scale.copy_(scale.to(self.scale))
        self.shift.copy_(shift.to(self.shift))
        info = {"avg_num_neighbors": float(self.avg_num_neighbors)}
        for k, symbol in enumerate(self.symbols):
            info[f"scale.{symbol}"] = float(scale[k])
            info[f"shift.{symbol}"] = float(shift[k])
        return info
