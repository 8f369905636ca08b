"""Convolutional feature extractors of paper A, by architecture family and size.

Paper A (Singh, "Analysing Efficiency of Deep Multi-Task Networks Using Distinctiveness
Pruning", Sec. 2.1 and Table 2) puts one of six ImageNet architectures, "without the final fully
connected layers", in front of its joint FC encoder layer: EfficientNet-B0/B2, ResNet-18/50,
NFNet-L0 and VGG-11.  :func:`create_backbone` builds a member of each family at three scales:

* ``paper`` -- the real architecture from its library (torchvision, or timm for NFNet-L0),
  built with ``weights=None`` / ``pretrained=False``; ImageNet weights come only from a local
  file (``weights_path``), never from a download.
* ``cpu`` -- a slim member of the same family, built with the same library classes (fewer
  channels and blocks): 0.12-1.26 M parameters, in Table 2's order (EfficientNet smallest,
  VGG-11 largest), and each family's feature width ``d`` is the paper one divided by 4.  A
  training step (backbone + linear layer, Adam, batch 64, two CPU threads) measured 10-40 ms
  at 32×32 and 18-63 ms at 48×48, or 10-24 ms and 16-40 ms with channels-last activations
  (EfficientNet gains most; it is the slowest family per parameter, being many small ops).
* ``smoke`` -- the smallest such member, for tests.

Every backbone is the family's ImageNet classifier with its *last* ``nn.Linear`` replaced by
``nn.Identity`` ("the standard classifier minus its final FC layer"): it maps images
(B, 3, H, W) to features (B, d), ``d = out_features``.  What precedes that last layer is kept:

* ResNet, NFNet: global average pooling (timm's NFNet head has no dropout by default);
* EfficientNet: global average pooling, then torchvision's classifier dropout (0.2 for B0,
  0.3 for B2);
* VGG-11: the flattened conv grid (512×7×7 at paper scale) through the classifier's first two
  FC layers, each followed by ReLU and dropout 0.5, so ``d = 4096``.  These FC layers hold
  almost all of VGG-11's parameters (Table 2 counts them) and paper A's Sec. 6 attributes
  VGG-11's low feature utilisation to exactly these dropout layers, so they belong to the
  feature extractor.

Input normalisation is the caller's job: images must already be normalised with the ImageNet
mean and standard deviation (paper A, Eq. 17), as :class:`~mtlrepro.models.MultiTaskModel`
does with its ``input_mean`` / ``input_std`` buffers.

Table 2's parameter counts (5.29, 9.11, 11.69, 25.56, 35.07, 132.87 M) are the full ImageNet
classifiers' counts, reproduced by :func:`paper_scale_parameter_counts`.  For VGG-11 only the
batch-normalised variant matches: torchvision ``vgg11_bn`` has 132,868,840 parameters
(132.87 M) while plain ``vgg11`` has 132,863,336 (132.86 M), so the paper scale is
``vgg11_bn`` (with dropout and the 512×7×7 flatten, like ``vgg11``).

Choices at the slim scales, documented because they differ from the paper architectures:

* ResNet uses timm's ``ResNet`` class (torchvision's fixes the widths at 64-512) with the
  three-3×3-conv "deep" stem (ResNet-C), because the classic 7×7 stem is fixed at 64 channels
  in both libraries and would dominate the slimmed network's compute; residual stages keep
  the family's block (basic for ResNet-18, bottleneck with expansion 4 for ResNet-50), and
  residual branches are not zero-initialised (torchvision's default).
* EfficientNet uses torchvision's ``EfficientNet`` with the B0 stage table (EfficientNet paper
  Table 1) scaled by width/depth multipliers; B2's multipliers are B0's times (1.1, 1.2), the
  compound-scaling step between B0 and B2.  torchvision rounds channels to multiples of 8.
* NFNet uses timm's ``NormFreeNet`` with the ``nfnet_l0`` configuration (scaled weight
  standardisation, no normalisation layers, SE, grouped 3×3 convs, SiLU, "deep_quad" stem)
  and fewer blocks, channels, stem channels and a smaller group size.  As in timm's NFNets,
  each block's last conv starts with gain 0, so its branch gets gradients from step 2 on.
* VGG is VGG-11's conv stack (torchvision ``make_layers``, configuration "A", with batch norm)
  with fewer channels, average-pooled to a 1×1 grid (at 32-48 px the conv output is already
  1×1, and pooling to 7×7 would only replicate it), then the same FC-ReLU-dropout ×2 MLP.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

import timm
import torch
from timm.models.nfnet import NormFreeNet, model_cfgs
from timm.models.resnet import BasicBlock, Bottleneck, ResNet
from torch import Tensor, nn
from torchvision import models as tv
from torchvision.models.efficientnet import EfficientNet, MBConvConfig
from torchvision.models.vgg import cfgs as vgg_cfgs
from torchvision.models.vgg import make_layers as vgg_make_layers

from mtlrepro.config import PROFILES, ConfigError, check_choice
from mtlrepro.models.onednn import avoid_onednn_strided_pointwise_bug
from mtlrepro.registry import Registry
from mtlrepro.torch_files import load_torch_file

FAMILIES: tuple[str, ...] = (
    "efficientnet_b0",
    "efficientnet_b2",
    "resnet18",
    "resnet50",
    "nfnet_l0",
    "vgg11",
)
"""Backbone families in the row order of paper A's Table 2."""

PAPER_NAMES: dict[str, str] = {
    "efficientnet_b0": "EfficientNet-B0",
    "efficientnet_b2": "EfficientNet-B2",
    "resnet18": "ResNet-18",
    "resnet50": "ResNet-50",
    "nfnet_l0": "NFNet-L0",
    "vgg11": "VGG-11",
}
"""Family -> architecture name as printed in paper A's Table 2 (its ``row`` in the paper
numbers)."""

IMAGENET_CLASSES = 1000
"""Outputs of the ImageNet classifiers whose last layer the backbones drop."""

ClassifierBuilder = Callable[[str], tuple[nn.Module, str]]
"""``(scale) -> (ImageNet-style classifier, dotted name of its last nn.Linear)``."""

BACKBONES: Registry[ClassifierBuilder] = Registry("backbone family")
"""Family name -> builder of that family's classifier at a scale (see :func:`create_backbone`)."""


class Backbone(nn.Module):
    """A family's ImageNet-style classifier without its last linear layer: images -> features.

    Attributes:
        net: the library model; its last ``nn.Linear`` (``dropped_layer``) is an ``nn.Identity``.
        out_features: feature width ``d`` (the removed layer's input width).
        family: architecture family (one of :data:`FAMILIES`).
        scale: ``"paper"``, ``"cpu"`` or ``"smoke"``.
        dropped_layer: dotted module name of the removed layer in the library model (``"fc"``,
            ``"classifier.1"``, ``"head.fc"``, ``"classifier.6"``); library checkpoints keep
            that layer's weights under this prefix.
    """

    def __init__(self, classifier: nn.Module, head: str, family: str, scale: str) -> None:
        """Args:
        classifier: the family's classifier; modified in place (its last layer is removed).
        head: dotted name of the classifier's last ``nn.Linear``.
        family: architecture family, for self-description.
        scale: scale it was built at, for self-description.

        Narrow strided 1×1 convolutions are routed around a oneDNN bug (exact; see
        :mod:`mtlrepro.models.onednn`).
        """
        super().__init__()
        parent_name, _, child_name = head.rpartition(".")
        parent = classifier.get_submodule(parent_name)
        last = parent.get_submodule(child_name)
        if not isinstance(last, nn.Linear):
            raise TypeError(f"{family}: {head!r} is a {type(last).__name__}, not nn.Linear")
        setattr(parent, child_name, nn.Identity())
        self.net = classifier
        self.out_features = last.in_features
        self.family = family
        self.scale = scale
        self.dropped_layer = head
        avoid_onednn_strided_pointwise_bug(self)

    def forward(self, images: Tensor) -> Tensor:
        """Args:
        images: ImageNet-normalised images, shape (B, 3, H, W) (H, W >= 32).

        Returns:
            Features, shape (B, ``out_features``).
        """
        return self.net(images)

    def load_weights(self, path: str | os.PathLike[str]) -> None:
        """Load a local state dict (no download ever happens).

        Two formats are accepted: a :class:`Backbone`'s own ``state_dict()`` (keys ``net.*``)
        or the library classifier's (e.g. torchvision's ``resnet50-0676ba61.pth`` or a timm
        ``nfnet_l0`` checkpoint), whose last-layer entries (prefix :attr:`dropped_layer`) are
        ignored.
        Loading is strict otherwise.

        Args:
            path: file written by ``torch.save(state_dict)``.
        """
        state = load_torch_file(
            path,
            "the file is truncated or corrupt: replace it with a complete copy of the "
            f"{self.family!r} weights (a state dict written by torch.save)",
        )
        if not isinstance(state, dict):
            raise ConfigError(f"{path}: expected a state dict, got {type(state).__name__}")
        if not all(key.startswith("net.") for key in state):
            state = {
                f"net.{key}": value
                for key, value in state.items()
                if not key.startswith(f"{self.dropped_layer}.")
            }
        try:
            self.load_state_dict(state)
        except RuntimeError as err:
            raise ConfigError(
                f"{path} does not fit the {self.family!r} backbone at scale {self.scale!r}: {err}"
            ) from err


def create_backbone(
    family: str, profile: str = "paper", weights_path: str | os.PathLike[str] | None = None
) -> Backbone:
    """Build a paper-A feature extractor.

    Args:
        family: one of :data:`FAMILIES` (unknown names raise :class:`ConfigError`).
        profile: ``"paper"`` (the real architecture), ``"cpu"`` (slim member of the family) or
            ``"smoke"`` (smallest member); the scale, received as every model factory here
            receives it.
        weights_path: optional local state dict loaded with :meth:`Backbone.load_weights`
            (ImageNet weights for the paper scale, or a saved backbone of the same family and
            scale); ``None`` keeps the library's random initialisation.
    """
    check_choice("profile", profile, PROFILES)
    classifier, head = BACKBONES.get(family)(profile)
    backbone = Backbone(classifier, head, family, profile)
    if weights_path is not None:
        backbone.load_weights(weights_path)
    return backbone


def paper_scale_parameter_counts() -> dict[str, int]:
    """Parameters of each family's full ImageNet classifier (last layer included), Table 2.

    The models are built with the real constructors on the ``meta`` device (no memory, no
    initialisation), so this takes well under a second.

    Returns:
        Family -> parameter count, in :data:`FAMILIES` order; e.g. ``"resnet18"`` ->
        11,689,512 (Table 2: 11.69 M).
    """
    counts: dict[str, int] = {}
    with torch.device("meta"):
        for family in FAMILIES:
            classifier, _ = BACKBONES.get(family)("paper")
            counts[family] = sum(p.numel() for p in classifier.parameters())
    return counts


# ---------------------------------------------------------------------------------------------
# ResNet (He et al., CVPR 2016).


def _slim_resnet(
    block: type[BasicBlock] | type[Bottleneck], layers: tuple[int, ...], channels: tuple[int, ...]
) -> nn.Module:
    """timm ``ResNet`` with the given block, blocks per stage and stage widths.

    The deep stem's output width equals ``channels[0]`` (as ResNet-18/50's 64-channel stem
    feeds 64-plane first stages).
    """
    return ResNet(
        block=block,
        layers=layers,
        channels=channels,
        num_classes=IMAGENET_CLASSES,
        stem_type="deep",
        stem_width=channels[0] // 2,
        zero_init_last=False,
    )


@BACKBONES.register("resnet18")
def _resnet18(scale: str) -> tuple[nn.Module, str]:
    """ResNet-18: basic residual blocks.  paper: torchvision ``resnet18`` (2, 2, 2, 2) blocks,
    widths 64-512, d = 512; cpu: one block per stage, widths 16-128, d = 128; smoke: widths
    4-8."""
    if scale == "paper":
        return tv.resnet18(weights=None), "fc"
    channels = {"cpu": (16, 32, 64, 128), "smoke": (4, 4, 8, 8)}[scale]
    return _slim_resnet(BasicBlock, (1, 1, 1, 1), channels), "fc"


@BACKBONES.register("resnet50")
def _resnet50(scale: str) -> tuple[nn.Module, str]:
    """ResNet-50: bottleneck blocks (expansion 4).  paper: torchvision ``resnet50``
    (3, 4, 6, 3) blocks, planes 64-512, d = 2048; cpu: one block per stage, planes 16-128,
    d = 512; smoke: planes 2-4, d = 16."""
    if scale == "paper":
        return tv.resnet50(weights=None), "fc"
    channels = {"cpu": (16, 32, 64, 128), "smoke": (2, 2, 4, 4)}[scale]
    return _slim_resnet(Bottleneck, (1, 1, 1, 1), channels), "fc"


# ---------------------------------------------------------------------------------------------
# EfficientNet (Tan & Le, ICML 2019).

EFFICIENTNET_B0_STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 32, 16, 1),
    (6, 3, 2, 16, 24, 2),
    (6, 5, 2, 24, 40, 2),
    (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3),
    (6, 5, 2, 112, 192, 4),
    (6, 3, 1, 192, 320, 1),
)
"""EfficientNet-B0's MBConv stages (EfficientNet paper, Table 1), as torchvision lists them:
(expand ratio, kernel, stride, input channels, output channels, blocks)."""

EFFICIENTNET_SLIM_MULTIPLIERS: dict[str, tuple[float, float]] = {
    "cpu": (0.25, 0.25),
    "smoke": (0.1, 0.1),
}
"""B0's (width, depth) multipliers at the slim scales; B2 multiplies them by (1.1, 1.2)."""


def _slim_efficientnet(width_mult: float, depth_mult: float, dropout: float) -> nn.Module:
    """torchvision ``EfficientNet`` from the B0 stage table scaled by the multipliers (the
    head conv is 4 × the last stage's width, as in torchvision's B0-B7)."""
    stages = [
        MBConvConfig(*stage, width_mult=width_mult, depth_mult=depth_mult)
        for stage in EFFICIENTNET_B0_STAGES
    ]
    return EfficientNet(stages, dropout=dropout, num_classes=IMAGENET_CLASSES)


@BACKBONES.register("efficientnet_b0")
def _efficientnet_b0(scale: str) -> tuple[nn.Module, str]:
    """EfficientNet-B0: MBConv blocks with squeeze-excitation, SiLU, dropout 0.2 before the
    classifier.  paper: torchvision ``efficientnet_b0``, d = 1280; cpu / smoke: multipliers of
    :data:`EFFICIENTNET_SLIM_MULTIPLIERS`."""
    if scale == "paper":
        return tv.efficientnet_b0(weights=None), "classifier.1"
    width, depth = EFFICIENTNET_SLIM_MULTIPLIERS[scale]
    return _slim_efficientnet(width, depth, dropout=0.2), "classifier.1"


@BACKBONES.register("efficientnet_b2")
def _efficientnet_b2(scale: str) -> tuple[nn.Module, str]:
    """EfficientNet-B2: B0 scaled by width 1.1 and depth 1.2, dropout 0.3.  paper: torchvision
    ``efficientnet_b2``, d = 1408; cpu / smoke: B0's slim multipliers × (1.1, 1.2)."""
    if scale == "paper":
        return tv.efficientnet_b2(weights=None), "classifier.1"
    width, depth = EFFICIENTNET_SLIM_MULTIPLIERS[scale]
    return _slim_efficientnet(1.1 * width, 1.2 * depth, dropout=0.3), "classifier.1"


# ---------------------------------------------------------------------------------------------
# NFNet (Brock et al., ICML 2021), timm's "light" NFNet-L0.


@BACKBONES.register("nfnet_l0")
def _nfnet_l0(scale: str) -> tuple[nn.Module, str]:
    """NFNet-L0: normaliser-free bottleneck blocks with scaled weight standardisation, SE,
    grouped 3×3 convs.  paper: timm ``nfnet_l0`` ((1, 2, 6, 3) blocks, widths
    256-512-1536-1536, group size 64, d = 2304); cpu: one block per stage, widths ÷ 4, group
    size 16, d = 576; smoke: widths 8, group size 8."""
    if scale == "paper":
        return timm.create_model("nfnet_l0", pretrained=False), "head.fc"
    channels, stem, group = {
        "cpu": ((64, 128, 384, 384), 32, 16),
        "smoke": ((8, 8, 8, 8), 8, 8),
    }[scale]
    cfg = dataclasses.replace(
        model_cfgs["nfnet_l0"],
        depths=(1, 1, 1, 1),
        channels=channels,
        stem_chs=stem,
        group_size=group,
        num_features=int(1.5 * channels[-1]),  # nfnet_l0's final-conv multiplier
    )
    return NormFreeNet(cfg, num_classes=IMAGENET_CLASSES), "head.fc"


# ---------------------------------------------------------------------------------------------
# VGG (Simonyan & Zisserman, ICLR 2015), configuration "A" = VGG-11.


class SlimVGG(nn.Module):
    """torchvision's VGG layout at any width: conv stack, average pool, 3-layer FC classifier.

    Same attribute names and initialisation as ``torchvision.models.VGG``; unlike it, the pooled
    grid and hidden width are parameters (torchvision fixes 7×7 and 4096).
    """

    def __init__(
        self, stage_widths: tuple[int, ...], pool: int, hidden: int, num_classes: int
    ) -> None:
        """Args:
        stage_widths: output channels of VGG-11's eight convolutions (configuration "A",
            64-128-256-256-512-512-512-512 at full width); max-pools as in "A".
        pool: side of the adaptive average pool's output grid.
        hidden: width of the two hidden FC layers.
        num_classes: outputs of the last FC layer.
        """
        super().__init__()
        widths = iter(stage_widths)
        layout = [v if v == "M" else next(widths) for v in vgg_cfgs["A"]]
        self.features = vgg_make_layers(layout, batch_norm=True)
        self.avgpool = nn.AdaptiveAvgPool2d((pool, pool))
        self.classifier = nn.Sequential(
            nn.Linear(stage_widths[-1] * pool * pool, hidden),
            nn.ReLU(True),
            nn.Dropout(p=0.5),
            nn.Linear(hidden, hidden),
            nn.ReLU(True),
            nn.Dropout(p=0.5),
            nn.Linear(hidden, num_classes),
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        """Args:
        x: images, shape (B, 3, H, W).

        Returns:
            Classifier outputs, shape (B, num_classes).
        """
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


@BACKBONES.register("vgg11")
def _vgg11(scale: str) -> tuple[nn.Module, str]:
    """VGG-11 with batch norm: plain 3×3 conv stack, then FC-ReLU-dropout ×2 (d = hidden
    width).  paper: torchvision ``vgg11_bn`` (132.87 M; d = 4096); cpu: conv widths ÷ 8,
    hidden 1024; smoke: conv widths ÷ 32, hidden 16."""
    if scale == "paper":
        return tv.vgg11_bn(weights=None), "classifier.6"
    divisor, hidden = {"cpu": (8, 1024), "smoke": (32, 16)}[scale]
    widths = tuple(v // divisor for v in vgg_cfgs["A"] if v != "M")
    return SlimVGG(widths, pool=1, hidden=hidden, num_classes=IMAGENET_CLASSES), "classifier.6"
