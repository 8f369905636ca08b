"""Tests of mtlrepro.methods.group_sparsity: paper B's channel groups, statistics and hook."""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Mapping

import pandas as pd
import pytest
import torch
from torch import Tensor, nn

from mtlrepro.balancing import UncertaintyWeighting, create_balancer
from mtlrepro.config import ConfigError
from mtlrepro.data.base import TensorDataset
from mtlrepro.methods.group_sparsity import (
    AUTHORS_OPTIMISER,
    METRICS,
    AuthorsOptimiser,
    AuthorsUncertaintyWeighting,
    GroupSparsityProx,
    OptimiserSettings,
    channel_groups,
    sparsity_stats,
    uncertainty_balancer,
    zero_group_mask,
)
from mtlrepro.methods.proximal import group_soft_threshold_, weighted_group_prox_
from mtlrepro.models.multitask import TaskModuleDict
from mtlrepro.tasks import TaskSpec, make_tasks
from mtlrepro.train import TrainConfig, TrainResult, fit

SPECS = (TaskSpec("colour", "classification", 3), TaskSpec("type", "classification", 4))


# --------------------------------------------------------------------------------------------
# Groups
# --------------------------------------------------------------------------------------------
def test_groups_are_input_channel_slices_of_every_conv_layer() -> None:
    net = nn.Sequential(nn.Conv2d(3, 5, 3), nn.ReLU(), nn.Conv2d(5, 2, 1), nn.Linear(2, 2))
    groups = channel_groups(net)
    assert [(g.name, g.num_groups, g.group_size) for g in groups] == [("0", 3, 45), ("2", 5, 2)]
    assert groups[0].group_weight == pytest.approx(math.sqrt(45), abs=0.0)
    torch.manual_seed(0)
    w = torch.randn(5, 3, 3, 3)
    original = w.clone()
    w[:, 1] *= 1e-3  # only group 1 falls under the threshold
    group_soft_threshold_(w, threshold=0.1)  # cut 0.1·√45 ≈ 0.67 < norms of groups 0, 2 (~6)
    assert bool((w[:, 1] == 0).all())
    assert bool((w[:, [0, 2]] != 0).all())  # the rest of every filter survives
    assert not torch.equal(w[:, 0], original[:, 0])  # ... shrunk, not zeroed


def test_grouped_conv_groups_follow_the_input_channel_blocks() -> None:
    conv = nn.Conv2d(4, 6, 1, groups=2, bias=False)  # weight (6, 2, 1, 1)
    (g,) = channel_groups(conv)
    assert (g.num_groups, g.group_size) == (4, 3)  # C_in groups of (C_out/G)·1·1 weights
    with torch.no_grad():
        conv.weight.fill_(1.0)
        conv.weight[3:, 1] = 0.0  # input channel 3 = block 1, slot 1: read by filters 3-5 only
    assert zero_group_mask(conv)["(root)"].tolist() == [False, False, False, True]


# --------------------------------------------------------------------------------------------
# Sparsity measures
# --------------------------------------------------------------------------------------------
def test_sparsity_stats_count_zero_groups_and_parameters_per_layer(
    hand_weight: Tensor,
) -> None:
    net = nn.Sequential(nn.Conv2d(3, 2, (1, 2), bias=False), nn.Conv2d(2, 4, 1, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(hand_weight.float())  # no zero group; 3 of 12 weights zero
        net[1].weight.fill_(1.0)
        net[1].weight[:, 0] = 0.0  # group 0 of 2 zero
        net[1].weight[2, 1] = 0.0  # a lone zero: no group
    stats = sparsity_stats(net)
    assert stats["name"].tolist() == ["0", "1", "total"]
    assert stats["groups"].tolist() == [3, 2, 5]
    assert stats["zero_groups"].tolist() == [0, 1, 1]
    assert stats["params"].tolist() == [12, 8, 20]
    assert stats["zero_params"].tolist() == [3, 5, 8]
    assert stats["group_sparsity"].iloc[-1] == pytest.approx(20.0)  # float division
    assert stats["param_sparsity"].iloc[-1] == pytest.approx(40.0)  # float division
    masks = zero_group_mask(net)
    assert {k: v.tolist() for k, v in masks.items()} == {"0": [False] * 3, "1": [True, False]}


# --------------------------------------------------------------------------------------------
# The hook inside fit
# --------------------------------------------------------------------------------------------
class _TinyModel(nn.Module):
    """A two-conv shared backbone and one linear head per classification task."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.heads = TaskModuleDict({s.name: nn.Linear(8, s.num_classes) for s in SPECS})

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        features = self.backbone(images)
        return {name: head(features) for name, head in self.heads.items()}


def _dataset(n: int = 32) -> TensorDataset:
    """Toy classification data: colour = brightest channel, type = brightness quartile."""
    images = torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    means = images.mean((2, 3))
    labels = {"colour": means.argmax(1), "type": (means.mean(1) * 4).long().clamp(0, 3)}
    specs = {spec.name: spec for spec in SPECS}
    return TensorDataset("toy", "train", {"image": images, **labels}, specs, None)


def _train(hooks: list[GroupSparsityProx], epochs: int = 2) -> tuple[_TinyModel, TrainResult]:
    """Train a seeded tiny model for ``epochs`` epochs (4 Adam steps each) with ``hooks``."""
    torch.manual_seed(0)
    model = _TinyModel()
    config = TrainConfig(epochs=epochs, batch_size=8, lr=1e-2, progress=False, device="cpu")
    names = [s.name for s in SPECS]
    balancer = create_balancer("uncertainty", names)  # paper B's weighting (Eq. 2)
    result = fit(model, make_tasks(SPECS), _dataset(), None, balancer, config, hooks)
    return model, result


def _logged(history: pd.DataFrame, metric: str) -> list[float]:
    """The values logged for ``metric``, in epoch order."""
    return history[history["metric"] == metric]["value"].tolist()


@pytest.mark.parametrize("prox", ["group", "weighted_group"])
def test_large_lambda_drives_group_sparsity_to_100_percent(prox: str) -> None:
    model, result = _train([GroupSparsityProx(lam=1e3, prox=prox)])
    assert _logged(result.history, "group_sparsity") == [100.0, 100.0]  # logged every epoch
    assert _logged(result.history, "param_sparsity") == [100.0, 100.0]
    assert all(bool((p != 0).any()) for p in model.heads.parameters())  # heads untouched


def test_l1_prox_gives_parameter_sparsity_inside_fit() -> None:
    _, result = _train([GroupSparsityProx(lam=0.3, prox="l1")], epochs=1)
    (params,) = _logged(result.history, "param_sparsity")
    (groups,) = _logged(result.history, "group_sparsity")
    assert params > 0.0 and groups <= params  # unstructured zeros rarely fill a group


@pytest.mark.parametrize("prox", ["group", "weighted_group", "l1"])
def test_zero_lambda_leaves_training_bitwise_identical_to_no_hook(prox: str) -> None:
    plain, _ = _train([], epochs=1)
    hooked, result = _train([GroupSparsityProx(lam=0.0, prox=prox)], epochs=1)
    for a, b in zip(plain.state_dict().values(), hooked.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert _logged(result.history, "group_sparsity") == [0.0]


def _state_of(model: nn.Module) -> Mapping[str, Tensor]:
    """A copy of the model's state dict."""
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_hook_uses_the_current_learning_rate_of_the_optimiser() -> None:
    torch.manual_seed(0)
    model = _TinyModel()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    before = _state_of(model)
    weight = model.backbone[0].weight
    cut = float(torch.linalg.vector_norm(weight.detach(), dim=(0, 2, 3)).min())
    optimizer.param_groups[0]["lr"] = 0.0  # lr 0: no shrinkage at any λ
    GroupSparsityProx(lam=1e6).after_step(model, optimizer)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    # with lr·λ·√|g| just above the smallest group norm exactly that group goes
    optimizer.param_groups[0]["lr"] = 1.0
    GroupSparsityProx(lam=cut / math.sqrt(8 * 9) * 1.0001).after_step(model, optimizer)
    assert int(zero_group_mask(model.backbone)["0"].sum()) == 1


def test_weighted_prox_needs_an_adam_type_optimiser() -> None:
    model = _TinyModel()
    with pytest.raises(ConfigError, match="Adam"):
        hook = GroupSparsityProx(lam=1.0, prox="weighted_group")
        hook.after_step(model, torch.optim.SGD(model.parameters(), lr=0.1))


# --------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "overrides",
    [
        {"lam": -1.0},
        {"lam": math.inf},
        {"lam": "big"},
        {"prox": "lasso"},
        {"backbone": ""},
        {"newton_steps": 0},
        {"newton_tol": 0.0},
    ],
)
def test_bad_hook_options_raise_config_error(overrides: dict[str, object]) -> None:
    options: dict[str, object] = {"lam": 1e-6, "prox": "group", **overrides}
    with pytest.raises(ConfigError):
        GroupSparsityProx(**options)  # type: ignore[arg-type]


def test_the_hook_keeps_its_options_and_finds_its_backbone() -> None:
    hook = GroupSparsityProx(1e-5, "weighted_group")
    assert (hook.lam, hook.prox, hook.backbone) == (1e-5, "weighted_group", "backbone")
    with pytest.raises(ConfigError, match="no module attribute"):
        hook.shared_module(nn.Linear(2, 2))


@pytest.mark.parametrize("metric", ["bias_corrected", "uncorrected"])
def test_weighted_hook_uses_adams_denominator(metric: str) -> None:
    # after Adam's first step v = (1 - β₂)·g² and v̂ = g², so d = |g|·√(1 - β₂) + ε (the
    # authors' uncorrected metric) or |g| + ε (bias-corrected)
    torch.manual_seed(4)
    model = _TinyModel()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05, eps=1e-3)
    outputs = model(torch.rand(4, 3, 8, 8))
    sum(o.square().sum() for o in outputs.values()).backward()
    optimizer.step()
    weight = model.backbone[2].weight
    stepped = weight.detach().clone()
    scale = 1.0 if metric == "bias_corrected" else math.sqrt(1 - 0.999)
    denom = weight.grad.abs() * scale + 1e-3
    expected = weighted_group_prox_(stepped.clone(), denom, lr=0.05, lam=0.2)
    GroupSparsityProx(lam=0.2, prox="weighted_group", metric=metric).after_step(model, optimizer)
    torch.testing.assert_close(weight.detach(), expected, atol=1e-6, rtol=1e-5)  # float32 √
    assert float((expected - stepped).abs().max()) > 1e-3  # the prox did change the weight


def test_uncorrected_metric_zeroes_more_groups_early_in_training() -> None:
    zeroed = {}
    for metric in METRICS:
        model, _ = _train([GroupSparsityProx(lam=1e-3, prox="weighted_group", metric=metric)], 1)
        zeroed[metric] = int(sum(m.sum() for m in zero_group_mask(model.backbone).values()))
    assert zeroed["uncorrected"] > zeroed["bias_corrected"]


# --------------------------------------------------------------------------------------------
# The authors' optimiser and uncertainty weighting
# --------------------------------------------------------------------------------------------
def test_authors_optimiser_groups_the_backbone_and_the_heads() -> None:
    model = _TinyModel()
    groups = AuthorsOptimiser().param_groups(model)
    assert [g["name"] for g in groups] == ["backbone", "heads"]
    assert {id(p) for p in groups[0]["params"]} == {id(p) for p in model.backbone.parameters()}
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in model.heads.parameters()}
    assert (groups[0]["eps"], groups[0]["weight_decay"], groups[1]["weight_decay"]) == (
        1e-6,
        0.0,
        0.01,
    )


def test_authors_optimiser_decays_the_backbone_after_the_adam_step() -> None:
    torch.manual_seed(0)
    model = _TinyModel()
    config = TrainConfig(epochs=1, batch_size=32, lr=1e-2, progress=False, device="cpu")
    names = [s.name for s in SPECS]
    plain = copy.deepcopy(model)
    settings = dataclasses.replace(AUTHORS_OPTIMISER, backbone_weight_decay=0.0)
    for net, hook in ((plain, AuthorsOptimiser(settings)), (model, AuthorsOptimiser())):
        balancer = uncertainty_balancer(names, "authors")
        fit(net, make_tasks(SPECS), _dataset(), None, balancer, config, [hook])
    # one step (32 samples, batch 32): the same Adam update, then w <- (1 - lr·0.1)·w
    for a, b in zip(plain.backbone.parameters(), model.backbone.parameters(), strict=True):
        torch.testing.assert_close(b, a * (1 - 1e-2 * 0.1))
    for a, b in zip(plain.heads.parameters(), model.heads.parameters(), strict=True):
        torch.testing.assert_close(a, b)


def test_authors_uncertainty_is_twice_kendalls_with_log_variances_starting_at_one() -> None:
    names = ["colour", "type"]
    losses = {"colour": torch.tensor(2.0), "type": torch.tensor(0.5)}
    authors = AuthorsUncertaintyWeighting(names)
    kendall = UncertaintyWeighting(names)
    assert authors.log_vars.tolist() == [1.0, 1.0]
    with torch.no_grad():
        kendall.log_vars.fill_(1.0)
    torch.testing.assert_close(authors(losses), 2 * kendall(losses))
    expected = math.exp(-1) * 2.0 + 1 + math.exp(-1) * 0.5 + 1
    assert float(authors(losses).detach()) == pytest.approx(expected)
    assert float(authors.weights()["type"]) == pytest.approx(math.exp(-1))
    assert uncertainty_balancer(names, "kendall").weighting.log_vars.tolist() == [0.0, 0.0]
    with pytest.raises(ConfigError):
        uncertainty_balancer(names, "equal")


@pytest.mark.parametrize(
    "overrides",
    [{"metric": "adam"}, {"backbone_eps": 0.0}, {"backbone_weight_decay": -1.0},
     {"head_weight_decay": math.nan}, {"uncertainty": "gradnorm"}],
)
def test_bad_optimiser_settings_raise_config_error(overrides: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        OptimiserSettings(**overrides)  # type: ignore[arg-type]
