"""Paper B's multi-task network: dilated ResNet backbone, DeepLab-v3 heads, conv + FC classifiers.

Upadhyay et al., "Less is More", Sec. 4 ("Network architecture"): a dilated ResNet-50 [Yu et
al. 2017] backbone shared by all tasks, a DeepLab-v3 network [Chen et al. 2017] as the head of
every dense task, and "a convolution layer and two linear fully connected layers" as the head of
every classification task.

* :class:`DilatedResNet` -- torchvision's ``ResNet`` with configurable widths whose last two
  stages replace their stride by dilation (``replace_stride_with_dilation=(False, True,
  True)``, output stride 8, as in DeepLab-v3 and torchvision's ``deeplabv3_resnet50``).  At the
  paper scale it *is* torchvision's ``resnet50(replace_stride_with_dilation=[False, True,
  True])`` without ``avgpool`` and ``fc`` (same modules, names, shapes and initialisation:
  23,508,032 parameters, 53 convolutions).  It stays a torchvision ``ResNet`` so
  :func:`mtlrepro.compress.slim` removes its zero channel groups.
* :class:`ASPPHead` -- torchvision's ``DeepLabHead`` (its own ``ASPP`` module, then conv3x3 ->
  BN -> ReLU -> conv1x1) with a configurable width, followed by bilinear upsampling by the
  output stride, so dense outputs come at the input resolution.  **Input height and width must
  be divisible by 8** (:meth:`DilatedResNet.encode` checks it).  At width 256 and rates
  (12, 24, 36) it has exactly the parameters of ``DeepLabHead(2048, n)``.
* :class:`ConvFCClassificationHead` -- conv3x3 -> BN -> ReLU -> global average pool -> FC ->
  ReLU -> FC (logits).

Choices, documented because they differ from the authors' public code
(github.com/ricupa/Less-is-More-Towards-parsimonious-multi-task-models-using-structured-sparsity;
facts read from it, no code copied):

* The authors' backbone is a ResNet-D ("deep" three-conv 3x3 stem 64-64-128, dilation 2 / 4 in
  every block of stages 3 / 4).  Here it is torchvision's dilated ResNet-50, the backbone of
  torchvision's DeepLab-v3: 7x7 stem conv, and the first block of a dilated stage keeps the
  previous dilation.
* Their ASPP drops out with p = 0.3 (also after the 1x1 branch); torchvision's ASPP, used here,
  drops out with p = 0.5 after the projection only.
* Their classification head is conv3x3 (in -> 64, with bias) -> ReLU -> 2x2 max-pool -> global
  average pool -> dropout 0.6 -> FC 64 -> 32 -> ReLU -> dropout 0.4 -> FC -> sigmoid.  The
  paper preset keeps its widths (64 conv channels, 32 hidden units); the head here has BN
  instead of the conv bias, no max-pool and no dropout, and returns logits (the task's loss
  applies the softmax / sigmoid).
* Heads keep PyTorch's default initialisation (as torchvision's ``DeepLabHead`` does); the
  backbone is initialised like torchvision's ResNet (Kaiming-normal fan-out convs, BN 1 / 0,
  residual branches not zero-initialised).

Atrous rates at smaller inputs: paper B feeds 256-px images, so the output-stride-8 features
are 32 px wide and the rates (12, 24, 36) span 0.375-1.125 of the feature map (a branch whose
rate is >= the feature size sees only its centre tap, as DeepLab-v3 notes; at 256 px that is
the rate-36 branch).  Slim profiles keep that rate / feature-size ratio:
rate = max(1, round(paper rate x input size / 256)) (:func:`scale_atrous_rates`), e.g.
(3, 6, 9) for 64-px inputs (8-px features), which the ``cpu`` preset uses for the embedded
48x48 / 48x64 data.

Profiles (:data:`DEEPLAB_PRESETS`, :func:`deeplab_config`):

* ``paper`` -- the network above: 23,508,032 backbone parameters (53 convs, 2048 output
  channels), 16.13 M per ASPP head, 1.18 M per classification head.
* ``cpu`` -- ResNet-50's shape (bottleneck blocks, expansion 4, torchvision stem, output stride
  8) with one block per stage and 1/16 of its widths, (4, 8, 16, 32) planes, stem 8, 128
  output channels; ASPP width 16 (1/16 of 256), rates (3, 6, 9): 33,672 backbone parameters
  in 17 convs, about 63 k per ASPP head.  A training step (forward, backward, Adam; batch 16,
  48x48, ``torch.set_num_threads(1)``, channels-last) measured a median 46 ms with the three
  NYU-v2 dense heads (13-class segmentation, depth, normals; 8 ms of it is the normal loss)
  and 20 ms with 3-class segmentation + two classifiers (CelebAMask-HQ's tasks).  A first
  version at 1/8 of the widths (stem 16, 256 output channels, ASPP 32) measured 64-105 ms and
  29-48 ms: the dilated 3x3 ASPP convs cost in proportion to the backbone's output width and
  dominate the step at these sizes, hence the narrower network.
* ``smoke`` -- (2, 2, 4, 4) planes, stem 4, ASPP 8: for tests.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet, conv3x3
from torchvision.models.segmentation.deeplabv3 import ASPP

from mtlrepro.config import ConfigError, build_config, check_choice, check_range
from mtlrepro.models.multitask import MODELS, MultiTaskModel
from mtlrepro.models.segnet import IMAGENET_MEAN, IMAGENET_STD
from mtlrepro.tasks import TaskSpec

PAPER_ATROUS_RATES: tuple[int, int, int] = (12, 24, 36)
"""DeepLab-v3's atrous rates at output stride 8 (torchvision's ``DeepLabHead`` default)."""
PAPER_INPUT_SIZE = 256
"""Paper B's input size in pixels (the authors' code), the reference of the rate scaling."""
BLOCKS: dict[str, type[BasicBlock | Bottleneck]] = {"basic": BasicBlock, "bottleneck": Bottleneck}
"""Residual block names of :class:`DeepLabConfig` -> torchvision block classes."""


def scale_atrous_rates(
    input_size: int,
    rates: Sequence[int] = PAPER_ATROUS_RATES,
    reference_size: int = PAPER_INPUT_SIZE,
) -> tuple[int, ...]:
    """Atrous rates for a smaller input with the paper's rate / feature-size ratio.

    ``max(1, round(rate * input_size / reference_size))`` for every rate (halves round up).

    Args:
        input_size: input height / width in pixels that the rates are for.
        rates: the rates at ``reference_size`` (default DeepLab-v3's (12, 24, 36)).
        reference_size: the input size ``rates`` were chosen for (default paper B's 256 px).
    """
    check_range("scale_atrous_rates.input_size", input_size, 1, integer=True)
    return tuple(max(1, math.floor(r * input_size / reference_size + 0.5)) for r in rates)


class DilatedBasicBlock(BasicBlock):
    """torchvision's ``BasicBlock`` whose two 3x3 convs accept a dilation.

    torchvision's ``BasicBlock`` raises for ``dilation > 1``; this subclass dilates both 3x3
    convs (padding = dilation, as mmsegmentation's dilated BasicBlock does).  With
    ``dilation = 1`` it is exactly ``BasicBlock``.
    """

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        base_width: int = 64,
        dilation: int = 1,
        norm_layer: type[nn.Module] | None = None,
    ) -> None:
        """Args:
        inplanes: input channels.
        planes: output channels of both convs.
        stride: stride of the first conv.
        downsample: projection of the identity path, or ``None``.
        groups: must be 1 (torchvision's rule for basic blocks).
        base_width: must be 64 (torchvision's rule for basic blocks).
        dilation: dilation (and padding) of both 3x3 convs.
        norm_layer: normalisation layer class (default ``nn.BatchNorm2d``).
        """
        super().__init__(inplanes, planes, stride, downsample, groups, base_width, 1, norm_layer)
        if dilation > 1:
            self.conv1 = conv3x3(inplanes, planes, stride, dilation=dilation)
            self.conv2 = conv3x3(planes, planes, dilation=dilation)


class DilatedResNet(ResNet):
    """torchvision ``ResNet`` with configurable widths, dilated last stages and no pooling / fc.

    Builds the modules torchvision's ``ResNet.__init__`` builds -- ``conv1`` (7x7, stride 2),
    ``bn1``, ``relu``, ``maxpool``, ``layer1`` .. ``layer4`` through the inherited
    ``_make_layer`` -- with ``fc = nn.Identity()`` and no ``avgpool``, initialised like
    torchvision's ResNet.  :meth:`forward` returns the ``layer4`` feature map.

    Attributes:
        output_stride: input size / feature size (8 with the default dilation).
    """

    def __init__(
        self,
        block: type[BasicBlock | Bottleneck],
        layers: Sequence[int],
        widths: Sequence[int] = (64, 128, 256, 512),
        stem_width: int = 64,
        replace_stride_with_dilation: Sequence[bool] = (False, True, True),
        in_channels: int = 3,
    ) -> None:
        """Args:
        block: residual block class; torchvision's ``BasicBlock`` is replaced by
            :class:`DilatedBasicBlock` (identical without dilation, torchvision's refuses it).
        layers: blocks in each of the 4 stages.
        widths: "planes" of each stage (torchvision: 64, 128, 256, 512); a stage outputs
            ``planes * block.expansion`` channels.
        stem_width: output channels of the stem conv (torchvision: 64).
        replace_stride_with_dilation: for stages 2-4, replace the stride 2 by dilation.
        in_channels: channels of the input image.
        """
        # ResNet.__init__ fixes the widths at 64..512, so its body is repeated here with
        # configurable widths; _make_layer (inherited) reads the attributes set below.
        nn.Module.__init__(self)
        if len(layers) != 4 or len(widths) != 4 or len(replace_stride_with_dilation) != 3:
            raise ValueError(
                f"need 4 layers, 4 widths and 3 dilation flags; got {layers}, {widths}, "
                f"{replace_stride_with_dilation}"
            )
        if block is BasicBlock:
            block = DilatedBasicBlock
        self._norm_layer = nn.BatchNorm2d
        self.inplanes = stem_width
        self.dilation = 1
        self.groups = 1
        self.base_width = 64
        self.conv1 = nn.Conv2d(in_channels, stem_width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, widths[0], layers[0])
        dilate = tuple(replace_stride_with_dilation)
        self.layer2 = self._make_layer(block, widths[1], layers[1], stride=2, dilate=dilate[0])
        self.layer3 = self._make_layer(block, widths[2], layers[2], stride=2, dilate=dilate[1])
        self.layer4 = self._make_layer(block, widths[3], layers[3], stride=2, dilate=dilate[2])
        self.fc = nn.Identity()
        self.output_stride = 4 * 2 ** sum(not d for d in dilate)
        for m in self.modules():  # torchvision's ResNet initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    @property
    def out_channels(self) -> int:
        """Channels of the feature map (``layer4``'s output; kept by :func:`compress.slim`)."""
        last = self.layer4[-1]
        return (last.conv3 if isinstance(last, Bottleneck) else last.conv2).out_channels

    @property
    def bottleneck_channels(self) -> int:
        """Channels of :meth:`encode`'s output (= :attr:`out_channels`)."""
        return self.out_channels

    def _forward_impl(self, x: Tensor) -> Tensor:
        """Stem, then the four stages; no pooling, no fc.

        Args:
            x: normalised images, shape (B, C, H, W).

        Returns:
            Features of shape (B, ``out_channels``, ceil(H / s), ceil(W / s)),
            s = ``output_stride``.
        """
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def encode(self, x: Tensor) -> tuple[Tensor, None]:
        """The feature map, for :class:`~mtlrepro.models.MultiTaskModel`.

        Args:
            x: normalised images, shape (B, C, H, W), H and W divisible by ``output_stride``
                (the dense heads upsample by exactly that factor).

        Returns:
            The features (B, ``out_channels``, H / s, W / s) and ``None`` (no decoder state).
        """
        height, width = x.shape[-2:]
        if height % self.output_stride or width % self.output_stride:
            raise ValueError(
                f"DilatedResNet input height and width must be divisible by its output stride "
                f"{self.output_stride}; got {height}x{width}"
            )
        return self(x), None

    def decode(self, features: Tensor, state: None) -> Tensor:
        """Identity: the dense heads read the backbone's feature map directly.

        Args:
            features: output of :meth:`encode`.
            state: ``None`` (from :meth:`encode`).
        """
        return features


class ASPPHead(nn.Sequential):
    """DeepLab-v3 head: ASPP -> conv3x3 -> BN -> ReLU -> conv1x1 -> bilinear upsampling.

    torchvision's ``DeepLabHead`` (built from torchvision's ``ASPP``) with a configurable width
    and the upsampling to input resolution (torchvision's ``DeepLabV3`` interpolates outside
    the head); at width 256 it has ``DeepLabHead(in_channels, out_channels, rates)``'s
    parameters, names and shapes.  In training mode, ASPP's image-pooling branch (BN on a 1x1
    map) needs batches of at least 2 samples.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        atrous_rates: Sequence[int] = PAPER_ATROUS_RATES,
        width: int = 256,
        upsample: int = 8,
    ) -> None:
        """Args:
        in_channels: channels of the backbone's feature map.
        out_channels: raw output channels (classes, or 1 / 3 for depth / normals).
        atrous_rates: dilations of ASPP's 3x3 branches.
        width: channels of every ASPP branch, of its projection and of the 3x3 conv.
        upsample: bilinear upsampling factor (the backbone's output stride), so that outputs
            come at the input resolution when the input size is divisible by it.
        """
        super().__init__(
            ASPP(in_channels, atrous_rates, width),
            nn.Conv2d(width, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Conv2d(width, out_channels, 1),
            nn.Upsample(scale_factor=upsample, mode="bilinear", align_corners=False),
        )


class ConvFCClassificationHead(nn.Sequential):
    """Paper B's classification head: conv3x3 -> BN -> ReLU -> global average pool -> FC ->
    ReLU -> FC, logits of shape (B, num_classes)."""

    def __init__(self, in_channels: int, num_classes: int, channels: int, hidden: int) -> None:
        """Args:
        in_channels: channels of the backbone's feature map.
        num_classes: number of output logits.
        channels: output channels of the conv.
        hidden: units of the hidden FC layer.
        """
        super().__init__(
            nn.Conv2d(in_channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(channels, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, num_classes),
        )


@dataclass(frozen=True)
class DeepLabConfig:
    """Configuration of the ``deeplab_resnet`` model; the defaults are paper B's network.

    Attributes:
        block: residual block, ``"bottleneck"`` (ResNet-50) or ``"basic"`` (ResNet-18/34).
        layers: blocks per stage (ResNet-50: (3, 4, 6, 3)).
        widths: "planes" per stage (torchvision: (64, 128, 256, 512)); the backbone outputs
            ``widths[3] * expansion`` channels (4 for bottleneck, 1 for basic blocks).
        stem_width: channels of the 7x7 stem conv (torchvision: 64).
        atrous_rates: dilations of the ASPP 3x3 branches (paper: (12, 24, 36) for 256 px; see
            :func:`scale_atrous_rates` for smaller inputs).
        aspp_channels: width of the dense heads (ASPP branches and 3x3 conv; DeepLab-v3: 256).
        classifier_channels: conv channels of classification heads (authors' code: 64).
        classifier_hidden: hidden FC units of classification heads (authors' code: 32).
        mean: per-channel mean subtracted from the [0, 1] input images (default ImageNet).
        std: per-channel standard deviation dividing them (default ImageNet, all > 0).
        channels_last: run the network on channels-last activations (parameters and outputs
            keep the standard layout).  On the ``cpu`` preset (training step, 1 thread, batch
            16, 48x48) both layouts measured the same within noise (+-10 %); on by default
            like ``segnet``'s.
    """

    block: str = "bottleneck"
    layers: tuple[int, int, int, int] = (3, 4, 6, 3)
    widths: tuple[int, int, int, int] = (64, 128, 256, 512)
    stem_width: int = 64
    atrous_rates: tuple[int, ...] = PAPER_ATROUS_RATES
    aspp_channels: int = 256
    classifier_channels: int = 64
    classifier_hidden: int = 32
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    channels_last: bool = True

    def __post_init__(self) -> None:
        """Check values; raises :class:`~mtlrepro.config.ConfigError` naming what is allowed."""
        for f in fields(self):  # YAML has no tuples
            if isinstance(getattr(self, f.name), list):
                object.__setattr__(self, f.name, tuple(getattr(self, f.name)))
        check_choice("DeepLabConfig.block", self.block, tuple(BLOCKS))
        for name in ("layers", "widths"):
            values = getattr(self, name)
            if len(values) != 4:
                raise ConfigError(f"DeepLabConfig.{name} must hold 4 ints; got {values!r}")
            for v in values:
                check_range(f"DeepLabConfig.{name}[i]", v, 1, integer=True)
        if not self.atrous_rates:
            raise ConfigError("DeepLabConfig.atrous_rates must hold at least one rate")
        for r in self.atrous_rates:
            check_range("DeepLabConfig.atrous_rates[i]", r, 1, integer=True)
        for name in ("stem_width", "aspp_channels", "classifier_channels", "classifier_hidden"):
            check_range(f"DeepLabConfig.{name}", getattr(self, name), 1, integer=True)
        if len(self.mean) != len(self.std):
            raise ConfigError(
                f"DeepLabConfig.mean and std need one value per input channel; got {self.mean!r}"
                f" and {self.std!r}"
            )
        for s in self.std:
            check_range("DeepLabConfig.std[i]", s, 0, low_inclusive=False)

    def backbone(self) -> DilatedResNet:
        """A new backbone of this configuration (output stride 8)."""
        return DilatedResNet(
            BLOCKS[self.block],
            self.layers,
            self.widths,
            self.stem_width,
            in_channels=len(self.mean),
        )


DEEPLAB_PRESETS: dict[str, dict[str, Any]] = {
    "paper": {
        "block": "bottleneck",
        "layers": (3, 4, 6, 3),
        "widths": (64, 128, 256, 512),
        "stem_width": 64,
        "atrous_rates": PAPER_ATROUS_RATES,
        "aspp_channels": 256,
        "classifier_channels": 64,
        "classifier_hidden": 32,
    },
    # ResNet-50's shape at 1/16 of its widths and ASPP width, one block per stage (the module
    # docstring has the measured training step and why it is this small).
    "cpu": {
        "block": "bottleneck",
        "layers": (1, 1, 1, 1),
        "widths": (4, 8, 16, 32),
        "stem_width": 8,
        "atrous_rates": scale_atrous_rates(64),
        "aspp_channels": 16,
        "classifier_channels": 32,
        "classifier_hidden": 16,
    },
    "smoke": {
        "block": "bottleneck",
        "layers": (1, 1, 1, 1),
        "widths": (2, 2, 4, 4),
        "stem_width": 4,
        "atrous_rates": scale_atrous_rates(32),
        "aspp_channels": 8,
        "classifier_channels": 8,
        "classifier_hidden": 8,
    },
}
"""Per-profile :class:`DeepLabConfig` fields (``paper`` repeats the defaults explicitly)."""


def deeplab_config(profile: str, **overrides: Any) -> DeepLabConfig:
    """The :class:`DeepLabConfig` of a profile's preset, with field overrides.

    Args:
        profile: ``smoke``, ``cpu`` or ``paper`` (:data:`DEEPLAB_PRESETS`).
        **overrides: :class:`DeepLabConfig` fields; unknown names, wrong types and
            out-of-range values raise :class:`~mtlrepro.config.ConfigError`.
    """
    return build_config(DeepLabConfig, DEEPLAB_PRESETS, profile, overrides)


@MODELS.register("deeplab_resnet")
def deeplab_resnet(
    task_specs: dict[str, TaskSpec], profile: str = "paper", **kwargs: Any
) -> MultiTaskModel:
    """Paper B's network: a dilated ResNet shared by all tasks, :class:`ASPPHead` per dense
    task and :class:`ConvFCClassificationHead` per classification task (both reading the
    backbone's stride-8 feature map).

    Args:
        task_specs: task name -> spec.
        profile: preset of :data:`DEEPLAB_PRESETS` the fields start from (default ``paper``,
            which equals the :class:`DeepLabConfig` defaults).
        **kwargs: :class:`DeepLabConfig` fields overriding the preset.
    """
    config = deeplab_config(profile, **kwargs)
    backbone = config.backbone()
    heads: dict[str, nn.Module] = {}
    for name, spec in task_specs.items():
        if spec.dense:
            heads[name] = ASPPHead(
                backbone.out_channels,
                spec.out_channels,
                config.atrous_rates,
                config.aspp_channels,
                backbone.output_stride,
            )
        else:
            heads[name] = ConvFCClassificationHead(
                backbone.out_channels,
                spec.out_channels,
                config.classifier_channels,
                config.classifier_hidden,
            )
    return MultiTaskModel(
        backbone, heads, task_specs, config.mean, config.std, config.channels_last, config
    )
