"""zoo.fusion.fold_batchnorm: the folded copy computes what the network computes, and leaves the network alone."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from lsp.networks.renderer import Feature2FaceGenerator
from zoo.fusion import FoldedBatchNorm, fold_batchnorm


def _with_statistics(net: nn.Module) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine parameters, so that folding them wrongly shows."""
    generator = torch.Generator().manual_seed(0)
    for module in net.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=generator))
            module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            module.weight.data.copy_(torch.randn(n, generator=generator))
            module.bias.data.copy_(torch.randn(n, generator=generator))
    return net.eval()


def _count(net: nn.Module, kind: type) -> int:
    return sum(isinstance(m, kind) for m in net.modules())


def test_folded_renderer_matches_and_has_no_batchnorm():
    torch.manual_seed(0)
    net = _with_statistics(Feature2FaceGenerator(13, 3, num_downs=4, ngf=8, blocks_per_level=1))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    folded = fold_batchnorm(net)
    x = torch.rand(2, 13, 32, 32) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(folded(x), net(x), atol=1e-5, rtol=1e-5)
    assert _count(net, nn.BatchNorm2d) > 0 and _count(folded, nn.BatchNorm2d) == 0
    assert not folded.training
    # the original keeps its modules and weights (it is still the one that is saved and trained)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_folds_linear_and_conv1d_and_keeps_what_it_cannot_fold():
    torch.manual_seed(0)
    net = _with_statistics(nn.Sequential(
        nn.Linear(6, 5), nn.BatchNorm1d(5), nn.ReLU(),
        nn.BatchNorm1d(5),                                  # not after a layer: kept
        nn.Linear(5, 4)))
    conv = _with_statistics(nn.Sequential(nn.Conv1d(3, 4, 3, padding=1, bias=False), nn.BatchNorm1d(4)))
    folded, folded_conv = fold_batchnorm(net), fold_batchnorm(conv)
    x, y = torch.randn(7, 6), torch.randn(2, 3, 9)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), net(x), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(folded_conv(y), conv(y), atol=1e-5, rtol=1e-5)
    assert [type(m) for m in folded] == [nn.Linear, nn.Identity, nn.ReLU, nn.BatchNorm1d, nn.Linear]
    assert _count(folded_conv, nn.BatchNorm1d) == 0


def test_refuses_a_network_in_training_mode():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).train()
    for fold in (fold_batchnorm, FoldedBatchNorm()):
        with pytest.raises(RuntimeError, match="Sequential in eval mode"):
            fold(net)
    net.eval()[1].train()                      # one BatchNorm left training inside an eval-mode network
    for fold in (fold_batchnorm, FoldedBatchNorm()):
        with pytest.raises(RuntimeError, match=r"\(call .eval\(\) first; 1 is in training mode\)"):
            fold(net)


def test_the_kept_copy_is_made_again_when_the_network_changes():
    torch.manual_seed(0)
    net = _with_statistics(nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4)))
    folded = FoldedBatchNorm()
    x = torch.randn(1, 3, 8, 8)
    first = folded(net)
    assert folded(net) is first                                   # unchanged: the same copy
    with torch.no_grad():
        net[0].weight.mul_(2)                                     # as an optimiser step would
        changed = folded(net)
        assert changed is not first
        torch.testing.assert_close(changed(x), net(x), atol=1e-5, rtol=1e-5)
        net.load_state_dict({k: v * 0.5 if v.is_floating_point() else v for k, v in net.state_dict().items()})
        loaded = folded(net)
        assert loaded is not changed
        torch.testing.assert_close(loaded(x), net(x), atol=1e-5, rtol=1e-5)
        net.double()                                              # moved (dtype here; a device the same way)
        assert folded(net)(x.double()).dtype == torch.float64
        other = copy.deepcopy(net)
        assert folded(other) is not folded(net)                   # another module
