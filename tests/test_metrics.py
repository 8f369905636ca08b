"""Tests for mtlrepro.metrics: hand-computed cases, accumulation, masking and Δ."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mtlrepro.config import ConfigError
from mtlrepro.metrics import (
    ANGLE_BIN_DEG,
    LOWER_IS_BETTER,
    METRIC_NAMES,
    BinaryMeter,
    ClassificationMeter,
    DepthMeter,
    NormalMeter,
    SegmentationMeter,
    make_meter,
    relative_performance,
)

# Float32 inputs, float64 accumulation: 1e-5 relative covers float32 rounding of the inputs.
REL = 1e-5


def one_hot_scores(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Class scores (B, C, H, W) whose argmax is ``labels`` (B, H, W); -1 labels become 0."""
    return F.one_hot(labels.clamp(min=0), num_classes).permute(0, 3, 1, 2).float()


def unit_normals_at(angles_deg: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Predictions at the given angles from the target (0, 0, 1), shaped (1, 3, 1, N)."""
    rad = torch.deg2rad(torch.tensor(angles_deg, dtype=torch.float64))
    pred = torch.stack([torch.sin(rad), torch.zeros_like(rad), torch.cos(rad)])
    target = torch.zeros_like(pred)
    target[2] = 1.0
    return pred.float()[None, :, None, :], target.float()[None, :, None, :]


def test_segmentation_hand_case_confusion_matrix_miou_and_accuracy() -> None:
    # 2x3 image, 4 classes; class 3 appears in neither prediction nor target -> excluded.
    target = torch.tensor([[[0, 0, 1], [1, 2, -1]]])
    pred_labels = torch.tensor([[[0, 1, 1], [2, 2, 0]]])  # last pixel is ignored
    meter = SegmentationMeter(4)
    meter.update(one_hot_scores(pred_labels, 4), target)
    # rows = target, columns = prediction
    expected_confusion = torch.tensor([[1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 0], [0, 0, 0, 0]])
    assert torch.equal(meter.confusion, expected_confusion)
    result = meter.compute()
    # IoU0 = 1/(2+1-1) = 1/2, IoU1 = 1/(2+2-1) = 1/3, IoU2 = 1/(1+2-1) = 1/2
    assert result["miou"] == pytest.approx(100 * (1 / 2 + 1 / 3 + 1 / 2) / 3, rel=1e-12)
    assert result["pixel_acc"] == pytest.approx(100 * 3 / 5, rel=1e-12)


def test_segmentation_accepts_class_ids_and_ignores_minus_one() -> None:
    target = torch.tensor([[[0, 1], [-1, -1]]])
    pred_a = torch.tensor([[[0, 1], [1, 1]]])
    pred_b = torch.tensor([[[0, 1], [0, 0]]])  # differs only at ignored pixels
    results = []
    for pred in (pred_a, pred_b):
        meter = SegmentationMeter(2)
        meter.update(pred, target)
        results.append(meter.compute())
    assert results[0] == results[1] == {"miou": 100.0, "pixel_acc": 100.0}


def test_segmentation_rejects_out_of_range_target() -> None:
    meter = SegmentationMeter(3)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        meter.update(torch.zeros(1, 3, 1, 2), torch.tensor([[[0, 3]]]))


def test_depth_hand_case_errors_and_deltas() -> None:
    # (gt, pred): ratios 1, 1.2, 1.5, 1.9, 4 -> <1.25: 2, <1.5625: 3, <1.953125: 4; last pixel
    # has gt 0 (invalid) and must not count.
    gt = torch.tensor([2.0, 1.0, 2.0, 1.0, 4.0, 0.0]).reshape(1, 1, 2, 3)
    pred = torch.tensor([2.0, 1.2, 3.0, 1.9, 1.0, 5.0]).reshape(1, 1, 2, 3)
    meter = DepthMeter()
    meter.update(pred, gt)
    result = meter.compute()
    assert result["abs_err"] == pytest.approx((0 + 0.2 + 1 + 0.9 + 3) / 5, rel=REL)
    assert result["rel_err"] == pytest.approx((0 + 0.2 + 0.5 + 0.9 + 0.75) / 5, rel=REL)
    assert result["delta1"] == pytest.approx(40.0, rel=1e-12)
    assert result["delta2"] == pytest.approx(60.0, rel=1e-12)
    assert result["delta3"] == pytest.approx(80.0, rel=1e-12)


def test_depth_non_positive_prediction_is_finite_and_outside_every_delta() -> None:
    meter = DepthMeter()
    meter.update(torch.tensor([[[[0.0, -1.0]]]]), torch.tensor([[[[1.0, 2.0]]]]))
    result = meter.compute()
    assert all(math.isfinite(v) for v in result.values())
    assert result["delta3"] == 0.0
    assert result["abs_err"] == pytest.approx((1 + 3) / 2, rel=1e-12)


def test_normal_hand_case_angles_0_10_20_45_90() -> None:
    pred, target = unit_normals_at([0, 10, 20, 45, 90, 30])
    target[..., -1] = 0.0  # sixth pixel invalid (all-zero target)
    meter = NormalMeter()
    meter.update(pred * 3.0, target)  # the prediction's length must not matter
    result = meter.compute()
    # float32 inputs: angles exact to ~1e-4 degrees
    assert result["mean_angle"] == pytest.approx((0 + 10 + 20 + 45 + 90) / 5, abs=1e-3)
    # median from a histogram with ANGLE_BIN_DEG (0.01 degree) bins: error below one bin
    assert result["median_angle"] == pytest.approx(20.0, abs=ANGLE_BIN_DEG)
    assert result["within_11_25"] == pytest.approx(40.0, rel=1e-12)
    assert result["within_22_5"] == pytest.approx(60.0, rel=1e-12)
    assert result["within_30"] == pytest.approx(60.0, rel=1e-12)
    cosines = [1.0, math.cos(math.radians(10)), math.cos(math.radians(20)), math.sqrt(0.5), 0.0]
    assert result["cosine"] == pytest.approx(sum(cosines) / 5, abs=1e-6)  # float32 cosines


def test_normal_median_matches_exact_median_over_whole_split() -> None:
    gen = torch.Generator().manual_seed(0)
    angles = (torch.rand(2001, generator=gen) * 120).tolist()  # odd count: unique median
    pred, target = unit_normals_at(angles)
    meter = NormalMeter()
    for chunk in range(0, 2001, 500):  # split into batches along the width
        meter.update(pred[..., chunk : chunk + 500], target[..., chunk : chunk + 500])
    exact = torch.tensor(angles).median().item()
    # histogram bins of 0.01 degree, plus ~1e-4 degree float32 angle error
    assert meter.compute()["median_angle"] == pytest.approx(exact, abs=ANGLE_BIN_DEG + 1e-3)


def test_normal_zero_prediction_counts_as_ninety_degrees() -> None:
    meter = NormalMeter()
    meter.update(torch.zeros(1, 3, 1, 1), torch.tensor([0.0, 0.0, 1.0]).reshape(1, 3, 1, 1))
    assert meter.compute()["mean_angle"] == pytest.approx(90.0, abs=1e-6)


def test_binary_hand_case_miou_f1_bce() -> None:
    target = torch.tensor([1.0, 1.0, 0.0, 0.0, -1.0]).reshape(1, 1, 1, 5)
    logits = torch.tensor([2.0, -1.0, 3.0, -2.0, 5.0]).reshape(1, 1, 1, 5)
    meter = BinaryMeter()
    meter.update(logits, target)
    result = meter.compute()
    # tp = fn = fp = tn = 1: IoU1 = IoU0 = 1/3, F1 = 2/(2+2)
    assert result["miou"] == pytest.approx(100 / 3, rel=1e-12)
    assert result["f1"] == pytest.approx(50.0, rel=1e-12)
    bce = [math.log1p(math.exp(-2)), math.log1p(math.exp(1)), math.log1p(math.exp(3))]
    bce.append(math.log1p(math.exp(-2)))
    assert result["bce"] == pytest.approx(sum(bce) / 4, rel=REL)


def test_classification_accuracy_hand_case() -> None:
    scores = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    meter = ClassificationMeter(3)
    meter.update(scores, torch.tensor([0, 1, 2, 2]))
    assert meter.compute() == {"accuracy": 75.0}


def test_classification_accuracy_skips_ignored_samples() -> None:
    scores = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    meter = ClassificationMeter(3)
    meter.update(scores, torch.tensor([0, -1, 1, -1]))
    assert meter.compute() == {"accuracy": 50.0}


def random_batch(kind: str, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A random (prediction, target) batch of 3 samples of 5x6 pixels with invalid pixels."""
    shape = (3, 1, 5, 6)
    if kind == "segmentation":
        target = torch.randint(-1, 4, shape[:1] + shape[2:], generator=gen)
        return torch.randn(3, 4, 5, 6, generator=gen), target
    if kind == "depth":
        target = torch.rand(shape, generator=gen) * 5 * (torch.rand(shape, generator=gen) > 0.2)
        return torch.rand(shape, generator=gen) * 5, target
    if kind == "normal":
        target = F.normalize(torch.randn(3, 3, 5, 6, generator=gen), dim=1)
        target = target * (torch.rand(3, 1, 5, 6, generator=gen) > 0.2)
        return torch.randn(3, 3, 5, 6, generator=gen), target
    if kind == "binary":
        target = torch.randint(-1, 2, shape, generator=gen).float()
        return torch.randn(shape, generator=gen), target
    return torch.randn(3, 4, generator=gen), torch.randint(0, 4, (3,), generator=gen)


@pytest.mark.parametrize("kind", list(METRIC_NAMES))
def test_accumulating_batches_equals_one_shot_computation(kind: str) -> None:
    gen = torch.Generator().manual_seed(1)
    batches = [random_batch(kind, gen) for _ in range(4)]
    split = make_meter(kind, num_classes=4)
    for pred, target in batches:
        split.update(pred, target)
    whole = make_meter(kind, num_classes=4)
    whole.update(torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches]))
    accumulated, one_shot = split.compute(), whole.compute()
    assert tuple(accumulated) == METRIC_NAMES[kind]
    # identical statistics, summed in another order: float64 rounding only
    assert accumulated == pytest.approx(one_shot, rel=1e-9)


@pytest.mark.parametrize("kind", list(METRIC_NAMES))
def test_reset_forgets_accumulated_batches_and_empty_meter_is_nan(kind: str) -> None:
    gen = torch.Generator().manual_seed(2)
    meter = make_meter(kind, num_classes=4)
    meter.update(*random_batch(kind, gen))
    meter.reset()
    assert all(math.isnan(v) for v in meter.compute().values())


def test_make_meter_rejects_unknown_kind() -> None:
    with pytest.raises(ConfigError, match="allowed: 'segmentation'"):
        make_meter("regression")


def test_relative_performance_hand_case_both_directions() -> None:
    scores = {"a": {"acc": 60.0, "err": 0.8}, "b": {"err": 2.0}}
    reference = {"a": {"acc": 50.0, "err": 1.0}, "b": {"err": 1.0, "unused": 3.0}}
    result = relative_performance(scores, reference, {"err"})
    # a: acc +20 %, err lower by 20 % -> +20; mean +20.  b: err doubled -> -100.
    assert result == pytest.approx({"a": 20.0, "b": -100.0, "all": -40.0}, rel=1e-12)
    flat = relative_performance(scores, reference, {"err"}, definition="all_metrics")
    assert flat["all"] == pytest.approx((20 + 20 - 100) / 3, rel=1e-12)


def test_relative_performance_validation_names_the_problem() -> None:
    ref = {"a": {"acc": 50.0}}
    with pytest.raises(ConfigError, match=r"task\(s\) \['b'\]"):
        relative_performance({"b": {"acc": 1.0}}, ref, set())
    with pytest.raises(ConfigError, match=r"'a' lacks metric\(s\) \['err'\]"):
        relative_performance({"a": {"err": 1.0}}, ref, set())
    with pytest.raises(ConfigError, match="is 0"):
        relative_performance({"a": {"acc": 1.0}}, {"a": {"acc": 0.0}}, set())
    with pytest.raises(ConfigError, match="allowed: 'paper_d', 'all_metrics'"):
        relative_performance({"a": {"acc": 1.0}}, ref, set(), definition="libmtl")


def test_relative_performance_reproduces_paper_d_table2_shared_bottom_row() -> None:
    # Paper D, Table 11 (NYU-v2) absolute values; the Δ values are Table 2's "Shared Bottom".
    single = {
        "segmentation": {"miou": 27.5, "pixel_acc": 58.9},
        "depth": {"abs_err": 0.62, "rel_err": 0.25, "delta1": 57.9, "delta2": 85.8,
                  "delta3": 95.7},
        "normal": {"mean_angle": 17.5, "median_angle": 15.2, "within_11_25": 34.9,
                   "within_22_5": 73.3, "within_30": 85.7},
    }  # fmt: skip
    shared_bottom = {
        "segmentation": {"miou": 24.1, "pixel_acc": 57.2},
        "depth": {"abs_err": 0.58, "rel_err": 0.23, "delta1": 62.4, "delta2": 88.2,
                  "delta3": 96.5},
        "normal": {"mean_angle": 16.6, "median_angle": 13.4, "within_11_25": 42.5,
                   "within_22_5": 73.2, "within_30": 84.6},
    }  # fmt: skip
    result = relative_performance(shared_bottom, single, LOWER_IS_BETTER)
    paper = {"segmentation": -7.6, "depth": 5.2, "normal": 7.5, "all": 1.7}
    # The paper rounds Δ to 0.1, so agreement within half a unit (0.05) is agreement.
    assert result == pytest.approx(paper, abs=0.05 + 1e-9)


def test_relative_where_defined_leaves_out_metrics_with_a_zero_reference() -> None:
    from mtlrepro.metrics import relative_where_defined

    scores = {"depth": {"abs_err": 0.5, "delta1": 10.0}, "normal": {"within_11_25": 5.0}}
    reference = {"depth": {"abs_err": 1.0, "delta1": 0.0}, "normal": {"within_11_25": 0.0}}
    delta = relative_where_defined(scores, reference)
    assert delta == {"depth": pytest.approx(50.0), "all": pytest.approx(50.0)}
