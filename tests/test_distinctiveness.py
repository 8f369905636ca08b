"""Tests of mtlrepro.methods.distinctiveness: paper A's joint encoder model and its pruning."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from mtlrepro.balancing import create_balancer
from mtlrepro.config import ConfigError
from mtlrepro.data.base import TensorDataset
from mtlrepro.methods.distinctiveness import (
    DistinctivenessConfig,
    DistinctivenessPruning,
    activation_patterns,
    centre_patterns,
    compression,
    min_distinctiveness_angle,
    pairwise_angles,
    prune_pair,
    prune_to_distinct,
    utilisation,
)
from mtlrepro.models import count_parameters
from mtlrepro.models.joint_encoder import JointEncoderModel
from mtlrepro.tasks import TaskSpec, make_tasks
from mtlrepro.train import Hooks, TrainConfig, TrainerState, fit

SPECS = (TaskSpec("colour", "classification", 3), TaskSpec("type", "classification", 4))
FEATURES = 16
HIDDEN = 8
EXACT = 1e-5
"""Tolerance of "outputs unchanged": float32 rounding of the folded weights and of
sigmoid(-a) vs 1 - sigmoid(a) (~1e-7 relative) on logits of order 1."""


def _probe(n: int = 32, seed: int = 1) -> Tensor:
    """Random probe images (n, 3, 8, 8) in [0, 1]."""
    return torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed))


def _model(hidden: int = HIDDEN, activation: str = "sigmoid") -> JointEncoderModel:
    """A tiny conv extractor; BatchNorm statistics calibrated on the probe set (as training
    would make them), with random affine parameters."""
    extractor = nn.Sequential(
        nn.Conv2d(3, FEATURES, 3, padding=1), nn.Tanh(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
    )
    model = JointEncoderModel(extractor, FEATURES, SPECS, hidden, activation)
    with torch.no_grad():
        pre = model.fc(extractor(_probe()))
        model.bn.running_mean.copy_(pre.mean(0))
        model.bn.running_var.copy_(pre.var(0))
        model.bn.weight.uniform_(0.5, 2.0)
        model.bn.bias.normal_(0.0, 0.3)
        for decoder in model.decoders.values():
            decoder.bias.normal_(0.0, 0.5)
    return model.eval()


def _copy_unit(
    model: JointEncoderModel, src: int, dst: int, sign: float = 1.0, scale: float = 1.0
) -> None:
    """Make unit ``dst``'s BN output exactly ``sign·scale`` times unit ``src``'s."""
    with torch.no_grad():
        model.fc.weight[dst] = sign * model.fc.weight[src]
        model.fc.bias[dst] = sign * model.fc.bias[src]
        model.bn.running_mean[dst] = sign * model.bn.running_mean[src]
        model.bn.running_var[dst] = model.bn.running_var[src]
        model.bn.weight[dst] = scale * model.bn.weight[src]
        model.bn.bias[dst] = sign * scale * model.bn.bias[src]


@torch.no_grad()
def _outputs(model: JointEncoderModel, images: Tensor) -> dict[str, Tensor]:
    """Eval-mode outputs of every task."""
    model.eval()
    return model(images)


def assert_outputs_close(before: dict[str, Tensor], after: dict[str, Tensor], atol: float) -> None:
    """Property: every task's outputs agree elementwise within ``atol``."""
    assert list(before) == list(after)
    for task in before:
        torch.testing.assert_close(after[task], before[task], atol=atol, rtol=0.0)


def _max_change(before: dict[str, Tensor], after: dict[str, Tensor]) -> float:
    """Largest absolute output change over all tasks."""
    return max(float((after[t] - before[t]).abs().max()) for t in before)


# --------------------------------------------------------------------------------------------
# Exactness of the merge (Eq. 12-15)
# --------------------------------------------------------------------------------------------
def test_pruning_a_duplicate_unit_leaves_every_task_output_unchanged() -> None:
    model, probe = _model(), _probe()
    _copy_unit(model, src=2, dst=5)
    before = _outputs(model, probe)
    pairs = prune_to_distinct(model, probe, theta=1.0)
    assert [(p.keep, p.remove, p.kind) for p in pairs] == [(2, 5, "similar")]
    assert pairs[0].coefficient == pytest.approx(1.0, abs=1e-12)  # float64 cosine of twins
    assert model.hidden_size == HIDDEN - 1
    assert_outputs_close(before, _outputs(model, probe), EXACT)


def test_removing_a_duplicate_without_the_merge_changes_the_outputs() -> None:
    model, probe = _model(), _probe()
    _copy_unit(model, src=2, dst=5)
    before = _outputs(model, probe)
    model.select_units([u for u in range(HIDDEN) if u != 5])
    assert _max_change(before, _outputs(model, probe)) > 1e-2  # Eq. 13's fold is what matters


@pytest.mark.parametrize(
    ("activation", "centring"),
    [("sigmoid", "activation"), ("sigmoid", "mean"), ("tanh", "activation")],
)
def test_pruning_an_opposite_unit_leaves_every_task_output_unchanged(
    activation: str, centring: str
) -> None:
    model, probe = _model(activation=activation), _probe()
    _copy_unit(model, src=1, dst=6, sign=-1.0)
    before = _outputs(model, probe)
    pairs = prune_to_distinct(model, probe, theta=1.0, centring=centring)
    # equal norms: which twin is kept is decided by float rounding
    assert [({p.keep, p.remove}, p.kind) for p in pairs] == [({1, 6}, "opposite")]
    assert pairs[0].coefficient == pytest.approx(-1.0, abs=1e-6)  # float32 patterns
    assert_outputs_close(before, _outputs(model, probe), EXACT)


def test_least_squares_coefficient_is_exact_for_scaled_units_where_cosine_is_not() -> None:
    probe = _probe()
    changes = {}
    for coefficient in ("least_squares", "cosine"):
        torch.manual_seed(0)
        model = _model(activation="relu")
        _copy_unit(model, src=3, dst=0, scale=2.0)  # relu(2a) = 2 relu(a): h_0 = 2 h_3
        before = _outputs(model, probe)
        pairs = prune_to_distinct(model, probe, theta=1.0, coefficient=coefficient)
        assert [(p.keep, p.remove) for p in pairs] == [(0, 3)]  # the smaller norm goes
        changes[coefficient] = _max_change(before, _outputs(model, probe))
    assert changes["least_squares"] < EXACT
    assert changes["cosine"] > 1e-2  # Eq. 7 assumes equal norms; here they differ by 2x


def test_near_colinear_pair_changes_outputs_by_the_decoder_weight_times_the_residual() -> None:
    model, probe = _model(), _probe()
    _copy_unit(model, src=2, dst=5)
    with torch.no_grad():
        model.fc.weight[5] += 5e-4 * torch.randn(FEATURES)  # about 2° apart
    centred, _ = centre_patterns(activation_patterns(model, probe), "activation", "sigmoid")
    columns = {t: d.weight.detach().clone().double() for t, d in model.decoders.items()}
    before = _outputs(model, probe)
    pairs = prune_to_distinct(model, probe, theta=5.0)
    assert [{p.keep, p.remove} for p in pairs] == [{2, 5}]
    x, y, alpha = pairs[0].keep, pairs[0].remove, pairs[0].coefficient
    assert 0.0 < pairs[0].angle < 5.0
    residual = centred[:, y] - alpha * centred[:, x]
    after = _outputs(model, probe)
    for task, weights in columns.items():
        # o_p changes by exactly -w_py·(h̃_y - α·h̃_x); tolerance: float32 rounding as in EXACT
        predicted = -residual[:, None] * weights[None, :, y]
        torch.testing.assert_close(
            (after[task] - before[task]).double(), predicted, atol=EXACT, rtol=0
        )
    # small: within 0.02, under 5 % of the logits' spread across the probe set (std ≈ 0.45)
    assert 0.0 < _max_change(before, after) < 0.02


# --------------------------------------------------------------------------------------------
# Pair selection
# --------------------------------------------------------------------------------------------
def test_nothing_is_pruned_when_no_pair_lies_within_theta() -> None:
    model, probe = _model(), _probe()
    centred, _ = centre_patterns(activation_patterns(model, probe), "activation", "sigmoid")
    smallest = min_distinctiveness_angle(pairwise_angles(centred))
    assert 1.0 < smallest < 89.0  # a random model: no pair is near-colinear
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert prune_to_distinct(model, probe, theta=smallest - 0.5) == []
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert len(prune_to_distinct(model, probe, theta=smallest + 0.5)) >= 1


def test_similarity_only_skips_opposite_pairs_and_dissimilarity_only_skips_similar_ones() -> None:
    probe = _probe()
    opposite = _model()
    _copy_unit(opposite, src=1, dst=6, sign=-1.0)
    assert prune_to_distinct(opposite, probe, theta=1.0, dissimilarity=False) == []
    assert opposite.hidden_size == HIDDEN
    similar = _model()
    _copy_unit(similar, src=1, dst=6)
    assert prune_to_distinct(similar, probe, theta=1.0, similarity=False) == []
    assert len(prune_to_distinct(similar, probe, theta=1.0, dissimilarity=False)) == 1


def test_uncentred_sigmoid_patterns_never_look_opposite() -> None:
    model, probe = _model(), _probe()
    _copy_unit(model, src=1, dst=6, sign=-1.0)
    raw, _ = centre_patterns(activation_patterns(model, probe), "none", "sigmoid")
    assert float(pairwise_angles(raw).max()) <= 90.0  # positive vectors (Eq. 4-5 literally)
    assert prune_to_distinct(model, probe, theta=1.0, centring="none") == []
    assert len(prune_to_distinct(model, probe, theta=1.0)) == 1  # centred at 0.5


def test_greedy_pruning_takes_the_most_extreme_pair_first_and_leaves_no_pair_within_theta() -> None:
    model, probe = _model(), _probe()
    _copy_unit(model, src=0, dst=4)
    _copy_unit(model, src=0, dst=7, scale=1.02)  # unit 7 is 0 and 4 up to a 2 % gain
    pairs = prune_to_distinct(model, probe, theta=1.0, centring="mean")
    assert (pairs[0].keep, pairs[0].remove) == (0, 4)  # exact twins: angle 0 comes first
    assert model.hidden_size == HIDDEN - 2
    centred, _ = centre_patterns(activation_patterns(model, probe), "mean", "sigmoid")
    assert min_distinctiveness_angle(pairwise_angles(centred)) > 1.0


def test_pairwise_angles_and_min_angle_pinned_values() -> None:
    columns = torch.tensor([[1.0, 0.0, -1.0, 0.0], [0.0, 1.0, -0.1, 0.0]], dtype=torch.float64)
    angles = pairwise_angles(columns)
    assert angles[0, 1] == pytest.approx(90.0)
    assert angles[0, 2] == pytest.approx(180.0 - math.degrees(math.atan(0.1)))
    assert angles[0, 3] == pytest.approx(90.0)  # a zero pattern is orthogonal to all
    # closest pair: 0 and 2, 5.71° from opposite
    assert min_distinctiveness_angle(angles) == pytest.approx(math.degrees(math.atan(0.1)))
    assert math.isnan(min_distinctiveness_angle(angles[:1, :1]))


# --------------------------------------------------------------------------------------------
# The model after pruning
# --------------------------------------------------------------------------------------------
def test_pruned_model_has_fewer_fc_rows_bn_entries_and_decoder_columns() -> None:
    model, probe = _model(), _probe()
    _copy_unit(model, src=1, dst=4)
    _copy_unit(model, src=2, dst=6, sign=-1.0)
    params = count_parameters(model)
    assert len(prune_to_distinct(model, probe, theta=1.0)) == 2
    h = HIDDEN - 2
    assert model.fc.weight.shape == (h, FEATURES) and model.fc.out_features == h
    for tensor in (model.fc.bias, model.bn.weight, model.bn.bias):
        assert tensor.shape == (h,)
    assert model.bn.running_mean.shape == model.bn.running_var.shape == (h,)
    assert model.bn.num_features == h
    for spec in SPECS:
        decoder = model.decoders[spec.name]
        assert decoder.weight.shape == (spec.num_classes, h) and decoder.in_features == h
    # per unit: an FC row and bias, BN weight and bias, one decoder column entry per output
    per_unit = FEATURES + 1 + 2 + sum(spec.num_classes for spec in SPECS)
    assert count_parameters(model) == params - 2 * per_unit


def test_prune_pair_folds_and_removes_the_named_unit() -> None:
    model = _model()
    kept_row = model.fc.weight[4].detach().clone()
    w = {t: d.weight.detach().clone() for t, d in model.decoders.items()}
    b = {t: d.bias.detach().clone() for t, d in model.decoders.items()}
    prune_pair(model, keep=1, remove=3, coefficient=0.5, bias_shift=2.0)
    assert model.hidden_size == HIDDEN - 1
    assert torch.equal(model.fc.weight[3], kept_row)  # units after 3 shift down
    for task, decoder in model.decoders.items():
        torch.testing.assert_close(decoder.weight[:, 1], w[task][:, 1] + 0.5 * w[task][:, 3])
        torch.testing.assert_close(decoder.bias, b[task] + 2.0 * w[task][:, 3])
    with pytest.raises(ConfigError):
        prune_pair(model, keep=2, remove=2, coefficient=1.0)


def test_pruned_state_dict_loads_into_a_full_size_model() -> None:
    model, probe = _model(), _probe()
    _copy_unit(model, src=2, dst=5)
    prune_to_distinct(model, probe, theta=1.0)
    fresh = _model()
    fresh.load_state_dict(model.state_dict())
    assert fresh.hidden_size == HIDDEN - 1
    assert_outputs_close(_outputs(model, probe), _outputs(fresh, probe), 0.0)


def test_model_serves_a_task_named_type_and_splits_shared_from_task_parameters() -> None:
    model = _model()
    logits = model(_probe(4))
    assert {t: tuple(v.shape) for t, v in logits.items()} == {"colour": (4, 3), "type": (4, 4)}
    shared = {id(p) for p in model.shared_parameters()}
    per_task = [{id(p) for p in model.task_parameters(spec.name)} for spec in SPECS]
    assert shared.isdisjoint(per_task[0] | per_task[1])
    assert shared | per_task[0] | per_task[1] == {id(p) for p in model.parameters()}
    with pytest.raises(ConfigError):
        JointEncoderModel(nn.Flatten(), 4, [TaskSpec("depth", "depth")])


# --------------------------------------------------------------------------------------------
# The hook in the training loop
# --------------------------------------------------------------------------------------------
class _OptimiserCheck(Hooks):
    """Records, after every step, whether the optimiser holds exactly the model's current
    parameters with state of matching shapes (i.e. it was rebuilt after pruning)."""

    def __init__(self) -> None:
        self.ok: list[bool] = []

    def after_step(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        held = [p for group in optimizer.param_groups for p in group["params"]]
        same = {id(p) for p in model.parameters()} <= {id(p) for p in held}
        shapes = all(s["exp_avg"].shape == p.shape for p in held if (s := optimizer.state.get(p)))
        self.ok.append(same and shapes)


def _dataset(n: int = 32) -> TensorDataset:
    """Classification toy data: colour = brightest channel, type = brightness quartile."""
    images = _probe(n, seed=2)
    means = images.mean((2, 3))
    labels = {
        "colour": means.argmax(1),
        "type": (means.mean(1) * 4).long().clamp(0, 3),
    }
    specs = {spec.name: spec for spec in SPECS}
    return TensorDataset("toy", "train", {"image": images, **labels}, specs, None)


def _twin_model() -> JointEncoderModel:
    """A model whose units 2 and 5 are identical in every weight: they get identical updates,
    so they stay twins through training and are pruned at the end of epoch 1."""
    model = _model()
    _copy_unit(model, src=2, dst=5)
    with torch.no_grad():
        for decoder in model.decoders.values():
            decoder.weight[:, 5] = decoder.weight[:, 2]
    return model.train()


def _train_config(epochs: int, **kwargs: object) -> TrainConfig:
    return TrainConfig(epochs=epochs, batch_size=8, lr=1e-2, progress=False, device="cpu", **kwargs)


def test_pruned_model_still_trains_with_the_rebuilt_optimiser() -> None:
    data, check = _dataset(), _OptimiserCheck()
    model = _twin_model()
    hook = DistinctivenessPruning(data.tensors["image"][:16], theta=30.0)
    balancer = create_balancer("pcgrad", [s.name for s in SPECS], hard_mining=0.7)
    result = fit(model, make_tasks(SPECS), data, None, balancer, _train_config(3), [hook, check])
    history = result.history
    logged = {
        metric: history[history["metric"] == metric].set_index("epoch")["value"]
        for metric in ("min_angle", "hidden_size", "pruned")
    }
    for series in logged.values():
        assert list(series.index) == [1, 2, 3]  # logged every epoch
    assert logged["pruned"][1] >= 1  # the twins at least
    sizes = [HIDDEN] + list(logged["hidden_size"])
    assert [a - b for a, b in zip(sizes, sizes[1:], strict=False)] == list(logged["pruned"])
    assert model.hidden_size == sizes[-1] < HIDDEN
    assert len(check.ok) == 3 * 4 and all(check.ok)  # 4 steps per epoch
    assert history["value"][history["task"] != "all"].notna().all()


def test_training_resumes_from_a_pruned_checkpoint(tmp_path: Path) -> None:
    data = _dataset()
    tasks, names = make_tasks(SPECS), [s.name for s in SPECS]
    path = str(tmp_path / "ckpt.pt")
    hook = DistinctivenessPruning(data.tensors["image"][:16], theta=30.0)
    first = _twin_model()
    fit(
        first,
        tasks,
        data,
        None,
        create_balancer("equal", names),
        _train_config(1, checkpoint_path=path),
        [hook],
    )
    assert first.hidden_size < HIDDEN
    resumed = _twin_model()  # full size until the checkpoint is loaded
    config = _train_config(2, checkpoint_path=path, resume=True)
    result = fit(resumed, tasks, data, None, create_balancer("equal", names), config, [hook])
    assert result.epochs == 2 and result.steps == 8
    assert resumed.hidden_size <= first.hidden_size


def test_min_angle_is_logged_every_epoch_even_when_pruning_is_disabled() -> None:
    model, probe = _model(), _probe()
    _copy_unit(model, src=2, dst=5)
    state = TrainerState(TrainConfig(), torch.optim.SGD(model.parameters(), lr=0.1), None)
    hook = DistinctivenessPruning(probe, enabled=False)
    for epoch in (1, 2):
        state.epoch = epoch
        hook.end_of_epoch(model, epoch, state)
    rows = [(r["epoch"], r["metric"], r["value"]) for r in state.rows]
    assert [r[:2] for r in rows] == [
        (e, m) for e in (1, 2) for m in ("min_angle", "hidden_size", "pruned")
    ]
    assert rows[0][2] == pytest.approx(0.0, abs=1e-3)  # the twins (float64 acos near 1)
    assert [r[2] for r in rows if r[1] == "hidden_size"] == [HIDDEN, HIDDEN]
    assert not state.rebuild_optimizer
    enabled = DistinctivenessPruning(probe)
    enabled.end_of_epoch(model, 3, state)
    assert state.rebuild_optimizer and model.hidden_size == HIDDEN - 1
    with pytest.raises(TypeError):
        enabled.end_of_epoch(nn.Linear(2, 2), 4, state)


# --------------------------------------------------------------------------------------------
# Config and Table 2's definitions
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "bad",
    [
        {"theta": -1.0},
        {"theta": 91.0},
        {"activation": "gelu"},
        {"coefficient": "lsq"},
        {"centring": "median"},
        {"similarity": False, "dissimilarity": False},
        {"hidden": 0},
        {"probe_size": 1},
        {"enabled": "yes"},
    ],
)
def test_config_rejects_bad_values(bad: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        DistinctivenessConfig(**bad)  # type: ignore[arg-type]


def test_config_defaults_are_the_papers_and_the_hook_takes_them() -> None:
    assert DistinctivenessConfig().theta == 30.0 and DistinctivenessConfig().hidden == 128
    with pytest.raises(ConfigError):
        DistinctivenessPruning(_probe(1))
    hook = DistinctivenessPruning.from_config(
        DistinctivenessConfig(coefficient="least_squares"), _probe()
    )
    assert hook.coefficient == "least_squares" and hook.theta == 30.0


def test_compression_and_utilisation_follow_table_2_definitions() -> None:
    assert compression(128, 96) == 25.0 and utilisation(128, 96) == 75.0
    assert compression(128, 93) == pytest.approx(27.34375)  # ResNet-50: paper prints 27.33
    assert compression(128, 80) + utilisation(128, 80) == pytest.approx(100.0)
    with pytest.raises(ConfigError):
        compression(0, 0)
