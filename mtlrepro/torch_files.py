"""Reading files of tensors (checkpoints, pretrained weights) with errors that say what to do.

Used by the training loop (checkpoints) and the backbones (local ImageNet weights).
"""

from __future__ import annotations

import os
import pickle
from typing import Any

import torch


class CheckpointError(RuntimeError):
    """A checkpoint or weights file cannot be read; the message names it and what to do."""


def load_torch_file(path: str | os.PathLike[str], fix: str) -> Any:
    """``torch.load`` of a file of tensors (``weights_only``, onto the CPU); a missing,
    truncated or corrupt file raises :class:`CheckpointError` naming it, the reason and ``fix``.

    Args:
        path: the file.
        fix: what to do about a bad file, appended to the message.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, KeyError, ValueError, pickle.UnpicklingError) as exc:
        detail = str(exc).split(". ", 1)[0]  # torch's first sentence
        reason = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
        raise CheckpointError(f"{path} cannot be read ({reason}); {fix}") from exc
