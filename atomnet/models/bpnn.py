"""Behler–Parrinello / ANI network: symmetry functions → per-element MLPs → atomic energies."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .. import keys
from ..descriptors import SymmetryFunctions
from ..nn import ElementMLP
from ..terms import LocalStructure, StatisticsData, Term, register
from .statistics import element_scale_shift, feature_statistics


@register("bpnn")
class BPNN(Term):
    """Short-range energy E_i = scale_Z · NN_Z((G_i − μ)/σ) + shift_Z  (eV per atom, Z = Z_i).

    ``feature_mean``/``feature_std`` (μ, σ), and the per-element ``scale`` and ``shift``
    (S,) are buffers set by :meth:`fit_statistics` from training data (see
    :func:`~atomnet.models.statistics.element_scale_shift`); they are saved with the
    weights. Model files from before per-element values (scalar scale and shift) load
    with the scalar broadcast to every element.
    The angular cutoff is ``min(angular_cutoff, cutoff)``; both in Å.
    """

    skin_safe = True  # every edge and triplet term carries f_c(r) = 0 beyond its cutoff

    def __init__(
        self,
        elements: Sequence[str],
        cutoff: float = 5.0,
        angular_cutoff: float = 3.5,
        n_radial: int = 16,
        n_angular_radial: int = 4,
        n_angle_sections: int = 8,
        zeta: float = 14.1,
        hidden: Sequence[int] = (128, 64),
        activation: str = "silu",
        cutoff_fn: str = "polynomial",
    ):
        super().__init__()
        self.symbols = list(elements)
        self.hparams = {
            "cutoff": float(cutoff), "angular_cutoff": float(angular_cutoff),
            "n_radial": int(n_radial), "n_angular_radial": int(n_angular_radial),
            "n_angle_sections": int(n_angle_sections), "zeta": float(zeta),
            "hidden": [int(h) for h in hidden], "activation": str(activation),
            "cutoff_fn": str(cutoff_fn),
        }
        self.descriptor = SymmetryFunctions(
            len(elements), cutoff, min(angular_cutoff, cutoff), n_radial,
            n_angular_radial, n_angle_sections, zeta, cutoff_fn,
        )
        self.pair_cutoff = float(cutoff)
        self.reads = self.descriptor.reads
        self.triplet_cutoff = self.descriptor.triplet_cutoff
        n = self.descriptor.n_features
        self.net = ElementMLP(len(elements), n, hidden, activation)
        self.register_buffer("feature_mean", torch.zeros(n))
        self.register_buffer("feature_std", torch.ones(n))
        self.register_buffer("scale", torch.ones(len(elements)))
        self.register_buffer("shift", torch.zeros(len(elements)))

    scalar_compatible = ("scale", "shift")

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # files written before per-element statistics hold one scalar scale and shift
        for name in self.scalar_compatible:
            value = state_dict.get(prefix + name)
            if value is not None and value.dim() == 0:
                state_dict[prefix + name] = value.expand_as(getattr(self, name)).clone()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def recipe(self) -> dict:
        return dict(self.hparams)

    def features(self, graph: dict[str, torch.Tensor]) -> torch.Tensor:
        """Raw (un-normalised) symmetry functions (N, F)."""
        return self.descriptor(graph)

    def forward(self, graph: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-atom short-range energies (N,) in eV."""
        return self.readout(self.features(graph), graph[keys.SPECIES])

    def readout(self, features: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        """Per-atom energies (N,) eV from raw features (N, F)."""
        x = (features - self.feature_mean) / self.feature_std
        return self.scale[species] * self.net(x, species) + self.shift[species]

    def local_structure(self, graph: dict[str, torch.Tensor]) -> LocalStructure:
        """Radial terms per edge, angular terms per triplet, an MLP per atom."""
        d = self.descriptor
        edge_terms, triplet_terms = d.local_terms()

        def assemble(edge: torch.Tensor, triplet: torch.Tensor) -> torch.Tensor:
            return torch.cat([d.scatter_radial(graph, edge), d.scatter_angular(graph, triplet)],
                             dim=-1)

        # (G − μ)/σ·W1 = lift(G) − offset: the network's first layer, split so that the
        # Hessian's products with the network happen in its (narrower) hidden width
        std = self.feature_std
        elements = torch.arange(d.n_species, device=std.device)
        offset = self.net.first_linear(  # μ/σ·W1 of each element
            (self.feature_mean / std).expand(d.n_species, -1), elements)

        def lift(features: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
            return self.net.first_linear(features / std, species)

        def head(z: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
            z = z - offset[species]
            return self.scale[species] * self.net.after_first_linear(z, species) \
                + self.shift[species]

        return LocalStructure(
            fields=d.fields, edge_terms=edge_terms, triplet_terms=triplet_terms,
            edge_blocks=d.radial_blocks(graph), triplet_blocks=d.angular_blocks(graph),
            n_edge_blocks=d.n_species, n_triplet_blocks=d.n_pairs,
            assemble=assemble, lift=lift, head=head)

    @torch.no_grad()
    def fit_statistics(self, data: StatisticsData) -> dict[str, float]:
        """Feature mean/std over all training atoms; per-element scale (RMS force) and
        shift (mean residual energy per atom)."""
        mean, std = feature_statistics(self.features, data.batches())
        self.feature_mean.copy_(mean.to(self.feature_mean))
        self.feature_std.copy_(std.to(self.feature_std))
        scale, shift = element_scale_shift(data.graphs, data.residuals, len(self.scale))
        self.scale.copy_(scale.to(self.scale))
        self.shift.copy_(shift.to(self.shift))
        info = {"n_features": float(mean.numel())}
        for k, symbol in enumerate(self.symbols):
            info[f"scale.{symbol}"] = float(scale[k])
            info[f"shift.{symbol}"] = float(shift[k])
        return info
