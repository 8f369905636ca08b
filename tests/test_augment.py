"""Flip/crop augmentation keeps shapes and labels, and moves pixels only by flips and shifts."""

from __future__ import annotations

import pytest
import torch

from mtlrepro.config import ConfigError
from mtlrepro.data.augment import FlipCropDataset, flip_crop
from mtlrepro.data.base import TensorDataset
from mtlrepro.tasks import TaskSpec


def _dataset(dense: bool = False) -> TensorDataset:
    n = 6
    tensors = {"image": torch.rand(n, 3, 8, 8), "colour": torch.arange(n) % 3}
    specs = {"colour": TaskSpec("colour", "classification", 3)}
    if dense:
        tensors["depth"] = torch.rand(n, 1, 8, 8)
        specs["depth"] = TaskSpec("depth", "depth")
    return TensorDataset("toy", "train", tensors, specs, config=None)


def test_without_padding_each_image_is_itself_or_its_mirror():
    images = torch.rand(32, 3, 5, 7)
    out = flip_crop(images, 0.0)
    same = (out == images).flatten(1).all(1)
    mirrored = (out == images.flip(-1)).flatten(1).all(1)
    assert (same | mirrored).all() and same.any() and mirrored.any()


def test_crop_is_a_shifted_window_of_the_padded_image():
    image = torch.arange(64, dtype=torch.float32).view(1, 1, 8, 8).expand(16, 1, 8, 8)
    out = flip_crop(image.clone(), 0.25)
    assert out.shape == image.shape
    # within a row, neighbouring pixels differ by ±1 away from the reflected border
    inner = out[:, 0, 3, 3:5]
    assert ((inner[:, 1] - inner[:, 0]).abs() == 1).all()


def test_dataset_wrapper_keeps_labels_and_is_seeded_by_torch():
    data = FlipCropDataset(_dataset())
    index = torch.arange(6)
    torch.manual_seed(1)
    first = data.batch(index)
    torch.manual_seed(1)
    second = data.batch(index)
    assert torch.equal(first["image"], second["image"])
    assert torch.equal(first["colour"], torch.arange(6) % 3)


def test_dense_tasks_and_bad_padding_are_rejected():
    with pytest.raises(ConfigError, match="classification tasks only"):
        FlipCropDataset(_dataset(dense=True))
    with pytest.raises(ConfigError, match="pad_fraction"):
        FlipCropDataset(_dataset(), pad_fraction=0.9)
