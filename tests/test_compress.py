"""Tests of mtlrepro.compress: exact slimming of group-sparse networks and network statistics."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from mtlrepro.compress import conv_flops, latency, parameter_count, slim
from mtlrepro.config import ConfigError
from mtlrepro.models import MultiTaskModel, SegNet, create_model
from mtlrepro.tasks import TaskSpec

# Slimming only drops terms that are exactly zero, but the kept sums may be evaluated in a
# different order (different channel counts pick different kernels): float32 rounding, ~1e-6
# relative, so 1e-5 absolute on O(1) outputs.
ATOL = 1e-5

SPECS = (
    TaskSpec("segmentation", "segmentation", 3),
    TaskSpec("depth", "depth"),
    TaskSpec("colour", "classification", 4),
)


def _randomise_bn(model: nn.Module) -> None:
    """Non-trivial BN statistics and affine parameters, so that a removed channel's constant
    relu(beta - gamma * mu / sigma) is non-zero and would show if it were not multiplied by 0."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(0.2, 1)


def _zero_groups(module: nn.Module, fraction: float) -> None:
    """Zero a random ``fraction`` of the input-channel groups W[:, c] of every 4-D conv."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.Conv2d) and m.in_channels > 3:
                m.weight[:, torch.rand(m.in_channels) < fraction] = 0


def _segnet_model() -> MultiTaskModel:
    model = create_model("segnet", SPECS, widths=(8, 16, 32))
    _randomise_bn(model)
    return model.eval()


def _outputs_close(a: dict[str, Tensor], b: dict[str, Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=ATOL) for k in a)


def _small_resnet(block: type[BasicBlock | Bottleneck]) -> ResNet:
    kwargs = {"width_per_group": 16} if block is Bottleneck else {}
    model = ResNet(block, [1, 1, 1, 1], num_classes=5, **kwargs)
    _randomise_bn(model)
    return model.eval()


def test_slim_segnet_model_is_exact_and_smaller() -> None:
    model = _segnet_model()
    _zero_groups(model.backbone, 0.5)
    images = torch.rand(2, 3, 15, 18)  # odd sizes exercise ceil-mode pooling and unpooling
    slimmed = slim(model).eval()
    assert _outputs_close(model(images), slimmed(images))
    assert parameter_count(slimmed) < 0.8 * parameter_count(model)
    assert conv_flops(slimmed, (1, 3, 15, 18)) < 0.8 * conv_flops(model, (1, 3, 15, 18))


def test_slim_removes_channels_that_all_heads_read_with_zero_groups() -> None:
    model = _segnet_model()
    with torch.no_grad():
        # Decoder features (channels 0 and 5) are read by the dense heads' first convs only.
        for name in ("segmentation", "depth"):
            model.heads[name][0].weight[:, [0, 5]] = 0
        # Bottleneck channel 3 is read by the decoder's first conv and the classifier.
        model.backbone.decoder[-1][0][0].weight[:, 3] = 0
        model.heads["colour"].mlp[0].weight[:, 3] = 0
    slimmed = slim(model).eval()
    assert slimmed.backbone.out_channels == 8 - 2
    assert slimmed.heads["depth"][0].in_channels == 8 - 2
    assert slimmed.backbone.bottleneck_channels == 32 - 1
    images = torch.rand(2, 3, 16, 16)
    assert _outputs_close(model(images), slimmed(images))


def test_slim_keeps_unpool_coupled_channel_unless_zero_in_encoder_and_decoder() -> None:
    model = _segnet_model()
    with torch.no_grad():  # encoder stage 0's output channel 2 is read by encoder stage 1 ...
        model.backbone.encoder[1][0][0].weight[:, 2] = 0
    # ... and its pooling indices unpool the decoder stream read by decoder stage 0.
    assert slim(model).backbone.encoder[0][-1][0].out_channels == 8
    with torch.no_grad():
        model.backbone.decoder[0][0][0].weight[:, 2] = 0
    slimmed = slim(model).eval()
    assert slimmed.backbone.encoder[0][-1][0].out_channels == 8 - 1
    assert slimmed.backbone.decoder[1][-1][0].out_channels == 8 - 1
    images = torch.rand(2, 3, 16, 16)
    assert _outputs_close(model(images), slimmed(images))


def test_slim_bare_segnet_keeps_its_output_channels() -> None:
    backbone = SegNet((8, 16), (2, 2))
    _randomise_bn(backbone)
    backbone.eval()
    with torch.no_grad():
        for m in backbone.modules():
            if isinstance(m, nn.Conv2d) and m.in_channels > 3:
                m.weight[:, :3] = 0  # channels 0-2 of every tensor are read by zero groups only
    slimmed = slim(backbone).eval()
    assert slimmed.out_channels == 8
    assert slimmed.decoder[0][-1][0].out_channels == 8
    assert slimmed.encoder[0][0][0].out_channels == 8 - 3
    x = torch.randn(2, 3, 12, 12)
    assert torch.allclose(backbone(x), slimmed(x), atol=ATOL)


@pytest.mark.parametrize("block", [BasicBlock, Bottleneck])
def test_slim_resnet_is_exact_and_smaller(block: type[BasicBlock | Bottleneck]) -> None:
    model = _small_resnet(block)
    _zero_groups(model, 0.5)
    with torch.no_grad():  # also make some residual-stream channels removable everywhere
        model.layer1[0].conv1.weight[:, :8] = 0
        model.layer2[0].conv1.weight[:, :8] = 0
        model.layer2[0].downsample[0].weight[:, :8] = 0
    slimmed = slim(model).eval()
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(model(x), slimmed(x), atol=ATOL)
    assert slimmed.conv1.out_channels <= 64 - 8
    assert parameter_count(slimmed) < 0.8 * parameter_count(model)
    assert conv_flops(slimmed, (1, 3, 32, 32)) < 0.8 * conv_flops(model, (1, 3, 32, 32))


def test_slim_keeps_residual_channel_unless_removable_in_every_consumer() -> None:
    model = _small_resnet(BasicBlock)
    # The stem's stream (64 channels) is read by layer1[0].conv1, then (after the residual
    # add) by layer2[0].conv1 and layer2[0].downsample.
    with torch.no_grad():
        model.layer1[0].conv1.weight[:, 5] = 0
        model.layer2[0].conv1.weight[:, 5] = 0
    slimmed = slim(model)
    assert slimmed.conv1.out_channels == 64
    assert slimmed.layer1[0].conv2.out_channels == 64
    with torch.no_grad():
        model.layer2[0].downsample[0].weight[:, 5] = 0
    slimmed = slim(model).eval()
    assert slimmed.conv1.out_channels == 64 - 1  # removed from every producer of the stream
    assert slimmed.bn1.num_features == 64 - 1
    assert slimmed.layer1[0].conv2.out_channels == 64 - 1
    assert slimmed.layer2[0].downsample[0].in_channels == 64 - 1
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(model(x), slimmed(x), atol=ATOL)


def test_slim_changes_nothing_when_no_group_is_zero() -> None:
    for model in (_segnet_model(), _small_resnet(BasicBlock)):
        slimmed = slim(model)
        assert parameter_count(slimmed) == parameter_count(model)
        original = model.state_dict()
        for key, value in slimmed.state_dict().items():
            assert torch.equal(value, original[key]), key


def test_slim_leaves_its_input_unchanged() -> None:
    model = _segnet_model()
    _zero_groups(model.backbone, 0.5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    slimmed = slim(model)
    assert parameter_count(slimmed) < parameter_count(model)
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_slimmed_model_still_trains() -> None:
    model = _segnet_model()
    _zero_groups(model.backbone, 0.5)
    slimmed = slim(model).train()
    loss = sum(out.sum() for out in slimmed(torch.rand(2, 3, 8, 8)).values())
    loss.backward()
    grads = [p.grad for p in slimmed.parameters()]
    assert all(g is not None for g in grads)
    assert all(isinstance(p, nn.Parameter) for p in slimmed.parameters())


def test_slim_rejects_unsupported_models() -> None:
    with pytest.raises(TypeError, match="slim supports"):
        slim(nn.Sequential(nn.Conv2d(3, 4, 3)))


def test_conv_flops_counts_multiply_accumulates() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 5 * 5, 7))
    # conv: 4*5*5 outputs x 3*3*3 MACs each; linear: 7 outputs x 100 MACs each; batch of 2.
    assert conv_flops(net, (2, 3, 5, 5)) == 2 * (100 * 27 + 7 * 100)
    assert net.training  # mode restored


def test_latency_is_a_positive_median_and_validates_arguments() -> None:
    net = nn.Conv2d(3, 4, 3)
    seconds = latency(net, (1, 3, 8, 8), repeats=3)
    assert 0 < seconds < 1
    with pytest.raises(ConfigError, match="repeats"):
        latency(net, (1, 3, 8, 8), repeats=0)
