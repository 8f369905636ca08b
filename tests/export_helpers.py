"""What the tests of export's graph rewrites share: a small SegNet with task heads, and the
comparison of two networks' outputs."""

from __future__ import annotations

import torch
from task_sets import HEADS_AND_CLASSIFIER
from torch import Tensor, nn

from mtlrepro.models import create_model


def segnet_with_heads() -> nn.Module:
    """A small SegNet (eval mode, seed 0) with :data:`task_sets.HEADS_AND_CLASSIFIER`."""
    torch.manual_seed(0)
    return create_model("segnet", HEADS_AND_CLASSIFIER, widths=(8, 16, 32)).eval()


def assert_same_outputs(want: dict[str, Tensor], got: dict[str, Tensor]) -> None:
    """The same outputs up to float32 summation order."""
    assert want.keys() == got.keys()
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=1e-4, atol=1e-5)
