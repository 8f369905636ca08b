"""SegNet-style encoder--decoder backbone, as used by MTAN and papers C and D.

Reference: Liu, Johns & Davison, "End-to-End Multi-Task Learning with Attention", CVPR 2019
(MTAN), whose NYU-v2 baseline is a SegNet (Badrinarayanan et al., TPAMI 2017) with stage widths
(64, 128, 256, 512, 512).  Paper C factorises this network; it is also the backbone of the
SegNet / MTAN baselines that papers C and D compare against.

Layout (``S`` stages, widths ``w_0 .. w_{S-1}``, ``k_s`` convolutions in stage ``s``):

* encoder stage ``s``: ``(conv3x3 -> BN -> ReLU) x k_s`` (the first conv maps ``w_{s-1} -> w_s``,
  with ``w_{-1}`` = 3 input channels), then a 2x2 max-pool that keeps its indices;
* decoder stage ``s`` (applied deepest first): max-unpool with the indices of encoder stage
  ``s``, then ``(conv3x3 -> BN -> ReLU) x k_s`` (the first conv maps ``w_s -> w_{s-1}``, with
  ``w_{-1}`` = ``w_0`` for the last decoder stage), exactly mirroring MTAN's ``decoder_block``
  and ``conv_block_dec``;
* the output is a ``w_0``-channel feature map at input resolution.

Choices, documented because they differ from MTAN's code:

* ``convs_per_stage`` defaults to 2 in every stage, a lighter uniform variant.  MTAN's SegNet
  uses the VGG-16 layout ``(2, 2, 3, 3, 3)``; pass that tuple to get it exactly.
* Convolutions have no bias (a bias before BatchNorm is cancelled by the BN mean); MTAN's have
  one.  This changes the parameter count by ``sum of conv output channels`` and nothing else.
* Pooling uses ``ceil_mode=True`` and unpooling restores the exact pre-pool size, so inputs of
  any height and width work (no divisibility by ``2**S`` is needed): odd sizes keep their last
  row/column, and every pixel takes part in the pooling.
* Initialisation follows MTAN: Xavier-normal conv weights, BN weight 1 and bias 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from mtlrepro.config import DEFAULT_PROFILE, ConfigError, build_config, check_range

MTAN_WIDTHS: tuple[int, ...] = (64, 128, 256, 512, 512)
"""Stage widths of MTAN's SegNet (VGG-16 encoder)."""

MTAN_CONVS_PER_STAGE: tuple[int, ...] = (2, 2, 3, 3, 3)
"""Convolutions per stage in MTAN's SegNet (VGG-16 layout)."""

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class SegNetConfig:
    """Configuration of the ``segnet`` multi-task model (backbone, heads, input normalisation).

    Attributes:
        widths: stage widths before scaling; default MTAN's ``(64, 128, 256, 512, 512)``.
        width_mult: factor (> 0) applied to every width, rounded, at least 1 channel.
        convs_per_stage: conv3x3-BN-ReLU blocks per stage (>= 1): one int for every stage or
            one per stage.  Default 2 (lighter uniform variant); MTAN's SegNet is
            ``(2, 2, 3, 3, 3)``.
        mean: per-channel mean subtracted from the [0, 1] input images (default ImageNet).
        std: per-channel standard deviation dividing them (default ImageNet, all > 0).
        classifier_hidden: hidden units of classification heads (``None``: a single FC).
        channels_last: run the network on channels-last activations (parameters and outputs
            keep the standard layout).  Measured 1.0-1.35x faster for a training step on 2 CPU
            threads (batch 16, 48x64, width_mult 0.125-0.5) and never slower; outputs agree
            with the standard layout to float rounding.
    """

    widths: tuple[int, ...] = MTAN_WIDTHS
    width_mult: float = 1.0
    convs_per_stage: int | tuple[int, ...] = 2
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    classifier_hidden: int | None = None
    channels_last: bool = True

    def __post_init__(self) -> None:
        """Check ranges; raises :class:`~mtlrepro.config.ConfigError` naming what is allowed."""
        if not self.widths:
            raise ConfigError("SegNetConfig.widths must hold at least one stage width")
        for w in self.widths:
            check_range("SegNetConfig.widths[i]", w, 1, integer=True)
        check_range("SegNetConfig.width_mult", self.width_mult, 0, low_inclusive=False)
        convs = self.convs_per_stage
        if isinstance(convs, list):  # YAML has no tuples
            convs = tuple(convs)
            object.__setattr__(self, "convs_per_stage", convs)
        if isinstance(convs, tuple) and len(convs) != len(self.widths):
            raise ConfigError(
                f"SegNetConfig.convs_per_stage must be one int or {len(self.widths)} ints (one "
                f"per stage of widths); got {convs!r}"
            )
        for k in convs if isinstance(convs, tuple) else (convs,):
            check_range("SegNetConfig.convs_per_stage", k, 1, integer=True)
        for s in self.std:
            check_range("SegNetConfig.std[i]", s, 0, low_inclusive=False)
        if self.classifier_hidden is not None:
            check_range("SegNetConfig.classifier_hidden", self.classifier_hidden, 1, integer=True)

    @property
    def stage_widths(self) -> tuple[int, ...]:
        """Scaled stage widths: ``max(1, round(width * width_mult))``."""
        return tuple(max(1, int(w * self.width_mult + 0.5)) for w in self.widths)

    @property
    def stage_convs(self) -> tuple[int, ...]:
        """Convolutions of each stage (``convs_per_stage`` expanded to one per stage)."""
        if isinstance(self.convs_per_stage, tuple):
            return self.convs_per_stage
        return (self.convs_per_stage,) * len(self.widths)


SEGNET_PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {"widths": (8, 16)},
    "cpu": {"widths": (64, 128, 256, 512), "width_mult": 0.25},
    "paper": {"convs_per_stage": MTAN_CONVS_PER_STAGE},
}
"""Per-profile sizes of the SegNet models (``segnet``, ``cross_stitch``, ``mtan``): seconds
(smoke), 2 CPU cores (cpu: four stages at a quarter of MTAN's widths) and MTAN's SegNet
(paper: its widths and VGG-16 layout)."""


def segnet_config(profile: str | None = None, **overrides: Any) -> SegNetConfig:
    """The SegNet models' configuration: the preset of ``profile`` (:data:`SEGNET_PRESETS`;
    ``None``: the :class:`SegNetConfig` defaults) with field ``overrides``; unknown fields and
    wrong types raise :class:`~mtlrepro.config.ConfigError`.

    Args:
        profile: ``smoke``, ``cpu``, ``paper`` or ``None``.
        **overrides: :class:`SegNetConfig` fields.
    """
    presets = SEGNET_PRESETS if profile is not None else {}
    return build_config(SegNetConfig, presets, profile or DEFAULT_PROFILE, overrides)


PoolRecord = tuple[Tensor, tuple[int, int]]
"""Max-pool indices of one encoder stage and the spatial size before pooling."""


class ConvBNReLU(nn.Sequential):
    """conv3x3 (no bias) -> BatchNorm -> ReLU, spatial size preserved."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        """Args:
        in_channels: input channels.
        out_channels: output channels.
        """
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


def _stage(in_channels: int, out_channels: int, convs: int) -> nn.Sequential:
    """``convs`` ConvBNReLU blocks, the first mapping ``in_channels -> out_channels``."""
    blocks = [ConvBNReLU(in_channels, out_channels)]
    blocks += [ConvBNReLU(out_channels, out_channels) for _ in range(convs - 1)]
    return nn.Sequential(*blocks)


class SegNet(nn.Module):
    """SegNet encoder--decoder with max-pool indices passed to the decoder's max-unpool.

    Attributes:
        encoder: one ``nn.Sequential`` of ConvBNReLU blocks per stage.
        decoder: one ``nn.Sequential`` per stage, ``decoder[s]`` mirroring ``encoder[s]``
            (applied in reverse order), or ``None`` when built without a decoder.
        bottleneck_channels: channels of :meth:`encode`'s output (``widths[-1]``).
        out_channels: channels of :meth:`forward`'s output (``widths[0]``).
    """

    def __init__(
        self,
        widths: tuple[int, ...],
        convs_per_stage: tuple[int, ...],
        in_channels: int = 3,
        decoder: bool = True,
    ) -> None:
        """Args:
        widths: output channels of each encoder stage (already scaled), at least one.
        convs_per_stage: convolutions in each stage, same length as ``widths``.
        in_channels: channels of the input image.
        decoder: build the decoder; classification-only models need only the encoder.
        """
        super().__init__()
        if len(widths) != len(convs_per_stage) or not widths:
            raise ValueError(
                f"widths {widths} and convs_per_stage {convs_per_stage} must be non-empty and "
                "of equal length"
            )
        ins = (in_channels, *widths[:-1])
        self.encoder = nn.ModuleList(
            _stage(i, o, k) for i, o, k in zip(ins, widths, convs_per_stage, strict=True)
        )
        outs = (widths[0], *widths[:-1])
        self.decoder = (
            nn.ModuleList(
                _stage(i, o, k) for i, o, k in zip(widths, outs, convs_per_stage, strict=True)
            )
            if decoder
            else None
        )
        self.bottleneck_channels = widths[-1]
        self.out_channels = widths[0]
        init_mtan(self)

    def encode(self, x: Tensor) -> tuple[Tensor, list[PoolRecord]]:
        """Run the encoder.

        Args:
            x: normalised images, shape (B, C, H, W).

        Returns:
            The bottleneck (output of the last pooling, ``bottleneck_channels`` channels) and,
            per stage, the pooling indices and pre-pool size that :meth:`decode` needs.
        """
        pools: list[PoolRecord] = []
        for stage in self.encoder:
            x = stage(x)
            size = (x.shape[-2], x.shape[-1])
            x, indices = F.max_pool2d(x, 2, 2, ceil_mode=True, return_indices=True)
            pools.append((indices, size))
        return x, pools

    def decode(self, bottleneck: Tensor, pools: list[PoolRecord]) -> Tensor:
        """Run the decoder: unpool with the encoder's indices, then convolve, deepest first.

        Args:
            bottleneck: output of :meth:`encode`.
            pools: pooling records returned by :meth:`encode`.

        Returns:
            Features of shape (B, ``out_channels``, H, W) at the input resolution.
        """
        if self.decoder is None:
            raise RuntimeError("this SegNet was built without a decoder (decoder=False)")
        x = bottleneck
        for stage, (indices, size) in zip(reversed(self.decoder), reversed(pools), strict=True):
            x = stage(F.max_unpool2d(x, indices, 2, 2, output_size=size))
        return x

    def forward(self, x: Tensor) -> Tensor:
        """Encode then decode.

        Args:
            x: normalised images, shape (B, C, H, W).

        Returns:
            Features of shape (B, ``out_channels``, H, W).
        """
        return self.decode(*self.encode(x))


def init_mtan(module: nn.Module) -> None:
    """Initialise like MTAN: Xavier-normal conv/linear weights, zero biases, BN weight 1, bias 0.

    Args:
        module: module whose sub-modules are (re)initialised in place.
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            nn.init.xavier_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def pool_stage(x: Tensor) -> tuple[Tensor, PoolRecord]:
    """The 2x2 max-pool that ends an encoder stage, as in :meth:`SegNet.encode`.

    Args:
        x: a stage's output, shape (B, C, H, W).

    Returns:
        The pooled map (``ceil_mode``: any size works) and the record :func:`unpool_stage` needs.
    """
    size = (x.shape[-2], x.shape[-1])
    pooled, indices = F.max_pool2d(x, 2, 2, ceil_mode=True, return_indices=True)
    return pooled, (indices, size)


def unpool_stage(x: Tensor, record: PoolRecord) -> Tensor:
    """The max-unpool that starts a decoder stage, as in :meth:`SegNet.decode`.

    Args:
        x: the map to unpool, at the pooled resolution.
        record: :func:`pool_stage`'s record of the mirrored encoder stage.

    Returns:
        ``x`` put back at the positions of the maxima, at the exact pre-pool size.
    """
    indices, size = record
    return F.max_unpool2d(x, indices, 2, 2, output_size=size)
