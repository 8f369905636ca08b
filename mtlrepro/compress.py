"""Turn a group-sparse network into a genuinely smaller dense one, and measure networks.

Paper B (Upadhyay et al., "Less is More", Eq. 1-3, 6) puts one group-lasso group on every
*input-channel slice* ``W_l[:, c, :, :]`` of the shared backbone's convolutions; its claim B3
(inference time falls as sparsity grows) needs the zero groups physically removed.
:func:`slim` does that, exactly by construction; :func:`parameter_count`,
:func:`conv_flops` and :func:`latency` measure the result.

Why removing a channel is exact (the rule :func:`slim` applies)
---------------------------------------------------------------
Let producer ``P`` (a conv) emit channel ``c``, followed by BatchNorm and ReLU, and let the
resulting tensor ``h`` be read by the consumers ``Q_1 .. Q_m`` (convs, or linear layers after
global pooling).  Each consumer's output is ``Q_j(h) = b_j + sum_c W_j[:, c] * h_c``, a sum over
channels.  If ``W_j[:, c] = 0`` for *every* consumer ``j``, the term of channel ``c`` is zero
whatever ``h_c`` is -- in particular the constant ``relu(beta_c - gamma_c mu_c /
sqrt(sigma_c^2 + eps))`` that BN + ReLU emit in eval mode even when ``P``'s filter ``c`` is
zero, and the zero padding at the borders.  Channel ``c`` can therefore be deleted at once from
``P``'s output (its filter ``W_P[c]``), from its BN (``gamma, beta, mu, sigma^2`` entries) and
from every consumer's input (``W_j[:, c]``): all remaining channels are computed by the same
arithmetic on the same values, so the outputs are unchanged (up to float summation order).

Couplings extend "producer" and "consumer" to *channel index sets shared by several tensors*;
a channel of such a set is removed only when the zero-group condition holds for **every**
consumer of **every** tensor in the set, and then it is removed from every producer:

* channel-wise operations (BN, ReLU, max-pool, max-unpool, global pooling) pass the index set
  through unchanged;
* a residual addition ``relu(bn(conv(x)) + x)`` (or ``+ downsample(x)``) forces the block's
  last conv, the identity/downsample path and everything that reads the sum to share one index
  set: all producers of a residual stream (the stem or a downsample conv, and the last conv of
  each block adding into it) lose the channel together, and only if every block's first conv,
  the next downsample conv and the final classifier all have a zero group there;
* SegNet's max-unpool uses encoder stage ``s``'s pooling indices on the decoder stream entering
  decoder stage ``s``, so those two tensors share an index set (the indices must be sliced
  with the features);
* a network output (features read by heads that are not part of the slimmed module) is a
  consumer that reads everything: its channels are always kept.  When a whole
  :class:`~mtlrepro.models.MultiTaskModel` is slimmed, the heads' first layers are the
  consumers instead, and only their input side is sliced (heads' own widths are kept).

At least one channel of every index set is kept (a zero-width layer is not a valid module);
keeping a removable channel is always exact.

Supported structures (explicit slimmers, not a general graph tracer -- a torch.fx dependency
graph would cover more architectures but was out of this module's time budget):

* :class:`~mtlrepro.models.SegNet` (encoder-decoder of conv-BN-ReLU blocks with max-pool
  indices and unpooling, with or without decoder), alone or inside a
  :class:`~mtlrepro.models.MultiTaskModel` with :class:`~mtlrepro.models.DenseHead` /
  :class:`~mtlrepro.models.ClassificationHead` heads;
* torchvision :class:`torchvision.models.ResNet` with ``BasicBlock`` or ``Bottleneck`` blocks
  (any widths and depths; ``fc`` a ``nn.Linear`` or ``nn.Identity``).

Not supported (raise ``TypeError`` / ``ValueError``): grouped or depth-wise convolutions
(ResNeXt, EfficientNet), timm's ResNet, concatenations, and any other architecture.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from mtlrepro.config import check_range
from mtlrepro.models.heads import ClassificationHead, DenseHead
from mtlrepro.models.multitask import MultiTaskModel
from mtlrepro.models.segnet import SegNet

Layer = nn.Conv2d | nn.Linear


@dataclass
class _ChannelSet:
    """One channel index set shared by several tensors (see the module docstring).

    Attributes:
        producers: (layer, batch norm or ``None``) pairs whose *output* channels form the set.
        consumers: layers whose *input* channels form the set.
        is_output: the set is (also) read outside the slimmed module, so nothing is removed.
    """

    producers: list[tuple[Layer, nn.BatchNorm2d | None]] = field(default_factory=list)
    consumers: list[Layer] = field(default_factory=list)
    is_output: bool = False

    def keep(self) -> Tensor:
        """Boolean mask of the channels to keep: those some consumer reads with a non-zero
        group, all of them for an output, and at least the first one."""
        size = _out_channels(self.producers[0][0])
        if self.is_output:
            return torch.ones(size, dtype=torch.bool)
        mask = torch.zeros(size, dtype=torch.bool)
        for layer in self.consumers:
            mask |= ~_zero_input_groups(layer)
        if not mask.any():
            mask[0] = True
        return mask


def _check_layer(layer: nn.Module) -> None:
    """Reject layers the slicing rules do not cover (grouped convolutions, other types)."""
    if isinstance(layer, nn.Conv2d):
        if layer.groups != 1:
            raise ValueError(f"grouped convolutions are not supported: {layer}")
    elif not isinstance(layer, nn.Linear):
        raise TypeError(f"only nn.Conv2d and nn.Linear layers can be sliced; got {layer}")


def _out_channels(layer: Layer) -> int:
    """Output channels (conv) or features (linear) of ``layer``."""
    return layer.weight.shape[0]


def _zero_input_groups(layer: Layer) -> Tensor:
    """Mask of input channels ``c`` whose group ``W[:, c]`` is entirely zero (paper B's groups).

    Args:
        layer: a conv (groups ``W[:, c, :, :]``) or linear layer (columns ``W[:, c]``).
    """
    _check_layer(layer)
    weight = layer.weight.detach()
    dims = [d for d in range(weight.dim()) if d != 1]
    return (weight != 0).sum(dim=dims).cpu() == 0


def _slice_layer(layer: Layer, keep_in: Tensor | None, keep_out: Tensor | None) -> Layer:
    """A new layer holding the kept input and output channels of ``layer``.

    Args:
        layer: conv or linear layer to copy from.
        keep_in: mask of input channels to keep (``None``: all).
        keep_out: mask of output channels to keep (``None``: all).
    """
    _check_layer(layer)
    weight = layer.weight.detach()
    out_idx = torch.arange(weight.shape[0]) if keep_out is None else keep_out.nonzero()[:, 0]
    in_idx = torch.arange(weight.shape[1]) if keep_in is None else keep_in.nonzero()[:, 0]
    out_idx, in_idx = out_idx.to(weight.device), in_idx.to(weight.device)
    factory = {"device": weight.device, "dtype": weight.dtype}
    new: Layer
    if isinstance(layer, nn.Conv2d):
        new = nn.Conv2d(
            len(in_idx),
            len(out_idx),
            layer.kernel_size,
            stride=layer.stride,
            padding=layer.padding,
            dilation=layer.dilation,
            bias=layer.bias is not None,
            padding_mode=layer.padding_mode,
            **factory,
        )
    else:
        new = nn.Linear(len(in_idx), len(out_idx), bias=layer.bias is not None, **factory)
    with torch.no_grad():
        new.weight.copy_(weight[out_idx][:, in_idx])
        if layer.bias is not None:
            new.bias.copy_(layer.bias.detach()[out_idx])
    new.train(layer.training)
    return new


def _slice_bn(bn: nn.BatchNorm2d, keep: Tensor) -> nn.BatchNorm2d:
    """A new BatchNorm holding the kept channels' affine parameters and running statistics.

    Args:
        bn: batch norm to copy from.
        keep: mask of channels to keep.
    """
    idx = keep.nonzero()[:, 0]
    new = nn.BatchNorm2d(len(idx), bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
    # Same names, shapes (sliced) and devices as the original's parameters and buffers.
    state = {
        name: value.clone() if value.dim() == 0 else value[idx.to(value.device)]
        for name, value in bn.state_dict().items()
    }
    new.load_state_dict(state, assign=True)
    new.train(bn.training)
    return new


def _apply(root: nn.Module, sets: Sequence[_ChannelSet]) -> None:
    """Replace, inside ``root``, every layer and BN of ``sets`` by its sliced copy.

    Args:
        root: the module (a private copy) owning all the layers of ``sets``.
        sets: the channel index sets; every layer is a producer of at most one and a consumer
            of at most one of them.
    """
    keep_in: dict[int, Tensor] = {}
    keep_out: dict[int, Tensor] = {}
    for channel_set in sets:
        keep = channel_set.keep()
        for layer, bn in channel_set.producers:
            keep_out[id(layer)] = keep
            if bn is not None:
                keep_out[id(bn)] = keep
        for layer in channel_set.consumers:
            keep_in[id(layer)] = keep
    for name, module in list(root.named_modules()):
        key = id(module)
        if key not in keep_in and key not in keep_out:
            continue
        if isinstance(module, nn.BatchNorm2d):
            new: nn.Module = _slice_bn(module, keep_out[key])
        else:
            new = _slice_layer(module, keep_in.get(key), keep_out.get(key))
        parent_name, _, child = name.rpartition(".")
        setattr(root.get_submodule(parent_name), child, new)


def _segnet_sets(backbone: SegNet, heads: Sequence[nn.Module] | None) -> list[_ChannelSet]:
    """Channel index sets of a SegNet, its outputs read by ``heads`` (``None``: external).

    Args:
        backbone: the SegNet.
        heads: the task heads of the enclosing multi-task model, or ``None`` for a bare
            backbone whose output (decoder features, or the bottleneck without decoder) is kept.
    """

    def blocks(stage: nn.Sequential) -> list[tuple[nn.Conv2d, nn.BatchNorm2d]]:
        return [(block[0], block[1]) for block in stage]

    enc = [blocks(stage) for stage in backbone.encoder]
    dec = [blocks(stage) for stage in backbone.decoder] if backbone.decoder is not None else None
    sets = [
        _ChannelSet([stage[i]], [stage[i + 1][0]])
        for stage in enc + (dec or [])
        for i in range(len(stage) - 1)
    ]
    last = len(enc) - 1
    for s in range(last):  # encoder stage s output, coupled by unpooling with decoder input s
        channel_set = _ChannelSet([enc[s][-1]], [enc[s + 1][0][0]])
        if dec is not None:
            channel_set.producers.append(dec[s + 1][-1])
            channel_set.consumers.append(dec[s][0][0])
        sets.append(channel_set)
    dense_inputs, pooled_inputs, unknown = [], [], False
    for head in heads or []:
        if isinstance(head, DenseHead):
            dense_inputs.append(head[0])
        elif isinstance(head, ClassificationHead):
            pooled_inputs.append(head.mlp[0])
        else:
            unknown = True
    bottleneck = _ChannelSet([enc[last][-1]], pooled_inputs)
    if dec is not None:
        bottleneck.consumers.append(dec[last][0][0])
        features = _ChannelSet([dec[0][-1]], dense_inputs, is_output=heads is None or unknown)
        sets.append(features)
    else:
        bottleneck.is_output = heads is None
    bottleneck.is_output |= unknown
    sets.append(bottleneck)
    return sets


def _resnet_sets(model: ResNet) -> list[_ChannelSet]:
    """Channel index sets of a torchvision ResNet: block-internal chains and residual streams.

    Args:
        model: a torchvision ResNet of ``BasicBlock`` / ``Bottleneck`` blocks.
    """
    sets: list[_ChannelSet] = []
    stream = _ChannelSet([(model.conv1, model.bn1)])
    for layer in (model.layer1, model.layer2, model.layer3, model.layer4):
        for block in layer:
            if isinstance(block, BasicBlock):
                chain = [(block.conv1, block.bn1), (block.conv2, block.bn2)]
            elif isinstance(block, Bottleneck):
                chain = [
                    (block.conv1, block.bn1),
                    (block.conv2, block.bn2),
                    (block.conv3, block.bn3),
                ]
            else:
                raise TypeError(f"unsupported residual block {type(block).__name__}")
            sets += [_ChannelSet([chain[i]], [chain[i + 1][0]]) for i in range(len(chain) - 1)]
            stream.consumers.append(block.conv1)
            if block.downsample is not None:
                down = block.downsample
                if not (
                    isinstance(down, nn.Sequential)
                    and len(down) == 2
                    and isinstance(down[0], nn.Conv2d)
                    and isinstance(down[1], nn.BatchNorm2d)
                ):
                    raise TypeError(f"unsupported downsample path {down}")
                stream.consumers.append(down[0])
                sets.append(stream)
                stream = _ChannelSet([(down[0], down[1])])
            stream.producers.append(chain[-1])
    if isinstance(model.fc, nn.Linear):
        stream.consumers.append(model.fc)
    else:
        stream.is_output = True
    sets.append(stream)
    return sets


def slim(model: nn.Module) -> nn.Module:
    """A smaller dense copy of ``model`` without the channels that only zero groups read.

    Applies the rule derived in the module docstring (paper B's input-channel groups
    ``W[:, c, :, :]``); in eval mode the copy computes the same outputs as ``model`` up to
    float summation order.  ``model`` itself is left unchanged.

    Args:
        model: a :class:`~mtlrepro.models.MultiTaskModel` with a SegNet backbone (heads'
            inputs are sliced too), a bare :class:`~mtlrepro.models.SegNet` (its output
            channels are kept), or a torchvision ``ResNet`` of ``BasicBlock`` / ``Bottleneck``
            blocks (the ``fc`` layer's inputs are sliced; with ``fc = nn.Identity`` the
            features are kept).

    Returns:
        The slimmed copy (same class, same forward code, fewer channels).
    """
    out = copy.deepcopy(model)
    if isinstance(out, MultiTaskModel) and isinstance(out.backbone, SegNet):
        backbone, sets = out.backbone, _segnet_sets(out.backbone, list(out.heads.values()))
    elif isinstance(out, SegNet):
        backbone, sets = out, _segnet_sets(out, None)
    elif isinstance(out, ResNet):
        _apply(out, _resnet_sets(out))
        return out
    else:
        raise TypeError(
            f"slim supports MultiTaskModel(SegNet), SegNet and torchvision ResNet; got "
            f"{type(model).__name__}"
        )
    _apply(out, sets)
    backbone.bottleneck_channels = backbone.encoder[-1][-1][0].out_channels
    if backbone.decoder is not None:
        backbone.out_channels = backbone.decoder[0][-1][0].out_channels
    return out


def parameter_count(module: nn.Module) -> int:
    """Number of scalar parameters of ``module`` (shared parameters counted once).

    Args:
        module: any module.
    """
    return sum(p.numel() for p in module.parameters())


def _dummy_input(module: nn.Module, input_shape: Sequence[int]) -> Tensor:
    """Zeros of ``input_shape`` on the device and with the dtype of ``module``'s parameters."""
    ref = next(module.parameters(), None)
    if ref is None:
        return torch.zeros(tuple(input_shape))
    return torch.zeros(tuple(input_shape), device=ref.device, dtype=ref.dtype)


def conv_flops(module: nn.Module, input_shape: Sequence[int]) -> int:
    """Multiply-accumulates of all conv and linear layers in one forward pass.

    Counted with forward hooks on a zero input, in eval mode and without gradients (the
    module's training flag is restored): a conv adds ``output elements * in_channels / groups
    * kernel area``, a linear layer ``output elements * in_features``.

    Args:
        module: the network.
        input_shape: full input shape including the batch dimension, e.g. ``(1, 3, 64, 64)``;
            the count is for that whole batch.
    """
    total = 0

    def hook(layer: nn.Module, _inputs: tuple[Tensor, ...], output: Tensor) -> None:
        nonlocal total
        if isinstance(layer, nn.Conv2d):
            kernel = layer.kernel_size[0] * layer.kernel_size[1]
            total += output.numel() * (layer.in_channels // layer.groups) * kernel
        else:
            total += output.numel() * layer.in_features

    handles = [
        m.register_forward_hook(hook)
        for m in module.modules()
        if isinstance(m, nn.Conv2d | nn.Linear)
    ]
    was_training = module.training
    try:
        module.eval()
        with torch.no_grad():
            module(_dummy_input(module, input_shape))
    finally:
        module.train(was_training)
        for handle in handles:
            handle.remove()
    return total


def latency(
    module: nn.Module,
    input_shape: Sequence[int],
    repeats: int = 20,
    device: str | torch.device = "cpu",
    warmup: int = 3,
) -> float:
    """Median wall-clock seconds of one forward pass (eval mode, no gradients).

    A copy of ``module`` is moved to ``device`` (the module itself is not touched); ``warmup``
    untimed passes precede the ``repeats`` timed ones, and CUDA is synchronised around each.

    Args:
        module: the network.
        input_shape: full input shape including the batch dimension.
        repeats: timed forward passes (>= 1).
        device: device to run on.
        warmup: untimed passes first (>= 0).
    """
    check_range("latency.repeats", repeats, 1, integer=True)
    check_range("latency.warmup", warmup, 0, integer=True)
    device = torch.device(device)
    net = copy.deepcopy(module).to(device).eval()
    x = _dummy_input(net, input_shape)
    cuda = device.type == "cuda"
    times = []
    with torch.no_grad():
        for i in range(warmup + repeats):
            if cuda:
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            net(x)
            if cuda:
                torch.cuda.synchronize(device)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    return statistics.median(times)
