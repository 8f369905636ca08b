"""Parallel convolution branches that read one tensor -- a multi-task network's task heads --
merged into one wider convolution per layer.

A step of :func:`mtlrepro.inference.export`'s channels-last forms (issue 14's 50 % goal).  The
task heads of the scene networks each run ``conv 3×3 → ReLU → conv 1×1`` on the same decoder
output at full resolution; at batch 1 each of these small convolutions costs oneDNN's per-call
overhead.  :func:`merge_parallel_convs` rewrites such a group of ``n`` chains as

* one convolution whose output channels are the branches' first convolutions' outputs side by
  side (the same weights, concatenated),
* one ReLU over all of them where every branch has one,
* for each further layer, one convolution whose weight is block diagonal (branch ``i``'s
  weight reads branch ``i``'s channels; zero weights elsewhere),
* and each branch's result a channel slice of the last merged tensor.

The arithmetic of every output channel is the same sums of the same products (the zero blocks
add exact zeros), so outputs equal the separate branches' up to float32 summation order
(tested).  The block-diagonal layers do ``n`` times their multiply-accumulates, and a merged
convolution is slower than the separate ones at larger batches: measured on the
50 %-slimmed SegNet's three heads (1 thread, 2-core AMD EPYC, channels-last, medians of 15
interleaved rounds) 0.86 → 0.67 ms at batch 1 but 8.4 → 10.2 ms at batch 16.  So a merge is
kept only where it measures faster (``choose``).
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from mtlrepro.pointwise_fusion import Chooser, is_relu


@dataclass
class _Layer:
    """One layer of a branch: its convolution node and module, and the ReLU node after it
    (``None`` without one)."""

    conv: fx.Node
    module: nn.Conv2d
    relu: fx.Node | None


def conv_called_once(node: fx.Node, modules: dict[str, nn.Module],
                      calls: dict[str, int]) -> nn.Conv2d | None:
    """The module of a plain convolution node called at this one place, else ``None``."""
    module = modules.get(node.target) if node.op == "call_module" else None
    if (not isinstance(module, nn.Conv2d) or calls[node.target] != 1 or module.groups != 1
            or module.padding_mode != "zeros" or isinstance(module.padding, str)
            or len(node.args) != 1 or node.kwargs):
        return None
    return module


def annotated_copy(graph: fx.GraphModule, example: Tensor
                   ) -> tuple[fx.GraphModule, dict[str, nn.Module], dict[str, int]]:
    """A copy of ``graph`` in eval mode whose nodes carry the shapes and strides of their
    values on ``example`` (``node.meta["tensor_meta"]``), its modules by name, and how many
    times each module is called: what a rewrite of export's graph starts from."""
    annotated = copy.deepcopy(graph).eval()
    with torch.no_grad():
        ShapeProp(annotated).propagate(example)
    calls: dict[str, int] = {}
    for node in annotated.graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    return annotated, dict(annotated.named_modules()), calls


def _signature(module: nn.Conv2d) -> tuple:
    """What branches' convolutions at one layer must share to merge."""
    return (module.kernel_size, module.stride, module.padding, module.dilation,
            module.bias is not None)


def _relu_after(node: fx.Node, modules: dict[str, nn.Module]) -> fx.Node | None:
    """The ReLU that is the only user of ``node``, else ``None``."""
    users = list(node.users)
    if len(users) != 1:
        return None
    user = users[0]
    plain = len(user.args) == 1 and not user.kwargs
    return user if plain and is_relu(user, modules) else None


def _branches(source: fx.Node, modules: dict[str, nn.Module],
              calls: dict[str, int]) -> list[list[_Layer]]:
    """The longest parallel chains of layers that start at convolutions reading ``source``
    and match layer by layer (same convolution settings, a ReLU in all or none, each layer
    read only by the next); ``[]`` when fewer than two convolutions read it alike."""
    groups: dict[tuple, list[fx.Node]] = {}
    for user in source.users:
        module = conv_called_once(user, modules, calls)
        if module is not None:
            groups.setdefault(_signature(module), []).append(user)
    starts = max(groups.values(), key=len, default=[])
    if len(starts) < 2:
        return []
    branches = [[] for _ in starts]
    heads = list(starts)
    while True:
        layers = [_Layer(node, modules[node.target], _relu_after(node, modules))
                  for node in heads]
        if len({layer.relu is None for layer in layers}) != 1:
            layers = [_Layer(layer.conv, layer.module, None) for layer in layers]
        for branch, layer in zip(branches, layers, strict=True):
            branch.append(layer)
        tails = [layer.relu if layer.relu is not None else layer.conv for layer in layers]
        following = [list(tail.users) for tail in tails]
        if layers[0].relu is None or not all(len(users) == 1 for users in following):
            return branches
        nexts = [users[0] for users in following]
        modules_next = [conv_called_once(node, modules, calls) for node in nexts]
        if (any(module is None for module in modules_next)
                or len({_signature(module) for module in modules_next}) != 1):
            return branches
        heads = nexts


def _merged_conv(layers: list[_Layer], block_diagonal: bool) -> nn.Conv2d:
    """One convolution computing every branch's layer: output channels side by side, reading
    the shared input (first layer) or, block diagonally, each branch's own channels."""
    modules = [layer.module for layer in layers]
    outs = [m.out_channels for m in modules]
    ins = [m.in_channels for m in modules]
    first = modules[0]
    merged = nn.Conv2d(sum(ins) if block_diagonal else ins[0], sum(outs), first.kernel_size,
                       first.stride, first.padding, first.dilation,
                       bias=first.bias is not None, device=first.weight.device,
                       dtype=first.weight.dtype)
    with torch.no_grad():
        merged.weight.zero_()
        out_at = in_at = 0
        for module in modules:
            columns = slice(in_at, in_at + module.in_channels) if block_diagonal else slice(None)
            merged.weight[out_at:out_at + module.out_channels, columns] = module.weight
            if module.bias is not None:
                merged.bias[out_at:out_at + module.out_channels] = module.bias
            out_at += module.out_channels
            in_at += module.in_channels
    memory_format = (torch.channels_last if first.weight.is_contiguous(
        memory_format=torch.channels_last) and not first.weight.is_contiguous()
        else torch.contiguous_format)
    return merged.to(memory_format=memory_format).eval()


def _merged_layers(branches: list[list[_Layer]]) -> list[nn.Conv2d]:
    """The merged convolution of each layer of ``branches`` (module doc)."""
    return [_merged_conv(list(layers), block_diagonal=depth > 0)
            for depth, layers in enumerate(zip(*branches, strict=True))]


def _separate_and_merged(
    branches: list[list[_Layer]], merged: list[nn.Conv2d], shape: torch.Size,
    channels_last: bool,
) -> tuple[Callable[[], Tensor], Callable[[], Tensor]]:
    """The branches run separately and as the ``merged`` layers, as calls on one random input
    of ``shape``."""
    images = torch.rand(shape)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    relus = [layer.relu is not None for layer in branches[0]]

    def run(convs: list[nn.Module], x: Tensor) -> Tensor:
        for conv, relu in zip(convs, relus, strict=True):
            x = torch.relu(conv(x)) if relu else conv(x)
        return x

    return (lambda: [run([layer.module for layer in branch], images) for branch in branches],
            lambda: run(merged, images))


def merge_parallel_convs(graph: fx.GraphModule, example: Tensor,
                         choose: Chooser | None = None) -> tuple[fx.GraphModule, int]:
    """A copy of ``graph`` with each group of parallel convolution branches merged (module
    doc), and the number of groups merged; ``graph`` itself is not changed.

    Args:
        graph: a traced network in eval mode (module calls, BatchNorm folded).
        example: an input of the shape the network will serve (``choose`` times the branches
            on a random input of the shape their source tensor had on it).
        choose: which merges to keep (:data:`mtlrepro.pointwise_fusion.Chooser`, asked once
            per group with the separate and the merged branches); all without.
    """
    merged_graph, modules, calls = annotated_copy(graph, example)
    merges = 0
    for source in list(merged_graph.graph.nodes):
        branches = _branches(source, modules, calls)
        if not branches:
            continue
        merged = _merged_layers(branches)
        meta = source.meta["tensor_meta"]
        channels_last = meta.memory_format == torch.channels_last
        if choose is not None:
            with torch.inference_mode():
                forms = _separate_and_merged(branches, merged, meta.shape, channels_last)
                if not choose(*forms):
                    continue
        _rewrite(merged_graph, source, branches, merged, merges)
        merges += 1
    merged_graph.graph.lint()
    merged_graph.delete_all_unused_submodules()
    merged_graph.recompile()
    return merged_graph, merges


def _rewrite(graph: fx.GraphModule, source: fx.Node, branches: list[list[_Layer]],
             merged: list[nn.Conv2d], index: int) -> None:
    """Replace ``branches`` (reading ``source``) in ``graph`` by their ``merged`` layers and a
    channel slice per branch of the last one."""
    value = source
    last = [branch[-1] for branch in branches]
    firsts = {branch[0].conv for branch in branches}
    earliest = next(node for node in graph.graph.nodes if node in firsts)
    with graph.graph.inserting_before(earliest):
        for depth, (conv, layer) in enumerate(zip(merged, branches[0], strict=True)):
            name = f"merged_{index}_{depth}"
            graph.add_submodule(name, conv)
            value = graph.graph.call_module(name, (value,))
            if layer.relu is not None:
                value = graph.graph.call_function(torch.relu, (value,))
        start = 0
        slices = []
        for layer in last:
            end = start + layer.module.out_channels
            slices.append(graph.graph.call_function(
                operator.getitem, (value, (slice(None), slice(start, end)))))
            start = end
    for layer, piece in zip(last, slices, strict=True):
        (layer.relu or layer.conv).replace_all_uses_with(piece)
    for branch in branches:
        for layer in reversed(branch):
            if layer.relu is not None:
                graph.graph.erase_node(layer.relu)
            graph.graph.erase_node(layer.conv)
