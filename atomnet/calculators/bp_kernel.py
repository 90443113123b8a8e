"""The BP potential as one fixed-shape function, for MD calls that reuse their pair lists.

:class:`BPKernel` evaluates the same energy as a :class:`~atomnet.Potential` made of
one ``bpnn`` term plus the per-element references ``e0``, but on index tensors prepared
once per pair-list build (:meth:`BPKernel.inputs`): the neighbour-element slot of each
edge, the element-pair slot of each triplet and the per-element blocks of the networks.
Between two builds (a Verlet skin, see :class:`atomnet.Calculator`) a call is then only
arithmetic on positions, with no integer work, host syncs or data-dependent shapes,
which is what ``torch.compile`` needs to fuse the descriptor, the networks and their
backward pass into a few kernels.

Edge and triplet counts are padded up to buckets (:func:`bucket`) with edges that sit
beyond every cutoff: their cutoff functions and all their derivatives are exactly zero,
so padding changes no result, and a compiled function sees a handful of shapes over an
MD run instead of one per list.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import torch
from torch import nn

from .. import keys
from ..derivatives.fixed_shape import energy_gradients
from ..descriptors.symmetry_functions import gaussian_radial
from ..errors import UsageError
from ..models.bpnn import BPNN
from ..nn.element_mlp import PADDED_MAX_ATOMS
from ..physics.reference import AtomicReference

#: edges and triplets are padded to one of this many sizes per factor of two
BUCKETS_PER_OCTAVE = 8
#: the smallest padded size
MIN_BUCKET = 16
#: Inductor options: keep intermediates of more than 4 operations in memory instead of
#: recomputing them in every consumer (the angular terms' powers and exponentials per
#: radial shift); ethanol, float32, one thread: 0.89 instead of 1.0 ms per call
COMPILE_OPTIONS = {"realize_opcount_threshold": 4, "realize_cpu_opcount_threshold": 4}


def bucket(n: int) -> int:
    """The padded size of ``n`` items: > n (room for at least one pad), at most 12.5 %
    above it (8 sizes per octave), at least :data:`MIN_BUCKET`."""
    n = int(n) + 1
    if n <= MIN_BUCKET:
        return MIN_BUCKET
    step = 1 << max(n.bit_length() - 1 - BUCKETS_PER_OCTAVE.bit_length() + 1, 0)
    return -(-n // step) * step


class KernelInputs(NamedTuple):
    """Index tensors of one structure's pair lists, padded (see :meth:`BPKernel.inputs`)."""

    species: torch.Tensor  # (N,) element index of each atom
    i: torch.Tensor  # (E,) center of each edge (padding: 0)
    j: torch.Tensor  # (E,) neighbour of each edge (padding: 0)
    shift_vectors: torch.Tensor  # (E, 3) Å, S @ cell (padding: far beyond the cutoff)
    radial_slot: torch.Tensor  # (E,) i·S + species[j]
    e1: torch.Tensor  # (T,) first edge of each triplet (padding: a padded edge)
    e2: torch.Tensor  # (T,) second edge
    angular_slot: torch.Tensor  # (T,) i·P + element-pair index
    gather: torch.Tensor  # padded: (S·M,) atom of each row of the per-element block (N:
    #: empty); grouped: (N,) atoms sorted by element
    scatter: torch.Tensor  # (N,) row of each atom in the flattened block / sorted order
    groups: tuple[tuple[int, int, int], ...]  # grouped: (element, start, stop) per element
    #: present; () for the padded block


def _angular_terms(unit1, unit2, r1, r2, fc1, fc2, angle_shifts, shifts, eta: float,
                   zeta: float) -> torch.Tensor:
    """:func:`~atomnet.descriptors.symmetry_functions.angular_products` without ``acos``
    and ``cos``: with c = 0.95 cos θ_ijk, cos(acos(c) − θ_s) = c cos θ_s + √(1 − c²) sin θ_s
    (the same function; √ never sees 0, as |c| ≤ 0.95). Two transcendental calls fewer
    per triplet and angle section, which a compiled kernel repeats per radial shift."""
    c = 0.95 * (unit1 * unit2).sum(-1, keepdim=True)
    s = torch.sqrt(1.0 - c * c)
    angle = (1.0 + c * torch.cos(angle_shifts) + s * torch.sin(angle_shifts)) ** zeta
    d = 0.5 * (r1 + r2).unsqueeze(-1) - shifts
    weight = (2.0 ** (1.0 - zeta)) * fc1 * fc2
    radial = torch.exp(-eta * d * d) * weight.unsqueeze(-1)
    return (radial.unsqueeze(-1) * angle.unsqueeze(-2)).flatten(1)


def supports(potential: nn.Module) -> str | None:
    """None when :class:`BPKernel` can evaluate ``potential``, else why not."""
    from ..potential import Potential

    if not isinstance(potential, Potential):
        return f"it needs an atomnet Potential, got {type(potential).__name__}"
    if len(potential.stages):
        return f"stages {list(potential.stages)} (charges) are not supported"
    bps = [n for n, t in potential.terms.items() if isinstance(t, BPNN)]
    others = [n for n, t in potential.terms.items()
              if not isinstance(t, (BPNN, AtomicReference))]
    if others or len(bps) != 1:
        return ("it supports one 'bpnn' term plus the references 'e0'; this potential "
                f"has {others or bps}")
    return None


class BPKernel(nn.Module):
    """Energies, forces and virial of a BP potential on prepared :class:`KernelInputs`.

    Args:
        potential: a :class:`~atomnet.Potential` of one ``bpnn`` term plus references
            (see :func:`supports`); its weights are shared, not copied.
        compile: run the energy and its gradients through ``torch.compile`` (forward and
            backward fused into a few kernels).
    """

    def __init__(self, potential: nn.Module, compile: bool = False):
        super().__init__()
        reason = supports(potential)
        if reason is not None:
            raise UsageError(f"the fast BP path cannot run this model: {reason}")
        self.bp = next(t for t in potential.terms.values() if isinstance(t, BPNN))
        self.references = [t for t in potential.terms.values()
                           if isinstance(t, AtomicReference)]
        #: names of the terms, in the order of :meth:`contributions`' rows
        self.term_names = [n for n, t in potential.terms.items() if t is self.bp] + [
            n for n, t in potential.terms.items() if isinstance(t, AtomicReference)]
        d = self.bp.descriptor
        #: Å: where padded edges sit, beyond every cutoff (the list's reach + skin < this)
        self.far = 4.0 * d.radial_cutoff + 100.0
        self._fn: Callable = self._eager
        if compile:
            self._fn = torch.compile(self._functional, dynamic=False, fullgraph=True,
                                     options=COMPILE_OPTIONS)

    # --- inputs ----------------------------------------------------------------
    @torch.no_grad()
    def inputs(self, graph: dict[str, torch.Tensor]) -> KernelInputs:
        """Padded index tensors of ``graph`` (one structure, on the kernel's device)."""
        d = self.bp.descriptor
        f = d.fields
        species = graph[keys.SPECIES]
        n_atoms = species.numel()
        device = species.device
        index, shifts = graph[f.index], graph[f.shifts]
        cell = graph[keys.CELL][0]
        n_edges = index.shape[1]
        e_pad = bucket(n_edges)
        pad_e = e_pad - n_edges
        zeros = torch.zeros(pad_e, dtype=torch.long, device=device)
        i = torch.cat([index[0], zeros])
        j = torch.cat([index[1], zeros])
        shift_vectors = shifts.to(cell.dtype) @ cell
        far = torch.zeros(pad_e, 3, dtype=cell.dtype, device=device)
        far[:, 0] = self.far
        shift_vectors = torch.cat([shift_vectors, far])
        radial_slot = i * d.n_species + species[j]
        e1, e2 = graph[f.triplets]
        n_triplets = e1.numel()
        t_pad = bucket(n_triplets) - n_triplets
        pad_edge = torch.full((t_pad,), n_edges, dtype=torch.long, device=device)
        e1, e2 = torch.cat([e1, pad_edge]), torch.cat([e2, pad_edge])
        angular_slot = i[e1] * d.n_pairs + d.pair_index[species[j[e1]], species[j[e2]]]
        counts = torch.bincount(species, minlength=d.n_species)
        order = torch.argsort(species, stable=True)
        if n_atoms > PADDED_MAX_ATOMS:  # one matrix product per element present
            sizes = counts.tolist()
            starts = [sum(sizes[:k]) for k in range(len(sizes))]
            groups = tuple((k, a, a + n) for k, (a, n) in enumerate(zip(starts, sizes)) if n)
            inverse = torch.empty_like(order)
            inverse[order] = torch.arange(n_atoms, device=device)
            return KernelInputs(species, i, j, shift_vectors, radial_slot, e1, e2,
                                angular_slot, order, inverse, groups)
        width = int(counts.max())  # all elements in one padded block: fewer operations
        offsets = torch.cumsum(counts, 0) - counts
        rank = torch.empty_like(species)
        rank[order] = torch.arange(n_atoms, device=device) - offsets[species[order]]
        scatter = species * width + rank
        gather = torch.full((d.n_species * width,), n_atoms, dtype=torch.long, device=device)
        gather[scatter] = torch.arange(n_atoms, device=device)
        return KernelInputs(species, i, j, shift_vectors, radial_slot, e1, e2, angular_slot,
                            gather, scatter, ())

    # --- evaluation ------------------------------------------------------------
    def contributions(self, positions: torch.Tensor, strain: torch.Tensor,
                      x: KernelInputs) -> torch.Tensor:
        """(terms, N) eV per atom of each term (:attr:`term_names` order), at ``positions``
        (N, 3) Å deformed by ``strain`` (3, 3)."""
        bp, d = self.bp, self.bp.descriptor
        positions = positions + positions @ strain
        shift_vectors = x.shift_vectors + x.shift_vectors @ strain
        v = positions.index_select(0, x.j) - positions.index_select(0, x.i) + shift_vectors
        r = torch.linalg.vector_norm(v, dim=-1)
        fc = d.cutoff_fn(r.unsqueeze(-1), d.cutoffs.to(r))
        n_atoms = positions.shape[0]
        terms = gaussian_radial(r, fc[:, 0], d.radial_shifts.to(r), d.eta_radial)
        radial = terms.new_zeros(n_atoms * d.n_species, terms.shape[1]) \
            .index_add(0, x.radial_slot, terms).view(n_atoms, -1)
        unit = v / r.unsqueeze(-1)
        fa = fc[:, 1]
        ang = _angular_terms(
            unit.index_select(0, x.e1), unit.index_select(0, x.e2), r.index_select(0, x.e1),
            r.index_select(0, x.e2), fa.index_select(0, x.e1), fa.index_select(0, x.e2),
            d.angle_shifts.to(r), d.angular_shifts.to(r), d.eta_angular, d.zeta)
        angular = ang.new_zeros(n_atoms * d.n_pairs, ang.shape[1]) \
            .index_add(0, x.angular_slot, ang).view(n_atoms, -1)
        features = torch.cat([radial, angular], dim=-1)
        h = (features - bp.feature_mean) / bp.feature_std
        out = self._networks(h, x)
        parts = [bp.scale.index_select(0, x.species) * out + bp.shift.index_select(0, x.species)]
        parts += [ref.e0.to(out).index_select(0, x.species) for ref in self.references]
        return torch.stack(parts)

    def _networks(self, h: torch.Tensor, x: KernelInputs) -> torch.Tensor:
        """(N,) network outputs from normalised features (N, F): each element's network on
        its own atoms (``x.groups``), or all elements as one padded block."""
        net = self.bp.net
        last = len(net.weights) - 1
        if x.groups:
            h = h.index_select(0, x.gather)
            outs = []
            for element, start, stop in x.groups:
                z = h[start:stop]
                for k, (w, b) in enumerate(zip(net.weights, net.biases)):
                    z = torch.addmm(b[element], z, w[element])
                    if k < last:
                        z = net.activation(z)
                outs.append(z)
            return torch.cat(outs).squeeze(-1).index_select(0, x.scatter)
        h = torch.cat([h, h.new_zeros(1, h.shape[1])]).index_select(0, x.gather)
        h = h.view(len(net.weights[0]), -1, h.shape[-1])
        for k, (w, b) in enumerate(zip(net.weights, net.biases)):
            h = torch.baddbmm(b, h, w)
            if k < last:
                h = net.activation(h)
        return h.reshape(-1).index_select(0, x.scatter)

    def _eager(self, positions: torch.Tensor, x: KernelInputs):
        return energy_gradients(partial(self.contributions, x=x), positions, functional=False)

    def _functional(self, positions: torch.Tensor, x: KernelInputs):
        return energy_gradients(partial(self.contributions, x=x), positions, functional=True)

    def forward(self, positions: torch.Tensor, x: KernelInputs):
        """(contributions (terms, N) eV per atom, forces (N, 3) eV/Å, virial (3, 3) eV =
        −∂E/∂ε with ε the symmetric strain), differentiated by
        :func:`~atomnet.derivatives.fixed_shape.energy_gradients`."""
        return self._fn(positions, x)
