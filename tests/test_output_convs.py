"""Output 1×1 convolutions written as a matrix product compute what the convolutions do, in
the standard layout."""

from __future__ import annotations

import pytest
import torch
from export_helpers import assert_same_outputs, segnet_with_heads
from torch import Tensor, fx, nn

from mtlrepro import inference
from mtlrepro.output_convs import PointwiseMatmul, standard_layout_outputs
from mtlrepro.parallel_branches import merge_parallel_convs


def _matmuls(graph: fx.GraphModule) -> int:
    return sum(isinstance(m, PointwiseMatmul) for m in graph.modules())


@pytest.fixture(scope="module")
def channels_last_segnet() -> tuple[fx.GraphModule, Tensor]:
    """A folded channels-last SegNet (as export's channels-last forms have it) and an input."""
    graph, traced = inference._fold(segnet_with_heads())
    assert traced
    images = torch.rand(2, 3, 16, 24).contiguous(memory_format=torch.channels_last)
    return graph.to(memory_format=torch.channels_last), images


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("channels_last", [True, False])
def test_the_matrix_product_is_the_convolution_in_the_standard_layout(bias, channels_last):
    torch.manual_seed(1)
    conv = nn.Conv2d(6, 5, 1, bias=bias).eval()
    x = torch.rand(3, 6, 7, 9)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
        conv = conv.to(memory_format=torch.channels_last)
    with torch.inference_mode():
        want, got = conv(x), PointwiseMatmul(conv)(x)
    assert got.is_contiguous()  # written in the standard layout, whatever the input's
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_the_dense_heads_last_convolutions_are_rewritten(channels_last_segnet):
    network, images = channels_last_segnet
    before = [n.target for n in network.graph.nodes if n.op == "call_module"]
    rewritten, count = standard_layout_outputs(network, images)
    assert count == 3 and _matmuls(rewritten) == 3  # segmentation, depth and normal heads
    # the input graph is left as it was
    assert [n.target for n in network.graph.nodes if n.op == "call_module"] == before
    with torch.inference_mode():
        assert_same_outputs(network(images), rewritten(images))
        more = torch.rand(1, 3, 32, 8)  # the rewrite does not depend on the example's shape
        assert_same_outputs(network(more), rewritten(more))


def test_merged_heads_are_written_through_their_channel_slices(channels_last_segnet):
    network, images = channels_last_segnet
    merged, groups = merge_parallel_convs(network, images)
    assert groups == 1
    rewritten, count = standard_layout_outputs(merged, images)
    assert count == 1  # the block-diagonal last layer, read through three slices
    with torch.inference_mode():
        outputs = rewritten(images)
        assert_same_outputs(network(images), outputs)
    assert all(outputs[name].is_contiguous() for name in ("segmentation", "depth", "normal"))


def test_a_refusing_chooser_keeps_the_convolutions(channels_last_segnet):
    network, images = channels_last_segnet
    asked = []

    def refuse(convolution, matmul) -> bool:
        asked.append((convolution(), matmul()))
        return False

    rewritten, count = standard_layout_outputs(network, images, refuse)
    assert count == 0 and _matmuls(rewritten) == 0 and len(asked) == 3
    for convolution, matmul in asked:  # the chooser's two calls compute the same outputs
        for want, got in zip(convolution, matmul, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


class _Others(nn.Module):
    """1×1 convolutions that must stay: one read by a ReLU, one strided, one called twice;
    and a 3×3 convolution made contiguous."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, padding=1)
        self.activated = nn.Conv2d(6, 4, 1)
        self.strided = nn.Conv2d(6, 4, 1, stride=2)
        self.shared = nn.Conv2d(6, 6, 1)
        self.wide = nn.Conv2d(6, 2, 3, padding=1)
        self.last = nn.Conv2d(6, 3, 1)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        a = torch.relu(self.stem(x))
        return {
            "activated": torch.relu(self.activated(a)).contiguous(),
            "strided": self.strided(a).contiguous(),
            "shared": self.shared(self.shared(a)).contiguous(),
            "wide": self.wide(a).contiguous(),
            "last": self.last(a).contiguous(),
        }


def test_only_convolutions_read_as_contiguous_outputs_are_rewritten() -> None:
    torch.manual_seed(2)
    model = fx.symbolic_trace(_Others().eval())
    images = torch.rand(2, 3, 8, 8)
    rewritten, count = standard_layout_outputs(model, images)
    assert count == 1
    targets = {n.target for n in rewritten.graph.nodes if n.op == "call_module"}
    assert "last" not in targets
    assert {"activated", "strided", "shared", "wide", "stem"} <= targets
    with torch.inference_mode():
        assert_same_outputs(model(images), rewritten(images))


def test_export_serves_merged_and_rewritten_heads_when_they_measure_faster(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = segnet_with_heads()
    images = torch.rand(2, 3, 16, 24)
    monkeypatch.setattr(inference, "_faster_chooser", lambda rounds: lambda *forms: True)
    measured = inference._timings
    monkeypatch.setattr(inference, "_timings", lambda forms, example, rounds: {
        **measured(forms, example, rounds), "channels_last": 0.0})  # as if it were fastest
    exported = inference.export(model, images, rounds=1)
    assert exported.form == "channels_last" and exported.matmul_outputs == 1
    assert exported.merged == 1  # the heads merge first; their last layer is rewritten
    with torch.inference_mode():
        assert_same_outputs(model(images), exported(images))
