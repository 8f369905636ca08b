"""Tasks: what a task predicts, its loss, its metrics and which direction is better.

A :class:`TaskSpec` is the plain description a dataset publishes (name, kind, classes); a
:class:`Task` adds behaviour: the per-sample training loss, a metric meter for evaluation and a
displayable prediction.  Task kinds and their target conventions:

* ``segmentation`` -- target int64 ``(B, H, W)`` class ids, ``-1`` = ignore.
* ``depth`` -- target float32 ``(B, 1, H, W)`` in metres, ``0`` = invalid.
* ``normal`` -- target float32 ``(B, 3, H, W)`` unit vectors, all-zero = invalid.
* ``binary`` -- target float32 ``(B, 1, H, W)`` in ``{0, 1}``, ``-1`` = ignore.
* ``classification`` -- target int64 ``(B,)`` class ids, ``-1`` = ignore (a sample of another
  task, e.g. a glyph of another alphabet).

Every dense loss is the mean over each sample's own valid pixels (``0`` for a sample without
any), so a batch loss is ``loss(pred, target).mean()`` and sample weighting (hard-example
mining) can use the per-sample vector directly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from mtlrepro import metrics
from mtlrepro.config import ConfigError, check_choice, check_range

TASK_KINDS: tuple[str, ...] = ("segmentation", "depth", "normal", "binary", "classification")
CANONICAL_KINDS: dict[str, str] = {
    "segmentation": "segmentation",
    "depth": "depth",
    "normal": "normal",
    "edge": "binary",
    "saliency": "binary",
    "parts": "segmentation",
}
_CLASS_KINDS = ("segmentation", "classification")
_FIXED_CHANNELS = {"depth": 1, "normal": 3, "binary": 1}


@dataclass(frozen=True)
class TaskSpec:
    """Description of one task, validated on creation.

    Attributes:
        name: task name; a canonical name (see :data:`CANONICAL_KINDS`) must have its kind.
        kind: one of :data:`TASK_KINDS`.
        num_classes: number of classes, ``>= 2`` for segmentation and classification, ``0``
            for the other kinds.
    """

    name: str
    kind: str
    num_classes: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"task name must be a non-empty string; got {self.name!r}")
        check_choice(f"kind of task {self.name!r}", self.kind, TASK_KINDS)
        expected = CANONICAL_KINDS.get(self.name)
        if expected is not None and self.kind != expected:
            raise ConfigError(
                f"task {self.name!r} is canonical and has kind {expected!r}; got {self.kind!r}"
            )
        if self.kind in _CLASS_KINDS:
            check_range(f"num_classes of task {self.name!r}", self.num_classes, 2, integer=True)
        elif self.num_classes != 0:
            raise ConfigError(
                f"num_classes of {self.kind} task {self.name!r} must be 0; got {self.num_classes!r}"
            )

    @property
    def out_channels(self) -> int:
        """Channels of the task head's raw output (classes, or 1 / 3 / 1 for depth / normal /
        binary)."""
        return self.num_classes if self.kind in _CLASS_KINDS else _FIXED_CHANNELS[self.kind]

    @property
    def dense(self) -> bool:
        """Whether the task predicts per pixel (every kind except ``classification``)."""
        return self.kind != "classification"


def _masked_mean(values: Tensor, valid: Tensor) -> Tensor:
    """Per-sample mean of ``values`` over its ``valid`` elements, ``0`` for a sample with none.

    Args:
        values: per-element losses, shape ``(B, ...)``.
        valid: boolean mask of the same shape.
    """
    values = torch.where(valid, values, torch.zeros_like(values))
    count = valid.flatten(1).sum(1).clamp(min=1)
    return values.flatten(1).sum(1) / count


def _segmentation_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Cross-entropy over pixels whose class is not ``-1``, averaged per sample."""
    valid = target >= 0
    ce = F.cross_entropy(pred, target.clamp(min=0), reduction="none")
    return _masked_mean(ce, valid)


def _depth_loss(pred: Tensor, target: Tensor) -> Tensor:
    """L1 error over pixels with a positive depth, averaged per sample."""
    metrics.require_same_shape("depth", pred, target)
    return _masked_mean((pred - target).abs(), target > 0)


def _depth_mse_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Squared error over pixels with a positive depth, averaged per sample (paper B, §4)."""
    metrics.require_same_shape("depth", pred, target)
    return _masked_mean((pred - target).square(), target > 0)


def _channel_norm(x: Tensor) -> Tensor:
    """``max(‖x‖₂, 1e-12)`` over the channel dimension (``F.normalize``'s denominator)."""
    return torch.linalg.vector_norm(x, dim=1).clamp_min(1e-12)


def _normal_loss(pred: Tensor, target: Tensor) -> Tensor:
    """``1 - cos`` between the normalised prediction and the target over non-zero targets."""
    metrics.require_same_shape("normal", pred, target)
    valid = (target != 0).any(dim=1)
    # cos = p·t / (max(|p|, ε)·max(|t|, ε)): F.normalize's arithmetic, without building the two
    # normalised 3-channel tensors (a quarter of this loss's time at CPU sizes)
    norms = _channel_norm(pred) * _channel_norm(target)
    cos = (pred * target).sum(dim=1) / norms
    return _masked_mean(1.0 - cos, valid)


def _binary_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Binary cross-entropy with logits over pixels with target ``>= 0``, averaged per sample."""
    metrics.require_same_shape("binary", pred, target)
    bce = F.binary_cross_entropy_with_logits(pred, target.clamp(min=0), reduction="none")
    return _masked_mean(bce, target >= 0)


def _classification_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Cross-entropy per sample; ``0`` for a sample whose class is ``-1`` (ignored: e.g. a
    glyph of another alphabet than the task's, paper D's homogeneous multi-task setting)."""
    return F.cross_entropy(pred, target, reduction="none", ignore_index=-1)


_LOSSES = {
    "segmentation": _segmentation_loss,
    "depth": _depth_loss,
    "normal": _normal_loss,
    "binary": _binary_loss,
    "classification": _classification_loss,
}
LOSS_VARIANTS: dict[str, dict[str, Callable[[Tensor, Tensor], Tensor]]] = {
    "depth": {"l1": _depth_loss, "mse": _depth_mse_loss},
}
"""Kind -> named losses a :class:`Task` may use instead of its kind's default (the first)."""


class Task:
    """A task's behaviour: per-sample loss, metrics and displayable predictions."""

    def __init__(self, spec: TaskSpec, loss: str | None = None) -> None:
        """Args:
        spec: the task's description.
        loss: a named loss of :data:`LOSS_VARIANTS` for the task's kind (e.g. ``"mse"`` for
            depth), or ``None`` for the kind's default.
        """
        if not isinstance(spec, TaskSpec):
            raise TypeError(f"Task needs a TaskSpec; got {type(spec).__name__}")
        self.spec = spec
        self.loss_name = loss
        self._loss = _LOSSES[spec.kind]
        if loss is not None:
            variants = LOSS_VARIANTS.get(spec.kind, {})
            check_choice(f"loss of {spec.kind} task {spec.name!r}", loss, tuple(variants))
            self._loss = variants[loss]

    def __repr__(self) -> str:
        loss = "" if self.loss_name is None else f", loss={self.loss_name!r}"
        return f"Task({self.spec!r}{loss})"

    @property
    def name(self) -> str:
        """The task's name."""
        return self.spec.name

    def loss(self, pred: Tensor, target: Tensor) -> Tensor:
        """Per-sample training loss, shape ``(B,)``, masked as described in the module doc.

        Args:
            pred: the head's raw output, ``(B, out_channels, H, W)`` or ``(B, classes)``.
            target: the batch's target in the kind's convention.
        """
        return self._loss(pred, target)

    def new_meter(self) -> metrics.MetricMeter:
        """A fresh meter accumulating this task's metrics over a whole split."""
        return metrics.make_meter(self.spec.kind, self.spec.num_classes)

    @property
    def metric_names(self) -> tuple[str, ...]:
        """Names of the metrics :meth:`new_meter` reports, in table order."""
        return metrics.METRIC_NAMES[self.spec.kind]

    @property
    def lower_is_better(self) -> frozenset[str]:
        """This task's metrics for which lower values are better."""
        return frozenset(self.metric_names) & metrics.LOWER_IS_BETTER

    @property
    def primary_metric(self) -> str:
        """The single metric used for model selection and one-number summaries."""
        return metrics.PRIMARY_METRIC[self.spec.kind]

    @torch.no_grad()
    def predict(self, pred: Tensor) -> Tensor:
        """Displayable prediction from the raw output: class map / depth / unit normals /
        positive-class probability / class id.

        Args:
            pred: the head's raw output for a batch.
        """
        kind = self.spec.kind
        if kind in _CLASS_KINDS:
            return pred.argmax(dim=1)
        if kind == "normal":
            return F.normalize(pred, dim=1)
        if kind == "binary":
            return torch.sigmoid(pred)
        return pred.detach().clone()


def make_tasks(
    specs: Iterable[TaskSpec] | Mapping[str, TaskSpec], losses: Mapping[str, str] | None = None
) -> dict[str, Task]:
    """Build :class:`Task` objects keyed by name, in the given order.

    Args:
        specs: task specs, or a mapping name -> spec (e.g. a dataset's ``task_specs``).
        losses: task *kind* -> named loss of :data:`LOSS_VARIANTS` (e.g. ``{"depth": "mse"}``);
            kinds not listed use their default loss.
    """
    if isinstance(specs, Mapping):
        specs = specs.values()
    losses = dict(losses or {})
    unknown = sorted(set(losses) - set(LOSS_VARIANTS))
    if unknown:
        raise ConfigError(f"no loss variants for task kind(s) {unknown}; see LOSS_VARIANTS")
    tasks: dict[str, Task] = {}
    for spec in specs:
        task = Task(spec, losses.get(spec.kind))
        if task.name in tasks:
            raise ConfigError(f"duplicate task name {task.name!r}")
        tasks[task.name] = task
    return tasks
