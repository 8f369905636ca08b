"""A pretrained starting point for the cpu-profile backbones (the stand-in for ImageNet).

Papers A and B start from ImageNet-pretrained extractors; ImageNet cannot be downloaded here, so
at the ``cpu`` (and ``smoke``) profile every backbone of papers A and B is pretrained once as an
image classifier on a large embedded classification mix and its weights are saved for the
studies to load (``pretrained: true`` in ``params.yaml``).

**The mix** (:func:`pretraining_data`): the ``decathlon`` generator's six domains (pedestrians,
textures, traffic signs, glyphs, digits, flowers; 112 classes in one label space, domain by
domain), rendered at the studies' 48×48 px with its own seed and ``scale`` times the images of
its usual preset -- about 16,000 training images at ``cpu``, more than any one study trains on,
none of them from the studies' own generators (vehicles, scenes, faces), as ImageNet holds
none of Vehicle-X, NYU-v2 or CelebAMask-HQ.

**The classifier** (:class:`Classifier`): ImageNet normalisation (as the studies' models
normalise their input), the backbone, global average pooling where it returns a feature map
(paper B's dilated ResNet), one linear layer.  Trained with the shared loop (Adam, cross-entropy,
the lr ×0.1 for the last third), one backbone per process; only the backbone's weights are
kept (:func:`weights_path`), in the format its study loads: paper A's
:class:`~mtlrepro.models.backbones.Backbone` ``state_dict`` (keys ``net.*``) and paper B's
:class:`~mtlrepro.models.deeplab.DilatedResNet` ``state_dict``.

``python -m mtlrepro.pretraining`` trains every backbone with ``params.yaml``'s profile and
``pretraining`` section and writes ``results/pretrained/<profile>/`` (the DVC stage
``pretraining``): one ``<backbone>.pth`` each and ``pretraining.json`` (settings, provenance,
per backbone the validation accuracy and the seconds it took).  At the ``paper`` profile there
is nothing to do: the studies load the real ImageNet weights from local files.
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mtlrepro.balancing import create_balancer
from mtlrepro.config import ConfigError, build_config, check_choice, check_profile, check_range
from mtlrepro.data import get_dataset
from mtlrepro.data.base import TensorDataset
from mtlrepro.files import REPO_ROOT, atomic_write_bytes, atomic_write_text
from mtlrepro.interrupts import Interrupted, interruptible, signal_number, stop_with_parent
from mtlrepro.models import count_parameters
from mtlrepro.models.backbones import FAMILIES, create_backbone
from mtlrepro.models.deeplab import deeplab_config
from mtlrepro.models.joint_encoder import Normalised
from mtlrepro.params import load_params
from mtlrepro.runs import map_jobs, provenance
from mtlrepro.tasks import TaskSpec, make_tasks
from mtlrepro.torch_files import load_torch_file
from mtlrepro.train import TrainConfig, fit

DEEPLAB_BACKBONE = "deeplab_resnet"
"""Paper B's backbone (the dilated ResNet of :mod:`mtlrepro.models.deeplab`)."""
BACKBONES: tuple[str, ...] = (*FAMILIES, DEEPLAB_BACKBONE)
"""Every backbone pretrained: paper A's six families and paper B's dilated ResNet."""
PRETRAINED_PROFILES: tuple[str, ...] = ("smoke", "cpu")
"""Profiles whose backbones are pretrained here (``paper`` loads ImageNet weights)."""
PRETRAINED_DIR = REPO_ROOT / "results" / "pretrained"
"""``<folder>/<profile>/<backbone>.pth``: where the weights go and the studies look."""
SUMMARY_FILE = "pretraining.json"
"""The summary beside the weights (settings, provenance, accuracy and time per backbone)."""
TASK = "class"
"""The classifier's one task: the class in the mix's joint label space."""
START_TITLES: tuple[str, str] = ("from scratch", "pretrained")
"""The titles of a study's two starting points, as its claims tables head them."""
SECTION = "pretraining"
"""The ``params.yaml`` section of the pretraining."""


@dataclass(frozen=True)
class PretrainConfig:
    """Settings of the pretraining (presets per profile in :data:`PRESETS`).

    Attributes:
        profile: ``smoke`` or ``cpu`` (the backbones' scale).
        backbones: the backbones to pretrain, a subset of :data:`BACKBONES`.
        epochs: epochs over the mix.
        batch_size: images per step.
        lr: Adam's learning rate (×0.1 for the last third of the epochs).
        weight_decay: Adam's L2 penalty.
        scale: the decathlon generator's ``scale`` (images per domain, × its usual count).
        image_size: height and width of the images (the studies' 48 px).
        seed: seed of the images and of the training.
        threads: torch threads per training process.
        workers: processes training backbones side by side.
    """

    profile: str = "cpu"
    backbones: tuple[str, ...] = BACKBONES
    epochs: int = 6
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    scale: float = 3.0
    image_size: int = 48
    seed: int = 1
    threads: int = 1
    workers: int = 2

    def __post_init__(self) -> None:
        """Check every field; messages name it ``PretrainConfig.<field>``."""
        check_choice("PretrainConfig.profile", self.profile, PRETRAINED_PROFILES)
        if not self.backbones:
            raise ConfigError("PretrainConfig.backbones must name at least one backbone")
        for name in self.backbones:
            check_choice("PretrainConfig.backbones", name, BACKBONES)
        for name in ("epochs", "batch_size", "image_size", "threads", "workers"):
            check_range(f"PretrainConfig.{name}", getattr(self, name), 1, integer=True)
        check_range("PretrainConfig.lr", self.lr, 0.0, low_inclusive=False)
        check_range("PretrainConfig.weight_decay", self.weight_decay, 0.0)
        check_range("PretrainConfig.scale", self.scale, 0.0, 100.0, low_inclusive=False)
        check_range("PretrainConfig.seed", self.seed, 0, integer=True)


PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {"epochs": 1, "batch_size": 32, "scale": 0.05, "image_size": 32, "workers": 1},
    "cpu": {},
}
"""Per-profile overrides of :class:`PretrainConfig` (``cpu``: its defaults)."""


def pretrain_config(profile: str, **overrides: Any) -> PretrainConfig:
    """The profile's preset with ``overrides`` (``None`` values keep the preset).

    Args:
        profile: ``smoke`` or ``cpu``.
        **overrides: :class:`PretrainConfig` fields (lists become tuples).
    """
    check_profile(profile)
    if profile not in PRETRAINED_PROFILES:
        raise ConfigError(
            f"profile {profile!r} has no pretraining: it loads ImageNet weights from local files"
        )
    given = {
        k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items() if v is not None
    }
    return build_config(PretrainConfig, PRESETS, profile, given, section="pretraining")


def weights_path(profile: str, backbone: str, folder: str | Path | None = None) -> Path:
    """The weights file of one pretrained backbone: ``<folder>/<profile>/<backbone>.pth``.

    Args:
        profile: the profile the backbone was built at.
        backbone: one of :data:`BACKBONES`.
        folder: the pretrained folder (default :data:`PRETRAINED_DIR`).
    """
    check_choice("backbone", backbone, BACKBONES)
    return Path(PRETRAINED_DIR if folder is None else folder) / profile / f"{backbone}.pth"


def pretrained_file(profile: str, backbone: str, folder: str | Path | None = None) -> Path:
    """:func:`weights_path` of a backbone that has been pretrained; a missing file is a
    :class:`~mtlrepro.config.ConfigError` saying how to make it.

    Args:
        profile: the profile the backbone was built at.
        backbone: one of :data:`BACKBONES`.
        folder: the pretrained folder (default :data:`PRETRAINED_DIR`).
    """
    path = weights_path(profile, backbone, folder)
    if not path.is_file():
        raise ConfigError(
            f"no pretrained {backbone!r} weights at {path}: run `dvc repro pretraining` (or "
            "`python -m mtlrepro.pretraining`), or set pretrained: false"
        )
    return path


def load_pretrained(module: nn.Module, profile: str, backbone: str,
                    folder: str | Path | None = None) -> nn.Module:
    """Load a pretrained backbone's weights into ``module`` (strict), in place.

    Args:
        module: a freshly built backbone of the same kind and profile.
        profile: its profile.
        backbone: one of :data:`BACKBONES`.
        folder: the pretrained folder (default :data:`PRETRAINED_DIR`).

    Returns:
        ``module``.
    """
    path = pretrained_file(profile, backbone, folder)
    state = load_torch_file(path, "re-create it with `dvc repro -f pretraining`")
    try:
        module.load_state_dict(state)
    except RuntimeError as err:
        raise ConfigError(f"{path} does not fit this {backbone!r} backbone: {err}") from err
    return module


# --------------------------------------------------------------------------------------------
# Data and network
# --------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=2)
def pretraining_data(config: PretrainConfig, split: str) -> TensorDataset:
    """One split of the classification mix (see the module doc), task :data:`TASK` (made once
    per process and split: every backbone a process pretrains reads the same images).

    Args:
        config: the settings (profile, scale, image size, seed).
        split: ``train`` or ``val``.
    """
    check_choice("split", split, ("train", "val"))
    size = config.image_size
    data = get_dataset(
        "decathlon", split, config.profile, height=size, width=size, scale=config.scale,
        seed=config.seed,
    )
    labels = torch.full((len(data),), -1, dtype=torch.long)
    offset = 0
    for name, spec in data.task_specs.items():
        domain = data.tensors[name]
        labels = torch.where(domain >= 0, domain + offset, labels)
        offset += spec.num_classes
    if bool((labels < 0).any()):
        raise ConfigError("decathlon returned an image without a domain label")
    specs = {TASK: TaskSpec(TASK, "classification", offset)}
    return TensorDataset("pretraining", split, {"image": data.tensors["image"], TASK: labels},
                         specs, None)


def build_backbone(backbone: str, profile: str) -> nn.Module:
    """A freshly initialised backbone as its study builds it.

    Args:
        backbone: one of :data:`BACKBONES`.
        profile: the scale.
    """
    check_choice("backbone", backbone, BACKBONES)
    if backbone == DEEPLAB_BACKBONE:
        return deeplab_config(profile).backbone()
    return create_backbone(backbone, profile)


class Classifier(nn.Module):
    """A backbone behind ImageNet normalisation (:class:`~mtlrepro.models.joint_encoder.
    Normalised`, channels-last as paper A's studies run it), global average pooling of a feature
    map, a linear layer."""

    def __init__(self, backbone: nn.Module, features: int, classes: int) -> None:
        """Args:
        backbone: images (B, 3, H, W) -> features (B, d) or a map (B, d, h, w).
        features: d.
        classes: number of classes.
        """
        super().__init__()
        self.features = Normalised(backbone)
        self.fc = nn.Linear(features, classes)

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """Args:
        images: [0, 1] images (B, 3, H, W).

        Returns:
            ``{TASK: logits}``.
        """
        features = self.features(images)
        if features.dim() == 4:
            features = features.mean(dim=(2, 3))
        return {TASK: self.fc(features)}


def _features(backbone: nn.Module) -> int:
    """The width d of a backbone's output."""
    return int(getattr(backbone, "out_features", None) or backbone.out_channels)


def pretrain_backbone(backbone: str, config: PretrainConfig) -> dict[str, Any]:
    """Pretrain one backbone on the mix.

    Args:
        backbone: one of :data:`BACKBONES`.
        config: the settings.

    Returns:
        ``backbone``, ``state`` (the backbone's ``state_dict`` as bytes written by
        ``torch.save``), ``val_accuracy`` (%), ``seconds``, ``steps``, ``parameters``.
    """
    train = pretraining_data(config, "train")
    val = pretraining_data(config, "val")
    torch.manual_seed(config.seed)
    net = build_backbone(backbone, config.profile).to(memory_format=torch.channels_last)
    model = Classifier(net, _features(net), train.task_specs[TASK].num_classes)
    steps_per_epoch = max(1, len(train) // config.batch_size)
    train_config = TrainConfig(
        profile=config.profile,
        epochs=config.epochs,
        batch_size=config.batch_size,
        lr=config.lr,
        weight_decay=config.weight_decay,
        lr_schedule="step",
        lr_step_size=max(1, math.ceil(2 * config.epochs / 3)),
        eval_every=config.epochs,
        seed=config.seed,
        threads=config.threads,
        device="auto",
        progress=False,
    )
    start = time.perf_counter()
    result = fit(
        model, make_tasks(train.task_specs), train, val, create_balancer("equal", [TASK]),
        train_config,
    )
    seconds = time.perf_counter() - start
    history = result.history
    accuracy = history[(history["split"] == "val") & (history["metric"] == "accuracy")]
    buffer = io.BytesIO()
    torch.save(net.state_dict(), buffer)
    return {
        "backbone": backbone,
        "state": buffer.getvalue(),
        "val_accuracy": float(accuracy["value"].iloc[-1]),
        "seconds": seconds,
        "steps": steps_per_epoch * config.epochs,
        "parameters": count_parameters(net),
    }


def pretrain_all(config: PretrainConfig, folder: str | Path | None = None, *,
                 progress: bool = True) -> Path:
    """Pretrain every backbone of ``config`` and write its weights and the summary.

    Each file is written atomically; the summary last, so a folder with a summary is complete.

    Args:
        config: the settings.
        folder: the pretrained folder (default :data:`PRETRAINED_DIR`).
        progress: show a progress bar over the backbones.

    Returns:
        The summary file.
    """
    jobs = [(name, config) for name in config.backbones]
    records = map_jobs(
        pretrain_backbone, jobs, workers=config.workers, desc="pretraining", progress=progress
    )
    for record in records:
        atomic_write_bytes(weights_path(config.profile, record["backbone"], folder),
                           record["state"])
    summary = {
        "settings": asdict(config),
        "made_with": provenance(),
        "backbones": {
            r["backbone"]: {k: v for k, v in r.items() if k not in ("backbone", "state")}
            for r in records
        },
    }
    path = weights_path(config.profile, config.backbones[0], folder).with_name(SUMMARY_FILE)
    return atomic_write_text(path, json.dumps(summary, indent=1) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mtlrepro.pretraining``: pretrain with ``params.yaml``'s ``profile`` and
    ``pretraining`` section (the DVC stage ``pretraining``).  Exit status: 0 done, 2 a bad
    parameter, 128 + N stopped by signal N (the weights written before stay).

    Args:
        argv: arguments without the program name (default: ``sys.argv[1:]``).
    """
    parser = argparse.ArgumentParser(
        prog="python -m mtlrepro.pretraining",
        description="Pretrain the cpu-profile backbones of papers A and B (see the module doc).",
    )
    parser.add_argument("--params", type=Path, default=REPO_ROOT / "params.yaml")
    parser.add_argument("--out", type=Path, default=PRETRAINED_DIR, help="pretrained folder")
    args = parser.parse_args(argv)
    try:
        stop_with_parent()
        params = load_params(args.params, SECTION, section=SECTION)
        profile = params.pop("profile")
        progress = bool(params.pop("progress", True))
        if profile not in PRETRAINED_PROFILES:
            print(f"profile {profile!r}: nothing to pretrain (ImageNet weights are loaded from "
                  "local files)")
            return 0
        config = pretrain_config(profile, **params)
        with interruptible():
            path = pretrain_all(config, args.out, progress=progress)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (Interrupted, KeyboardInterrupt) as stop:
        print(f"error: pretraining {Interrupted(signal_number(stop))}", file=sys.stderr)
        return 128 + signal_number(stop)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
