"""Datasets by name: ``get_dataset(name, split, profile, **overrides)``.

Every dataset module registers a builder in :data:`DATASETS`; the modules are imported here
explicitly so the registry always holds the same names.
"""

from __future__ import annotations

from typing import Any

from mtlrepro.config import DEFAULT_PROFILE, check_choice, check_profile
from mtlrepro.data import (
    celebamask,
    cityscapes,
    decathlon,
    faces,
    glyphs,
    nyuv2,
    omniglot,
    scenes,
    vehicles,
    vehiclex,
    visual_decathlon,
)
from mtlrepro.data.base import DATASETS, SPLITS, TensorDataset

__all__ = [
    "DATASETS",
    "SPLITS",
    "TensorDataset",
    "celebamask",
    "cityscapes",
    "dataset_names",
    "decathlon",
    "faces",
    "get_dataset",
    "glyphs",
    "nyuv2",
    "omniglot",
    "scenes",
    "vehicles",
    "vehiclex",
    "visual_decathlon",
]


def get_dataset(
    name: str, split: str, profile: str = DEFAULT_PROFILE, **overrides: Any
) -> TensorDataset:
    """One split of a registered dataset.

    Args:
        name: dataset name, one of :func:`dataset_names`.
        split: ``train``, ``val`` or ``test``.
        profile: ``smoke``, ``cpu`` or ``paper``: selects the dataset's config preset.
        **overrides: fields of the dataset's config dataclass (validated), e.g.
            ``tasks=("segmentation", "depth")`` or ``n_train=500``.
    """
    builder = DATASETS.get(name)
    check_choice("split", split, SPLITS)
    check_profile(profile)
    return builder(split, profile, **overrides)


def dataset_names() -> list[str]:
    """Names of the registered datasets, sorted."""
    return DATASETS.names()
