"""Route the one convolution that corrupts the heap on AVX2 CPUs away from its oneDNN kernel.

The bug (torch 2.14.1, bundled oneDNN v3.12.0): the weight gradient of a **1×1 convolution with
stride > 1 and fewer than 8 input channels** on **channels-last** float32 activations runs
oneDNN's ``jit_1x1:avx2`` ``backward_weights`` kernel (weights reordered to the padded
``ABcd8b8a`` layout), which writes past its buffer.  glibc then aborts at a later ``free``
("double free or corruption", "corrupted size vs. prev_size", "free(): invalid next size").
It happens with a batch of at least 2 and inputs of at least 8×8, on AVX2 and AVX2-VNNI CPUs
(e.g. AMD EPYC) and under ``ONEDNN_MAX_CPU_ISA=AVX2`` on bigger ones; AVX-512 CPUs take
another kernel and are not affected, nor are SSE4.1/AVX CPUs, strides of 1, 8 or more input
channels, or contiguous (NCHW) activations.  In the project's networks this is the
``downsample`` shortcut of the smoke-scale slim ResNets (timm ``Bottleneck``/``BasicBlock``).

The remedy is exact and touches only those layers: such a convolution reads the input pixels
``(i·s, j·s)`` only, so it equals a stride-1 convolution of the subsampled input
``x[..., ::s, ::s]`` (same output size ``ceil(H / s)``, same parameters), whose weight
gradient takes oneDNN's unit-stride kernel.  :func:`avoid_onednn_strided_pointwise_bug`
changes the class of each affected layer in place (no new parameters, no random numbers drawn,
state-dict keys unchanged); models built by this package apply it on construction.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

ONEDNN_AVX2_CHANNEL_BLOCK = 8
"""oneDNN's AVX2 channel block (8 float32 lanes): narrower inputs trigger the bug."""


class SubsampledPointwiseConv2d(nn.Conv2d):
    """A 1×1, zero-padding, strided ``nn.Conv2d`` computed as subsample-then-stride-1 (exact)."""

    def forward(self, x: Tensor) -> Tensor:
        """Args:
        x: input, shape (B, C_in, H, W), any memory format.

        Returns:
            The same output as ``nn.Conv2d.forward`` with this layer's stride.
        """
        step_h, step_w = self.stride
        return F.conv2d(
            x[..., ::step_h, ::step_w], self.weight, self.bias, 1, 0, self.dilation, self.groups
        )


def is_affected(layer: nn.Module) -> bool:
    """Whether ``layer`` is a plain ``nn.Conv2d`` whose weight gradient hits the oneDNN bug.

    Args:
        layer: any module.
    """
    return (
        type(layer) is nn.Conv2d
        and layer.kernel_size == (1, 1)
        and layer.stride != (1, 1)
        and layer.padding == (0, 0)
        and layer.in_channels < ONEDNN_AVX2_CHANNEL_BLOCK
    )


def avoid_onednn_strided_pointwise_bug(model: nn.Module) -> int:
    """Make every affected convolution of ``model`` a :class:`SubsampledPointwiseConv2d`.

    In place; outputs, gradients, parameters and state-dict keys are unchanged.

    Args:
        model: the network.

    Returns:
        The number of layers changed.
    """
    changed = 0
    for layer in model.modules():
        if is_affected(layer):
            layer.__class__ = SubsampledPointwiseConv2d
            changed += 1
    return changed
