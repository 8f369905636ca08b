"""Evaluation metrics per task kind, accumulated over a whole split, and relative performance.

Each meter keeps only sufficient statistics (a confusion matrix, sums, counts, a histogram),
updated with vectorised torch operations, so a split's metric equals the metric of the
concatenated batches -- never a mean of per-batch values.  Conventions:

* Segmentation: mIoU and pixel accuracy (%) from the confusion matrix over the split; a class
  absent from both predictions and targets (union 0) is left out of the mean.
* Depth: over pixels with positive target depth, mean absolute error, mean absolute relative
  error ``|p - g| / g``, and % of pixels with ``δ = max(p / g, g / p) < 1.25^k``; for ``δ`` the
  prediction is clamped to at least :data:`MIN_DEPTH_PRED` metres, so non-positive predictions
  count as (very) wrong instead of dividing by zero.
* Normals: angle between the normalised prediction and target over non-zero targets, computed
  as ``atan2(|p x t|, p . t)`` (accurate at small angles); mean, median, % below 11.25 / 22.5 /
  30 degrees and mean cosine.  The median comes from a histogram with bins of
  :data:`ANGLE_BIN_DEG` degrees, interpolated within its bin (error below one bin).  A zero
  prediction has no direction and counts as 90 degrees (cosine 0).
* Binary: prediction positive where the logit is ``> 0``; 2-class mIoU (%), F1 of the positive
  class (%; 100 when neither predictions nor targets contain a positive), mean BCE.
* Classification: accuracy (%).

A meter that has seen no valid element reports NaN for each metric.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from mtlrepro.config import ConfigError, check_choice, check_range

METRIC_NAMES: dict[str, tuple[str, ...]] = {
    "segmentation": ("miou", "pixel_acc"),
    "depth": ("abs_err", "rel_err", "delta1", "delta2", "delta3"),
    "normal": ("mean_angle", "median_angle", "within_11_25", "within_22_5", "within_30", "cosine"),
    "binary": ("miou", "f1", "bce"),
    "classification": ("accuracy",),
}
LOWER_IS_BETTER: frozenset[str] = frozenset(
    {"abs_err", "rel_err", "mean_angle", "median_angle", "bce"}
)
PRIMARY_METRIC: dict[str, str] = {
    "segmentation": "miou",
    "depth": "abs_err",
    "normal": "mean_angle",
    "binary": "f1",
    "classification": "accuracy",
}
DELTA_DEFINITIONS: tuple[str, ...] = ("paper_d", "all_metrics")
MIN_DEPTH_PRED = 1e-3
ANGLE_BIN_DEG = 0.01
DELTA_THRESHOLDS: tuple[float, ...] = (1.25, 1.25**2, 1.25**3)
ANGLE_THRESHOLDS_DEG: tuple[float, ...] = (11.25, 22.5, 30.0)


def require_same_shape(kind: str, pred: Tensor, target: Tensor) -> None:
    """Raise ``ValueError`` unless ``pred`` and ``target`` have the same shape (no broadcasting).

    Args:
        kind: task kind, used in the message.
        pred: raw prediction.
        target: target.
    """
    if pred.shape != target.shape:
        raise ValueError(
            f"{kind} prediction shape {tuple(pred.shape)} != target shape {tuple(target.shape)}"
        )


def _labels(pred: Tensor, target: Tensor, num_classes: int) -> Tensor:
    """Class ids from scores ``(B, C, ...)`` (argmax) or ids shaped like ``target``; checked."""
    if pred.dim() == target.dim() + 1:
        if pred.shape[1] != num_classes:
            raise ValueError(f"expected {num_classes} class scores; got {pred.shape[1]}")
        pred = pred.argmax(dim=1)
    require_same_shape("class-id", pred, target)
    return pred


def _confusion(labels: Tensor, target: Tensor, num_classes: int) -> Tensor:
    """Confusion matrix (rows target, columns prediction) over elements with target ``>= 0``."""
    valid = target >= 0
    t, p = target[valid].long(), labels[valid].long()
    if bool(((t >= num_classes) | (p < 0) | (p >= num_classes)).any()):
        raise ValueError(f"class ids must lie in [0, {num_classes})")
    counts = torch.bincount(t * num_classes + p, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).cpu()


def _mean_iou(confusion: Tensor) -> float:
    """Mean IoU (%) over classes present in prediction or target, from a confusion matrix."""
    conf = confusion.double()
    tp = conf.diag()
    union = conf.sum(0) + conf.sum(1) - tp
    present = union > 0
    return float((tp[present] / union[present]).mean()) * 100.0


class MetricMeter(ABC):
    """Accumulates one task's metrics over a whole split (``update`` per batch, then
    ``compute``)."""

    names: ClassVar[tuple[str, ...]]

    def __init__(self) -> None:
        self.reset()

    @abstractmethod
    def reset(self) -> None:
        """Forget everything accumulated so far."""

    @abstractmethod
    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add one batch.

        Args:
            pred: the head's raw output for the batch.
            target: the batch's target in the task kind's convention.
        """

    @abstractmethod
    def compute(self) -> dict[str, float]:
        """Metrics over everything added since the last reset, keyed by :attr:`names`."""

    def _undefined(self) -> dict[str, float]:
        return dict.fromkeys(self.names, math.nan)


class SegmentationMeter(MetricMeter):
    """mIoU and pixel accuracy (%) from a confusion matrix; target ``-1`` is ignored."""

    names = METRIC_NAMES["segmentation"]

    def __init__(self, num_classes: int) -> None:
        """Args:
        num_classes: number of classes (``>= 2``).
        """
        self.num_classes = check_range("num_classes", num_classes, 2, integer=True)
        super().__init__()

    def reset(self) -> None:
        """Forget everything accumulated so far."""
        self.confusion = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64)

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add one batch.

        Args:
            pred: class scores ``(B, C, H, W)`` or class ids ``(B, H, W)``.
            target: class ids ``(B, H, W)``, ``-1`` = ignore.
        """
        labels = _labels(pred.detach(), target, self.num_classes)
        self.confusion += _confusion(labels, target, self.num_classes)

    def compute(self) -> dict[str, float]:
        """``miou`` and ``pixel_acc`` in %."""
        total = int(self.confusion.sum())
        if total == 0:
            return self._undefined()
        correct = int(self.confusion.diag().sum())
        return {"miou": _mean_iou(self.confusion), "pixel_acc": 100.0 * correct / total}


class DepthMeter(MetricMeter):
    """Absolute / relative error and δ-accuracies over pixels with positive target depth."""

    names = METRIC_NAMES["depth"]

    def reset(self) -> None:
        """Forget everything accumulated so far."""
        self.count = 0
        self.abs_sum = 0.0
        self.rel_sum = 0.0
        self.delta_counts = torch.zeros(len(DELTA_THRESHOLDS), dtype=torch.int64)

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add one batch.

        Args:
            pred: predicted depth ``(B, 1, H, W)`` in metres.
            target: target depth of the same shape, ``0`` = invalid.
        """
        require_same_shape("depth", pred, target)
        valid = target > 0
        gt = target[valid].double()
        p = pred.detach()[valid].double()
        err = (p - gt).abs()
        p_pos = p.clamp(min=MIN_DEPTH_PRED)
        ratio = torch.maximum(p_pos / gt, gt / p_pos)
        thresholds = torch.tensor(DELTA_THRESHOLDS, dtype=ratio.dtype, device=ratio.device)
        self.count += gt.numel()
        self.abs_sum += float(err.sum())
        self.rel_sum += float((err / gt).sum())
        self.delta_counts += (ratio[:, None] < thresholds).sum(0).cpu()

    def compute(self) -> dict[str, float]:
        """``abs_err``, ``rel_err`` and ``delta1..3`` (%)."""
        if self.count == 0:
            return self._undefined()
        deltas = (100.0 * self.delta_counts.double() / self.count).tolist()
        return {
            "abs_err": self.abs_sum / self.count,
            "rel_err": self.rel_sum / self.count,
            **{f"delta{k + 1}": d for k, d in enumerate(deltas)},
        }


class NormalMeter(MetricMeter):
    """Angular error statistics over pixels with a non-zero target normal."""

    names = METRIC_NAMES["normal"]
    num_bins: ClassVar[int] = round(180.0 / ANGLE_BIN_DEG)

    def reset(self) -> None:
        """Forget everything accumulated so far."""
        self.count = 0
        self.angle_sum = 0.0
        self.cos_sum = 0.0
        self.within_counts = torch.zeros(len(ANGLE_THRESHOLDS_DEG), dtype=torch.int64)
        self.histogram = torch.zeros(self.num_bins, dtype=torch.int64)

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add one batch.

        Args:
            pred: predicted normals ``(B, 3, H, W)`` (any length; normalised here).
            target: unit target normals of the same shape, all-zero = invalid.
        """
        require_same_shape("normal", pred, target)
        valid = (target != 0).any(dim=1)
        p = F.normalize(pred.detach().float(), dim=1).movedim(1, -1)[valid]
        t = F.normalize(target.float(), dim=1).movedim(1, -1)[valid]
        cos = (p * t).sum(-1)
        angle = torch.rad2deg(torch.atan2(torch.linalg.cross(p, t).norm(dim=-1), cos))
        angle = torch.where(p.norm(dim=-1) > 0.5, angle, torch.full_like(angle, 90.0))
        thresholds = torch.tensor(ANGLE_THRESHOLDS_DEG, dtype=angle.dtype, device=angle.device)
        bins = (angle / ANGLE_BIN_DEG).long().clamp(0, self.num_bins - 1)
        self.count += angle.numel()
        self.angle_sum += float(angle.double().sum())
        self.cos_sum += float(cos.double().sum())
        self.within_counts += (angle[:, None] < thresholds).sum(0).cpu()
        self.histogram += torch.bincount(bins, minlength=self.num_bins).cpu()

    def _median(self) -> float:
        """Median angle from the histogram, linearly interpolated inside its bin."""
        cumulative = self.histogram.cumsum(0).double()
        half = self.count / 2.0
        k = int(torch.searchsorted(cumulative, torch.tensor([half], dtype=torch.float64)))
        below = float(cumulative[k - 1]) if k > 0 else 0.0
        return (k + (half - below) / float(self.histogram[k])) * ANGLE_BIN_DEG

    def compute(self) -> dict[str, float]:
        """``mean_angle``, ``median_angle`` (degrees), ``within_*`` (%) and ``cosine``."""
        if self.count == 0:
            return self._undefined()
        within = (100.0 * self.within_counts.double() / self.count).tolist()
        return {
            "mean_angle": self.angle_sum / self.count,
            "median_angle": self._median(),
            "within_11_25": within[0],
            "within_22_5": within[1],
            "within_30": within[2],
            "cosine": self.cos_sum / self.count,
        }


class BinaryMeter(MetricMeter):
    """2-class mIoU, positive-class F1 and BCE over pixels with target ``>= 0``."""

    names = METRIC_NAMES["binary"]

    def reset(self) -> None:
        """Forget everything accumulated so far."""
        self.confusion = torch.zeros(2, 2, dtype=torch.int64)
        self.bce_sum = 0.0

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add one batch.

        Args:
            pred: logits ``(B, 1, H, W)``.
            target: ``{0, 1}`` targets of the same shape, ``-1`` = ignore.
        """
        require_same_shape("binary", pred, target)
        valid = target >= 0
        logits = pred.detach()[valid].float()
        t = target[valid].float()
        bce = F.binary_cross_entropy_with_logits(logits, t, reduction="sum")
        self.bce_sum += float(bce)
        self.confusion += _confusion((logits > 0).long(), (t > 0.5).long(), 2)

    def compute(self) -> dict[str, float]:
        """``miou`` (%), ``f1`` (%) and ``bce``."""
        total = int(self.confusion.sum())
        if total == 0:
            return self._undefined()
        tp = int(self.confusion[1, 1])
        errors = int(self.confusion[0, 1] + self.confusion[1, 0])
        f1 = 100.0 * 2 * tp / (2 * tp + errors) if tp + errors > 0 else 100.0
        return {"miou": _mean_iou(self.confusion), "f1": f1, "bce": self.bce_sum / total}


class ClassificationMeter(MetricMeter):
    """Accuracy (%) of per-sample class predictions over samples whose class is not ``-1``."""

    names = METRIC_NAMES["classification"]

    def __init__(self, num_classes: int) -> None:
        """Args:
        num_classes: number of classes (``>= 2``).
        """
        self.num_classes = check_range("num_classes", num_classes, 2, integer=True)
        super().__init__()

    def reset(self) -> None:
        """Forget everything accumulated so far."""
        self.correct = 0
        self.count = 0

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add one batch.

        Args:
            pred: class scores ``(B, C)`` or class ids ``(B,)``.
            target: class ids ``(B,)``, ``-1`` = ignore.
        """
        labels = _labels(pred.detach(), target, self.num_classes)
        valid = target >= 0
        self.correct += int((labels == target)[valid].sum())
        self.count += int(valid.sum())

    def compute(self) -> dict[str, float]:
        """``accuracy`` in %."""
        if self.count == 0:
            return self._undefined()
        return {"accuracy": 100.0 * self.correct / self.count}


def make_meter(kind: str, num_classes: int = 0) -> MetricMeter:
    """A fresh meter for a task kind.

    Args:
        kind: one of the keys of :data:`METRIC_NAMES`.
        num_classes: number of classes, used by segmentation and classification.
    """
    check_choice("task kind", kind, tuple(METRIC_NAMES))
    if kind == "segmentation":
        return SegmentationMeter(num_classes)
    if kind == "classification":
        return ClassificationMeter(num_classes)
    return {"depth": DepthMeter, "normal": NormalMeter, "binary": BinaryMeter}[kind]()


def relative_performance(
    scores: Mapping[str, Mapping[str, float]],
    reference: Mapping[str, Mapping[str, float]],
    lower_is_better: Collection[str],
    definition: str = "paper_d",
) -> dict[str, float]:
    """Relative multi-task performance Δ (%) of ``scores`` against ``reference``.

    Paper D, Eq. 10: ``Δ_Ti = (100 / |M_i|) Σ_j (-1)^{l_j} (M_ij - M_ij^ref) / M_ij^ref`` with
    ``l_j = 1`` when lower is better for metric ``j``; Eq. 11: ``Δ_T`` = mean of ``Δ_Ti`` over
    tasks (definition ``"paper_d"``).  Definition ``"all_metrics"`` instead averages the
    signed relative changes of all metrics of all tasks at once for ``"all"``.  The metrics
    compared are those in ``scores``; the reference usually holds the single-task scores.

    Args:
        scores: task -> {metric -> value} of the model assessed.
        reference: task -> {metric -> value} of the reference (must cover ``scores``).
        lower_is_better: names of metrics for which lower values are better.
        definition: ``"paper_d"`` or ``"all_metrics"``.

    Returns:
        ``{task: Δ_task, ..., "all": Δ}`` in %.
    """
    check_choice("relative-performance definition", definition, DELTA_DEFINITIONS)
    if not scores:
        raise ConfigError("relative_performance needs scores for at least one task")
    if "all" in scores:
        raise ConfigError("'all' is reserved for the overall Δ and cannot name a task")
    missing_tasks = [task for task in scores if task not in reference]
    if missing_tasks:
        raise ConfigError(f"reference has no scores for task(s) {missing_tasks}")
    terms: dict[str, list[float]] = {}
    for task, task_scores in scores.items():
        if not task_scores:
            raise ConfigError(f"task {task!r} has no metrics in scores")
        missing = [m for m in task_scores if m not in reference[task]]
        if missing:
            raise ConfigError(f"reference for task {task!r} lacks metric(s) {missing}")
        terms[task] = []
        for metric, value in task_scores.items():
            base = reference[task][metric]
            if base == 0:
                raise ConfigError(f"reference {task}/{metric} is 0; relative change undefined")
            sign = -1.0 if metric in lower_is_better else 1.0
            terms[task].append(sign * 100.0 * (value - base) / base)
    result = {task: sum(t) / len(t) for task, t in terms.items()}
    if definition == "paper_d":
        result["all"] = sum(result.values()) / len(result)
    else:
        flat = [x for t in terms.values() for x in t]
        result["all"] = sum(flat) / len(flat)
    return result


def relative_where_defined(
    scores: Mapping[str, Mapping[str, float]], reference: Mapping[str, Mapping[str, float]]
) -> dict[str, float]:
    """:func:`relative_performance` (paper D Eq. 10-11, :data:`LOWER_IS_BETTER`) over the
    metrics whose reference is not 0 (a relative change from 0 is undefined: e.g. an
    untrained network's share of normals within 11.25°); a task left without metrics is left
    out."""
    kept = {
        task: {m: v for m, v in values.items() if reference[task][m] != 0}
        for task, values in scores.items()
    }
    return relative_performance({t: m for t, m in kept.items() if m}, reference, LOWER_IS_BETTER)
