"""oneDNN post-op fusion for an exported CPU network: each convolution with the ReLU (and the
residual addition) after it run as one oneDNN primitive on a pre-packed weight.

A candidate further step of :func:`mtlrepro.inference.export` (issue 14's 90 % goal; not yet
used by it).  On the 90 %-slimmed ResNet-18 of ``make bench`` at 64×64 px (2-core AMD EPYC,
channels-last, medians of 9 interleaved rounds) the fused export ran 1.61× / 1.73× faster than
Torch-Pruning's pruned model at batch 16 with one / two threads, against 1.42× / 1.43× for the
export alone, but slower at batch 1 (1.58× / 1.28× against 1.74× / 1.44×): a caller should
time both forms and keep the faster, as ``export`` does for the memory format.

:func:`fuse_pointwise` rewrites a ``torch.fx`` graph module (e.g. an ``InferenceNetwork``'s
``network``, BatchNorm already folded):

* ``conv → relu`` becomes :class:`FusedConv` (torch's ``mkldnn::_convolution_pointwise`` with
  the ``relu`` post-op); a conv without a ReLU after it becomes one too (the pre-packed weight
  alone saves a reorder per call);
* ``conv → add(·, other) → relu`` (a residual block's end) becomes :class:`FusedConvAdd`
  (``mkldnn::_convolution_pointwise_.binary``: ``other += conv(x)``, then ReLU, in place).  The
  addition is done in ``other``'s memory only when the addition is ``other``'s last use and
  ``other`` is not the graph's input; otherwise into a copy.

The weights are packed for the example's input shape (oneDNN picks the layout per shape); a
call with another shape runs the same arithmetic with ``torch.nn.functional.conv2d``.  Outputs
equal the unfused network's up to float32 summation order (tested).  These are torch's private
CPU operators (what ``torch.compile``'s CPU backend emits): :func:`available` says whether this
build has them.
"""

from __future__ import annotations

import copy
import operator

import torch
from torch import Tensor, fx, nn
from torch.fx.passes.shape_prop import ShapeProp
from torch.nn import functional as F

from mtlrepro.config import ConfigError

_ADDS = (operator.add, operator.iadd, torch.add)
_RELUS = (torch.relu, F.relu)


def available() -> bool:
    """Whether this torch build has oneDNN and its fused convolution operators."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        torch.ops.mkldnn._convolution_pointwise.binary  # noqa: B018 (an attribute lookup)
        torch.ops.mkldnn._convolution_pointwise_.binary  # noqa: B018
    except (AttributeError, RuntimeError):
        return False
    return True


class FusedConv(nn.Module):
    """A 2-d convolution (and optionally the ReLU after it) as one oneDNN primitive.

    Args:
        conv: the convolution (not changed).
        input_shape: the input shape the weight is packed for.
        relu: apply ReLU as the primitive's post-op.
    """

    def __init__(self, conv: nn.Conv2d, input_shape: torch.Size, relu: bool) -> None:
        super().__init__()
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ConfigError("pointwise fusion needs a conv with numeric zero padding")
        self.padding, self.stride = list(conv.padding), list(conv.stride)
        self.dilation, self.groups = list(conv.dilation), conv.groups
        self.input_shape, self.relu = tuple(input_shape), relu
        weight = conv.weight.detach().clone()
        bias = conv.bias.detach().clone() if conv.bias is not None else None
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)
        self.register_buffer("packed", torch._C._nn.mkldnn_reorder_conv2d_weight(
            weight.to_mkldnn(), self.padding, self.stride, self.dilation, self.groups,
            list(input_shape)))

    def _plain(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation,
                        self.groups)

    def forward(self, x: Tensor) -> Tensor:
        """The convolution (then ReLU) of ``x``."""
        if tuple(x.shape) != self.input_shape:
            y = self._plain(x)
            return torch.relu(y) if self.relu else y
        return torch.ops.mkldnn._convolution_pointwise(
            x, self.packed, self.bias, self.padding, self.stride, self.dilation, self.groups,
            "relu" if self.relu else "none", [], "")


class FusedConvAdd(FusedConv):
    """``relu(conv(x) + other)`` as one oneDNN primitive writing into ``other``'s memory.

    Args:
        conv: the convolution (not changed).
        input_shape: the input shape the weight is packed for.
        in_place: whether ``other`` may be overwritten (its last use, not the graph input).
    """

    def __init__(self, conv: nn.Conv2d, input_shape: torch.Size, in_place: bool) -> None:
        super().__init__(conv, input_shape, relu=True)
        self.in_place = in_place

    def forward(self, x: Tensor, other: Tensor) -> Tensor:  # type: ignore[override]
        """``relu(conv(x) + other)``."""
        if tuple(x.shape) != self.input_shape:
            return torch.relu(self._plain(x) + other)
        target = other if self.in_place else other.clone()
        return torch.ops.mkldnn._convolution_pointwise_.binary(
            target, x, self.packed, self.bias, self.padding, self.stride, self.dilation,
            self.groups, "add", None, "relu", [], None)


def _is_relu(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return isinstance(modules.get(node.target), nn.ReLU)
    if node.op == "call_function":
        return node.target in _RELUS
    return node.op == "call_method" and node.target in ("relu", "relu_")


def _last_use(value: fx.Node, user: fx.Node, order: dict[fx.Node, int]) -> bool:
    """Whether ``user`` is the last node of the graph to read ``value`` (and ``value`` is not
    the graph's input, which belongs to the caller)."""
    return value.op != "placeholder" and all(order[u] <= order[user] for u in value.users)


def _plan(
    node: fx.Node, modules: dict[str, nn.Module], order: dict[fx.Node, int],
    claimed: set[fx.Node],
) -> tuple[nn.Conv2d, list[fx.Node], bool | None] | None:
    """For a convolution node of the unchanged graph: ``(conv, the fused chain's nodes from
    the last to the conv, whether the addition may write into its other operand -- None
    without an addition)``; ``None`` for other nodes.  An addition of two convolutions (a
    residual block with a projection) goes to the first of them: ``claimed`` holds the
    additions already taken."""
    module = modules.get(node.target) if node.op == "call_module" else None
    if not isinstance(module, nn.Conv2d) or isinstance(module.padding, str):
        return None
    users = list(node.users)
    if len(users) != 1:
        return module, [node], None
    user = users[0]
    if _is_relu(user, modules):
        return module, [user, node], None
    after = list(user.users)
    if (user.target in _ADDS and len(user.args) == 2 and not user.kwargs and len(after) == 1
            and _is_relu(after[0], modules) and user not in claimed):
        other = user.args[1] if user.args[0] is node else user.args[0]
        if isinstance(other, fx.Node) and other is not node:
            claimed.add(user)
            return module, [after[0], user, node], _last_use(other, user, order)
    return module, [node], None


def fuse_pointwise(graph: fx.GraphModule, example: Tensor) -> fx.GraphModule:
    """A copy of ``graph`` with its convolutions fused with the ReLU / residual addition after
    them (module doc); ``graph`` itself is not changed.

    Args:
        graph: a traced float32 network in eval mode (BatchNorm folded first: a BatchNorm
            between a conv and its ReLU prevents the fusion).
        example: an input of the shape the network will serve (the weights are packed for it).

    Raises:
        ConfigError: this torch build lacks the operators, or ``example`` is not float32.
    """
    if not available():
        raise ConfigError("pointwise fusion needs a torch build with oneDNN (mkldnn) operators")
    if example.dtype != torch.float32:
        raise ConfigError(f"pointwise fusion runs float32 networks; got {example.dtype}")
    fused = copy.deepcopy(graph).eval()
    with torch.no_grad():
        ShapeProp(fused).propagate(example)
    modules = dict(fused.named_modules())
    order = {node: i for i, node in enumerate(fused.graph.nodes)}
    claimed: set[fx.Node] = set()
    plans = [(plan, node.args[0].meta["tensor_meta"].shape)  # before any node is replaced
             for node in fused.graph.nodes
             if (plan := _plan(node, modules, order, claimed)) is not None]
    for index, ((conv, chain, in_place), shape) in enumerate(plans):
        # a replaced node's users (this chain's conv, the addition) now read its fused node
        args = [chain[-1].args[0]]
        if in_place is not None:  # chain = [relu, add, conv]
            module: FusedConv = FusedConvAdd(conv, shape, in_place)
            args.append(next(a for a in chain[1].args if a is not chain[-1]))
        else:
            module = FusedConv(conv, shape, relu=len(chain) == 2)
        name = f"fused_{index}"
        fused.add_submodule(name, module)
        with fused.graph.inserting_before(chain[0]):
            new = fused.graph.call_module(name, tuple(args))
        chain[0].replace_all_uses_with(new)
        for old in chain:
            fused.graph.erase_node(old)
    fused.graph.lint()
    fused.delete_all_unused_submodules()
    fused.recompile()
    return fused
