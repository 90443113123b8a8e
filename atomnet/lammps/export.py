"""TorchScript export of an atomnet potential for the LAMMPS pair style ``atomnet``.

The exported module maps LAMMPS's view of a domain to the energies of its own atoms:

    forward(positions (N, 3), species (N,) int64, edge_index (2, E) int64, nlocal: int)
        -> (nlocal,) eV

``positions`` are local then ghost atoms, already image-shifted by LAMMPS (so no cell
shifts), ``edge_index`` holds (center i < nlocal, neighbour j < N) pairs from LAMMPS's
full neighbour list; pairs at or beyond the cutoff are ignored. The pair style sums the
energies and applies −∂E/∂positions to every atom, ghosts included (LAMMPS folds ghost
forces back and takes the virial from f·r). Attributes: ``elements``, ``cutoff`` (Å),
``num_interactions`` (1: no message passing), ``dtype``, ``atomnet_version``.

Exportable: the BP model (``bpnn``) plus the per-element references ``e0``, and stages
whose fields no energy term reads (a charge head for dipoles only: left out). Other parts
raise :class:`~atomnet.errors.UsageError` naming them. TorchScript is deprecated in
torch 2.13 (``torch.jit.script`` warns) but is what libtorch's C++ loader reads; the
warning is silenced here.
"""

# no ``from __future__ import annotations``: TorchScript reads these annotations as types
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from ..descriptors.symmetry_functions import angular_products, gaussian_radial
from ..dtypes import resolve_dtype
from ..errors import UsageError
from ..io.atomic import write_atomically
from ..models.bpnn import BPNN
from ..neighbors.triplets import torch_triplets_by_center
from ..physics.reference import AtomicReference
from ..potential import Potential
from ..version import __version__


def _cutoff(r: torch.Tensor, rc: float, polynomial: bool) -> torch.Tensor:
    """The descriptor's cutoff function (see atomnet.descriptors.cutoff), for TorchScript."""
    x = (r / rc).clamp(max=1.0)
    if polynomial:
        return 1.0 + x**3 * (-10.0 + x * (15.0 - 6.0 * x))
    return 0.5 * (torch.cos(3.141592653589793 * x) + 1.0)


class _ElementLinear(nn.Module):
    """One layer of the per-element networks: weights (S, a, b), biases (S, 1, b)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor):
        super().__init__()
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)

    def forward(self, h: torch.Tensor, element: int) -> torch.Tensor:
        return torch.addmm(self.bias[element], h, self.weight[element])


class LammpsBP(nn.Module):
    """TorchScript-ready BP potential on LAMMPS's local + ghost atoms (see module doc)."""

    elements: list[str]
    cutoff: float
    num_interactions: int
    dtype: str
    atomnet_version: str
    angular_cutoff: float
    polynomial: bool
    n_species: int
    n_pairs: int
    eta_radial: float
    eta_angular: float
    zeta: float
    n_layers: int

    def __init__(self, potential: Potential, dtype: torch.dtype):
        super().__init__()
        bp = _only_bp(potential)
        d = bp.descriptor
        self.elements = list(potential.elements)
        self.cutoff = float(d.radial_cutoff)
        self.num_interactions = 1
        self.dtype = str(dtype).replace("torch.", "")
        self.atomnet_version = __version__
        self.angular_cutoff = float(d.angular_cutoff)
        self.polynomial = bp.hparams["cutoff_fn"] == "polynomial"
        self.n_species = int(d.n_species)
        self.n_pairs = int(d.n_pairs)
        self.eta_radial = float(d.eta_radial)
        self.eta_angular = float(d.eta_angular)
        self.zeta = float(d.zeta)

        def buf(t):
            return t.detach().clone().to(dtype)

        self.register_buffer("radial_shifts", buf(d.radial_shifts))
        self.register_buffer("angular_shifts", buf(d.angular_shifts))
        self.register_buffer("angle_shifts", buf(d.angle_shifts))
        self.register_buffer("pair_index", d.pair_index.detach().clone())
        self.register_buffer("feature_mean", buf(bp.feature_mean))
        self.register_buffer("feature_std", buf(bp.feature_std))
        self.register_buffer("scale", buf(bp.scale))
        self.register_buffer("shift", buf(bp.shift))
        self.register_buffer("e0", buf(_e0(potential)))
        self.layers = nn.ModuleList(
            [_ElementLinear(buf(w), buf(b)) for w, b in zip(bp.net.weights, bp.net.biases)])
        self.n_layers = len(bp.net.weights)
        self.activation = bp.net.activation

    def forward(self, positions: torch.Tensor, species: torch.Tensor,
                edge_index: torch.Tensor, nlocal: int) -> torch.Tensor:
        i, j = edge_index[0], edge_index[1]
        vectors = positions.index_select(0, j) - positions.index_select(0, i)
        lengths = torch.linalg.vector_norm(vectors, dim=-1)
        keep = torch.nonzero((lengths < self.cutoff) & (i < nlocal)).squeeze(1)
        order = torch.argsort(i.index_select(0, keep), stable=True)
        keep = keep.index_select(0, order)
        i, j = i.index_select(0, keep), j.index_select(0, keep)
        vectors, r = vectors.index_select(0, keep), lengths.index_select(0, keep)
        s = self.n_species
        # radial features
        fc = _cutoff(r, self.cutoff, self.polynomial)
        terms = gaussian_radial(r, fc, self.radial_shifts, self.eta_radial)
        radial = terms.new_zeros(nlocal * s, terms.shape[1])
        radial = radial.index_add(0, i * s + species.index_select(0, j), terms)
        # angular features: pairs of edges of one center, both within the angular cutoff
        close = torch.nonzero(r < self.angular_cutoff).squeeze(1)
        a, b = torch_triplets_by_center(i.index_select(0, close))
        e1, e2 = close.index_select(0, a), close.index_select(0, b)
        fa = _cutoff(r, self.angular_cutoff, self.polynomial)
        unit = vectors / r.unsqueeze(-1)
        ang = angular_products(
            unit.index_select(0, e1), unit.index_select(0, e2), r.index_select(0, e1),
            r.index_select(0, e2), fa.index_select(0, e1), fa.index_select(0, e2),
            self.angle_shifts, self.angular_shifts, self.eta_angular, self.zeta)
        js = species.index_select(0, j)
        block = self.pair_index[js.index_select(0, e1), js.index_select(0, e2)]
        angular = ang.new_zeros(nlocal * self.n_pairs, ang.shape[1])
        angular = angular.index_add(0, i.index_select(0, e1) * self.n_pairs + block, ang)
        features = torch.cat([radial.view(nlocal, -1), angular.view(nlocal, -1)], 1)
        x = (features - self.feature_mean) / self.feature_std
        local_species = species[:nlocal]
        out = x.new_zeros(nlocal)
        for element in range(s):
            idx = torch.nonzero(local_species == element).squeeze(1)
            h = x.index_select(0, idx)
            for k, layer in enumerate(self.layers):
                h = layer(h, element)
                if k < self.n_layers - 1:
                    h = self.activation(h)
            out = out.index_copy(0, idx, h.squeeze(1))
        return (self.scale.index_select(0, local_species) * out
                + self.shift.index_select(0, local_species)
                + self.e0.index_select(0, local_species))


def _only_bp(potential: Potential) -> BPNN:
    if not isinstance(potential, Potential):
        raise UsageError(f"export needs an atomnet Potential, got {type(potential).__name__}")
    others = [name for name, t in potential.terms.items()
              if not isinstance(t, (BPNN, AtomicReference))]
    bps = [t for t in potential.terms.values() if isinstance(t, BPNN)]
    # stages whose fields no energy term reads (charges for dipoles only) leave the
    # energy unchanged: LAMMPS needs only energies and forces, so they are left out
    read = {k for t in potential.terms.values() for k in getattr(t, "reads", ())}
    needed = [n for n, s in potential.stages.items() if set(getattr(s, "writes", ())) & read]
    if needed or others or len(bps) != 1:
        parts = [*needed, *others]
        raise UsageError(
            "LAMMPS export supports one BP model ('bpnn') plus the references 'e0'; "
            f"this potential also has {parts or 'a second BP term'}")
    return bps[0]


def _e0(potential: Potential) -> torch.Tensor:
    total = torch.zeros(len(potential.elements), dtype=torch.float64)
    for term in potential.terms.values():
        if isinstance(term, AtomicReference):
            total = total + term.e0.detach().double().cpu()
    return total


def export(potential, path: str | os.PathLike, dtype="float64") -> Path:
    """Write the TorchScript module for ``pair_style atomnet``; returns its path.

    ``potential``: a :class:`~atomnet.Potential` or a ``.atomnet`` file. ``dtype``:
    ``float64`` (default; matches the ASE calculator to rounding) or ``float32``.
    The file is written atomically.
    """
    if isinstance(potential, (str, os.PathLike)):
        from ..io import load

        potential = load(potential)
    dtype = resolve_dtype(dtype)
    module = LammpsBP(potential, dtype).eval()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        scripted = torch.jit.script(module)
    return write_atomically(path, lambda tmp: scripted.save(str(tmp)))


def load_exported(path: str | os.PathLike):
    """Load an exported module (TorchScript) for checks in Python."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        return torch.jit.load(str(path))
