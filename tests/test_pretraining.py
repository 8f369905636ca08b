"""Tests of mtlrepro.pretraining: the embedded stand-in for ImageNet pretraining."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mtlrepro import pretraining
from mtlrepro.config import ConfigError
from mtlrepro.data import get_dataset


@pytest.fixture(scope="module")
def pretrained_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every backbone pretrained at the smoke profile (a few seconds)."""
    folder = tmp_path_factory.mktemp("pretrained")
    pretraining.pretrain_all(pretraining.pretrain_config("smoke"), folder, progress=False)
    return folder


def test_the_mix_puts_every_domain_into_one_label_space() -> None:
    config = pretraining.pretrain_config("smoke")
    data = pretraining.pretraining_data(config, "train")
    labels = data.tensors[pretraining.TASK]
    decathlon = get_dataset("decathlon", "train", "smoke")
    classes = sum(spec.num_classes for spec in decathlon.task_specs.values())
    assert data.task_specs[pretraining.TASK].num_classes == classes == 112
    assert int(labels.min()) >= 0 and int(labels.max()) < classes
    assert data.tensors["image"].shape[-2:] == (config.image_size, config.image_size)
    # the first domain keeps its labels, the second starts after the first's classes
    first = decathlon.task_specs["pedestrian"].num_classes
    pedestrians = labels < first
    assert 0 < int(pedestrians.sum()) < len(labels)


def test_every_backbone_is_written_with_a_summary_and_loads(pretrained_dir: Path) -> None:
    summary = json.loads((pretrained_dir / "smoke" / pretraining.SUMMARY_FILE).read_text())
    assert set(summary["backbones"]) == set(pretraining.BACKBONES)
    assert summary["settings"]["profile"] == "smoke" and "cpu" in summary["made_with"]
    for name in pretraining.BACKBONES:
        record = summary["backbones"][name]
        assert 0.0 <= record["val_accuracy"] <= 100.0 and record["steps"] > 0
        fresh = pretraining.build_backbone(name, "smoke")
        before = {k: v.clone() for k, v in fresh.state_dict().items()}
        pretraining.load_pretrained(fresh, "smoke", name, pretrained_dir)
        changed = [k for k, v in fresh.state_dict().items() if not torch.equal(v, before[k])]
        assert changed, f"{name}: loading changed no weight"


def test_the_same_settings_pretrain_the_same_weights(pretrained_dir: Path, tmp_path: Path) -> None:
    config = pretraining.pretrain_config("smoke", backbones=["resnet18"])
    pretraining.pretrain_all(config, tmp_path, progress=False)
    again = torch.load(pretraining.weights_path("smoke", "resnet18", tmp_path))
    first = torch.load(pretraining.weights_path("smoke", "resnet18", pretrained_dir))
    assert all(torch.equal(again[k], first[k]) for k in first)


def test_a_missing_or_foreign_weights_file_is_a_config_error(
    pretrained_dir: Path, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="dvc repro pretraining"):
        pretraining.pretrained_file("smoke", "vgg11", tmp_path)
    with pytest.raises(ConfigError, match="does not fit"):
        pretraining.load_pretrained(
            pretraining.build_backbone("vgg11", "smoke"), "smoke", "resnet18", pretrained_dir
        )


def test_the_classifier_pools_a_feature_map() -> None:
    backbone = pretraining.build_backbone(pretraining.DEEPLAB_BACKBONE, "smoke")
    model = pretraining.Classifier(backbone, backbone.out_channels, 7)
    logits = model(torch.rand(2, 3, 32, 32))[pretraining.TASK]
    assert logits.shape == (2, 7)


@pytest.mark.parametrize(
    ("profile", "overrides"),
    [("paper", {}), ("cpu", {"backbones": ["alexnet"]}), ("cpu", {"epochs": 0}),
     ("cpu", {"backbones": []}), ("cpu", {"scale": -1.0})],
)
def test_bad_settings_raise_config_errors(profile: str, overrides: dict) -> None:
    with pytest.raises(ConfigError):
        pretraining.pretrain_config(profile, **overrides)


def test_the_command_line_does_nothing_at_the_paper_profile_and_rejects_bad_values(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("profile: paper\npretraining:\n  epochs: null\n")
    assert pretraining.main(["--params", str(params), "--out", str(tmp_path)]) == 0
    assert "nothing to pretrain" in capsys.readouterr().out
    params.write_text("profile: smoke\npretraining:\n  epochs: 0\n")
    assert pretraining.main(["--params", str(params), "--out", str(tmp_path)]) == 2
    assert "pretraining.epochs" in capsys.readouterr().err
