"""A network's last 1×1 convolutions written straight into the standard (contiguous) layout.

A step of :func:`mtlrepro.inference.export`'s channels-last forms (issue 14's 50 % goal).  A
dense-prediction network returns its outputs in the standard layout (the scene networks'
heads end ``conv 1×1 → .contiguous()``), so in a channels-last form each output is computed
channels-last by oneDNN and then copied into the standard layout.  A 1×1 convolution is a
matrix product per image, ``Y[n] = W X[n] + b`` with ``X[n]`` the ``C_in × HW`` pixels, and
``torch.baddbmm`` reads a channels-last ``X[n]`` as it lies (a transposed operand) and
writes ``Y[n]`` as ``C_out × HW``, i.e. the standard layout, with no copy after.

:func:`standard_layout_outputs` rewrites each 1×1 convolution (stride 1, no padding, one
group, called at one place) whose every use is ``.contiguous()``, directly or through a
channel slice (the merged heads of :mod:`mtlrepro.parallel_branches`), as
:class:`PointwiseMatmul`; the ``.contiguous()`` calls stay and cost nothing on its output.
Outputs equal the convolution's up to float32 summation order (tested).  Measured on the
50 %-slimmed SegNet's segmentation head (16 → 13 channels at 48×64 px, channels-last input,
1 thread, 2-core AMD EPYC, medians of 9 interleaved rounds): conv + copy 651 µs, the matrix
product 375 µs at batch 16; 76 and 31 µs at batch 1.  A rewrite is kept only where it
measures faster (``choose``).
"""

from __future__ import annotations

import operator
from collections.abc import Callable

import torch
from torch import Tensor, fx, nn

from mtlrepro.parallel_branches import annotated_copy, conv_called_once
from mtlrepro.pointwise_fusion import Chooser

ChannelSlice = tuple[slice, slice] | None
"""How a rewritten convolution's output reaches a ``.contiguous()`` call: through this channel
slice, or directly (``None``)."""


class PointwiseMatmul(nn.Module):
    """A 1×1 convolution as a batched matrix product with a standard-layout output (module
    doc); the same output values as the convolution it is built from, for any input layout."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.register_buffer("weight", conv.weight.detach().flatten(1).contiguous().clone())
        bias = None if conv.bias is None else conv.bias.detach()[:, None].clone()
        self.register_buffer("bias", bias)

    def forward(self, x: Tensor) -> Tensor:
        batch, _, height, width = x.shape
        pixels = x.flatten(2)  # (B, C_in, HW): a view in either layout
        weight = self.weight.expand(batch, -1, -1)
        out = (torch.bmm(weight, pixels) if self.bias is None
               else torch.baddbmm(self.bias, weight, pixels))
        return out.view(batch, -1, height, width)


def _is_contiguous_call(node: fx.Node) -> bool:
    return (node.op == "call_method" and node.target == "contiguous" and len(node.args) == 1
            and not node.kwargs)


def _is_channel_slice(index: object) -> bool:
    """Whether ``index`` is ``[:, a:b]`` (a slice of a standard-layout output stays
    contiguous)."""
    return (isinstance(index, tuple) and len(index) == 2 and index[0] == slice(None)
            and isinstance(index[1], slice) and index[1].step is None)


def _paths_to_contiguous(node: fx.Node) -> list[ChannelSlice] | None:
    """How each use of ``node`` reaches a ``.contiguous()`` call (:data:`ChannelSlice`), or
    ``None`` when some use does anything else."""
    paths: list[ChannelSlice] = []
    for user in node.users:
        if _is_contiguous_call(user):
            paths.append(None)
        elif (user.op == "call_function" and user.target is operator.getitem
              and _is_channel_slice(user.args[1]) and user.users
              and all(_is_contiguous_call(u) for u in user.users)):
            paths.append(user.args[1])
        else:
            return None
    return paths or None


def _is_pointwise(conv: nn.Conv2d) -> bool:
    return (conv.kernel_size == (1, 1) and conv.stride == (1, 1) and conv.padding == (0, 0)
            and conv.dilation == (1, 1))


def _as_served(layer: nn.Module, pixels: Tensor,
               paths: list[ChannelSlice]) -> Callable[[], list[Tensor]]:
    """A call of ``layer`` on ``pixels`` with its output made contiguous along ``paths``."""
    def call() -> list[Tensor]:
        out = layer(pixels)
        return [(out if path is None else out[path]).contiguous() for path in paths]
    return call


def standard_layout_outputs(graph: fx.GraphModule, example: Tensor,
                            choose: Chooser | None = None) -> tuple[fx.GraphModule, int]:
    """A copy of ``graph`` with its output 1×1 convolutions as :class:`PointwiseMatmul`
    (module doc), and how many were rewritten; ``graph`` itself is not changed.

    Args:
        graph: a traced network in eval mode (module calls, BatchNorm folded).
        example: an input of the shape the network will serve (``choose`` times each
            convolution on a random input of the shape and strides its input had on it).
        choose: which rewrites to keep (:data:`mtlrepro.pointwise_fusion.Chooser`, asked once
            per convolution with the convolution and the matrix product, each followed by
            the ``.contiguous()`` calls); all without.
    """
    rewritten, modules, calls = annotated_copy(graph, example)
    count = 0
    for node in list(rewritten.graph.nodes):
        conv = conv_called_once(node, modules, calls)
        paths = _paths_to_contiguous(node) if conv is not None else None
        if paths is None or not _is_pointwise(conv):
            continue
        matmul = PointwiseMatmul(conv)
        if choose is not None:
            meta = node.args[0].meta["tensor_meta"]
            pixels = torch.empty_strided(meta.shape, meta.stride, dtype=meta.dtype).uniform_()
            with torch.inference_mode():
                if not choose(_as_served(conv, pixels, paths),
                              _as_served(matmul, pixels, paths)):
                    continue
        name = f"pointwise_matmul_{count}"
        rewritten.add_submodule(name, matmul)
        with rewritten.graph.inserting_before(node):
            replacement = rewritten.graph.call_module(name, node.args)
        node.replace_all_uses_with(replacement)
        rewritten.graph.erase_node(node)
        count += 1
    rewritten.graph.lint()
    rewritten.delete_all_unused_submodules()
    rewritten.recompile()
    return rewritten, count
