"""Tests of mtlrepro.models.backbones: shapes, gradients, Table 2 counts, weights, validation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision
from timm.layers import ScaledStdConv2d
from timm.models.resnet import BasicBlock, Bottleneck
from torch import nn
from torchvision.ops import SqueezeExcitation

from mtlrepro import paper_numbers
from mtlrepro.config import ConfigError
from mtlrepro.models.backbones import (
    FAMILIES,
    IMAGENET_CLASSES,
    PAPER_NAMES,
    Backbone,
    create_backbone,
    paper_scale_parameter_counts,
)

SLIM_SCALES = ("smoke", "cpu")
PAPER_FEATURES = {
    "efficientnet_b0": 1280,
    "efficientnet_b2": 1408,
    "resnet18": 512,
    "resnet50": 2048,
    "nfnet_l0": 2304,
    "vgg11": 4096,
}
"""Feature width d of each paper-scale backbone (input width of the dropped ImageNet FC)."""


def count(module: nn.Module) -> int:
    """Number of scalar parameters of ``module``."""
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("scale", SLIM_SCALES)
@pytest.mark.parametrize("family", FAMILIES)
def test_slim_backbone_maps_images_to_finite_features_with_gradients(
    family: str, scale: str
) -> None:
    backbone = create_backbone(family, scale)
    assert (backbone.family, backbone.scale) == (family, scale)
    images = torch.randn(4, 3, 32, 32)
    features = backbone(images)
    assert features.shape == (4, backbone.out_features)
    assert torch.isfinite(features).all()
    features.square().mean().backward()
    for name, parameter in backbone.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
    # NFNet blocks start with a zero gain on their last conv (timm's init), so their branch
    # gets zero gradients at first; after one step every parameter must get a non-zero one.
    torch.optim.SGD(backbone.parameters(), lr=0.1).step()
    backbone.zero_grad()
    backbone(images).square().mean().backward()
    for name, parameter in backbone.named_parameters():
        assert parameter.grad.abs().sum() > 0, name  # exactly zero only if unused (seeded)


def test_slim_backbones_accept_48_pixel_inputs() -> None:
    for family in FAMILIES:
        backbone = create_backbone(family, "cpu").eval()
        with torch.no_grad():
            features = backbone(torch.randn(2, 3, 48, 48))
        assert features.shape == (2, backbone.out_features), family


def test_cpu_scale_keeps_table_2_parameter_order() -> None:
    counts = [count(create_backbone(family, "cpu")) for family in FAMILIES]
    assert counts == sorted(counts), dict(zip(FAMILIES, counts, strict=True))
    smoke = [count(create_backbone(family, "smoke")) for family in FAMILIES]
    assert all(s < c for s, c in zip(smoke, counts, strict=True))


def test_cpu_feature_width_is_a_quarter_of_the_paper_one() -> None:
    for family in FAMILIES:
        assert create_backbone(family, "cpu").out_features * 4 == PAPER_FEATURES[family]


def test_cpu_members_keep_their_family_blocks() -> None:
    def types(family: str) -> set[type]:
        return {type(m) for m in create_backbone(family, "cpu").modules()}

    assert BasicBlock in types("resnet18") and Bottleneck not in types("resnet18")
    assert Bottleneck in types("resnet50") and BasicBlock not in types("resnet50")
    for family in ("efficientnet_b0", "efficientnet_b2"):
        assert SqueezeExcitation in types(family)
    nfnet = types("nfnet_l0")
    assert ScaledStdConv2d in nfnet
    norms = (nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)
    assert not any(issubclass(t, norms) for t in nfnet)  # normaliser-free
    vgg = types("vgg11")
    assert nn.Dropout in vgg and nn.MaxPool2d in vgg
    # EfficientNet-B2's slim member is B0's scaled up by the compound multipliers.
    b0, b2 = (create_backbone(f, "cpu") for f in ("efficientnet_b0", "efficientnet_b2"))
    assert count(b2) > count(b0)
    assert len(list(b2.net.features.modules())) > len(list(b0.net.features.modules()))


def test_paper_scale_parameter_counts_match_table_2() -> None:
    counts = paper_scale_parameter_counts()
    assert list(counts) == list(FAMILIES)
    for family, n in counts.items():
        printed = paper_numbers.value("A", "Table 2", PAPER_NAMES[family], "", "params")
        # Table 2 prints millions with two decimals: the count must round to the printed value.
        assert round(n / 1e6, 2) == printed, (family, n)


def test_vgg11_count_needs_batch_norm_variant() -> None:
    with torch.device("meta"):
        plain = count(torchvision.models.vgg11(weights=None))
    # Plain VGG-11 (132,863,336) prints as 132.86 M, not Table 2's 132.87 M.
    assert round(plain / 1e6, 2) == 132.86


def test_paper_backbone_is_the_classifier_minus_its_last_layer() -> None:
    counts = paper_scale_parameter_counts()
    with torch.device("meta"):
        for family in FAMILIES:
            backbone = create_backbone(family, "paper")
            assert backbone.out_features == PAPER_FEATURES[family], family
            last_layer = (backbone.out_features + 1) * IMAGENET_CLASSES
            assert count(backbone) + last_layer == counts[family], family


def test_unknown_family_or_scale_lists_allowed_values() -> None:
    with pytest.raises(ConfigError) as family_error:
        create_backbone("resnet101", "cpu")
    for family in FAMILIES:
        assert repr(family) in str(family_error.value)
    with pytest.raises(ConfigError) as scale_error:
        create_backbone("resnet18", "gpu")
    for scale in ("smoke", "cpu", "paper"):
        assert repr(scale) in str(scale_error.value)


@pytest.mark.parametrize("family", FAMILIES)
def test_weights_path_round_trip_reproduces_outputs(family: str, tmp_path: Path) -> None:
    source = create_backbone(family, "smoke")
    source(torch.randn(8, 3, 32, 32))  # one training-mode pass moves the BN running stats
    path = tmp_path / "backbone.pt"
    torch.save(source.state_dict(), path)
    loaded = create_backbone(family, "smoke", weights_path=path)
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = source.eval()(images)
        fresh = create_backbone(family, "smoke").eval()(images)
        assert torch.equal(loaded.eval()(images), expected)
    assert not torch.allclose(fresh, expected)  # the load did change the weights


def test_library_checkpoint_loads_without_its_last_layer(tmp_path: Path) -> None:
    classifier = torchvision.models.resnet18(weights=None).eval()
    path = tmp_path / "resnet18.pth"
    torch.save(classifier.state_dict(), path)  # torchvision layout, "fc.*" included
    backbone = create_backbone("resnet18", "paper", weights_path=path).eval()
    classifier.fc = nn.Identity()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        # Same weights, same operations in the same order: bitwise equal.
        assert torch.equal(backbone(images), classifier(images))


def test_mismatched_weights_raise_config_error(tmp_path: Path) -> None:
    path = tmp_path / "resnet18.pt"
    torch.save(create_backbone("resnet18", "smoke").state_dict(), path)
    with pytest.raises(ConfigError, match="'resnet50'"):
        create_backbone("resnet50", "smoke", weights_path=path)
    with pytest.raises(ConfigError, match="scale 'cpu'"):
        create_backbone("resnet18", "cpu", weights_path=path)


def test_backbone_rejects_a_head_that_is_not_linear() -> None:
    with pytest.raises(TypeError, match="not nn.Linear"):
        Backbone(nn.Sequential(nn.ReLU()), "0", "toy", "smoke")
