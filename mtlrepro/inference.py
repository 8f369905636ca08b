"""The inference form of a compact network: what a user deploys after slimming (paper B),
contraction (paper C), finalisation (paper D) or partitioning (paper E).

:func:`export` turns a trained network into an :class:`InferenceNetwork` with the same outputs
(within float rounding; tested):

1. a copy in eval mode (the original is not touched);
2. every BatchNorm folded into the convolution or linear layer before it
   (``y = γ (W x + b − μ) / √(σ² + ε) + β`` is one affine map; torch's
   ``fuse_conv_bn_eval`` / ``fuse_linear_bn_eval``): over the whole ``torch.fx`` graph when
   the network traces symbolically, else inside ``nn.Sequential`` containers, where a layer's
   output feeds only the next one.  A module called at several places (MTAN applies its
   shared conv block once per task) is folded once, and only when every call of the layer
   feeds the same BatchNorm and nothing else (``torch.fx.experimental.optimization.fuse``
   folds such a pair once per call: MTAN's outputs moved by 0.1);
3. the folding checked: a float64 copy of the network, folded the same way, must give the
   original's float64 outputs on the example within :data:`RELATIVE_TOLERANCE` (in float32,
   rounding alone reaches 1e-3 of the output on networks with large BatchNorm corrections;
   in float64 it stays below 1e-12 and a wrong fold shows) -- else an error, not a silent
   change;
4. eval-mode no-ops (``nn.Identity``, dropout) dropped from ``nn.Sequential`` containers;
5. the memory format (``contiguous`` or ``channels_last``) that measures faster on the given
   example input, unless one is asked for: medians of interleaved timed calls of the network as
   it will be served, i.e. with the conversion of the input to that format and of the outputs
   back to the standard layout (for a dense-prediction network at batch 1 these conversions
   can cost more than channels-last saves).

Branches that carry no channel (zero-width after slimming) are already gone from
:func:`mtlrepro.compress.slim`'s output; unused edges of paper D's finalised network from
``DAGNetwork.prune_unused``.
"""

from __future__ import annotations

import copy
import math
import statistics
import time
from typing import Any

import torch
from torch import Tensor, fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from mtlrepro.config import ConfigError, check_choice, check_range

MEMORY_FORMATS: tuple[str, ...] = ("auto", "contiguous", "channels_last")
"""``export``'s choices of memory format (``auto``: the faster on the example)."""
_FORMATS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}
_FOLDABLE = ((nn.Conv2d, nn.BatchNorm2d), (nn.Linear, nn.BatchNorm1d))
_NO_OPS = (nn.Identity, nn.Dropout, nn.Dropout2d)
RELATIVE_TOLERANCE = 1e-8
"""The largest float64 output difference the folding may make, relative to the output's
largest magnitude (rounding: below 1e-12; MTAN folded twice: 0.1)."""
ROUND_SECONDS = 0.02
"""The ``auto`` memory format's timing rounds last at least this long (a few ms per call is
below the noise of one call)."""


def _contiguous(outputs: Any) -> Any:
    """Outputs (a tensor, or a dict / tuple / list of them) in the standard layout."""
    if isinstance(outputs, Tensor):
        return outputs.contiguous()
    if isinstance(outputs, dict):
        return {key: _contiguous(value) for key, value in outputs.items()}
    if isinstance(outputs, (tuple, list)):
        return type(outputs)(_contiguous(value) for value in outputs)
    return outputs


class InferenceNetwork(nn.Module):
    """A network in its inference form (see the module doc): inputs are converted to its
    memory format, it runs without autograd, outputs come back in the standard layout.

    Attributes:
        network: the folded network.
        memory_format: ``contiguous`` or ``channels_last``.
        folded: BatchNorm layers folded into the layer before them.
        removed: eval-mode no-op modules dropped.
        traced: whether the folding ran over the fx graph (else inside ``nn.Sequential``).
        timings_ms: the memory formats' median latency on the example (``auto`` only).
    """

    def __init__(self, network: nn.Module, memory_format: str, folded: int, removed: int,
                 traced: bool, timings_ms: dict[str, float]) -> None:
        super().__init__()
        self.network = network
        self.memory_format = memory_format
        self.folded, self.removed, self.traced = folded, removed, traced
        self.timings_ms = dict(timings_ms)

    def forward(self, images: Tensor) -> Any:
        """The network's outputs on ``images`` (no gradient is recorded)."""
        return _serve(self.network, self.memory_format, images)


def _serve(network: nn.Module, memory_format: str, images: Tensor) -> Any:
    """One call of an :class:`InferenceNetwork`: the input converted to its memory format, no
    autograd, the outputs back in the standard layout."""
    with torch.inference_mode():
        return _contiguous(network(images.contiguous(memory_format=_FORMATS[memory_format])))


def _count(model: nn.Module, kinds: tuple[type, ...]) -> int:
    return sum(isinstance(module, kinds) for module in model.modules())


def _fold_graph(model: nn.Module) -> fx.GraphModule:
    """``model`` traced by ``torch.fx`` with every BatchNorm folded into the layer before it,
    where every call of that layer feeds this BatchNorm and nothing else (module doc)."""
    traced = fx.symbolic_trace(model)
    modules = dict(traced.named_modules())
    calls: dict[str, list[fx.Node]] = {}
    for node in traced.graph.nodes:
        if node.op == "call_module":
            calls.setdefault(node.target, []).append(node)
    for target, bn_nodes in list(calls.items()):
        inputs = [node.args[0] if len(node.args) == 1 else None for node in bn_nodes]
        if not all(isinstance(i, fx.Node) and i.op == "call_module" and len(i.users) == 1
                   for i in inputs):
            continue
        layer_targets = {i.target for i in inputs}
        if len(layer_targets) != 1:
            continue
        layer_target = layer_targets.pop()
        if len(calls[layer_target]) != len(bn_nodes):  # the layer is also called elsewhere
            continue
        fold = _folding(modules[layer_target], modules[target])
        if fold is None:
            continue
        fused = fold(modules[layer_target], modules[target])
        parent, _, name = layer_target.rpartition(".")
        setattr(modules[parent] if parent else traced, name, fused)
        modules[layer_target] = fused
        for bn_node, layer_node in zip(bn_nodes, inputs, strict=True):
            bn_node.replace_all_uses_with(layer_node)
            traced.graph.erase_node(bn_node)
    traced.graph.lint()
    traced.delete_all_unused_submodules()
    traced.recompile()
    return traced


def _folding(layer: nn.Module, bn: nn.Module) -> Any:
    """torch's fold of ``bn`` into ``layer`` when the pair folds (eval statistics), else
    ``None``."""
    for layer_kind, bn_kind in _FOLDABLE:
        if type(layer) is layer_kind and isinstance(bn, bn_kind) and bn.track_running_stats:
            return fuse_conv_bn_eval if layer_kind is nn.Conv2d else fuse_linear_bn_eval
    return None


def _fold_sequentials(model: nn.Module) -> None:
    """Fold BatchNorm into the conv / linear layer just before it inside every
    ``nn.Sequential`` (the BN becomes ``nn.Identity``)."""
    for container in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        names = list(container._modules)
        for first, second in zip(names, names[1:], strict=False):
            layer, bn = container._modules[first], container._modules[second]
            fold = _folding(layer, bn)
            if fold is not None:
                container._modules[first] = fold(layer, bn)
                container._modules[second] = nn.Identity()


def _drop_no_ops(model: nn.Module) -> None:
    """Remove eval-mode no-ops from every ``nn.Sequential`` (keeping at least one module)."""
    for container in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        keep = [(k, m) for k, m in container._modules.items() if not isinstance(m, _NO_OPS)]
        if keep and len(keep) < len(container._modules):
            container._modules.clear()
            container._modules.update(keep)


def _tensors(outputs: Any) -> list[Tensor]:
    """Every tensor of a network's outputs (a tensor, or a dict / tuple / list of them)."""
    if isinstance(outputs, Tensor):
        return [outputs]
    if isinstance(outputs, dict):
        outputs = list(outputs.values())
    if isinstance(outputs, (tuple, list)):
        return [t for value in outputs for t in _tensors(value)]
    return []


def _fold(network: nn.Module) -> tuple[nn.Module, bool]:
    """``network`` (eval mode) with its BatchNorms folded, over its fx graph when it traces
    (then ``True``), else inside its ``nn.Sequential`` containers, in place (``False``)."""
    try:
        return _fold_graph(network), True
    except Exception:  # noqa: BLE001 -- fx cannot trace data-dependent control flow
        _fold_sequentials(network)
        return network, False


def _check_folding(model: nn.Module, example: Tensor) -> None:
    """Raise unless a float64 copy of ``model`` folded by :func:`_fold` gives the float64
    copy's eval-mode outputs on ``example`` within :data:`RELATIVE_TOLERANCE` (module doc)."""
    reference = copy.deepcopy(model).double().eval()
    folded, _ = _fold(copy.deepcopy(reference))
    _drop_no_ops(folded)
    images = example.double()
    with torch.inference_mode():
        expected, got = _tensors(reference(images)), _tensors(folded(images))
    for index, (want, have) in enumerate(zip(expected, got, strict=True)):
        scale = float(want.abs().max()) if want.numel() else 0.0
        gap = float((want - have).abs().max()) if want.numel() else 0.0
        if gap > RELATIVE_TOLERANCE * max(scale, 1.0):
            raise RuntimeError(
                f"the inference form changes output {index} by {gap:.3g} (largest value "
                f"{scale:.3g}) in float64: a BatchNorm fold is not exact for this network"
            )


def interleaved_medians(
    calls: dict[str, Any], rounds: int, repeats: int = 1
) -> dict[str, float]:
    """Median seconds per call of each of ``calls`` (name -> a function of no argument) over
    ``rounds`` interleaved rounds (the order reverses every round) of ``repeats`` calls each,
    after one untimed call of each: what every side-by-side timing here uses."""
    for call in calls.values():
        call()
    samples: dict[str, list[float]] = {name: [] for name in calls}
    names = list(calls)
    for k in range(rounds):
        for name in names if k % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            for _ in range(repeats):
                calls[name]()
            samples[name].append((time.perf_counter() - start) / repeats)
    return {name: statistics.median(values) for name, values in samples.items()}


def _timings(network: nn.Module, example: Tensor, rounds: int) -> dict[str, float]:
    """Median ms per call of ``network`` served (:func:`_serve`) in each memory format on
    ``example``, input and output conversions included as a caller pays them
    (:func:`interleaved_medians`, with enough calls per round that one round of the first
    format lasts at least :data:`ROUND_SECONDS`)."""
    nets = {"contiguous": network,
            "channels_last": copy.deepcopy(network).to(memory_format=torch.channels_last)}
    calls = {name: (lambda n=nets[name], name=name: _serve(n, name, example)) for name in nets}
    start = time.perf_counter()
    calls["contiguous"]()
    repeats = max(1, math.ceil(ROUND_SECONDS / max(time.perf_counter() - start, 1e-6)))
    seconds = interleaved_medians(calls, rounds, repeats)
    return {name: value * 1e3 for name, value in seconds.items()}


def export(model: nn.Module, example: Tensor, *, memory_format: str = "auto",
           rounds: int = 7) -> InferenceNetwork:
    """The inference form of ``model`` (see the module doc); ``model`` is left as it was.

    Args:
        model: a trained network taking a batch of images.
        example: an input batch like the ones it will serve (shape and dtype; the ``auto``
            memory format is chosen on it).
        memory_format: ``auto``, ``contiguous`` or ``channels_last``.
        rounds: timed calls of each memory format for ``auto`` (at least 1).
    """
    check_choice("memory_format", memory_format, MEMORY_FORMATS)
    check_range("rounds", rounds, 1, integer=True)
    if not isinstance(example, Tensor) or example.dim() != 4:
        raise ConfigError("example must be an image batch tensor (B, C, H, W)")
    _check_folding(model, example)
    network = copy.deepcopy(model).eval()
    before = _count(network, tuple(bn for _, bn in _FOLDABLE))
    network, traced = _fold(network)
    folded = before - _count(network, tuple(bn for _, bn in _FOLDABLE))
    no_ops = _count(network, _NO_OPS)
    _drop_no_ops(network)
    removed = no_ops - _count(network, _NO_OPS)
    timings: dict[str, float] = {}
    if memory_format == "auto":
        timings = _timings(network, example, rounds)
        memory_format = min(timings, key=timings.get)
    network = network.to(memory_format=_FORMATS[memory_format])
    return InferenceNetwork(network, memory_format, folded, removed, traced, timings)
