"""Tests of mtlrepro.methods.partition_export: a task's deployed path computes what the
partitioned network computes for that task."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mtlrepro.inference import export
from mtlrepro.methods.partition_export import task_network
from mtlrepro.methods.partition_net import create_partition_resnet
from mtlrepro.models import count_parameters
from mtlrepro.tasks import TaskSpec

SPECS = [TaskSpec(f"task{k}", "classification", 3 + k) for k in range(3)]


def _model() -> nn.Module:
    """A smoke-sized partitioned network with non-trivial BN statistics and masks: task 0 uses
    every channel, task 1 half of them, task 2 none."""
    torch.manual_seed(0)
    model = create_partition_resnet(SPECS, profile="smoke")
    generator = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.uniform_(-1, 1, generator=generator)
                m.running_var.uniform_(0.5, 2, generator=generator)
                m.weight.uniform_(0.5, 1.5, generator=generator)
                m.bias.uniform_(-0.5, 0.5, generator=generator)
    c = model.partition_channels
    masks = torch.zeros(c, 3)
    masks[:, 0] = 1
    masks[::2, 1] = 1
    model.set_masks(masks)
    return model.eval()


@pytest.mark.parametrize("task", ["task0", "task1", "task2"])
def test_a_tasks_path_gives_the_partitioned_networks_logits(task: str) -> None:
    model = _model()
    images = torch.rand(4, 3, 16, 16)
    path = task_network(model, task)
    assert not path.training
    with torch.no_grad():
        expected = model(images, task=task)
        assert torch.allclose(path(images), expected, atol=1e-5)
    deployed = export(path, images, memory_format="contiguous")  # folds and checks in float64
    assert deployed.traced and deployed.folded > 0
    assert torch.allclose(deployed(images), expected, atol=1e-4)


def test_masked_channels_are_removed() -> None:
    model = _model()
    kept = model.forward_masks.sum(0).long().tolist()  # c, c/2, 0
    last_stage = len(model.stages[-1])
    for t, count in enumerate(kept):
        path = task_network(model, t)
        conv1s = [b.conv1[0] for b in path.blocks[-last_stage:]]
        assert all(conv.out_channels == max(count, 1) for conv in conv1s)
    sizes = [count_parameters(task_network(model, t)) for t in range(3)]
    assert sizes[0] > sizes[1] > sizes[2]


def test_the_partitioned_network_is_not_changed() -> None:
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    task_network(model, "task1")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
