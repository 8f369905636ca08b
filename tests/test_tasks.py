"""Tests for mtlrepro.tasks: spec validation, masked per-sample losses, predictions."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mtlrepro.config import ConfigError
from mtlrepro.metrics import DepthMeter, SegmentationMeter
from mtlrepro.tasks import CANONICAL_KINDS, Task, TaskSpec, make_tasks

SPECS = {
    "segmentation": TaskSpec("segmentation", "segmentation", 4),
    "depth": TaskSpec("depth", "depth"),
    "normal": TaskSpec("normal", "normal"),
    "binary": TaskSpec("edge", "binary"),
    "classification": TaskSpec("colour", "classification", 4),
}
# Logit scale for a "perfect" prediction: CE/BCE there is about exp(-BIG), i.e. 0 in float32.
BIG = 100.0


def perfect_and_target(kind: str, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A target batch (2 samples, 3x4 pixels, with invalid pixels) and a perfect raw output."""
    if kind == "segmentation":
        target = torch.randint(-1, 4, (2, 3, 4), generator=gen)
        return BIG * F.one_hot(target.clamp(min=0), 4).permute(0, 3, 1, 2).float(), target
    if kind == "depth":
        target = torch.rand(2, 1, 3, 4, generator=gen) + 0.5
        target[:, :, 0] = 0.0
        return target.clone(), target
    if kind == "normal":
        target = F.normalize(torch.randn(2, 3, 3, 4, generator=gen), dim=1)
        target[:, :, 0] = 0.0
        return 2.0 * target, target
    if kind == "binary":
        target = torch.randint(-1, 2, (2, 1, 3, 4), generator=gen).float()
        return BIG * (2 * target - 1), target
    target = torch.randint(0, 4, (2,), generator=gen)
    return BIG * F.one_hot(target, 4).float(), target


def invalid_mask(kind: str, target: torch.Tensor) -> torch.Tensor:
    """Pixels the loss must ignore, shaped like the prediction's spatial layout."""
    if kind == "segmentation":
        return (target < 0)[:, None].expand(-1, 4, -1, -1)
    if kind == "depth":
        return target <= 0
    if kind == "normal":
        return (target == 0).all(dim=1, keepdim=True).expand(-1, 3, -1, -1)
    return target < 0


def test_taskspec_out_channels_and_dense() -> None:
    assert [s.out_channels for s in SPECS.values()] == [4, 1, 3, 1, 4]
    assert [s.dense for s in SPECS.values()] == [True, True, True, True, False]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("x", "regression"), "allowed: 'segmentation'"),
        (("x", "segmentation"), r"num_classes of task 'x' must be an integer in \[2"),
        (("x", "classification", 1), "num_classes"),
        (("x", "depth", 3), "must be 0"),
        (("edge", "segmentation", 2), "kind 'binary'"),
        (("", "depth"), "non-empty"),
    ],
)
def test_taskspec_rejects_invalid_values(args: tuple, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TaskSpec(*args)


def test_canonical_tasks_accept_their_kind() -> None:
    for name, kind in CANONICAL_KINDS.items():
        spec = TaskSpec(name, kind, 3 if kind == "segmentation" else 0)
        assert Task(spec).name == name


@pytest.mark.parametrize("kind", list(SPECS))
def test_loss_is_per_sample_zero_at_perfect_prediction_and_positive_otherwise(kind: str) -> None:
    gen = torch.Generator().manual_seed(0)
    task = Task(SPECS[kind])
    perfect, target = perfect_and_target(kind, gen)
    loss = task.loss(perfect, target)
    assert loss.shape == (2,)
    # exp(-100) underflows; normals: 1 - cos of float32 unit vectors, ~1e-7
    assert torch.allclose(loss, torch.zeros(2), atol=1e-6)
    if kind in ("depth", "normal"):
        noisy = perfect + torch.randn(perfect.shape, generator=gen)
    else:
        noisy = -perfect  # logits flipped: every valid pixel / sample predicts a wrong class
    noisy_loss = task.loss(noisy, target)
    assert bool((noisy_loss > 1e-3).all())


@pytest.mark.parametrize("kind", ["segmentation", "depth", "normal", "binary"])
def test_masked_pixels_do_not_contribute_to_the_loss(kind: str) -> None:
    gen = torch.Generator().manual_seed(1)
    task = Task(SPECS[kind])
    pred, target = perfect_and_target(kind, gen)
    pred = pred + torch.randn(pred.shape, generator=gen)
    mask = invalid_mask(kind, target)
    assert bool(mask.any())
    changed = torch.where(mask, torch.randn(pred.shape, generator=gen) * 50, pred)
    assert torch.equal(task.loss(pred, target), task.loss(changed, target))


def test_loss_is_mean_over_each_samples_own_valid_pixels() -> None:
    task = Task(SPECS["depth"])
    target = torch.tensor([[1.0, 2.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]]).reshape(2, 1, 1, 4)
    pred = torch.tensor([[2.0, 2.0, 9.0, 9.0], [2.0, 2.0, 2.0, 2.0]]).reshape(2, 1, 1, 4)
    # sample 0: errors 1, 0 over its 2 valid pixels; sample 1: error 1 on 4 pixels
    assert task.loss(pred, target).tolist() == [0.5, 1.0]


@pytest.mark.parametrize("kind", ["segmentation", "depth", "normal", "binary"])
def test_all_invalid_pixels_give_zero_loss_and_finite_gradient(kind: str) -> None:
    gen = torch.Generator().manual_seed(2)
    pred, target = perfect_and_target(kind, gen)
    target = torch.full_like(target, -1 if kind in ("segmentation", "binary") else 0)
    pred = torch.randn(pred.shape, generator=gen).requires_grad_()
    loss = Task(SPECS[kind]).loss(pred, target)
    assert loss.tolist() == [0.0, 0.0]
    loss.sum().backward()
    assert pred.grad is not None and bool(torch.isfinite(pred.grad).all())


def test_dense_loss_rejects_broadcastable_shape_mismatch() -> None:
    with pytest.raises(ValueError, match="depth prediction shape"):
        Task(SPECS["depth"]).loss(torch.zeros(2, 1, 3, 4), torch.ones(2, 3, 4))


def test_metric_names_directions_and_primary_metric() -> None:
    tasks = make_tasks(SPECS.values())
    assert tasks["depth"].lower_is_better == {"abs_err", "rel_err"}
    assert tasks["normal"].lower_is_better == {"mean_angle", "median_angle"}
    assert tasks["edge"].lower_is_better == {"bce"}
    assert tasks["segmentation"].lower_is_better == frozenset()
    for task in tasks.values():
        assert task.primary_metric in task.metric_names
        assert tuple(task.new_meter().names) == task.metric_names
    assert isinstance(tasks["segmentation"].new_meter(), SegmentationMeter)
    assert isinstance(tasks["depth"].new_meter(), DepthMeter)


def test_make_tasks_keeps_order_accepts_mapping_and_rejects_duplicates() -> None:
    by_name = {s.name: s for s in SPECS.values()}
    assert list(make_tasks(by_name)) == ["segmentation", "depth", "normal", "edge", "colour"]
    with pytest.raises(ConfigError, match="duplicate task name 'depth'"):
        make_tasks([SPECS["depth"], SPECS["depth"]])


def test_predict_gives_displayable_outputs() -> None:
    gen = torch.Generator().manual_seed(3)
    raw = {kind: perfect_and_target(kind, gen) for kind in SPECS}
    seg_pred, seg_target = raw["segmentation"]
    labels = Task(SPECS["segmentation"]).predict(seg_pred)
    assert torch.equal(labels[seg_target >= 0], seg_target[seg_target >= 0])
    normals = Task(SPECS["normal"]).predict(torch.randn(2, 3, 3, 4, generator=gen))
    assert torch.allclose(normals.norm(dim=1), torch.ones(2, 3, 4), atol=1e-6)  # float32
    prob = Task(SPECS["binary"]).predict(torch.tensor([0.0, math.inf, -math.inf]))
    assert prob.tolist() == [0.5, 1.0, 0.0]
    assert Task(SPECS["classification"]).predict(raw["classification"][0]).shape == (2,)
    depth = Task(SPECS["depth"]).predict(raw["depth"][0].requires_grad_())
    assert not depth.requires_grad


def test_depth_mse_variant_squares_the_masked_error() -> None:
    tasks = make_tasks([TaskSpec("depth", "depth")], losses={"depth": "mse"})
    pred = torch.tensor([[[[1.0, 3.0], [0.0, 5.0]]]])
    target = torch.tensor([[[[2.0, 1.0], [0.0, 0.0]]]])  # two valid pixels: errors -1 and 2
    assert tasks["depth"].loss(pred, target).tolist() == [2.5]  # (1 + 4) / 2, exact


def test_unknown_loss_variant_is_rejected() -> None:
    with pytest.raises(ConfigError, match="loss of depth task"):
        make_tasks([TaskSpec("depth", "depth")], losses={"depth": "huber"})
    with pytest.raises(ConfigError, match="no loss variants"):
        make_tasks([TaskSpec("normal", "normal")], losses={"normal": "mse"})


def test_classification_loss_ignores_samples_of_class_minus_one() -> None:
    task = Task(SPECS["classification"])
    scores = torch.randn(3, 4)
    losses = task.loss(scores, torch.tensor([1, -1, 3]))
    assert losses[1] == 0
    expected = F.cross_entropy(scores[[0, 2]], torch.tensor([1, 3]), reduction="none")
    assert torch.allclose(losses[[0, 2]], expected)
