"""Training-time augmentation of image-level (classification) datasets: flips and crops.

Paper A trains with "random flip + crop" (§4).  :class:`FlipCropDataset` wraps a dataset with the
:class:`~mtlrepro.data.base.TensorDataset` interface and augments the images of every batch it
serves, vectorised over the batch: a horizontal flip with probability ½ and a random crop of
the original size out of the image padded by ``pad_fraction`` of its size on each side
(reflection padding).  Choice: pad-and-crop keeps the image size and the object scale, so
evaluation needs no resize; the paper does not say which crop it uses.

Only classification targets are allowed: a flip or crop of the image would have to move a dense
target too.  Randomness comes from torch's global generator, which the training loop seeds and
checkpoints, so augmented runs stay reproducible and resumable.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from mtlrepro.config import ConfigError, check_range


class FlipCropDataset(torch.utils.data.Dataset):
    """A classification dataset whose served images are randomly flipped and cropped."""

    def __init__(self, dataset: Any, pad_fraction: float = 0.125) -> None:
        """Args:
        dataset: the split to augment (``task_specs``, ``__len__``, ``batch``).
        pad_fraction: padding on each side before the crop, as a fraction of the image size
            (``[0, 0.5]``; 0 disables the crop).
        """
        check_range("pad_fraction", pad_fraction, 0.0, 0.5)
        dense = [name for name, spec in dataset.task_specs.items() if spec.dense]
        if dense:
            raise ConfigError(
                f"flip/crop augmentation supports classification tasks only; dense: {dense}"
            )
        self.dataset = dataset
        self.pad_fraction = pad_fraction
        self.task_specs = dataset.task_specs
        self.name = dataset.name
        self.split = dataset.split
        self.config = dataset.config

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {k: v[0] for k, v in self.batch([i]).items()}

    def batch(self, index: Tensor | Sequence[int]) -> dict[str, Tensor]:
        """The samples at ``index`` with augmented images (targets unchanged)."""
        batch = dict(self.dataset.batch(index))
        batch["image"] = flip_crop(batch["image"], self.pad_fraction)
        return batch


def flip_crop(images: Tensor, pad_fraction: float) -> Tensor:
    """Flip each image horizontally with probability ½, then crop it at a random offset.

    Args:
        images: batch (B, C, H, W).
        pad_fraction: reflection padding on each side, as a fraction of H and W.

    Returns:
        The augmented batch, same shape.
    """
    n, _, height, width = images.shape
    flip = torch.rand(n) < 0.5
    images = torch.where(flip[:, None, None, None], images.flip(-1), images)
    pad_h, pad_w = int(round(height * pad_fraction)), int(round(width * pad_fraction))
    if pad_h == 0 and pad_w == 0:
        return images
    padded = F.pad(images, (pad_w, pad_w, pad_h, pad_h), mode="reflect")
    top = torch.randint(0, 2 * pad_h + 1, (n,))
    left = torch.randint(0, 2 * pad_w + 1, (n,))
    rows = top[:, None] + torch.arange(height)[None, :]  # (B, H)
    cols = left[:, None] + torch.arange(width)[None, :]  # (B, W)
    batch_index = torch.arange(n)[:, None, None]
    # gather (B, C, H, W) from padded at [b, :, rows[b, i], cols[b, j]]
    cropped = padded.permute(0, 2, 3, 1)[batch_index, rows[:, :, None], cols[:, None, :]]
    return cropped.permute(0, 3, 1, 2).contiguous()
