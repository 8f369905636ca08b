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
5. in a traced network, every call of a convolution, linear layer or ReLU module made a direct
   call of its function on the module's parameters (the same arithmetic, bit for bit, without
   ``nn.Module.__call__``'s few microseconds, which add up to ~5-9 % of a 90 %-slimmed
   ResNet-18's 1.5-2 ms at batch 1);
6. the form that measures fastest on the given example input, unless a memory format is asked
   for: ``contiguous``, ``channels_last`` and, for a traced float32 network where torch has
   oneDNN, ``contiguous + fusion`` and ``channels_last + fusion`` -- that format with each
   convolution and the ReLU / residual addition after it run as one oneDNN primitive on a
   weight pre-packed for the example's shape (:mod:`mtlrepro.pointwise_fusion`; the
   contiguous one was the fastest form of the 50 %-slimmed SegNet at 1 thread and batch 16
   in a probe, by 2 %), kept chain by chain where the fused
   chain measures faster than the plain one (on a 90 %-slimmed ResNet-18 at 64×64 px, 2-core
   AMD EPYC: 1.0-1.5× faster per chain at batch 16; at batch 1 only the stem and the widest
   chains gain).  In a traced network's channels-last forms, parallel convolution branches
   that read one tensor (the task heads) run as one wider convolution per layer
   (:mod:`mtlrepro.parallel_branches`), kept group by group where that measures faster (the
   50 %-slimmed SegNet's three heads at batch 1; not at batch 16), and the 1×1 convolutions
   whose outputs are returned in the standard layout write it directly, as a matrix product
   (:mod:`mtlrepro.output_convs`), where that measures faster.  Medians of interleaved
   timed calls of the network as it will be served, i.e. with the conversion of the input to
   that format and of the outputs back to the standard layout (for a dense-prediction network
   at batch 1 these conversions can cost more than channels-last saves).  The chosen form is
   tuned for the example's shape; another shape gets the same outputs, through plain
   convolutions where a fused one was packed for the example.

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
from torch.nn import functional as F
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from mtlrepro import output_convs, parallel_branches, pointwise_fusion
from mtlrepro.config import ConfigError, check_choice, check_range

MEMORY_FORMATS: tuple[str, ...] = ("auto", "contiguous", "channels_last")
"""``export``'s choices of memory format (``auto``: the fastest form on the example)."""
FUSION = "channels_last + fusion"
"""The name of the channels-last form with oneDNN post-op fusion (module doc, step 6)."""
CONTIGUOUS_FUSION = "contiguous + fusion"
"""The name of the contiguous form with oneDNN post-op fusion (module doc, step 6)."""
_FORMATS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}
_FOLDABLE = ((nn.Conv2d, nn.BatchNorm2d), (nn.Linear, nn.BatchNorm1d))
_NO_OPS = (nn.Identity, nn.Dropout, nn.Dropout2d)
RELATIVE_TOLERANCE = 1e-8
"""The largest float64 output difference the folding may make, relative to the output's
largest magnitude (rounding: below 1e-12; MTAN folded twice: 0.1)."""
ROUND_SECONDS = 0.02
"""The timing rounds of ``auto``'s candidate forms last at least this long (a few ms per call
is below the noise of one call)."""
PART_ROUND_SECONDS = 0.005
"""The same for the timing of one part of a network, rewritten against as it was (a fused
convolution chain, merged parallel branches, an output convolution; step 6)."""
_INLINED = (nn.Conv2d, nn.Linear, nn.ReLU)


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
        timings_ms: each candidate form's median latency on the example (``auto`` only):
            ``contiguous``, ``channels_last``, :data:`CONTIGUOUS_FUSION` and :data:`FUSION`.
        fused: convolution chains run as one oneDNN primitive (0 unless a fused form won).
        merged: groups of parallel convolution branches run merged (0 unless a
            channels-last form won).
        matmul_outputs: output 1×1 convolutions run as a matrix product that writes the
            standard layout (:mod:`mtlrepro.output_convs`; 0 unless a channels-last form won).
        form: the chosen form: ``memory_format``, or ``memory_format + fusion`` when at
            least one chain is fused (a fused candidate whose chains all measured slower fused
            is the plain form of its memory format, and is named so).
    """

    def __init__(self, network: nn.Module, memory_format: str, folded: int, removed: int,
                 traced: bool, timings_ms: dict[str, float], fused: int = 0,
                 merged: int = 0, matmul_outputs: int = 0) -> None:
        super().__init__()
        self.network = network
        self.memory_format = memory_format
        self.folded, self.removed, self.traced = folded, removed, traced
        self.timings_ms = dict(timings_ms)
        self.fused, self.merged, self.matmul_outputs = fused, merged, matmul_outputs
        self.form = f"{memory_format} + fusion" if fused else memory_format

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
    calls: dict[str, Any], rounds: int, repeats: int = 1, *, min_round_seconds: float = 0.0
) -> dict[str, float]:
    """Median seconds per call of each of ``calls`` (name -> a function of no argument) over
    ``rounds`` interleaved rounds (the order reverses every round) of ``repeats`` calls each,
    after one untimed call of each: what every side-by-side timing here uses.  With
    ``min_round_seconds``, more calls per round where needed so that a round of the first
    call lasts about that long (one call of a few ms is within a machine's noise)."""
    for call in calls.values():
        call()
    if min_round_seconds > 0:
        start = time.perf_counter()
        next(iter(calls.values()))()
        elapsed = max(time.perf_counter() - start, 1e-6)
        repeats = max(repeats, math.ceil(min_round_seconds / elapsed))
    samples: dict[str, list[float]] = {name: [] for name in calls}
    names = list(calls)
    for k in range(rounds):
        for name in names if k % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            for _ in range(repeats):
                calls[name]()
            samples[name].append((time.perf_counter() - start) / repeats)
    return {name: statistics.median(values) for name, values in samples.items()}


def _inline_calls(graph: fx.GraphModule) -> fx.GraphModule:
    """``graph`` with each call of a convolution, linear or ReLU module replaced by a call of
    its function on the module's parameters (module doc, step 5), in place."""
    modules = dict(graph.named_modules())
    for node in list(graph.graph.nodes):
        module = modules.get(node.target) if node.op == "call_module" else None
        if not isinstance(module, _INLINED) or len(node.args) != 1 or node.kwargs:
            continue
        if isinstance(module, nn.Conv2d) and module.padding_mode != "zeros":
            continue
        with graph.graph.inserting_before(node):
            if isinstance(module, nn.ReLU):
                call = (torch.relu_ if module.inplace else torch.relu, ())
            else:
                weights = tuple(graph.graph.get_attr(f"{node.target}.{name}")
                                if getattr(module, name) is not None else None
                                for name in ("weight", "bias"))
                call = ((torch.conv2d, (*weights, module.stride, module.padding,
                                        module.dilation, module.groups))
                        if isinstance(module, nn.Conv2d) else (F.linear, weights))
            function, extra = call
            new = graph.graph.call_function(function, (node.args[0], *extra))
        node.replace_all_uses_with(new)
        graph.graph.erase_node(node)
    graph.graph.lint()
    graph.recompile()
    return graph


def _faster_chooser(rounds: int) -> pointwise_fusion.Chooser:
    """Keep a rewritten part of a network when it measures faster than the part as it was
    (interleaved medians of ``rounds`` rounds of about :data:`PART_ROUND_SECONDS`)."""
    def choose(before: Any, after: Any) -> bool:
        times = interleaved_medians({"before": before, "after": after}, rounds,
                                    min_round_seconds=PART_ROUND_SECONDS)
        return times["after"] < times["before"]
    return choose


def _candidates(network: nn.Module, example: Tensor, traced: bool,
                rounds: int) -> tuple[dict[str, nn.Module], dict[str, int]]:
    """The forms ``export`` chooses from (module doc, step 6), keyed by name, and what the
    channels-last ones rewrite: groups of parallel branches ``merged``, output convolutions
    as ``matmul_outputs``."""
    channels_last = copy.deepcopy(network).to(memory_format=torch.channels_last)
    example_last = example.contiguous(memory_format=torch.channels_last)
    rewrites = {"merged": 0, "matmul_outputs": 0}
    if traced:
        channels_last, rewrites["merged"] = parallel_branches.merge_parallel_convs(
            channels_last, example_last, _faster_chooser(rounds))
        channels_last, rewrites["matmul_outputs"] = output_convs.standard_layout_outputs(
            channels_last, example_last, _faster_chooser(rounds))
    forms = {"contiguous": network, "channels_last": channels_last}
    if traced and example.dtype == torch.float32 and pointwise_fusion.available():
        forms[CONTIGUOUS_FUSION] = pointwise_fusion.fuse_pointwise(network, example,
                                                                   _faster_chooser(rounds))
        forms[FUSION] = pointwise_fusion.fuse_pointwise(channels_last, example_last,
                                                        _faster_chooser(rounds))
    return {name: _inline_calls(form) if traced else form
            for name, form in forms.items()}, rewrites


def _format_of(form: str) -> str:
    """The memory format of a candidate form (:func:`_candidates`)."""
    return form.split(" + ")[0]


def _timings(forms: dict[str, nn.Module], example: Tensor, rounds: int) -> dict[str, float]:
    """Median ms per call of each form served (:func:`_serve`) on ``example``, input and
    output conversions included as a caller pays them (:func:`interleaved_medians`, with
    enough calls per round that one round of the first form lasts about
    :data:`ROUND_SECONDS`)."""
    calls = {name: (lambda form=form, name=name: _serve(form, _format_of(name), example))
             for name, form in forms.items()}
    seconds = interleaved_medians(calls, rounds, min_round_seconds=ROUND_SECONDS)
    return {name: value * 1e3 for name, value in seconds.items()}


def export(model: nn.Module, example: Tensor, *, memory_format: str = "auto",
           rounds: int = 7) -> InferenceNetwork:
    """The inference form of ``model`` (see the module doc); ``model`` is left as it was.

    Args:
        model: a trained network taking a batch of images.
        example: an input batch like the ones it will serve (shape and dtype; the ``auto``
            form is chosen on it).
        memory_format: ``auto`` (the fastest form, fusion included), ``contiguous`` or
            ``channels_last`` (that format, without fusion).
        rounds: timed calls of each form for ``auto`` (at least 1).
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
    rewrites = {"merged": 0, "matmul_outputs": 0}
    if memory_format == "auto":
        forms, candidate_rewrites = _candidates(network, example, traced, rounds)
        timings = _timings(forms, example, rounds)
        form = min(timings, key=timings.get)
        network = forms[form]
        memory_format = _format_of(form)
        if memory_format == "channels_last":
            rewrites = candidate_rewrites
    else:
        network = network.to(memory_format=_FORMATS[memory_format])
        if traced:
            network = _inline_calls(network)
    fused = _count(network, (pointwise_fusion.FusedConv,))
    return InferenceNetwork(network, memory_format, folded, removed, traced, timings, fused,
                            **rewrites)
