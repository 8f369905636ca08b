"""Class statistics of classification datasets (paper A, Section 3, Eq. 2 and Fig. 2)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from mtlrepro.config import ConfigError, check_choice, check_range


def class_labels(dataset: Any, task: str) -> tuple[Tensor, int]:
    """All labels of a classification task of a dataset, and its number of classes.

    Works for a :class:`~mtlrepro.data.base.TensorDataset` (``tensors``) and for a lazily
    read dataset exposing its labels as ``targets`` (e.g. ``vehiclex``).
    """
    check_choice(f"{dataset.name} task", task, tuple(dataset.task_specs))
    spec = dataset.task_specs[task]
    if spec.kind != "classification":
        raise ConfigError(f"task {task!r} of {dataset.name} is {spec.kind}, not classification")
    labels = getattr(dataset, "targets", None)
    if labels is None:
        labels = dataset.tensors
    return labels[task].reshape(-1).to(torch.int64), spec.num_classes


def label_distribution(dataset: Any, task: str, normalize: bool = True) -> np.ndarray:
    """Class sizes of a classification task over a split (paper A, Fig. 2).

    Args:
        dataset: a split with classification tasks (``vehicles``, ``vehiclex``, ...).
        task: the task, e.g. ``"colour"``.
        normalize: return shares summing to 1 instead of counts.
    """
    labels, classes = class_labels(dataset, task)
    counts = np.bincount(labels.numpy(), minlength=classes).astype(np.float64)
    return counts / max(counts.sum(), 1.0) if normalize else counts


def conditional_distribution(
    dataset: Any, given_task: str, given_value: int, task: str
) -> np.ndarray:
    """``P(task | given_task = given_value)`` over a split (paper A, Eq. 2: the type shares
    of the pink vehicles); all zeros if no sample has ``given_value``.

    Args:
        dataset: a split with classification tasks.
        given_task: the conditioning task, e.g. ``"colour"``.
        given_value: its class index, e.g. ``VEHICLE_COLOURS.index("pink")``.
        task: the task whose distribution is returned, e.g. ``"type"``.
    """
    given, given_classes = class_labels(dataset, given_task)
    check_range(f"{given_task} class", given_value, 0, given_classes - 1, integer=True)
    labels, classes = class_labels(dataset, task)
    counts = np.bincount(labels[given == given_value].numpy(), minlength=classes)
    total = counts.sum()
    return counts / total if total else counts.astype(np.float64)


def total_variation(p: np.ndarray, q: np.ndarray) -> float:
    """Total variation distance ``0.5 * sum |p - q|`` of two distributions.

    Args:
        p: shares of each class.
        q: shares of each class (same length).
    """
    return 0.5 * float(np.abs(np.asarray(p) - np.asarray(q)).sum())
