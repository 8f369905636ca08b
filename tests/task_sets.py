"""Task sets the model tests share: NYU-v2's three dense tasks, one of each kind,
classification only, and three dense heads beside a classification head."""

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
HEADS_AND_CLASSIFIER = (
    TaskSpec("segmentation", "segmentation", 5),
    TaskSpec("depth", "depth"),
    TaskSpec("normal", "normal"),
    TaskSpec("colour", "classification", 4),
)
"""Three dense-prediction heads (conv 3×3 → ReLU → conv 1×1 on one tensor) and one
classification head (export's rewrites of parallel and output convolutions)."""
