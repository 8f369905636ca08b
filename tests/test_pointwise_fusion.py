"""oneDNN pointwise fusion: the fused network computes what the unfused one does."""

from __future__ import annotations

import pytest
import torch
from torch import fx, nn
from torchvision.models import resnet18

from mtlrepro import inference, pointwise_fusion
from mtlrepro.compress import slim
from mtlrepro.config import ConfigError
from mtlrepro.slim_bench import zero_random_groups

pytestmark = pytest.mark.skipif(not pointwise_fusion.available(), reason="no oneDNN operators")


def _kinds(module: nn.Module) -> dict[str, int]:
    counts: dict[str, int] = {}
    for sub in module.modules():
        counts[type(sub).__name__] = counts.get(type(sub).__name__, 0) + 1
    return counts


@pytest.fixture(scope="module")
def slimmed_resnet():
    torch.manual_seed(0)
    dense = zero_random_groups(resnet18(num_classes=10), 0.9)
    images = torch.rand(2, 3, 32, 32)
    folded, traced = inference._fold(slim(dense).eval())  # what export fuses: BN folded
    assert traced
    return folded, images


def test_a_slimmed_resnet_fuses_every_conv_and_keeps_its_outputs(slimmed_resnet):
    network, images = slimmed_resnet
    fused = pointwise_fusion.fuse_pointwise(network, images)
    kinds = _kinds(fused)
    assert kinds["FusedConvAdd"] == 8  # one per BasicBlock: conv2 + identity + ReLU
    assert kinds["FusedConv"] == 20 - 8  # the other convs (stem, conv1s, downsamples)
    assert "Conv2d" not in kinds
    assert _kinds(network)["Conv2d"] == 20  # the input network is left as it was
    with torch.inference_mode():
        expected, got = network(images), fused(images)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
        # another batch size runs the same arithmetic unfused
        more = torch.rand(5, 3, 32, 32)
        torch.testing.assert_close(fused(more), network(more), rtol=1e-4, atol=1e-5)
        last = torch.rand(2, 3, 32, 32).contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(fused(last), network(last), rtol=1e-4, atol=1e-5)


class _Residual(nn.Module):
    """``relu(conv(a) + a)`` returned with ``a`` itself (read after the addition)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.relu = nn.ReLU()

    def forward(self, x):
        a = self.stem(x)
        return self.relu(self.conv(a) + a), a


class _OnInput(nn.Module):
    """``relu(conv(x) + x)``: the addition's other operand is the caller's input."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        return torch.relu(self.conv(x) + x)


def test_the_addition_never_overwrites_a_tensor_that_is_read_later_or_the_callers_input():
    torch.manual_seed(1)
    images = torch.rand(1, 3, 8, 8)
    residual = fx.symbolic_trace(_Residual().eval())
    fused = pointwise_fusion.fuse_pointwise(residual, images)
    assert [m.in_place for m in fused.modules() if isinstance(m, pointwise_fusion.FusedConvAdd)
            ] == [False]
    with torch.inference_mode():
        for got, expected in zip(fused(images), residual(images), strict=True):
            torch.testing.assert_close(got, expected)
    features = torch.rand(1, 4, 8, 8)
    on_input = fx.symbolic_trace(_OnInput().eval())
    fused = pointwise_fusion.fuse_pointwise(on_input, features)
    before = features.clone()
    with torch.inference_mode():
        torch.testing.assert_close(fused(features), on_input(before))
    assert torch.equal(features, before)


def test_fusion_refuses_what_it_cannot_run(slimmed_resnet, monkeypatch):
    network, images = slimmed_resnet
    with pytest.raises(ConfigError, match="runs float32 networks; got torch.float64"):
        pointwise_fusion.fuse_pointwise(network, images.double())
    monkeypatch.setattr(pointwise_fusion, "available", lambda: False)
    with pytest.raises(ConfigError, match="needs a torch build with oneDNN"):
        pointwise_fusion.fuse_pointwise(network, images)


def test_a_chooser_keeps_only_the_fusions_it_picks(slimmed_resnet):
    network, images = slimmed_resnet
    asked = []

    def every_other(plain, fused):
        with torch.inference_mode():
            want = plain().clone()  # first: the fused residual form adds into its operand
            torch.testing.assert_close(fused(), want, rtol=1e-4, atol=1e-5)  # same chain
        asked.append(len(asked) % 2 == 0)
        return asked[-1]

    fused = pointwise_fusion.fuse_pointwise(network, images, every_other)
    kinds = _kinds(fused)
    fusions = kinds.get("FusedConv", 0) + kinds.get("FusedConvAdd", 0)
    assert len(asked) == 20 and fusions == 10 and kinds["Conv2d"] == 10
    with torch.inference_mode():
        torch.testing.assert_close(fused(images), network(images), rtol=1e-4, atol=1e-5)
    assert not {"FusedConv", "FusedConvAdd"} & set(_kinds(pointwise_fusion.fuse_pointwise(
        network, images, lambda plain, fused: False)))
