"""The dense channel-wise tensor products equal e3nn's, path by path, in float64."""

import pytest
import torch
from e3nn import o3

from atomnet.models.equivariant import _channelwise, hidden_irreps
from atomnet.models.tensor_products import ChannelwiseProduct


@pytest.mark.parametrize("l_in, l_right, l_out", [(0, 3, 3), (1, 3, 3), (1, 2, 1)])
def test_uvu_matches_e3nn(l_in, l_right, l_out):
    torch.manual_seed(0)
    irreps1 = hidden_irreps(5, l_in)
    irreps2 = o3.Irreps.spherical_harmonics(l_right)
    out, ins = _channelwise(irreps1, irreps2, hidden_irreps(5, l_out), "uvu")
    ref = o3.TensorProduct(irreps1, irreps2, out, ins, shared_weights=False,
                           internal_weights=False).double()
    dense = ChannelwiseProduct(irreps1, irreps2, out, ins).double()
    assert dense.weight_numel == ref.weight_numel
    x = irreps1.randn(7, -1, dtype=torch.float64)
    y = irreps2.randn(7, -1, dtype=torch.float64)
    w = torch.randn(7, ref.weight_numel, dtype=torch.float64)
    torch.testing.assert_close(dense(x, y, w), ref(x, y, w), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("l_a, l_out", [(3, 3), (3, 1), (2, 0), (1, 1)])
def test_uuu_matches_e3nn_and_its_gradients(l_a, l_out):
    torch.manual_seed(1)
    irreps = hidden_irreps(4, l_a)
    out, ins = _channelwise(irreps, irreps, hidden_irreps(4, l_out), "uuu")
    ref = o3.TensorProduct(irreps, irreps, out, ins, shared_weights=False,
                           internal_weights=False).double()
    dense = ChannelwiseProduct(irreps, irreps, out, ins).double()
    x = irreps.randn(6, -1, dtype=torch.float64, requires_grad=True)
    y = irreps.randn(6, -1, dtype=torch.float64)
    w = torch.randn(6, ref.weight_numel, dtype=torch.float64, requires_grad=True)
    a, b = dense(x, y, w), ref(x, y, w)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    probe = torch.randn_like(a)
    ga = torch.autograd.grad((a * probe).sum(), (x, w))
    gb = torch.autograd.grad((b * probe).sum(), (x, w))
    for u, v in zip(ga, gb):
        torch.testing.assert_close(u, v, rtol=1e-12, atol=1e-12)


def test_float32_follows_float64():
    irreps = hidden_irreps(3, 2)
    out, ins = _channelwise(irreps, irreps, hidden_irreps(3, 1), "uuu")
    dense = ChannelwiseProduct(irreps, irreps, out, ins)
    x = irreps.randn(4, -1, dtype=torch.float64)
    w = torch.randn(4, dense.weight_numel, dtype=torch.float64)
    torch.testing.assert_close(dense.float()(x.float(), x.float(), w.float()),
                               dense.double()(x, x, w).float(), rtol=1e-5, atol=1e-5)


def test_mixed_multiplicities_and_modes_are_refused():
    irreps = o3.Irreps("2x0e+3x1o")
    with pytest.raises(ValueError, match="same multiplicity"):
        ChannelwiseProduct(irreps, irreps, irreps, [(0, 0, 0, "uuu", True)])
    irreps = hidden_irreps(2, 1)
    with pytest.raises(ValueError, match="must all be 'uvu' or all 'uuu'"):
        ChannelwiseProduct(irreps, irreps, irreps,
                           [(0, 0, 0, "uuu", True), (1, 0, 1, "uvu", True)])
