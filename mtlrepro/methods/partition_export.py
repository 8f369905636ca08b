"""Paper E's compact network as deployed: one task's path of a partitioned network, its forward
mask applied by removing the channels it zeroes.

A :class:`~mtlrepro.methods.partition_net.PartitionResNet` computes every task with the task's
own BatchNorm modules (App. A.2), so nothing but the convolution weights is shared between
tasks at inference: each task is served by its own path.  :func:`task_network` builds that
path as a plain network:

* every ``conv → BN`` site keeps the task's BN only (a ``nn.Sequential(conv, bn)`` that
  :func:`mtlrepro.inference.export` folds into one conv);
* in the partitioned stage, the channels outside the task's forward mask ``m_f`` (§3) are
  removed: the rows of each block's ``conv1`` and its BN entries, and the matching input
  columns of ``conv2``.  A masked channel is exactly 0 after the mask, and ReLU keeps it 0, so
  removing it changes no output (tested); a task with an empty mask keeps one channel whose
  ``conv2`` weights are zero;
* the task's end ``BN → ReLU`` and head follow.

``export(task_network(model, task), images)`` is then the task's inference form (BatchNorm
folded, outputs checked).  Its convolutions are those :func:`partition_parameter_counts`
counts for the task; its latency is what a deployment of that task pays.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtlrepro.compress import _slice_bn, _slice_layer  # slim's channel slicing, shared
from mtlrepro.methods.partition_net import ConvTask, PartitionBlock, PartitionResNet


def _conv_bn(
    site: ConvTask, task: int, keep_out: Tensor | None = None, keep_in: Tensor | None = None
) -> nn.Sequential:
    """``site``'s conv and task ``task``'s BN as ``Sequential(conv, bn)``, restricted to the
    output channels ``keep_out`` and input channels ``keep_in`` (boolean masks; ``None``: all),
    sliced as :func:`mtlrepro.compress.slim` slices."""
    bn = site.bns[task]
    return nn.Sequential(
        _slice_layer(site.conv, keep_in, keep_out),
        copy.deepcopy(bn) if keep_out is None else _slice_bn(bn, keep_out),
    )


class TaskBlock(nn.Module):
    """One task's :class:`~mtlrepro.methods.partition_net.PartitionBlock`:
    ``conv1 → ReLU → conv2 (+ shortcut) → ReLU`` with plain ``conv → BN`` sites."""

    def __init__(self, conv1: nn.Sequential, conv2: nn.Sequential, stride: int, pad: int) -> None:
        """Args:
        conv1: the first ``conv → BN`` (its masked channels removed).
        conv2: the second.
        stride: the shortcut's average-pool stride.
        pad: zero channels the shortcut appends.
        """
        super().__init__()
        self.conv1, self.conv2 = conv1, conv2
        self.stride, self.pad = stride, pad

    def forward(self, x: Tensor) -> Tensor:
        """The block's output (as :meth:`PartitionBlock.forward` for the task)."""
        y = self.conv2(F.relu(self.conv1(x)))
        residual = F.avg_pool2d(x, self.stride) if self.stride != 1 else x
        if self.pad:
            residual = F.pad(residual, (0, 0, 0, 0, 0, self.pad))
        return F.relu(y + residual)


class TaskNetwork(nn.Module):
    """One task's path of a :class:`PartitionResNet` (module doc): images in [0, 1] -> logits.

    Attributes:
        task: the task's name.
        stem: the first ``conv → BN``.
        blocks: every block of every stage, in order.
        end_bn: the task's final BN (followed by a ReLU).
        head: the task's head (global average pool → linear).
    """

    def __init__(self, model: PartitionResNet, task: str | int) -> None:
        """Args:
        model: the partitioned network (not changed).
        task: the task, by name or index.
        """
        super().__init__()
        t = model.task_index(task)
        self.task = model.task_names[t]
        self.register_buffer("input_mean", model.input_mean.clone())
        self.register_buffer("input_std", model.input_std.clone())
        self.stem = _conv_bn(model.stem, t)
        last = len(model.stages) - 1
        blocks = []
        for k, stage in enumerate(model.stages):
            for block in stage:
                keep = model.forward_masks[:, t].detach().cpu().bool() if k == last else None
                blocks.append(_task_block(block, t, keep))
        self.blocks = nn.Sequential(*blocks)
        self.end_bn = copy.deepcopy(model.end_bns[t])
        self.head = copy.deepcopy(model.heads[self.task])

    def forward(self, images: Tensor) -> Tensor:
        """The task's logits ``(B, classes)`` (as ``model(images, task=...)``)."""
        x = self.stem((images - self.input_mean) / self.input_std)
        return self.head(F.relu(self.end_bn(self.blocks(x))))


def _task_block(block: PartitionBlock, task: int, keep: Tensor | None) -> TaskBlock:
    """``block`` for one task, keeping only the channels ``keep`` (a boolean mask) of
    ``conv1``'s output (``None``: all; none: the first, whose ``conv2`` weights are zeroed)."""
    empty = keep is not None and not keep.any()
    if empty:
        keep = torch.arange(len(keep)) == 0
    conv1 = _conv_bn(block.conv1, task, keep_out=keep)
    conv2 = _conv_bn(block.conv2, task, keep_in=keep)
    if empty:
        with torch.no_grad():
            conv2[0].weight.zero_()
    return TaskBlock(conv1, conv2, block.stride, block.pad)


def task_network(model: PartitionResNet, task: str | int) -> TaskNetwork:
    """Task ``task``'s path of ``model`` as a plain network, in ``model``'s mode (module doc).

    Args:
        model: the partitioned network (not changed).
        task: the task, by name or index.
    """
    return TaskNetwork(model, task).train(model.training)
