"""The hard-parameter-sharing multi-task model, the model registry and ``create_model``.

A :class:`MultiTaskModel` is one shared encoder--decoder backbone plus one head per task
("shared bottom").  A single-task network is the same model with one task.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from mtlrepro.config import ConfigError, check_choice
from mtlrepro.models.heads import make_head
from mtlrepro.models.onednn import avoid_onednn_strided_pointwise_bug
from mtlrepro.models.segnet import SegNet, init_mtan, segnet_config
from mtlrepro.registry import Registry
from mtlrepro.tasks import TaskSpec

MODELS: Registry = Registry("model")
"""Model builders ``(task_specs: dict[str, TaskSpec], **config_fields) -> MultiTaskModel``."""


class TaskModuleDict(nn.ModuleDict):
    """An ``nn.ModuleDict`` keyed by task name that accepts any task name.

    ``nn.ModuleDict`` refuses keys that are attributes of ``nn.Module`` (``type``, ``train``,
    ``float``, ...), but ``type`` is a real task name (vehicle type).  Items are stored and
    saved exactly as in ``nn.ModuleDict`` (state-dict keys ``<dict>.<task>.<param>``); only
    attribute access (``heads.type``) does not reach them -- use ``heads["type"]``.
    """

    def __setitem__(self, key: str, module: nn.Module) -> None:
        """Store ``module`` under task name ``key``.

        Args:
            key: a non-empty task name without ``.`` (which would break state-dict keys).
            module: the module to store.
        """
        if not isinstance(key, str) or not key or "." in key:
            raise ConfigError(f"task name must be a non-empty string without '.'; got {key!r}")
        if not isinstance(module, nn.Module):
            raise TypeError(f"{type(module).__name__} is not an nn.Module")
        self._modules[key] = module


class MultiTaskModel(nn.Module):
    """Shared backbone + one head per task; returns each task's raw output.

    The model normalises its input itself, ``(images - mean) / std`` per channel with fixed
    buffers, so datasets keep images as floats in [0, 1].  Dense heads read the backbone's
    decoder output; classification heads read the encoder bottleneck (they pool it globally).

    Attributes:
        backbone: the shared network; it provides ``encode(x) -> (bottleneck, state)`` and
            ``decode(bottleneck, state) -> features`` (see :class:`~mtlrepro.models.segnet.SegNet`
            and :class:`~mtlrepro.models.deeplab.DilatedResNet`).
        heads: task name -> head, in task order (a :class:`TaskModuleDict`).
        task_specs: task name -> :class:`~mtlrepro.tasks.TaskSpec`, in task order.
        config: the configuration the model was built from (self-description), or ``None``.
    """

    def __init__(
        self,
        backbone: nn.Module,
        heads: Mapping[str, nn.Module],
        task_specs: Mapping[str, TaskSpec],
        mean: tuple[float, ...],
        std: tuple[float, ...],
        channels_last: bool = False,
        config: Any = None,
    ) -> None:
        """Args:
        backbone: shared encoder--decoder.
        heads: task name -> head; same names and order as ``task_specs``.
        task_specs: task name -> spec; decides which heads read decoder or bottleneck features.
        mean: per-channel input mean subtracted from the images.
        std: per-channel input standard deviation dividing them.
        channels_last: run the network on channels-last activations (weights and gradients
            keep the standard layout; outputs are returned contiguous).
        config: configuration to keep on the model for self-description.

        Narrow strided 1×1 convolutions are routed around a oneDNN bug (exact; see
        :mod:`mtlrepro.models.onednn`).
        """
        super().__init__()
        if list(heads) != list(task_specs):
            raise ValueError(f"heads {list(heads)} and task_specs {list(task_specs)} differ")
        self.backbone = backbone
        self.heads = TaskModuleDict(heads)
        self.task_specs = dict(task_specs)
        self.config = config
        self.channels_last = channels_last
        self.register_buffer("input_mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("input_std", torch.tensor(std).view(1, -1, 1, 1))
        self._needs_decoder = any(spec.dense for spec in task_specs.values())
        avoid_onednn_strided_pointwise_bug(self)

    @property
    def task_names(self) -> tuple[str, ...]:
        """Task names in head order."""
        return tuple(self.heads)

    def normalise(self, images: Tensor) -> Tensor:
        """The network's input: ``(images - mean) / std``, channels-last if configured (the
        first step of :meth:`forward`).

        Args:
            images: float images in [0, 1], shape (B, 3, H, W).
        """
        x = (images - self.input_mean) / self.input_std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """Args:
        images: float images in [0, 1], shape (B, 3, H, W).

        Returns:
            Task name -> raw output: (B, out_channels, H, W) for dense tasks (logits, depth,
            unnormalised normals, binary logits), (B, num_classes) logits for classification.
        """
        x = (images - self.input_mean) / self.input_std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        bottleneck, state = self.backbone.encode(x)
        features = self.backbone.decode(bottleneck, state) if self._needs_decoder else None
        # Outputs are returned in the standard (contiguous) layout whatever the internal one.
        return {
            name: head(features if self.task_specs[name].dense else bottleneck).contiguous()
            for name, head in self.heads.items()
        }

    def shared_parameters(self) -> list[nn.Parameter]:
        """Parameters shared by all tasks (the backbone's)."""
        return list(self.backbone.parameters())

    def task_parameters(self, task: str) -> list[nn.Parameter]:
        """Parameters of one task's head.

        Args:
            task: a task name of this model.
        """
        check_choice("task", task, self.task_names)
        return list(self.heads[task].parameters())


def count_parameters(module: nn.Module) -> int:
    """Number of scalar parameters of ``module`` (each shared parameter counted once).

    Args:
        module: any module.
    """
    return sum(p.numel() for p in module.parameters())


def _spec_dict(task_specs: Mapping[str, TaskSpec] | Iterable[TaskSpec]) -> dict[str, TaskSpec]:
    """Task specs keyed by name; rejects an empty set, duplicates and mismatched keys."""
    if isinstance(task_specs, Mapping):
        for key, spec in task_specs.items():
            if key != spec.name:
                raise ConfigError(
                    f"task_specs key {key!r} differs from its spec's name {spec.name!r}"
                )
        specs = list(task_specs.values())
    else:
        specs = list(task_specs)
    out: dict[str, TaskSpec] = {}
    for spec in specs:
        if not isinstance(spec, TaskSpec):
            raise ConfigError(f"task specs must be TaskSpec objects; got {spec!r}")
        if spec.name in out:
            raise ConfigError(f"duplicate task name {spec.name!r}")
        out[spec.name] = spec
    if not out:
        raise ConfigError("a model needs at least one task spec")
    return out


def create_model(
    name: str, task_specs: Mapping[str, TaskSpec] | Iterable[TaskSpec], **kwargs: Any
) -> MultiTaskModel:
    """Build a registered model for the given tasks.

    Args:
        name: registered model name (see ``MODELS.names()``).
        task_specs: the tasks, as a mapping name -> spec (e.g. a dataset's ``task_specs``) or
            an iterable of specs; head order follows it.
        **kwargs: fields of the model's config dataclass (e.g. :class:`SegNetConfig` for
            ``segnet``); unknown names, wrong types and out-of-range values raise
            :class:`~mtlrepro.config.ConfigError`.
    """
    builder = MODELS.get(name)
    return builder(_spec_dict(task_specs), **kwargs)


@MODELS.register("segnet")
def segnet(
    task_specs: dict[str, TaskSpec], profile: str | None = None, **kwargs: Any
) -> MultiTaskModel:
    """Shared-bottom SegNet: one SegNet backbone, one head per task.

    The decoder is built only if some task is dense.

    Args:
        task_specs: task name -> spec.
        profile: the sizes' preset (:data:`~mtlrepro.models.segnet.SEGNET_PRESETS`), or
            ``None`` for the :class:`~mtlrepro.models.segnet.SegNetConfig` defaults.
        **kwargs: :class:`~mtlrepro.models.segnet.SegNetConfig` fields overriding them.
    """
    config = segnet_config(profile, **kwargs)
    backbone = SegNet(
        config.stage_widths,
        config.stage_convs,
        in_channels=len(config.mean),
        decoder=any(spec.dense for spec in task_specs.values()),
    )
    heads = {
        name: make_head(
            spec, backbone.out_channels, backbone.bottleneck_channels, config.classifier_hidden
        )
        for name, spec in task_specs.items()
    }
    for head in heads.values():
        init_mtan(head)
    return MultiTaskModel(
        backbone, heads, task_specs, config.mean, config.std, config.channels_last, config
    )


def segnet_heads(
    task_specs: Mapping[str, TaskSpec],
    dense_channels: int,
    pooled_channels: int,
    hidden: int | None,
) -> dict[str, nn.Module]:
    """The ``segnet`` model's heads (:func:`~mtlrepro.models.heads.make_head`, MTAN-initialised),
    for the other SegNet-based architectures.

    Args:
        task_specs: task name -> spec, in head order.
        dense_channels: channels of the features dense heads read.
        pooled_channels: channels of the bottleneck classification heads pool.
        hidden: hidden width of classification heads (``None``: one FC layer).
    """
    heads = {
        name: make_head(spec, dense_channels, pooled_channels, hidden)
        for name, spec in task_specs.items()
    }
    for head in heads.values():
        init_mtan(head)
    return heads


class TaskBranchModel(MultiTaskModel):
    """A :class:`MultiTaskModel` whose backbone gives every task its own features.

    Input normalisation, channels-last, heads, the oneDNN routing and the parameter groups
    work as in :class:`MultiTaskModel`; only the backbone's contract differs:

    * ``encode(x) -> (bottlenecks, state)``: task name -> bottleneck for every task;
    * ``decode(bottlenecks, state) -> features``: task name -> features for every dense task;
    * ``shared_parameters()`` and ``task_parameters(task)``: the backbone's parameters that
      every task uses and those of one task's branch.

    Used by the ``cross_stitch`` and ``mtan`` models.
    """

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """Args:
        images: float images in [0, 1], shape (B, 3, H, W).

        Returns:
            Task name -> raw output, as :meth:`MultiTaskModel.forward`.
        """
        bottlenecks, state = self.backbone.encode(self.normalise(images))
        features = self.backbone.decode(bottlenecks, state) if self._needs_decoder else {}
        return {
            name: head(
                features[name] if self.task_specs[name].dense else bottlenecks[name]
            ).contiguous()
            for name, head in self.heads.items()
        }

    def shared_parameters(self) -> list[nn.Parameter]:
        """Parameters every task's output depends on (the backbone says which)."""
        return list(self.backbone.shared_parameters())

    def task_parameters(self, task: str) -> list[nn.Parameter]:
        """Parameters of one task's backbone branch and head.

        Args:
            task: a task name of this model.
        """
        check_choice("task", task, self.task_names)
        return [*self.backbone.task_parameters(task), *self.heads[task].parameters()]
