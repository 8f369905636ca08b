"""Tests of mtlrepro.models.deeplab: paper B's dilated-ResNet / DeepLab-v3 multi-task network."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models import resnet50
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet
from torchvision.models.segmentation.deeplabv3 import DeepLabHead

from mtlrepro.compress import conv_flops, parameter_count, slim
from mtlrepro.config import ConfigError
from mtlrepro.methods.group_sparsity import channel_groups
from mtlrepro.models import (
    DEEPLAB_PRESETS,
    ASPPHead,
    ConvFCClassificationHead,
    DilatedBasicBlock,
    DilatedResNet,
    count_parameters,
    create_model,
    deeplab_config,
    scale_atrous_rates,
)
from mtlrepro.tasks import TaskSpec

NYU_TASKS = (
    TaskSpec("segmentation", "segmentation", 13),
    TaskSpec("depth", "depth"),
    TaskSpec("normal", "normal"),
)
CELEBA_TASKS = (
    TaskSpec("segmentation", "segmentation", 3),
    TaskSpec("male", "classification", 2),
    TaskSpec("smile", "classification", 2),
)
# Slimming only drops terms that are exactly zero; the kept sums may run in a different order
# (other channel counts pick other kernels): float32 rounding, so 1e-5 absolute on O(1) outputs.
ATOL = 1e-5


@pytest.fixture(autouse=True)
def seeded() -> None:
    """Every test starts from the same torch seed."""
    torch.manual_seed(0)


def _convs(module: nn.Module) -> list[nn.Conv2d]:
    return [m for m in module.modules() if isinstance(m, nn.Conv2d)]


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


@pytest.mark.parametrize("specs", [NYU_TASKS, CELEBA_TASKS], ids=["dense", "classification"])
def test_outputs_have_each_task_shape_at_input_resolution(specs: tuple[TaskSpec, ...]) -> None:
    model = create_model("deeplab_resnet", specs, profile="smoke")
    out = model(torch.rand(2, 3, 32, 48))
    assert list(out) == [s.name for s in specs]
    for spec in specs:
        expected = (2, spec.out_channels, 32, 48) if spec.dense else (2, spec.num_classes)
        assert out[spec.name].shape == expected
        assert torch.isfinite(out[spec.name]).all()
    heads = model.heads.values()
    assert sum(isinstance(h, ASPPHead) for h in heads) == sum(s.dense for s in specs)
    assert sum(isinstance(h, ConvFCClassificationHead) for h in heads) == sum(
        not s.dense for s in specs
    )


@pytest.mark.parametrize("block", ["bottleneck", "basic"])
def test_backbone_has_output_stride_8_with_dilated_last_stages(block: str) -> None:
    backbone = deeplab_config("smoke", block=block).backbone().eval()
    features, state = backbone.encode(torch.randn(2, 3, 40, 24))
    assert features.shape == (2, backbone.out_channels, 5, 3)
    assert backbone.output_stride == 8 and state is None
    assert backbone.decode(features, state) is features
    assert (
        backbone.out_channels
        == backbone.bottleneck_channels
        == 4 * (4 if block == "bottleneck" else 1)
    )
    # Stages 3 and 4 trade their stride for dilation 2 and 4 (first block: the previous one).
    assert {c.dilation for c in _convs(backbone.layer4[0]) if c.kernel_size == (3, 3)} == {(2, 2)}
    assert all(c.stride == (1, 1) for c in _convs(backbone.layer3) + _convs(backbone.layer4))


def test_input_not_divisible_by_the_output_stride_is_rejected() -> None:
    model = create_model("deeplab_resnet", NYU_TASKS[:1], profile="smoke")
    with pytest.raises(ValueError, match="divisible by its output stride 8; got 36x32"):
        model(torch.rand(2, 3, 36, 32))


def test_every_parameter_gets_a_nonzero_gradient() -> None:
    model = create_model("deeplab_resnet", NYU_TASKS + CELEBA_TASKS[1:], profile="smoke")
    out = model(torch.rand(3, 3, 32, 32))
    sum(o.square().mean() for o in out.values()).backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, f"{name} gets no gradient"
        assert torch.isfinite(param.grad).all(), f"{name} has a non-finite gradient"
        assert param.grad.abs().sum() > 0, f"{name} has an all-zero gradient"


def test_paper_backbone_is_torchvision_dilated_resnet50_without_fc() -> None:
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        reference = resnet50(replace_stride_with_dilation=[False, True, True])
        backbone = deeplab_config("paper").backbone()
    assert isinstance(backbone, ResNet)
    shapes = {k: v.shape for k, v in reference.state_dict().items() if not k.startswith("fc.")}
    assert {k: v.shape for k, v in backbone.state_dict().items()} == shapes
    fc = sum(p.numel() for p in reference.fc.parameters())
    assert count_parameters(backbone) == count_parameters(reference) - fc == 23_508_032
    geometry = [(c.stride, c.dilation, c.padding) for c in _convs(reference)]
    assert [(c.stride, c.dilation, c.padding) for c in _convs(backbone)] == geometry
    assert len(geometry) == 53 and backbone.out_channels == 2048


def test_paper_aspp_head_has_torchvision_deeplab_head_parameters() -> None:
    with torch.device("meta"):
        reference = DeepLabHead(2048, 40)
        head = ASPPHead(2048, 40, width=256)
    shapes = {k: v.shape for k, v in reference.state_dict().items()}
    assert {k: v.shape for k, v in head.state_dict().items()} == shapes
    assert count_parameters(head) == count_parameters(reference)


def test_aspp_head_upsamples_by_the_output_stride() -> None:
    head = ASPPHead(6, 3, atrous_rates=(1, 2), width=4, upsample=8).eval()
    assert head(torch.randn(2, 6, 3, 5)).shape == (2, 3, 24, 40)


def test_classification_head_is_conv_bn_relu_pool_and_two_fc_layers() -> None:
    head = ConvFCClassificationHead(16, 5, channels=8, hidden=4)
    assert head(torch.randn(2, 16, 3, 3)).shape == (2, 5)
    conv_bn = 16 * 8 * 9 + 2 * 8  # bias-free conv3x3 + BN weight and bias
    assert count_parameters(head) == conv_bn + (8 * 4 + 4) + (4 * 5 + 5)


def test_presets_keep_the_resnet50_shape_and_default_to_paper() -> None:
    cpu = deeplab_config("cpu")
    assert cpu.block == "bottleneck" and cpu.atrous_rates == (3, 6, 9)
    assert cpu.backbone().out_channels == 4 * cpu.widths[-1]
    assert DEEPLAB_PRESETS["paper"].items() <= deeplab_config("paper").__dict__.items()
    assert deeplab_config("paper") == deeplab_config("smoke", **DEEPLAB_PRESETS["paper"])
    model = create_model("deeplab_resnet", NYU_TASKS[:1], profile="cpu", aspp_channels=12)
    assert model.config == deeplab_config("cpu", aspp_channels=12)
    assert model.heads["segmentation"][1].in_channels == 12


def test_atrous_rates_scale_with_the_input_size() -> None:
    assert scale_atrous_rates(256) == (12, 24, 36)
    assert scale_atrous_rates(64) == (3, 6, 9)
    assert scale_atrous_rates(32) == (2, 3, 5)  # 1.5 and 4.5 round up
    assert scale_atrous_rates(8) == (1, 1, 1)


@pytest.mark.parametrize("block", ["bottleneck", "basic"])
def test_slim_backbone_is_exact_and_smaller(block: str) -> None:
    backbone = deeplab_config("cpu", block=block).backbone()
    _randomise_bn(backbone)
    backbone.eval()
    # The residual stream after layer1 is read by layer2[0].conv1 and its downsample conv only.
    readers = (backbone.layer2[0].conv1, backbone.layer2[0].downsample[0])
    with torch.no_grad():
        for conv in _convs(backbone)[1:]:  # input-channel groups W[:, c] of the other convs
            if conv not in readers:
                conv.weight[:, torch.rand(conv.in_channels) < 0.4] = 0
        for conv in readers:  # stream channel 3: zero in every consumer, so removable
            conv.weight[:, 3] = 0
    slimmed = slim(backbone).eval()
    assert isinstance(slimmed, DilatedResNet)
    stream = backbone.layer2[0].conv1.in_channels
    # Removed from every producer of the stream: layer1's downsample path and its last conv.
    assert slimmed.layer1[0].downsample[0].out_channels == stream - 1
    assert _convs(slimmed.layer1[-1])[-1].out_channels == stream - 1
    assert slimmed.layer2[0].downsample[0].in_channels == stream - 1
    x = torch.randn(2, 3, 48, 48)
    assert torch.allclose(backbone(x), slimmed(x), atol=ATOL)
    assert slimmed.out_channels == backbone.out_channels  # features read by heads are kept
    assert parameter_count(slimmed) < 0.8 * parameter_count(backbone)
    assert conv_flops(slimmed, (1, 3, 48, 48)) < 0.8 * conv_flops(backbone, (1, 3, 48, 48))


def test_group_sparsity_groups_cover_every_backbone_conv() -> None:
    model = create_model("deeplab_resnet", NYU_TASKS, profile="smoke")
    groups = channel_groups(model.backbone)
    assert len(groups) == len(_convs(model.backbone)) == 16
    assert sum(g.num_groups for g in groups) == sum(c.in_channels for c in _convs(model.backbone))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"block": "wide"}, "unknown DeepLabConfig.block 'wide'; allowed: 'basic', 'bottleneck'"),
        ({"layers": (1, 1, 1)}, "DeepLabConfig.layers must be of type"),
        ({"widths": (8, 0, 8, 8)}, r"widths\[i\] must be an integer in \[1"),
        ({"atrous_rates": ()}, "at least one rate"),
        ({"atrous_rates": (0, 2)}, r"atrous_rates\[i\] must be an integer in \[1"),
        ({"aspp_channels": 0}, r"aspp_channels must be an integer in \[1"),
        ({"classifier_hidden": 2.5}, "classifier_hidden must be of type int"),
        ({"std": (1.0, 0.0, 1.0)}, r"std\[i\] must be a number in \(0"),
        ({"depth": 50}, "unknown DeepLabConfig parameter 'depth'; allowed: block"),
    ],
)
def test_bad_config_values_raise_config_error(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        create_model("deeplab_resnet", NYU_TASKS, profile="smoke", **kwargs)


def test_dilated_resnet_rejects_wrong_stage_counts() -> None:
    with pytest.raises(ValueError, match="need 4 layers, 4 widths"):
        DilatedResNet(Bottleneck, (1, 1, 1), (4, 4, 4, 4))


def test_basic_block_is_replaced_by_its_dilatable_subclass() -> None:
    backbone = DilatedResNet(BasicBlock, (1, 1, 1, 2), (4, 4, 8, 8), stem_width=4)
    assert all(isinstance(block, DilatedBasicBlock) for block in backbone.layer4)
    # torchvision's BasicBlock refuses dilation > 1; the first block keeps the previous one.
    assert [b.conv1.dilation for b in backbone.layer4] == [(2, 2), (4, 4)]
    assert [b.conv2.dilation for b in backbone.layer4] == [(2, 2), (4, 4)]


def test_channels_last_gives_the_same_outputs_in_standard_layout() -> None:
    fast = create_model("deeplab_resnet", CELEBA_TASKS, profile="smoke", channels_last=True)
    plain = create_model("deeplab_resnet", CELEBA_TASKS, profile="smoke", channels_last=False)
    plain.load_state_dict(fast.state_dict())
    fast.eval()
    plain.eval()
    images = torch.rand(2, 3, 32, 24)
    a, b = fast(images), plain(images)
    for name in a:
        assert a[name].is_contiguous()
        # Different memory layouts sum in a different order: float32 rounding only.
        assert torch.allclose(a[name], b[name], atol=1e-4, rtol=1e-4)
