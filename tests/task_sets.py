"""Task sets the model tests share: NYU-v2's three dense tasks, one of each kind, and
classification only."""

from __future__ import annotations

from mtlrepro.tasks import TaskSpec

NYU_TASKS = (
    TaskSpec("segmentation", "segmentation", 13),
    TaskSpec("depth", "depth"),
    TaskSpec("normal", "normal"),
)
MIXED_TASKS = (
    TaskSpec("parts", "segmentation", 4),
    TaskSpec("edge", "binary"),
    TaskSpec("colour", "classification", 5),
)
CLASSIFICATION_TASKS = (
    TaskSpec("colour", "classification", 5),
    TaskSpec("type", "classification", 3),
)
