"""Tests of mtlrepro.inference: the inference form computes what the trained network does."""

from __future__ import annotations

import copy
import time

import pytest
import torch
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, ResNet

from mtlrepro import inference, pointwise_fusion
from mtlrepro.compress import slim
from mtlrepro.config import ConfigError
from mtlrepro.inference import CONTIGUOUS_FUSION, FUSION, InferenceNetwork, export
from mtlrepro.models import create_model
from mtlrepro.tasks import TaskSpec

# Folding a BN into its conv changes the order of float32 operations: ~1e-6 relative.
ATOL = 1e-4

SPECS = (
    TaskSpec("segmentation", "segmentation", 3),
    TaskSpec("depth", "depth"),
    TaskSpec("colour", "classification", 4),
)


def _randomise_bn(model: nn.Module) -> nn.Module:
    """Non-trivial BN statistics and affine parameters (a fold that ignored them would show)."""
    generator = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            with torch.no_grad():
                for tensor, low, high in ((m.running_mean, -1, 1), (m.running_var, 0.5, 2),
                                          (m.weight, 0.5, 1.5), (m.bias, -0.5, 0.5)):
                    tensor.copy_(torch.rand(tensor.shape, generator=generator) * (high - low)
                                 + low)
    return model.eval()


def _module_calls(graph: torch.fx.GraphModule, kinds: tuple[type, ...]) -> list[str]:
    """The targets of ``graph``'s calls of modules of ``kinds``."""
    return [n.target for n in graph.graph.nodes if n.op == "call_module"
            and isinstance(graph.get_submodule(n.target), kinds)]


def _close(a: object, b: object) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    return isinstance(b, Tensor) and b.is_contiguous() and torch.allclose(a, b, atol=ATOL)


@pytest.mark.parametrize("memory_format", ["contiguous", "channels_last", "auto"])
def test_segnet_folds_every_batchnorm_and_keeps_its_outputs(memory_format: str) -> None:
    torch.manual_seed(0)
    model = _randomise_bn(create_model("segnet", SPECS, widths=(8, 16, 32)))
    images = torch.rand(2, 3, 16, 24)
    exported = export(model, images, memory_format=memory_format, rounds=3)
    assert isinstance(exported, InferenceNetwork) and exported.traced
    assert exported.folded == sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) > 0
    assert not any(isinstance(m, nn.BatchNorm2d) for m in exported.modules())
    assert _close(model(images), exported(images))
    assert exported.memory_format in ("contiguous", "channels_last")
    assert bool(exported.timings_ms) == (memory_format == "auto")
    if memory_format == "auto":  # the fastest form, as served
        fastest = min(exported.timings_ms, key=exported.timings_ms.get)
        # a fused form whose every chain measured slower than plain is its plain format
        assert exported.form == (fastest if "fusion" not in fastest or exported.fused
                                 else exported.memory_format)
        assert exported.memory_format == fastest.split(" + ")[0]
        assert set(exported.timings_ms) == {
            "contiguous", "channels_last", CONTIGUOUS_FUSION, FUSION
        } or not pointwise_fusion.available()
    else:  # module calls made function calls (step 5)
        assert exported.form == memory_format and exported.fused == 0
        assert not _module_calls(exported.network, (nn.Conv2d, nn.ReLU))
        assert any(n.target is torch.conv2d for n in exported.network.graph.nodes)
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # the original is kept
    assert not model.training  # its mode untouched (eval, as given)


def test_a_slimmed_resnet_exports_exactly() -> None:
    torch.manual_seed(0)
    model = _randomise_bn(ResNet(BasicBlock, [1, 1, 1, 1], num_classes=5))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d) and m.in_channels > 3:
                m.weight[:, torch.rand(m.in_channels) < 0.5] = 0
    slimmed = slim(model).eval()
    images = torch.rand(3, 3, 32, 32)
    exported = export(slimmed, images, memory_format="channels_last")
    assert _close(model(images), exported(images))
    assert exported.folded == sum(isinstance(m, nn.BatchNorm2d) for m in slimmed.modules())


class Branchy(nn.Module):
    """Data-dependent control flow (fx cannot trace it) around Sequential conv → BN blocks."""

    def __init__(self) -> None:
        super().__init__()
        self.left = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                                  nn.Dropout(0.5), nn.Identity())
        self.right = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(6 * 8 * 8, 4), nn.BatchNorm1d(4))

    def forward(self, images: Tensor) -> Tensor:
        features = self.left(images) if images.mean() > 0.5 else self.right(images)
        return self.head(features)


DENSE = SPECS[:2]


def _mtan() -> nn.Module:
    """MTAN applies each stage's shared conv block once per task: one module, several calls."""
    torch.manual_seed(0)
    return _randomise_bn(create_model("mtan", DENSE, widths=(8, 16, 32))).double()


def test_a_module_called_once_per_task_is_folded_once() -> None:
    model, images = _mtan(), torch.rand(2, 3, 16, 24, dtype=torch.float64)
    exported = export(model, images, memory_format="contiguous")
    assert exported.traced
    assert exported.folded == sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) > 0
    with torch.no_grad():
        expected, got = model(images), exported(images)
    for task in expected:  # float64: a fold applied once per call would move them by ~0.1
        assert (expected[task] - got[task]).abs().max() < 1e-9 * expected[task].abs().max()


def test_a_fold_that_changes_the_outputs_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from torch.fx.experimental.optimization import fuse  # folds a reused pair once per call

    monkeypatch.setattr("mtlrepro.inference._fold_graph", fuse)
    with pytest.raises(RuntimeError, match="not exact"):
        export(_mtan(), torch.rand(2, 3, 16, 24, dtype=torch.float64))


def test_untraceable_networks_fold_inside_sequentials_and_drop_no_ops() -> None:
    torch.manual_seed(0)
    model = _randomise_bn(Branchy())
    bright, dark = torch.rand(2, 3, 8, 8) * 0.5 + 0.5, torch.rand(2, 3, 8, 8) * 0.5
    exported = export(model, bright, memory_format="contiguous")
    assert not exported.traced and exported.folded == 3 and exported.removed == 5
    assert not any(isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.Dropout, nn.Identity))
                   for m in exported.modules())
    for images in (bright, dark):
        assert _close(model(images), exported(images))


def test_export_refuses_bad_arguments() -> None:
    model = _randomise_bn(Branchy())
    with pytest.raises(ConfigError, match="memory_format"):
        export(model, torch.rand(1, 3, 8, 8), memory_format="nhwc")
    with pytest.raises(ConfigError, match="rounds"):
        export(model, torch.rand(1, 3, 8, 8), rounds=0)
    with pytest.raises(ConfigError, match="image batch"):
        export(model, torch.rand(3, 8, 8))


@pytest.mark.skipif(not pointwise_fusion.available(), reason="no oneDNN operators")
@pytest.mark.parametrize("fused_form", [FUSION, CONTIGUOUS_FUSION])
def test_a_fused_form_keeps_the_outputs_when_it_wins(
    monkeypatch: pytest.MonkeyPatch, fused_form: str
) -> None:
    torch.manual_seed(0)
    model = _randomise_bn(create_model("segnet", SPECS, widths=(8, 16, 32)))
    images = torch.rand(2, 3, 16, 24)
    measured = inference._timings
    monkeypatch.setattr(inference, "_timings", lambda forms, example, rounds: {
        **measured(forms, example, rounds), fused_form: 0.0})  # as if it measured fastest
    exported = export(model, images, rounds=1)
    assert exported.form == fused_form
    assert exported.memory_format == fused_form.split(" + ")[0]
    assert exported.fused > 0  # the chains that measured faster fused (at least one here)
    assert _close(model(images), exported(images))
    assert _close(model(images[:1]), exported(images[:1]))  # another shape: plain convs


def test_inlined_calls_compute_bit_for_bit_what_the_modules_do() -> None:
    torch.manual_seed(0)
    model = _randomise_bn(create_model("segnet", SPECS, widths=(8, 16, 32)))
    images = torch.rand(2, 3, 16, 24)
    folded, traced = inference._fold(model)
    assert traced
    modules = inference._inline_calls(copy.deepcopy(folded))
    assert _module_calls(folded, (nn.Conv2d, nn.ReLU))
    assert not _module_calls(modules, (nn.Conv2d, nn.ReLU))
    with torch.inference_mode():
        want, got = folded(images), modules(images)
    assert all(torch.equal(want[k], got[k]) for k in want)


def test_interleaved_rounds_repeat_short_calls_to_the_asked_length() -> None:
    counts = {"short": 0, "long": 0}

    def call(name: str, seconds: float) -> None:
        counts[name] += 1
        time.sleep(seconds)

    times = inference.interleaved_medians(
        {"short": lambda: call("short", 0.001), "long": lambda: call("long", 0.002)}, 3,
        min_round_seconds=0.01)
    # one untimed call each, one call of the first to size the rounds, then 3 rounds of the
    # same number of calls each: about 10 of the 1-ms call (fewer if sleeping overshoots)
    repeats = counts["long"] - 1
    assert repeats % 3 == 0 and repeats >= 3 * 3
    assert counts["short"] == 2 + repeats
    assert times["short"] < times["long"]
    counts["short"] = 0
    inference.interleaved_medians({"short": lambda: call("short", 0.0)}, 4)
    assert counts["short"] == 1 + 4  # without a round length: one call per round
