"""Merged parallel branches compute what the separate branches do."""

from __future__ import annotations

import pytest
import torch
from export_helpers import assert_same_outputs, segnet_with_heads
from torch import Tensor, fx, nn

from mtlrepro import inference
from mtlrepro.parallel_branches import merge_parallel_convs


def _convs(graph: fx.GraphModule) -> int:
    return sum(n.op == "call_module" and isinstance(graph.get_submodule(n.target), nn.Conv2d)
               for n in graph.graph.nodes)


@pytest.fixture(scope="module")
def folded_segnet() -> fx.GraphModule:
    """A SegNet with three dense-prediction heads (conv 3×3 → ReLU → conv 1×1 each) and a
    classification head, BatchNorm folded as export has it."""
    graph, traced = inference._fold(segnet_with_heads())
    assert traced
    return graph


@pytest.mark.parametrize("channels_last", [False, True])
def test_the_dense_prediction_heads_merge_into_two_convolutions(folded_segnet, channels_last):
    network = folded_segnet
    images = torch.rand(2, 3, 16, 24)
    if channels_last:
        network = network.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    merged, groups = merge_parallel_convs(network, images)
    assert groups == 1
    # three heads × two convolutions become one concatenated and one block-diagonal conv
    assert _convs(merged) == _convs(network) - 3 * 2 + 2
    assert _convs(folded_segnet) == _convs(network)  # the input graph is left as it was
    with torch.inference_mode():
        assert_same_outputs(network(images), merged(images))
        more = torch.rand(3, 3, 32, 16)  # the merge does not depend on the example's shape
        assert_same_outputs(network(more), merged(more))


def test_a_refusing_chooser_keeps_the_branches(folded_segnet):
    images = torch.rand(2, 3, 16, 24)
    asked = []

    def refuse(separate, together) -> bool:
        asked.append((separate(), together()))
        return False

    merged, groups = merge_parallel_convs(folded_segnet, images, refuse)
    assert groups == 0 and len(asked) == 1
    separate, together = asked[0]  # the chooser's two calls compute the same heads
    start = 0
    for head in separate:
        width = head.shape[1]
        torch.testing.assert_close(together[:, start:start + width], head, rtol=1e-4,
                                   atol=1e-5)
        start += width
    assert _convs(merged) == _convs(folded_segnet)


class _Mixed(nn.Module):
    """Three branches on one tensor: two alike for two layers, one whose second layer has
    another kernel, and a shared conv (called twice) that must stay as it is."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, padding=1)
        self.first = nn.ModuleList(nn.Conv2d(6, width, 3, padding=1) for width in (4, 5, 3))
        self.second = nn.ModuleList([nn.Conv2d(4, 2, 1), nn.Conv2d(5, 1, 1),
                                     nn.Conv2d(3, 2, 3, padding=1)])
        self.shared = nn.Conv2d(6, 6, 1)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        a = torch.relu(self.stem(x))
        outputs = {f"head{i}": second(torch.relu(first(a)))
                   for i, (first, second) in enumerate(zip(self.first, self.second, strict=True))}
        outputs["shared"] = self.shared(self.shared(a))
        return outputs


def test_branches_merge_only_as_deep_as_they_match() -> None:
    torch.manual_seed(2)
    model = fx.symbolic_trace(_Mixed().eval())
    images = torch.rand(2, 3, 8, 8)
    merged, groups = merge_parallel_convs(model, images)
    assert groups == 1
    targets = {n.target for n in merged.graph.nodes if n.op == "call_module"}
    # the three first layers merge (same settings); the second layers differ in kernel
    assert not any(t.startswith("first") for t in targets)
    assert {"second.0", "second.1", "second.2", "shared", "stem"} <= targets
    with torch.inference_mode():
        assert_same_outputs(model(images), merged(images))

