"""oneDNN post-op fusion for an exported CPU network: each convolution with the ReLU (and the
residual addition) after it run as one oneDNN primitive on a pre-packed weight.

A step of :func:`mtlrepro.inference.export`'s ``auto`` choice (its forms
``contiguous + fusion`` and ``channels_last + fusion``; issue 14's 90 % goal), which keeps a
fused chain only where it measures faster than the plain one (``choose``).  Measured on the
90 %-slimmed ResNet-18 of ``make bench`` at 64×64 px (2-core AMD EPYC, channels-last, medians
of 7 interleaved rounds), plain over fused time per chain: 1.0-1.5 at batch 16; at batch 1
0.4-1.2 (the stem and the widest chains gain, the narrow ones lose to oneDNN's per-call
overhead).

:func:`fuse_pointwise` rewrites a ``torch.fx`` graph module whose BatchNorms are folded (what
``export`` has before it makes module calls function calls):

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
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, fx, nn
from torch.fx.passes.shape_prop import ShapeProp
from torch.nn import functional as F

from mtlrepro.config import ConfigError

_ADDS = (operator.add, operator.iadd, torch.add)
Chooser = Callable[[Callable[[], Tensor], Callable[[], Tensor]], bool]
"""``choose(unfused, fused)``: whether to keep a fusion, given the chain's two forms as calls
of no argument on inputs of the example's shapes (e.g. the faster of them)."""
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


def is_relu(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """Whether ``node`` of a traced graph (whose submodules are ``modules``) applies a ReLU:
    an ``nn.ReLU`` module, ``torch.relu`` / ``F.relu`` or the ``relu(_)`` method."""
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
    if is_relu(user, modules):
        return module, [user, node], None
    after = list(user.users)
    if (user.target in _ADDS and len(user.args) == 2 and not user.kwargs and len(after) == 1
            and is_relu(after[0], modules) and user not in claimed):
        other = user.args[1] if user.args[0] is node else user.args[0]
        if isinstance(other, fx.Node) and other is not node:
            claimed.add(user)
            return module, [after[0], user, node], _last_use(other, user, order)
    return module, [node], None


def _operands(chain: list[fx.Node]) -> list[fx.Node]:
    """The nodes a fused chain reads: the conv's input, and the addition's other operand."""
    conv = chain[-1]
    if len(chain) < 3:
        return [conv.args[0]]
    return [conv.args[0], next(a for a in chain[1].args if a is not conv)]


def _forms(conv: nn.Conv2d, chain: list[fx.Node], module: FusedConv,
           metas: list[Any]) -> tuple[Callable[[], Tensor], Callable[[], Tensor]]:
    """The unfused and the fused form of one chain as calls on random inputs with the shapes
    and strides its operands had on the example."""
    inputs = [torch.empty_strided(m.shape, m.stride, dtype=m.dtype).uniform_() for m in metas]
    if len(chain) == 3:
        return (lambda: torch.relu(conv(inputs[0]) + inputs[1]),
                lambda: module(inputs[0], inputs[1]))
    if len(chain) == 2:
        return lambda: torch.relu(conv(inputs[0])), lambda: module(inputs[0])
    return lambda: conv(inputs[0]), lambda: module(inputs[0])


def fuse_pointwise(graph: fx.GraphModule, example: Tensor,
                   choose: Chooser | None = None) -> fx.GraphModule:
    """A copy of ``graph`` with its convolutions fused with the ReLU / residual addition after
    them (module doc); ``graph`` itself is not changed.

    Args:
        graph: a traced float32 network in eval mode (BatchNorm folded first: a BatchNorm
            between a conv and its ReLU prevents the fusion).
        example: an input of the shape the network will serve (the weights are packed for it).
        choose: which fusions to keep (:data:`Chooser`, asked once per chain); all without.

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
    plans = [(plan, [n.meta["tensor_meta"] for n in _operands(plan[1])])  # before replacing
             for node in fused.graph.nodes
             if (plan := _plan(node, modules, order, claimed)) is not None]
    for index, ((conv, chain, in_place), metas) in enumerate(plans):
        # a replaced node's users (this chain's conv, the addition) now read its fused node
        args = _operands(chain)
        if in_place is not None:  # chain = [relu, add, conv]
            module: FusedConv = FusedConvAdd(conv, metas[0].shape, in_place)
        else:
            module = FusedConv(conv, metas[0].shape, relu=len(chain) == 2)
        if choose is not None:
            with torch.inference_mode():
                if not choose(*_forms(conv, chain, module, metas)):
                    continue
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
