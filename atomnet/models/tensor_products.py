"""Channel-wise tensor products as a few dense operations.

e3nn's ``TensorProduct`` runs one small kernel per path (and several times as many in
a double backward, which training needs for forces). With the atomic basis at l ≤ 3 the
product A ⊗ A has 23 paths, and the compiled ethanol training step took 388 s to
compile. :class:`ChannelwiseProduct` computes the same numbers (to 1e-12 in float64)
with one contraction against a dense coupling tensor, built once by probing e3nn's own
product of one channel (so the Clebsch–Gordan coefficients and normalisation are
e3nn's): features are permuted from e3nn's layout (blocks of channels × components) to
(atoms, channels, components), multiplied, contracted and permuted back. The same step
compiles in 131–169 s and ran at the same speed (~7 s an epoch either way, 2 processes);
summing messages over neighbours before the permutation back (:meth:`contract`, then
:meth:`to_e3nn` on atoms) took the epoch to 6.4 s.

Measured and not kept: applying only the coupling's non-zero entries (1.4 % of
A ⊗ A's 256 × 99) as a gather and scatter-add was 3.5× slower compiled; using the
symmetry of A ⊗ A (pairs a ≤ b only) gained nothing (one compiled layer with forces
and parameter gradients, 36 atoms: 24 → 27 ms). Where the rest of the step's time
goes was not profiled further.

Two modes, as e3nn's instructions: ``uvu`` (the right operand has one channel, shared by
all, e.g. edge harmonics) and ``uuu`` (both operands have the same channels). Weights are
per sample (one row per edge or atom), one per path and channel, in e3nn's order
(path-major).
"""

from __future__ import annotations

import torch
from e3nn import o3
from torch import nn


def _channel_layout(irreps: o3.Irreps) -> tuple[int, torch.Tensor]:
    """(channels, perm) such that ``x.index_select(-1, perm).view(..., C, D)`` turns
    e3nn's layout of ``irreps`` (every block with the same multiplicity C) into
    channels × components, D = Σ dim(ir)."""
    muls = {mul for mul, _ in irreps}
    if len(muls) != 1:
        raise ValueError(f"every block of {irreps} needs the same multiplicity")
    channels = muls.pop()
    width = sum(ir.dim for _, ir in irreps)
    perm = torch.empty(channels * width, dtype=torch.long)
    start, offset = 0, 0
    for _, ir in irreps:
        for c in range(channels):
            for m in range(ir.dim):
                perm[c * width + offset + m] = start + c * ir.dim + m
        start += channels * ir.dim
        offset += ir.dim
    return channels, perm


class ChannelwiseProduct(nn.Module):
    """e3nn's ``TensorProduct(irreps1, irreps2, out, instructions, shared_weights=False,
    internal_weights=False)`` for channel-wise instructions (all ``uvu`` or all ``uuu``),
    computed densely. ``forward(x, y, weights)`` takes and returns e3nn's layouts."""

    def __init__(self, irreps1: o3.Irreps, irreps2: o3.Irreps, irreps_out: o3.Irreps,
                 instructions: list[tuple]):
        super().__init__()
        modes = {ins[3] for ins in instructions}
        if len(modes) != 1 or modes.pop() not in ("uvu", "uuu"):
            raise ValueError("instructions must all be 'uvu' or all 'uuu'")
        self.mode = instructions[0][3]
        self.irreps_in1, self.irreps_in2 = o3.Irreps(irreps1), o3.Irreps(irreps2)
        self.irreps_out = o3.Irreps(irreps_out)
        channels, perm_in1 = _channel_layout(self.irreps_in1)
        self.channels = channels
        _, perm_out = _channel_layout(self.irreps_out)
        self.register_buffer("perm_in1", perm_in1, persistent=False)
        self.register_buffer("inv_out", torch.argsort(perm_out), persistent=False)
        if self.mode == "uuu":
            _, perm_in2 = _channel_layout(self.irreps_in2)
            self.register_buffer("perm_in2", perm_in2, persistent=False)
        elif any(mul != 1 for mul, _ in self.irreps_in2):
            raise ValueError(f"'uvu' needs one channel on the right, got {irreps2}")
        self.coupling_dims = (
            sum(ir.dim for _, ir in self.irreps_in1),
            sum(ir.dim for _, ir in self.irreps_in2),
            sum(ir.dim for _, ir in self.irreps_out))
        coupling = self._coupling(instructions)
        if self.mode == "uvu":  # arranged once as (D2, D1·Dout): y is contracted first
            d1, d2, dout = self.coupling_dims
            coupling = coupling.view(d1, d2, dout).transpose(0, 1).reshape(d2, d1 * dout)
        self.register_buffer("coupling", coupling, persistent=False)
        # component k of the output belongs to path path_of[k]
        path_of = torch.cat([torch.full((ir.dim,), p, dtype=torch.long)
                             for p, (_, ir) in enumerate(self.irreps_out)])
        self.register_buffer("path_of", path_of, persistent=False)
        self.weight_numel = len(instructions) * channels

    def _coupling(self, instructions: list[tuple]) -> torch.Tensor:
        """(D1·D2, Dout) coefficients: e3nn's product of one channel, probed on every
        pair of unit vectors, in float64 (a float64 model keeps float64 coefficients;
        :meth:`contract` casts them to the features' dtype)."""
        one = [o3.Irreps([(1, ir) for _, ir in irreps])
               for irreps in (self.irreps_in1, self.irreps_in2, self.irreps_out)]
        tp = o3.TensorProduct(*one, instructions, shared_weights=False,
                              internal_weights=False)
        d1, d2, _ = self.coupling_dims
        x = torch.eye(d1, dtype=torch.float64).repeat_interleave(d2, dim=0)
        y = torch.eye(d2, dtype=torch.float64).repeat(d1, 1)
        w = torch.ones(d1 * d2, tp.weight_numel, dtype=torch.float64)
        return tp.to(torch.float64)(x, y, w)

    def forward(self, x: torch.Tensor, y: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return self.to_e3nn(self.contract(self.left_channels(x), y, weights))

    def left_channels(self, x: torch.Tensor) -> torch.Tensor:
        """The left operand from e3nn's layout to (N, C, D1)."""
        return x.index_select(1, self.perm_in1).view(x.shape[0], self.channels,
                                                     self.coupling_dims[0])

    def to_e3nn(self, out: torch.Tensor) -> torch.Tensor:
        """(N, C·Dout) in channel layout, as :meth:`contract` returns it, to e3nn's."""
        return out.index_select(1, self.inv_out)

    def contract(self, x: torch.Tensor, y: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """The product of x (N, C, D1) from :meth:`left_channels` and y (e3nn's layout)
        with per-sample weights, as (N, C·Dout) in channel layout. Linear in x and in
        the weights: sums over samples (messages over neighbours) can be taken before
        :meth:`to_e3nn`, on fewer rows."""
        n, c = x.shape[0], self.channels
        d1, d2, dout = self.coupling_dims
        coupling = self.coupling.to(x.dtype)
        if self.mode == "uuu":
            y = y.index_select(1, self.perm_in2).view(n, c, d2)
            out = (x.unsqueeze(-1) * y.unsqueeze(-2)).reshape(n, c, d1 * d2) @ coupling
        else:  # one right channel: contract it first, then a batched (C, D1) @ (D1, Dout)
            out = torch.bmm(x, (y @ coupling).view(n, d1, dout))
        w = weights.view(n, -1, c).transpose(1, 2).index_select(2, self.path_of)
        return (out * w).reshape(n, c * dout)
