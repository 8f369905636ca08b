"""The oneDNN work-around: exact, narrow, applied to every model, and the study's op survives
on AVX2 kernels."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from mtlrepro.models import MODELS, create_model
from mtlrepro.models.backbones import FAMILIES, create_backbone
from mtlrepro.models.onednn import (
    SubsampledPointwiseConv2d,
    avoid_onednn_strided_pointwise_bug,
    is_affected,
)
from mtlrepro.tasks import TaskSpec

TASKS = (TaskSpec("seg", "segmentation", 3), TaskSpec("kind", "classification", 2))
# glibc aborts on the corrupted heap only with the malloc thresholds `make` exports.
AVX2_ENV = {
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "MALLOC_MMAP_THRESHOLD_": "1000000000",
    "MALLOC_TRIM_THRESHOLD_": "1000000000",
}


@pytest.mark.parametrize(
    ("in_channels", "stride", "padding", "bias"),
    [(4, 2, 0, False), (1, 3, 0, True), (6, (2, 1), 0, True)],
)
def test_subsampled_conv_equals_the_strided_conv_in_outputs_and_gradients(
    in_channels: int, stride: int | tuple[int, int], padding: int, bias: bool
) -> None:
    reference = nn.Conv2d(in_channels, 5, 1, stride=stride, padding=padding, bias=bias).double()
    routed = nn.Conv2d(in_channels, 5, 1, stride=stride, padding=padding, bias=bias).double()
    routed.load_state_dict(reference.state_dict())
    assert avoid_onednn_strided_pointwise_bug(routed) == 1
    x = torch.randn(3, in_channels, 9, 8, dtype=torch.float64)
    x_ref, x_routed = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_ref, out_routed = reference(x_ref), routed(x_routed)
    assert out_routed.shape == out_ref.shape
    grad = torch.randn_like(out_ref)
    out_ref.backward(grad)
    out_routed.backward(grad)
    # float64 and the same sums in the same order: equal to rounding
    torch.testing.assert_close(out_routed, out_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(x_routed.grad, x_ref.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(routed.weight.grad, reference.weight.grad, rtol=1e-12, atol=1e-12)


def test_routing_keeps_parameters_and_state_dict_and_draws_no_random_numbers() -> None:
    conv = nn.Conv2d(4, 4, 1, stride=2)
    weight, keys = conv.weight, list(conv.state_dict())
    state = torch.get_rng_state()
    avoid_onednn_strided_pointwise_bug(conv)
    assert isinstance(conv, SubsampledPointwiseConv2d) and isinstance(conv, nn.Conv2d)
    assert conv.weight is weight and list(conv.state_dict()) == keys
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize(
    ("layer", "affected"),
    [
        (nn.Conv2d(4, 8, 1, stride=2), True),
        (nn.Conv2d(7, 8, 1, stride=(1, 2)), True),
        (nn.Conv2d(8, 8, 1, stride=2), False),  # a full AVX2 channel block: correct kernel
        (nn.Conv2d(4, 8, 1, stride=1), False),  # unit stride: correct kernel
        (nn.Conv2d(4, 8, 3, stride=2), False),  # 3×3: another kernel
        (nn.Conv2d(4, 8, 1, stride=2, padding=1), False),  # padded: subsampling would differ
        (nn.Linear(4, 8), False),
    ],
)
def test_only_narrow_strided_pointwise_convolutions_are_routed(
    layer: nn.Module, affected: bool
) -> None:
    assert is_affected(layer) is affected
    assert avoid_onednn_strided_pointwise_bug(layer) == int(affected)


@pytest.mark.parametrize("scale", ["smoke", "cpu"])
@pytest.mark.parametrize("family", FAMILIES)
def test_backbones_have_no_affected_layer_left(family: str, scale: str) -> None:
    backbone = create_backbone(family, scale)
    assert not any(is_affected(layer) for layer in backbone.modules())


@pytest.mark.parametrize("name", MODELS.names())
def test_registered_models_have_no_affected_layer_left(name: str) -> None:
    kwargs = {"profile": "smoke"} if name == "deeplab_resnet" else {}
    model = create_model(name, TASKS, **kwargs)
    assert not any(is_affected(layer) for layer in model.modules())


def test_cpu_profile_backbones_are_not_changed() -> None:
    """The committed cpu-profile results run the library layers: no routed layer there."""
    for family in FAMILIES:
        backbone = create_backbone(family, "cpu")
        assert not any(isinstance(m, SubsampledPointwiseConv2d) for m in backbone.modules())


@pytest.mark.slow
def test_smoke_resnet_trains_on_avx2_kernels_without_corrupting_the_heap() -> None:
    """Paper A's smoke ResNet-18 (4-channel strided 1×1 shortcuts) on channels-last activations,
    one thread, per-task gradients with ``torch.autograd.grad`` as PCGrad takes them: without
    the routing this aborts with glibc's heap-corruption message on oneDNN's AVX2 kernels."""
    script = textwrap.dedent(
        """
        import torch
        from mtlrepro.models.backbones import create_backbone
        torch.set_num_threads(1)
        torch.manual_seed(0)
        backbone = create_backbone("resnet18", "smoke").to(memory_format=torch.channels_last)
        head = torch.nn.Linear(backbone.out_features, 2)
        shared = list(backbone.parameters())
        for _ in range(20):
            images = torch.rand(16, 3, 32, 32).contiguous(memory_format=torch.channels_last)
            out = head(backbone(images))
            losses = [out[:, 0].square().mean(), out[:, 1].abs().mean()]
            grads = [torch.autograd.grad(loss, shared, retain_graph=True) for loss in losses]
            sum(losses).backward()
        print("survived")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, **AVX2_ENV},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0 and "survived" in result.stdout, result.stderr[-2000:]
