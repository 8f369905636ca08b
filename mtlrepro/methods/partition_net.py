"""Paper E: the partitioned multi-task ResNet, its training hooks and feature distillation.

A. Newell, L. Jiang, C. Wang, L.-J. Li & J. Deng, "Feature Partitioning for Efficient
Multi-Task Architectures".  Per task a forward mask ``m_f ∈ {0,1}^c`` zeroes the feature
channels the task may not use and a backward mask ``m_b ⊆ m_f`` zeroes the gradients of the
weights it may not change (§3); a partition is evaluated either by full training (App. A.2) or,
in a minute, by feature distillation from single-task teachers (§4.2, App. A.2).  Masks come
in as plain 0/1 arrays ``channels × tasks`` (``M`` of §3.1; drawing them from ``P`` is
:mod:`mtlrepro.methods.partition`'s job).

* :class:`PartitionResNet` -- the Decathlon ResNet-26 with per-task BatchNorm, one
  classification head per task and forward masks on the last stage.
* :class:`PartitionTraining` -- the training loop's hooks of App. A.2: backward masks
  (:meth:`~mtlrepro.train.Hooks.task_gradient_masks`), one task per step from the accuracy
  curriculum, its batch of that task's samples, per-task momentum (``epoch_batches``,
  ``step_task``, ``per_task_optimizer_state``), the frozen first two stages
  (``excluded_parameters``), per-task sample routing.
* :func:`distill` -- the feature-distillation score of a partition (§4.2).
* :func:`check_masks`, :func:`curriculum_probabilities`, :func:`partition_parameter_counts`.

**Choices** (facts from the paper or the authors' public code; the rest named as ours):

* Architecture (App. A.2, "three computational blocks with four layers each"; Rebuffi et al.
  2017/2018's ResNet-26, whose PyTorch code the paper uses): a 3×3 stem conv of 32 channels,
  three stages of 4 basic blocks with 64 / 128 / 256 channels, each stage's first block of
  stride 2 with a parameter-free shortcut (2×2 average pool, then zero channels appended), a
  per-task ``BN → ReLU`` at the end, global average pooling and a linear layer per task.  As in
  that code, a "conv" is ``conv3x3 → BN`` (no ReLU after the stem); a block is ``conv1 → ReLU
  → conv2``, plus the shortcut, then ReLU; convs are drawn from ``N(0, 2/(k²·c_out))``.
  :data:`ARCHITECTURES` holds the paper's sizes and slim ``cpu`` / ``smoke`` ones.
* Per-task BatchNorm (App. A.2, "separate batch normalization statistics per task as done in
  Rebuffi et al."): every BN site holds one ``nn.BatchNorm2d`` per task (statistics *and*
  affine parameters, as in Rebuffi's ``conv_task``); task ``t``'s forward uses only BN ``t``.
* Forward masks (§3; the authors' code): only the last stage is partitioned, and only at the
  output of the first conv of each of its blocks (``conv1 → BN``, before the ReLU, so a masked
  channel is exactly 0 at the input of ``conv2``) -- "masks are applied every other layer".
  The mask multiplies inside :class:`MaskSite` modules (forward hooks see the masked tensor).
* Backward masks (§3, "weights we wish to leave unchanged will have their gradients zeroed
  out according to m_b"; the authors' code multiplies the weight gradients per task): which
  weights is ours -- those of channel ``k`` of a block, row ``k`` of ``conv1`` (the filter
  producing it) and column ``k`` of ``conv2`` (the filter slices reading it); task ``t``'s
  gradient of both is multiplied by ``m_b[:, t]``.  Outside ``m_f`` both are zero anyway (the
  channel is 0); the mask matters on ``m_f \\ m_b`` (§3's example: a task reads ImageNet's
  channels without changing them).  ``conv2``'s output channels and the shortcut carry the
  shared residual stream and are not masked.  BN parameters are per task already.  Weight
  decay is applied by the optimiser after masking, so it would still shrink masked weights:
  train with ``weight_decay=0`` (App. A.2 names none).
* One task per step (App. A.2, "choose mini-batches from tasks inversely proportional to
  their current training accuracy"; the authors' code: ``p ∝ softmax(log(1 − acc + 0.15) /
  0.3)``, then a batch of that task's data): :meth:`PartitionTraining.epoch_batches` draws
  the task of each step of an epoch from a generator seeded by ``(seed, step)`` and gives it
  the next batch of a shuffle of that task's samples -- deterministic and exact on resume.
  ``acc`` is each task's training accuracy over the previous epoch (0 before the first epoch
  ends, i.e. uniform sampling).  Per-task SGD momentum (App. A.2) is the loop's
  ``per_task_optimizer_state``.  (Mixed-domain batches, where a step trains only its task's
  share of the batch, measured far worse at the cpu profile: see
  :mod:`mtlrepro.experiments.partition.units`.)
* Routing: :meth:`PartitionTraining.before_step` routes each task's own samples (target
  ``>= 0``) to that task's path, so each task's BN sees only its domain and a batch costs one
  forward pass per task it holds; a task's output is 0 for the other samples (whose target
  ``-1`` gives no loss).  Without routing (evaluation, direct calls) every task's path runs on
  the whole batch.
* Frozen stages (App. A.2, "we freeze and share the first two-thirds of the network"): the
  stem and the first two stages, including their per-task BN affine parameters, are left out
  of the optimiser; their per-task BN running statistics still follow each task's data in
  training mode (separate statistics per task, App. A.2).
* Distillation (§4.2, Fig. 2, App. A.2): see :func:`distill`.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtlrepro.config import ConfigError, check_choice, check_range
from mtlrepro.models.heads import ClassificationHead
from mtlrepro.models.multitask import TaskModuleDict
from mtlrepro.tasks import TaskSpec
from mtlrepro.train import Hooks, TrainerState

ARCHITECTURES: dict[str, dict[str, Any]] = {
    "paper": {"stem": 32, "widths": (64, 128, 256), "blocks": 4},
    "cpu": {"stem": 16, "widths": (16, 32, 64), "blocks": 2},
    "smoke": {"stem": 4, "widths": (4, 8, 8), "blocks": 1},
}
"""Network sizes per profile: Rebuffi et al.'s ResNet-26 (App. A.2), and slim CPU ones."""
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CURRICULUM_TEMPERATURE = 0.3
CURRICULUM_OFFSET = 0.15
"""``p ∝ softmax(log(1 − acc + offset) / temperature)`` (the authors' code, App. A.2)."""
DISTILL_TARGETS: tuple[str, ...] = ("blocks", "stage")
"""What the student matches: each block's output from the teacher's block input, or the
stage's output from the stage's input (see :func:`distill`)."""


# --------------------------------------------------------------------------------------------
# Masks
# --------------------------------------------------------------------------------------------
def _as_mask(name: str, value: Any) -> Tensor:
    """``value`` as a float32 2-D tensor holding only 0 and 1, else ``ConfigError``."""
    try:
        array = np.asarray(
            value.detach().cpu() if isinstance(value, Tensor) else value, dtype=np.float64
        )
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{name} must be a numeric channels × tasks array ({error})") from None
    if array.ndim != 2:
        raise ConfigError(
            f"{name} must be a 2-D channels × tasks array; got shape {tuple(array.shape)}"
        )
    bad = np.argwhere(~np.isin(array, (0.0, 1.0)))
    if len(bad):
        k, t = bad[0]
        raise ConfigError(
            f"{name} must hold only 0 and 1; found {float(array[k, t])!r} at channel {k}, task "
            f"column {t} ({len(bad)} such entries)"
        )
    return torch.from_numpy(array.astype(np.float32))


def check_masks(
    forward: Any,
    backward: Any = None,
    *,
    channels: int | None = None,
    tasks: Sequence[str] | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Validate partition masks (§3) and return them as float32 ``channels × tasks`` tensors.

    Args:
        forward: ``m_f`` of every task, a 0/1 array of shape ``(c, n)`` (``M`` of §3.1).
        backward: ``m_b`` of every task, same shape, ``m_b ⊆ m_f`` column by column; or
            ``None``.
        channels: the required ``c`` (channels of the partitioned stage), or ``None``.
        tasks: the task names in column order (sets the required ``n`` and names tasks in
            messages), or ``None``.

    Raises:
        ConfigError: wrong dimensionality or shape, an entry other than 0 / 1, or a backward
            mask selecting a channel outside its task's forward mask.
    """
    masks = {"forward mask": _as_mask("forward mask", forward)}
    if backward is not None:
        masks["backward mask"] = _as_mask("backward mask", backward)
    for name, mask in masks.items():
        c, n = mask.shape
        want_c = c if channels is None else channels
        want_n = n if tasks is None else len(tasks)
        if (c, n) != (want_c, want_n):
            raise ConfigError(
                f"{name} has shape ({c}, {n}); the partitioned stage needs ({want_c}, {want_n})"
                " = channels × tasks"
            )
    m_f, m_b = masks["forward mask"], masks.get("backward mask")
    if m_b is not None:
        if m_b.shape != m_f.shape:
            raise ConfigError(
                f"backward mask has shape {tuple(m_b.shape)}, the forward mask "
                f"{tuple(m_f.shape)}; they must agree"
            )
        outside = (m_b > m_f).nonzero()
        if len(outside):
            t = int(outside[0, 1])
            label = repr(tasks[t]) if tasks is not None else f"column {t}"
            channels_out = outside[outside[:, 1] == t, 0].tolist()
            raise ConfigError(
                f"backward mask of task {label} selects channels {channels_out} outside its "
                "forward mask; m_b must be a subset of m_f (§3)"
            )
    return m_f, m_b


def partition_parameter_counts(model: PartitionResNet, masks: Any = None) -> dict[str, int]:
    """Conv weights of the partitioned stage each task uses (§3: channel ``k`` of a block owns
    row ``k`` of ``conv1`` and column ``k`` of ``conv2``; ``conv2``'s outputs are shared).

    Args:
        model: the network.
        masks: forward masks ``(c, n)``; ``None`` for the model's own.

    Returns:
        Task name -> weights it uses, plus ``"union"`` (used by any task: what a pruned
        multi-task network keeps) and ``"full"`` (the unpartitioned stage).
    """
    m_f = (
        model.forward_masks
        if masks is None
        else check_masks(masks, channels=model.partition_channels, tasks=model.task_names)[0]
    )
    per_channel = 0  # weights owned by one channel of one block, summed over the blocks
    for block in model.stages[-1]:
        w1, w2 = block.conv1.conv.weight, block.conv2.conv.weight
        per_channel += w1[0].numel() + w2[:, 0].numel()
    full = sum(b.conv1.conv.weight.numel() + b.conv2.conv.weight.numel() for b in model.stages[-1])
    counts = {name: int(m_f[:, t].sum()) * per_channel for t, name in enumerate(model.task_names)}
    counts["union"] = int((m_f.sum(1) > 0).sum()) * per_channel
    counts["full"] = full
    return counts


# --------------------------------------------------------------------------------------------
# The network
# --------------------------------------------------------------------------------------------
class ConvTask(nn.Module):
    """``conv3x3 → BN`` with one BN per task (Rebuffi et al.'s ``conv_task``; App. A.2)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, num_tasks: int) -> None:
        """Args:
        in_channels: input channels.
        out_channels: output channels.
        stride: the conv's stride.
        num_tasks: BN modules to hold, one per task.
        """
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bns = nn.ModuleList(nn.BatchNorm2d(out_channels) for _ in range(num_tasks))

    def forward(self, x: Tensor, task: int) -> Tensor:
        """Args:
        x: input features.
        task: index of the task whose BN normalises.
        """
        return self.bns[task](self.conv(x))


class MaskSite(nn.Module):
    """Multiplies features by a per-channel 0/1 mask (§3's ``F · m_f``); identity for ``None``.

    A module of its own so that forward hooks can observe the masked tensor.
    """

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        """Args:
        x: features ``(B, c, h, w)``.
        mask: ``(c,)`` 0/1 mask, or ``None``.
        """
        return x if mask is None else x * mask.view(1, -1, 1, 1)


class PartitionBlock(nn.Module):
    """Rebuffi et al.'s basic block, ``conv1 → mask → ReLU → conv2 (+ shortcut) → ReLU``."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, num_tasks: int) -> None:
        """Args:
        in_channels: input channels (``<= out_channels``: the shortcut appends zeros).
        out_channels: the block's channels (``c`` of the masks).
        stride: stride of ``conv1`` and of the shortcut's average pool.
        num_tasks: tasks (BN modules per site).
        """
        super().__init__()
        self.conv1 = ConvTask(in_channels, out_channels, stride, num_tasks)
        self.mask_site = MaskSite()
        self.conv2 = ConvTask(out_channels, out_channels, 1, num_tasks)
        self.stride = stride
        self.pad = out_channels - in_channels

    def forward(self, x: Tensor, task: int, mask: Tensor | None = None) -> Tensor:
        """Args:
        x: input features.
        task: task index (its BN modules).
        mask: the task's forward mask ``(c,)`` on ``conv1``'s output, or ``None``.
        """
        y = F.relu(self.mask_site(self.conv1(x, task), mask))
        y = self.conv2(y, task)
        residual = F.avg_pool2d(x, self.stride) if self.stride != 1 else x
        if self.pad:
            residual = F.pad(residual, (0, 0, 0, 0, 0, self.pad))
        return F.relu(y + residual)


class PartitionStage(nn.ModuleList):
    """A stage of :class:`PartitionBlock` s, the first of the given stride."""

    def __init__(
        self, in_channels: int, channels: int, blocks: int, stride: int, num_tasks: int
    ) -> None:
        """Args:
        in_channels: the stage's input channels.
        channels: its width.
        blocks: number of blocks.
        stride: the first block's stride.
        num_tasks: tasks (BN modules per site).
        """
        super().__init__(
            PartitionBlock(
                in_channels if k == 0 else channels, channels, stride if k == 0 else 1, num_tasks
            )
            for k in range(blocks)
        )
        self.channels = channels

    def forward(self, x: Tensor, task: int, mask: Tensor | None = None) -> Tensor:  # type: ignore[override]
        """The stage's output for one task (mask ``(c,)`` on every block's ``conv1``)."""
        for block in self:
            x = block(x, task, mask)
        return x

    def block_outputs(self, x: Tensor, task: int, mask: Tensor | None = None) -> list[Tensor]:
        """Every block's output, in order (the features :func:`distill` matches)."""
        outputs = []
        for block in self:
            x = block(x, task, mask)
            outputs.append(x)
        return outputs


def _init_weights(module: nn.Module) -> None:
    """Rebuffi et al.'s initialisation: convs ``N(0, 2 / (k²·c_out))``, BN ``γ = 1, β = 0``."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            nn.init.normal_(m.weight, 0.0, (2.0 / n) ** 0.5)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class PartitionResNet(nn.Module):
    """The Decathlon ResNet-26 with per-task BN, per-task heads and forward masks (§3, A.2).

    ``forward(images)`` returns ``{task: logits (B, classes)}`` (the
    :class:`~mtlrepro.models.multitask.MultiTaskModel` contract): each task's path -- its BN
    modules, its mask on the last stage, its end BN and head -- on the whole batch, or, after
    :meth:`route`, on its own samples only (zeros elsewhere; the module doc says why).
    ``forward(images, task=name)`` returns that task's logits on the whole batch.

    Attributes:
        stem: the first conv (``conv3x3 → BN``, no ReLU, as in Rebuffi et al.'s code).
        stages: the three stages; the last one (``stages[-1]``) is partitioned.
        end_bns: per task, the final BN (followed by a ReLU).
        heads: per task, global average pool → linear (a :class:`TaskModuleDict`).
        task_specs: task name -> spec, in head order.
        forward_masks: buffer ``(c, n)``, the tasks' forward masks (all ones at first).
    """

    def __init__(
        self,
        task_specs: Mapping[str, TaskSpec] | Sequence[TaskSpec],
        widths: Sequence[int] = ARCHITECTURES["paper"]["widths"],
        blocks: int | Sequence[int] = ARCHITECTURES["paper"]["blocks"],
        stem: int = ARCHITECTURES["paper"]["stem"],
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        """Args:
        task_specs: the tasks, all of kind ``classification``.
        widths: channels of each stage (non-decreasing from ``stem``; the zero-padding
            shortcut cannot drop channels).
        blocks: blocks per stage (one number for all, or one per stage).
        stem: channels of the first conv.
        mean: per-channel input mean subtracted from images in [0, 1].
        std: per-channel input standard deviation dividing them.
        """
        super().__init__()
        specs = list(task_specs.values()) if isinstance(task_specs, Mapping) else list(task_specs)
        if not specs:
            raise ConfigError("PartitionResNet needs at least one task")
        for spec in specs:
            if not isinstance(spec, TaskSpec) or spec.kind != "classification":
                raise ConfigError(
                    f"PartitionResNet has classification heads only; got task {spec!r}"
                )
        names = [spec.name for spec in specs]
        if len(set(names)) != len(names):
            raise ConfigError(f"duplicate task names in {names}")
        widths = tuple(widths)
        if not widths:
            raise ConfigError("PartitionResNet needs at least one stage width")
        per_stage = (blocks,) * len(widths) if isinstance(blocks, int) else tuple(blocks)
        if len(per_stage) != len(widths):
            raise ConfigError(f"blocks {per_stage} must give one count per stage {widths}")
        check_range("stem", stem, 1, integer=True)
        for k, (width, count) in enumerate(zip(widths, per_stage, strict=True)):
            check_range(f"widths[{k}]", width, 1, integer=True)
            check_range(f"blocks[{k}]", count, 1, integer=True)
        channels = (stem, *widths)
        if any(b < a for a, b in zip(channels, channels[1:], strict=False)):
            raise ConfigError(f"stem and widths {channels} must not decrease (zero-pad shortcut)")
        n = len(specs)
        self.task_specs = {spec.name: spec for spec in specs}
        self.widths, self.blocks, self.stem_width = widths, per_stage, stem
        self.stem = ConvTask(3, stem, 1, n)
        self.stages = nn.ModuleList(
            PartitionStage(channels[k], channels[k + 1], per_stage[k], 2, n)
            for k in range(len(widths))
        )
        self.end_bns = nn.ModuleList(nn.BatchNorm2d(widths[-1]) for _ in range(n))
        self.heads = TaskModuleDict(
            {spec.name: ClassificationHead(widths[-1], spec.num_classes) for spec in specs}
        )
        self.register_buffer("input_mean", torch.tensor(tuple(mean)).view(1, -1, 1, 1))
        self.register_buffer("input_std", torch.tensor(tuple(std)).view(1, -1, 1, 1))
        self.register_buffer("forward_masks", torch.ones(widths[-1], n))
        self._routing: tuple[int, dict[str, Tensor]] | None = None
        _init_weights(self)

    # --- description ----------------------------------------------------------------------
    @property
    def task_names(self) -> tuple[str, ...]:
        """Task names in head (mask column) order."""
        return tuple(self.task_specs)

    @property
    def partition_channels(self) -> int:
        """``c``: channels of the partitioned (last) stage."""
        return self.widths[-1]

    def task_index(self, task: str | int) -> int:
        """The column / BN index of a task given by name or index."""
        if isinstance(task, int) and not isinstance(task, bool):
            check_range("task index", task, 0, len(self.task_names) - 1, integer=True)
            return task
        return self.task_names.index(check_choice("task", task, self.task_names))

    def early_parameters(self) -> list[nn.Parameter]:
        """The stem's and every stage's but the last: the part App. A.2 freezes."""
        return [*self.stem.parameters(), *(p for s in self.stages[:-1] for p in s.parameters())]

    # --- masks ----------------------------------------------------------------------------
    def set_masks(self, forward_masks: Any) -> None:
        """Set every task's forward mask (§3).

        Args:
            forward_masks: 0/1 array ``(c, n)``, column ``t`` = task ``task_names[t]``.

        Raises:
            ConfigError: see :func:`check_masks`.
        """
        m_f, _ = check_masks(forward_masks, channels=self.partition_channels, tasks=self.task_names)
        self.forward_masks.copy_(m_f)

    def gradient_masks(self, backward_masks: Any = None) -> dict[str, dict[str, Tensor]]:
        """Per-task weight-gradient masks of the partitioned stage (§3): task -> parameter
        name -> mask, ``m_b`` over ``conv1``'s output channels and ``conv2``'s input channels
        of every block (the form of :meth:`~mtlrepro.train.Hooks.task_gradient_masks`).

        Args:
            backward_masks: ``m_b``, 0/1 ``(c, n)`` with ``m_b ⊆ m_f``; ``None`` for
                ``m_b = m_f``.
        """
        m_f = self.forward_masks.detach().cpu()
        _, m_b = check_masks(
            m_f,
            m_f if backward_masks is None else backward_masks,
            channels=self.partition_channels,
            tasks=self.task_names,
        )
        assert m_b is not None
        device = self.forward_masks.device
        last = len(self.stages) - 1
        out: dict[str, dict[str, Tensor]] = {}
        for t, name in enumerate(self.task_names):
            column = m_b[:, t].to(device)
            rows, cols = column.view(-1, 1, 1, 1), column.view(1, -1, 1, 1)
            out[name] = {}
            for k in range(len(self.stages[-1])):
                prefix = f"stages.{last}.{k}"
                out[name][f"{prefix}.conv1.conv.weight"] = rows
                out[name][f"{prefix}.conv2.conv.weight"] = cols
        return out

    # --- routing --------------------------------------------------------------------------
    def route(self, members: Mapping[str, Tensor]) -> None:
        """Make the next ``forward(images)`` run each task on its own samples only.

        Used once, then forgotten.  A sample may belong to several tasks, or to none.

        Args:
            members: task name -> boolean ``(B,)``, whether each sample belongs to the task;
                every task of the model, one batch size.
        """
        if set(members) != set(self.task_names):
            raise ConfigError(f"route needs the tasks {list(self.task_names)}; got {list(members)}")
        sizes = {int(m.shape[0]) for m in members.values()}
        if len(sizes) != 1 or any(m.dim() != 1 for m in members.values()):
            raise ConfigError("route needs one boolean vector of the batch's size per task")
        self._routing = (
            sizes.pop(),
            {name: m.to(torch.bool).nonzero().flatten() for name, m in members.items()},
        )

    # --- forward --------------------------------------------------------------------------
    def normalise(self, images: Tensor) -> Tensor:
        """``(images - mean) / std``; images are floats in [0, 1], ``(B, 3, H, W)``."""
        return (images - self.input_mean) / self.input_std

    def encode(self, images: Tensor, task: str | int) -> Tensor:
        """The input of the partitioned stage: normalise, stem, every stage but the last,
        with the task's BN modules."""
        t = self.task_index(task)
        x = self.stem(self.normalise(images), t)
        for stage in self.stages[:-1]:
            x = stage(x, t)
        return x

    def partitioned(self, features: Tensor, task: str | int) -> Tensor:
        """The last stage on ``encode``'s output, with the task's BN and forward mask."""
        t = self.task_index(task)
        return self.stages[-1](features, t, self.forward_masks[:, t])

    def classify(self, features: Tensor, task: str | int) -> Tensor:
        """Logits from the last stage's output: the task's end ``BN → ReLU`` and head."""
        t = self.task_index(task)
        return self.heads[self.task_names[t]](F.relu(self.end_bns[t](features)))

    def task_forward(self, images: Tensor, task: str | int) -> Tensor:
        """One task's logits ``(B, classes)`` on the whole batch."""
        return self.classify(self.partitioned(self.encode(images, task), task), task)

    def forward(self, images: Tensor, task: str | None = None) -> dict[str, Tensor] | Tensor:
        """Args:
        images: floats in [0, 1], ``(B, 3, H, W)``.
        task: a task name for that task's logits alone, or ``None`` for every task's.

        Returns:
            ``{task: logits (B, classes)}``, or one task's logits.
        """
        if task is not None:
            return self.task_forward(images, task)
        routing, self._routing = self._routing, None
        if routing is None:
            return {name: self.task_forward(images, name) for name in self.task_names}
        size, members = routing
        if size != images.shape[0]:
            raise ConfigError(f"route was given {size} samples; the batch has {images.shape[0]}")
        out = {}
        for name, index in members.items():
            logits = images.new_zeros(size, self.task_specs[name].num_classes)
            if index.numel():
                logits = logits.index_copy(0, index, self.task_forward(images[index], name))
            out[name] = logits
        return out


def create_partition_resnet(
    task_specs: Mapping[str, TaskSpec] | Sequence[TaskSpec], profile: str = "cpu", **overrides: Any
) -> PartitionResNet:
    """A :class:`PartitionResNet` of a profile's size (:data:`ARCHITECTURES`).

    Args:
        task_specs: the classification tasks.
        profile: ``"paper"``, ``"cpu"`` or ``"smoke"``.
        **overrides: constructor arguments replacing the profile's.
    """
    check_choice("profile", profile, tuple(ARCHITECTURES))
    return PartitionResNet(task_specs, **(ARCHITECTURES[profile] | overrides))


# --------------------------------------------------------------------------------------------
# Full training (App. A.2)
# --------------------------------------------------------------------------------------------
def curriculum_probabilities(
    accuracy: Sequence[float],
    temperature: float = CURRICULUM_TEMPERATURE,
    offset: float = CURRICULUM_OFFSET,
) -> np.ndarray:
    """Task-sampling probabilities ``softmax(log(1 − acc + offset) / temperature)`` (App. A.2,
    the authors' code): tasks that lag behind are drawn more often.

    Args:
        accuracy: each task's training accuracy as a fraction in [0, 1].
        temperature: ``> 0``; large -> uniform, small -> the worst task.
        offset: ``> 0``, keeps a task at accuracy 1 drawable.
    """
    check_range("temperature", temperature, 0.0, low_inclusive=False)
    check_range("offset", offset, 0.0, low_inclusive=False)
    acc = np.asarray(accuracy, dtype=np.float64)
    if acc.ndim != 1 or not len(acc) or ((acc < 0) | (acc > 1) | ~np.isfinite(acc)).any():
        raise ConfigError(f"accuracy must be fractions in [0, 1], one per task; got {accuracy}")
    logits = np.log(1.0 - acc + offset) / temperature
    weights = np.exp(logits - logits.max())
    return weights / weights.sum()


def task_members(dataset: Any, tasks: Sequence[str]) -> dict[str, Tensor]:
    """Per task, the indices of a split's samples that belong to it (target ``>= 0``), read
    from the split's label tensors without loading images (``targets`` of a lazy dataset,
    ``tensors`` of an in-memory one).

    Args:
        dataset: a split of ``decathlon`` or ``visual_decathlon``.
        tasks: the task names.
    """
    labels = getattr(dataset, "targets", None)
    if labels is None:
        labels = getattr(dataset, "tensors", None)
    if labels is None or any(name not in labels for name in tasks):
        raise ConfigError(
            f"{type(dataset).__name__} exposes no labels of the tasks {list(tasks)} "
            "(``targets`` or ``tensors``)"
        )
    return {name: (torch.as_tensor(labels[name]) >= 0).nonzero().flatten() for name in tasks}


class PartitionTraining(Hooks):
    """The training-loop hooks of paper E's full training (§3, App. A.2); see the module doc.

    Use with :func:`~mtlrepro.train.fit`, :func:`~mtlrepro.tasks.make_tasks` (a classification
    target ``-1``, a sample of another domain, gives no loss and is not counted), a balancer with
    ``gradient="sum"`` (e.g. ``"equal"``), SGD with momentum and ``weight_decay=0``.

    History rows (split ``"curriculum"``, at each epoch end): per task ``accuracy`` (fraction,
    the curriculum's input) and ``p`` (its sampling probability for the next epoch).
    """

    per_task_optimizer_state = True

    def __init__(
        self,
        model: PartitionResNet,
        backward_masks: Any = None,
        *,
        curriculum: bool = True,
        temperature: float = CURRICULUM_TEMPERATURE,
        offset: float = CURRICULUM_OFFSET,
        freeze_early: bool = True,
        seed: int = 0,
    ) -> None:
        """Args:
        model: the network (its forward masks are ``m_f``; set them first).
        backward_masks: ``m_b`` ``(c, n)`` with ``m_b ⊆ m_f``; ``None`` for ``m_b = m_f``.
        curriculum: draw tasks by :func:`curriculum_probabilities` (else uniformly).
        temperature: the curriculum's temperature (0.3, the authors' code).
        offset: the curriculum's offset (0.15, the authors' code).
        freeze_early: leave the stem and the first two stages out of the optimiser (App. A.2).
        seed: seed of the task draws (pass ``TrainConfig.seed``).
        """
        self.task_names = model.task_names
        self.masks = model.gradient_masks(backward_masks)  # validates m_b ⊆ m_f
        self.curriculum, self.freeze_early = bool(curriculum), bool(freeze_early)
        curriculum_probabilities([0.0], temperature, offset)  # validates both
        self.temperature, self.offset = temperature, offset
        self.seed = check_range("seed", seed, 0, integer=True)
        n = len(self.task_names)
        self.accuracy = [0.0] * n
        self._correct, self._count = [0] * n, [0] * n
        self._step: int | None = None
        self._task: str | None = None

    def probabilities(self) -> np.ndarray:
        """The current sampling probabilities of the tasks (uniform without curriculum)."""
        if not self.curriculum:
            return np.full(len(self.task_names), 1.0 / len(self.task_names))
        return curriculum_probabilities(self.accuracy, self.temperature, self.offset)

    def draw(self, step: int, present: Sequence[bool] | None = None) -> str:
        """The task a step trains: drawn from :meth:`probabilities` restricted to the tasks
        present in the batch, by a generator seeded with ``(seed, step)``.

        Args:
            step: the 1-based step.
            present: per task, whether the batch holds a sample of it (``None``: all).
        """
        p = self.probabilities()
        if present is not None:
            p = p * np.asarray(present, dtype=np.float64)
            if p.sum() == 0:
                raise ConfigError(f"step {step}: the batch holds no sample of any task")
            p = p / p.sum()
        rng = np.random.default_rng([self.seed, step])
        return self.task_names[int(rng.choice(len(p), p=p))]

    # --- the loop's seams -----------------------------------------------------------------
    def epoch_batches(
        self, dataset: Any, batch_size: int, seed: int, epoch: int
    ) -> list[Tensor]:
        """Single-task batches (App. A.2, the authors' code: each step draws a task by the
        curriculum, then a batch of that task's samples): step ``s`` of the epoch trains the
        task :meth:`draw` picks for ``s``, on the next ``batch_size`` samples of a shuffle of
        that task's samples (seeded by ``(seed, epoch, task)``; reshuffled when used up; all
        of them if fewer).  Tasks without samples in the split are not drawn.  The epoch has
        ``len(dataset) // batch_size`` steps, as the loop counts.

        Args:
            dataset: the training split; a sample belongs to the tasks whose target is
                ``>= 0`` (:func:`task_members`).
            batch_size: samples per step.
            seed: the run's seed.
            epoch: the 1-based epoch.
        """
        members = task_members(dataset, self.task_names)
        present = [bool(index.numel()) for index in members.values()]
        if not any(present):
            raise ConfigError(
                f"the training split holds no sample of any of the tasks {list(self.task_names)}"
            )
        steps = max(1, len(dataset) // batch_size)
        first = (epoch - 1) * steps + 1
        drawn = [
            self.task_names.index(self.draw(step, present))
            for step in range(first, first + steps)
        ]
        batches: list[Tensor] = []
        queues: dict[int, list[Tensor]] = {}
        for t in drawn:
            index = members[self.task_names[t]]
            queue = queues.setdefault(t, [])
            if not queue:
                generator = torch.Generator().manual_seed(
                    (seed * 1_000_003 + epoch * 1_009 + t * 7_919 + len(batches)) % 2**63
                )
                order = index[torch.randperm(len(index), generator=generator)]
                queue.extend(order.split(batch_size) if len(order) > batch_size else [order])
            batches.append(queue.pop(0))
        return batches

    def excluded_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        """The stem and the first two stages when ``freeze_early`` (App. A.2)."""
        return model.early_parameters() if self.freeze_early else []

    def before_step(self, model: nn.Module, batch: Mapping[str, Tensor], step: int) -> None:
        """Route each task's samples (target ``>= 0``) to its path and draw the step's task."""
        members = {name: batch[name] >= 0 for name in self.task_names}
        if model.training:
            model.route(members)
        self._step = step
        self._task = self.draw(step, [bool(m.any()) for m in members.values()])

    def step_task(self, step: int) -> str | None:
        """The task drawn in :meth:`before_step` (App. A.2: one task per step)."""
        if self._step != step:  # called without before_step: draw among all tasks
            self._step, self._task = step, self.draw(step)
        return self._task

    def task_gradient_masks(self, model: nn.Module) -> dict[str, dict[str, Tensor]]:
        """``m_b`` on the partitioned convs' weight gradients, per task (§3)."""
        device = model.forward_masks.device
        if next(iter(next(iter(self.masks.values())).values())).device != device:
            self.masks = {
                t: {k: v.to(device) for k, v in by.items()} for t, by in self.masks.items()
            }
        return self.masks

    def extra_loss(
        self, model: nn.Module, batch: Mapping[str, Tensor], preds: Mapping[str, Tensor]
    ) -> Tensor | None:
        """No loss: counts each task's correct predictions on its own samples (the
        curriculum's training accuracy)."""
        with torch.no_grad():
            for t, name in enumerate(self.task_names):
                keep = batch[name] >= 0
                if bool(keep.any()):
                    hits = preds[name][keep].argmax(1) == batch[name][keep]
                    self._correct[t] += int(hits.sum())
                    self._count[t] += int(keep.sum())
        return None

    def end_of_epoch(self, model: nn.Module, epoch: int, trainer_state: TrainerState) -> None:
        """The epoch's training accuracies become the curriculum's; logs them and ``p``."""
        for t in range(len(self.task_names)):
            if self._count[t]:
                self.accuracy[t] = self._correct[t] / self._count[t]
        self._correct, self._count = [0] * len(self.task_names), [0] * len(self.task_names)
        for name, acc, p in zip(self.task_names, self.accuracy, self.probabilities(), strict=True):
            trainer_state.log("accuracy", acc, task=name, split="curriculum")
            trainer_state.log("p", float(p), task=name, split="curriculum")

    def state_dict(self) -> dict[str, Any]:
        """The curriculum's accuracies and the running counts."""
        return {
            "accuracy": list(self.accuracy),
            "correct": list(self._correct),
            "count": list(self._count),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.accuracy = [float(a) for a in state["accuracy"]]
        self._correct = [int(c) for c in state["correct"]]
        self._count = [int(c) for c in state["count"]]


# --------------------------------------------------------------------------------------------
# Feature distillation (§4.2)
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DistillConfig:
    """Settings of :func:`distill`; defaults are the paper's (App. A.2).

    Attributes:
        iterations: SGD steps (3,000).
        batch_size: samples per step, all of one task (4).
        lr: learning rate (1).
        momentum: SGD momentum (the paper names none: 0).
        drop_at: the step after which the lr is multiplied by ``drop_factor`` (2,000), or
            ``None``.
        drop_factor: the lr drop (0.1).
        targets: ``"blocks"`` (each student block matches the teacher block's output from
            the teacher block's input; Fig. 2) or ``"stage"`` (the stage's output from its
            input).
        eval_batch_size: samples per forward pass when scoring.
        seed: seed of the student's initialisation and of the batches.
    """

    iterations: int = 3000
    batch_size: int = 4
    lr: float = 1.0
    momentum: float = 0.0
    drop_at: int | None = 2000
    drop_factor: float = 0.1
    targets: str = "blocks"
    eval_batch_size: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        """Check every field; raises ``ConfigError``."""
        for name in ("iterations", "batch_size", "eval_batch_size"):
            check_range(f"DistillConfig.{name}", getattr(self, name), 1, integer=True)
        check_range("DistillConfig.lr", self.lr, 0.0, low_inclusive=False)
        check_range("DistillConfig.momentum", self.momentum, 0.0, 1.0, high_inclusive=False)
        if self.drop_at is not None:
            check_range("DistillConfig.drop_at", self.drop_at, 1, integer=True)
        check_range("DistillConfig.drop_factor", self.drop_factor, 0.0, 1.0, low_inclusive=False)
        check_choice("DistillConfig.targets", self.targets, DISTILL_TARGETS)
        check_range("DistillConfig.seed", self.seed, 0, integer=True)


@dataclass
class DistillResult:
    """What :func:`distill` returns.

    Attributes:
        score: the search score, the mean over tasks of ``task_scores`` (§4.2).
        task_scores: task -> accuracy with the student substituted / reference accuracy.
        accuracy: task -> accuracy (fraction) of the teacher with the student substituted.
        reference: task -> the reference accuracy (the teacher's own by default).
        losses: the distillation loss of every step.
        seconds: wall-clock seconds of the distillation steps.
        eval_seconds: wall-clock seconds of scoring.
        student: the distilled stage (per-task BN; use with the masks' columns).
    """

    score: float
    task_scores: dict[str, float]
    accuracy: dict[str, float]
    reference: dict[str, float]
    losses: list[float]
    seconds: float
    eval_seconds: float
    student: PartitionStage = field(repr=False)


@torch.no_grad()
def _accuracy(
    teacher: PartitionResNet,
    images: Tensor,
    labels: Tensor,
    batch_size: int,
    stage: PartitionStage | None = None,
    task: int = 0,
    mask: Tensor | None = None,
) -> float:
    """Accuracy (fraction) of the teacher, its last stage replaced by ``stage`` if given."""
    correct = 0
    for x, y in zip(images.split(batch_size), labels.split(batch_size), strict=True):
        features = teacher.encode(x, 0)
        features = (
            teacher.partitioned(features, 0) if stage is None else stage(features, task, mask)
        )
        correct += int((teacher.classify(features, 0).argmax(1) == y).sum())
    return correct / len(labels)


def distill(
    teachers: Mapping[str, PartitionResNet],
    masks: Any,
    train_images: Mapping[str, Tensor],
    eval_sets: Mapping[str, tuple[Tensor, Tensor]],
    config: DistillConfig = DistillConfig(),
    init: PartitionStage | None = None,
    reference: Mapping[str, float] | None = None,
) -> DistillResult:
    """Score a partition by feature distillation (§4.2, Fig. 2, App. A.2).

    A student -- one set of shared blocks for the partitioned stage, with one BN per task and
    task ``t``'s forward mask on each block's ``conv1`` output -- is trained with MSE to
    reproduce each single-task teacher's features there: a step takes ``batch_size`` images of
    one task, tasks in turn ("alternate mini-batches uniformly across each task", no
    curriculum; Fig. 2: "a teacher ... is chosen"), passes them through that teacher up to the
    stage's input (its own frozen early stages, eval mode), and matches every block's output
    (``targets="blocks"``: each student block gets the teacher block's input -- "features at
    a target depth ... passed through the next residual block of both the teacher and
    student", applied to "the last four ResNet layers at once"; the loss is the sum of the
    blocks' MSEs) or the stage's output (``"stage"``).  SGD at lr 1, ×0.1 after 2,000 of
    3,000 steps (App. A.2).  The teachers stay frozen (eval mode); the student trains its
    per-task BN in training mode.

    Score: per task, the accuracy of the teacher with its last stage replaced by the student
    (task ``t``'s BN and mask, eval mode) divided by a reference accuracy (default: the
    teacher's own on the same images); the search score is the mean over tasks (the authors'
    code).

    A plain loop rather than :func:`~mtlrepro.train.fit`: the targets are frozen teachers'
    features, not the tasks' labels, batches are one task's and taken in turn, the lr drops
    at an iteration, and the run lasts a minute with nothing to checkpoint or evaluate on the
    way -- a proxy evaluation of a partition, called hundreds of times by a search.

    Args:
        teachers: task name -> a trained single-task :class:`PartitionResNet`; all of one
            architecture.  Not modified.
        masks: forward masks ``(c, n)``, columns in ``teachers``' order.
        train_images: task name -> images ``(N, 3, H, W)`` in [0, 1] to distill on.
        eval_sets: task name -> ``(images, labels)`` to score on.
        config: the distillation settings.
        init: a stage of the same shape to start the student from (its convs, and its BN
            ``t``, or BN 0 if it has one task, for task ``t``); ``None`` for a fresh Rebuffi
            initialisation from ``config.seed`` (the paper starts from ImageNet weights).
        reference: task -> reference accuracy (fraction, ``> 0``); ``None`` for the teachers'.

    Returns:
        The score, per-task results, the loss of every step and the wall-clock times.
    """
    names = list(teachers)
    if not names:
        raise ConfigError("distill needs at least one teacher")
    for data, label in ((train_images, "train_images"), (eval_sets, "eval_sets")):
        if set(data) != set(names):
            raise ConfigError(f"{label} has tasks {list(data)}; the teachers are {names}")
    first = teachers[names[0]]
    shape = [tuple(p.shape) for p in first.stages[-1].parameters()]
    for name, teacher in teachers.items():
        if not isinstance(teacher, PartitionResNet) or len(teacher.task_names) != 1:
            raise ConfigError(f"teacher {name!r} must be a single-task PartitionResNet")
        if [tuple(p.shape) for p in teacher.stages[-1].parameters()] != shape:
            raise ConfigError(f"teacher {name!r}'s last stage differs from {names[0]!r}'s")
    m_f, _ = check_masks(masks, channels=first.partition_channels, tasks=names)
    device = first.forward_masks.device
    m_f = m_f.to(device)
    n = len(names)
    stage = first.stages[-1]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        student = PartitionStage(
            stage[0].conv1.conv.in_channels, stage.channels, len(stage), 2, n
        ).to(device)
        _init_weights(student)
    if init is not None:
        _copy_stage(init, student)
    was_training = {name: t.training for name, t in teachers.items()}
    for teacher in teachers.values():
        teacher.eval()
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.SGD(student.parameters(), lr=config.lr, momentum=config.momentum)
    losses: list[float] = []
    start = time.perf_counter()
    student.train()
    try:
        for step in range(config.iterations):
            if config.drop_at is not None and step == config.drop_at:
                for group in optimizer.param_groups:
                    group["lr"] = config.lr * config.drop_factor
            t = step % n
            name = names[t]
            images = train_images[name]
            index = torch.randint(len(images), (config.batch_size,), generator=generator)
            teacher = teachers[name]
            with torch.no_grad():
                x = teacher.encode(images[index].to(device), 0)
                targets = teacher.stages[-1].block_outputs(x, 0)
            mask = m_f[:, t]
            if config.targets == "blocks":
                inputs = [x, *targets[:-1]]
                loss = sum(
                    F.mse_loss(block(inp, t, mask), target)
                    for block, inp, target in zip(student, inputs, targets, strict=True)
                )
            else:
                loss = F.mse_loss(student(x, t, mask), targets[-1])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
        seconds = time.perf_counter() - start
        start = time.perf_counter()
        student.eval()
        accuracy, refs, scores = {}, {}, {}
        for t, name in enumerate(names):
            images, labels = eval_sets[name]
            images, labels = images.to(device), labels.to(device)
            accuracy[name] = _accuracy(
                teachers[name], images, labels, config.eval_batch_size, student, t, m_f[:, t]
            )
            if reference is not None and name in reference:
                refs[name] = float(reference[name])
            else:
                refs[name] = _accuracy(teachers[name], images, labels, config.eval_batch_size)
            if not refs[name] > 0:
                raise ConfigError(f"reference accuracy of task {name!r} is {refs[name]}; need > 0")
            scores[name] = accuracy[name] / refs[name]
        eval_seconds = time.perf_counter() - start
    finally:
        for name, teacher in teachers.items():
            teacher.train(was_training[name])
    return DistillResult(
        score=float(np.mean(list(scores.values()))),
        task_scores=scores,
        accuracy=accuracy,
        reference=refs,
        losses=losses,
        seconds=seconds,
        eval_seconds=eval_seconds,
        student=student,
    )


def _copy_stage(source: PartitionStage, target: PartitionStage) -> None:
    """Copy ``source``'s convs into ``target`` and, per task ``t`` of ``target``, ``source``'s
    BN ``t`` (or BN 0 when it has one)."""
    if not isinstance(source, PartitionStage) or len(source) != len(target):
        raise ConfigError("init must be a PartitionStage with the student's number of blocks")
    if len(source[0].conv1.bns) not in (1, len(target[0].conv1.bns)):
        raise ConfigError(
            f"init has BN modules for {len(source[0].conv1.bns)} tasks; need 1 or "
            f"{len(target[0].conv1.bns)}"
        )
    with torch.no_grad():
        for src, dst in zip(source, target, strict=True):
            for name in ("conv1", "conv2"):
                a, b = getattr(src, name), getattr(dst, name)
                if a.conv.weight.shape != b.conv.weight.shape:
                    raise ConfigError(
                        f"init's {name} has shape {tuple(a.conv.weight.shape)}; "
                        f"the student's is {tuple(b.conv.weight.shape)}"
                    )
                b.conv.weight.copy_(a.conv.weight)
                for t, bn in enumerate(b.bns):
                    bn.load_state_dict(
                        copy.deepcopy(a.bns[t if len(a.bns) > 1 else 0].state_dict())
                    )
