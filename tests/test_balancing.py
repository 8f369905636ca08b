"""Tests of mtlrepro.balancing: weightings, hard-sample mining, PCGrad and the Balancer."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mtlrepro.balancing import (
    BALANCERS,
    Balancer,
    FixedWeights,
    UncertaintyWeighting,
    create_balancer,
    hard_sample_mining,
    kept_count,
    pcgrad_backward,
    pcgrad_combine,
    pcgrad_project,
)
from mtlrepro.config import ConfigError

TASKS = ("a", "b", "c")


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class TinyModel(nn.Module):
    """Shared linear trunk + one linear head per task (enough for PCGrad's bookkeeping)."""

    def __init__(self, names: tuple[str, ...] = TASKS) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3))
        self.heads = nn.ModuleDict({name: nn.Linear(3, 1) for name in names})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.backbone(x)
        return {name: head(features).squeeze(1) for name, head in self.heads.items()}

    def shared_parameters(self) -> list[nn.Parameter]:
        return list(self.backbone.parameters())


def _per_sample_losses(model: TinyModel, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-sample squared errors against different targets, so the tasks' gradients differ."""
    preds = model(x)
    targets = {"a": x[:, 0], "b": -x[:, 0] + x[:, 1], "c": torch.ones(len(x))}
    return {name: (preds[name] - targets[name]) ** 2 for name in model.heads}


# --- PCGrad ---------------------------------------------------------------------------------
def test_pcgrad_removes_conflicting_component() -> None:
    """Two conflicting gradients: each projected one is orthogonal to the other's original."""
    grads = torch.tensor([[1.0, 0.0], [-1.0, 1.0]])  # g1·g2 = -1 < 0
    projected = pcgrad_project(grads, _generator())
    # Hand computation: g1' = g1 + ½ g2 = (½, ½); g2' = g2 + g1 = (0, 1).
    assert torch.allclose(projected, torch.tensor([[0.5, 0.5], [0.0, 1.0]]))
    assert torch.dot(projected[0], grads[1]).abs() < 1e-7  # float32 rounding of exact zeros
    assert torch.dot(projected[1], grads[0]).abs() < 1e-7
    assert torch.allclose(pcgrad_combine(grads, _generator()), torch.tensor([0.5, 1.5]))


def test_pcgrad_projection_is_orthogonal_in_high_dimension() -> None:
    """Random conflicting pair in R^1000: the projected g1 has no component along g2."""
    g1 = torch.randn(1000, dtype=torch.float64)
    g2 = -g1 + 0.5 * torch.randn(1000, dtype=torch.float64)
    assert torch.dot(g1, g2) < 0
    projected = pcgrad_project(torch.stack([g1, g2]), _generator())
    # float64 rounding relative to |g1||g2| ~ 1e3
    assert abs(float(torch.dot(projected[0], g2))) < 1e-9
    assert abs(float(torch.dot(projected[1], g1))) < 1e-9


def test_pcgrad_leaves_non_conflicting_gradients_unchanged() -> None:
    """Pairwise non-negative dot products: no projection, the result is the plain sum."""
    grads = torch.rand(4, 50)  # all entries >= 0, so every g_i·g_j >= 0
    assert torch.equal(pcgrad_project(grads, _generator()), grads)
    assert torch.allclose(pcgrad_combine(grads, _generator()), grads.sum(0))


def test_pcgrad_projects_against_original_gradients() -> None:
    """Three tasks: the result matches a reference that projects against the original g_j
    (not the already projected one), visiting others in the generator's order."""
    grads = torch.randn(3, 6, dtype=torch.float64)
    grads[1] = -grads[0] + 0.1 * grads[1]  # make sure conflicts exist

    def reference(against_original: bool) -> torch.Tensor:
        out, gen = grads.clone(), _generator(7)
        for i in range(3):
            for j in torch.randperm(3, generator=gen).tolist():
                g_j = grads[j] if against_original else out[j]
                dot = float(out[i] @ g_j)
                if j != i and dot < 0:
                    out[i] = out[i] - dot / float(g_j @ g_j) * g_j
        return out

    result = pcgrad_project(grads, _generator(7))
    assert torch.allclose(result, reference(True), atol=1e-12)  # same float64 operations
    # the case is one where projecting against already-projected gradients differs
    assert not torch.allclose(result, reference(False), atol=1e-6)


def test_pcgrad_order_comes_from_the_generator() -> None:
    """Same generator state -> same result; the generator's state advances."""
    grads = torch.randn(4, 8)
    gen = _generator(3)
    first = pcgrad_combine(grads, gen)
    assert not torch.equal(gen.get_state(), _generator(3).get_state())
    assert torch.equal(first, pcgrad_combine(grads, _generator(3)))


def test_pcgrad_model_level_equals_pure_function() -> None:
    """Balancer('pcgrad') puts pcgrad_combine of the per-task shared gradients into the
    backbone's .grad and each head's own gradient into the head."""
    model = TinyModel()
    x = torch.randn(8, 5)
    shared = model.shared_parameters()
    rows, head_grads = [], {}
    for name, loss in _per_sample_losses(model, x).items():
        params = shared + list(model.heads[name].parameters())
        grads = torch.autograd.grad(loss.mean(), params, retain_graph=True)
        rows.append(torch.cat([g.reshape(-1) for g in grads[: len(shared)]]))
        head_grads[name] = grads[len(shared) :]
    balancer = create_balancer("pcgrad", TASKS)
    balancer.manual_seed(5)
    expected = pcgrad_combine(torch.stack(rows), _generator(5))
    balancer.backward(_per_sample_losses(model, x), model)
    got = torch.cat([p.grad.reshape(-1) for p in shared])
    assert torch.allclose(got, expected, atol=1e-6)  # float32, different summation order
    for name, grads in head_grads.items():
        for p, g in zip(model.heads[name].parameters(), grads, strict=True):
            assert torch.allclose(p.grad, g, atol=1e-7)  # identical computation


def _reference_pcgrad(grads: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Yu et al. 2020, Algorithm 1 written out: full-length projections against original g_j."""
    projected = grads.clone()
    for i in range(len(grads)):
        for j in torch.randperm(len(grads), generator=generator).tolist():
            dot = projected[i] @ grads[j]
            if j != i and dot < 0:
                projected[i] -= dot / (grads[j] @ grads[j]) * grads[j]
    return projected


def _conflicting_grads(num_tasks: int, seed: int, dtype: torch.dtype) -> torch.Tensor:
    """Random gradients where every odd task points roughly against task 0."""
    gen = _generator(seed)
    grads = torch.randn(num_tasks, 40, generator=gen, dtype=torch.float64)
    grads[1::2] = -grads[0] + 0.5 * grads[1::2]
    return grads.to(dtype)


@pytest.mark.parametrize("num_tasks", [2, 3, 5])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pcgrad_gram_form_equals_algorithm_1(num_tasks: int, seed: int) -> None:
    """The Gram-form projection equals the full-length reference for the same task orders."""
    grads = _conflicting_grads(num_tasks, seed, torch.float64)
    expected = _reference_pcgrad(grads, _generator(seed))
    assert not torch.allclose(expected, grads)  # some projection happened
    assert torch.allclose(pcgrad_project(grads, _generator(seed)), expected, atol=1e-12)
    combined = pcgrad_combine(grads, _generator(seed))
    assert torch.allclose(combined, expected.sum(0), atol=1e-12)
    grads32 = grads.float()
    projected32 = pcgrad_project(grads32, _generator(seed))
    assert projected32.dtype == torch.float32
    assert torch.allclose(projected32.double(), expected, rtol=1e-5, atol=1e-5)
    assert pcgrad_combine(grads32, _generator(seed)).dtype == torch.float32


@pytest.mark.parametrize("zero_rows", [[0], [1], [0, 2]])
def test_pcgrad_zero_gradient_rows(zero_rows: list[int]) -> None:
    """A zero g_j is never projected against (no division by ‖g_j‖² = 0) and stays zero."""
    grads = _conflicting_grads(4, 3, torch.float64)
    grads[zero_rows] = 0.0
    projected = pcgrad_project(grads, _generator(4))
    assert torch.isfinite(projected).all()
    assert torch.equal(projected[zero_rows], grads[zero_rows])
    assert torch.allclose(projected, _reference_pcgrad(grads, _generator(4)), atol=1e-12)
    assert torch.equal(pcgrad_project(torch.zeros(3, 5), _generator()), torch.zeros(3, 5))


def test_pcgrad_backward_projects_shared_and_sums_others() -> None:
    """pcgrad_backward: Algorithm 1's summed projections on the shared parameters (accumulated
    onto an existing .grad), plain per-task gradients on the heads."""
    model = TinyModel()
    x = torch.randn(8, 5)
    shared = model.shared_parameters()
    heads = list(model.heads.parameters())
    terms = {name: loss.mean() for name, loss in _per_sample_losses(model, x).items()}
    rows = []
    for term in terms.values():
        grads = torch.autograd.grad(term, shared, retain_graph=True)
        rows.append(torch.cat([g.reshape(-1) for g in grads]))
    expected = _reference_pcgrad(torch.stack(rows), _generator(9)).sum(0)
    expected_heads = torch.autograd.grad(sum(terms.values()), heads, retain_graph=True)
    for p in shared:
        p.grad = torch.ones_like(p)
    pcgrad_backward(terms, shared, heads, _generator(9))
    got = torch.cat([p.grad.reshape(-1) for p in shared])
    assert torch.allclose(got, expected + 1.0, atol=1e-6)  # float32, different rounding
    for p, g in zip(heads, expected_heads, strict=True):
        assert torch.allclose(p.grad, g, atol=1e-7)


@pytest.mark.parametrize("num_tasks", [2, 3, 5])
def test_pcgrad_combine_equals_torchjd(num_tasks: int) -> None:
    """Same as torchjd's PCGrad aggregator, whose orders come from the global generator."""
    aggregation = pytest.importorskip("torchjd.aggregation")
    grads = _conflicting_grads(num_tasks, 5, torch.float32) * 1000.0
    torch.manual_seed(11)
    expected = aggregation.PCGrad()(grads)
    got = pcgrad_combine(grads, _generator(11))
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-2)  # float32 rounding at ~1e3


# --- weightings ------------------------------------------------------------------------------
def test_fixed_weights_sum_weighted_losses() -> None:
    """FixedWeights gives Σ λ_t L_t (paper A, Eq. 1)."""
    weighting = FixedWeights({"a": 2.0, "b": 0.5})
    total = weighting({"a": torch.tensor(3.0), "b": torch.tensor(4.0)})
    assert float(total) == pytest.approx(2.0 * 3.0 + 0.5 * 4.0)


def test_weighting_rejects_mismatched_task_losses() -> None:
    """Losses for other tasks than the weighting's are an error, not silently dropped."""
    with pytest.raises(ValueError, match="task losses"):
        FixedWeights({"a": 1.0})({"a": torch.tensor(1.0), "b": torch.tensor(1.0)})


def test_uncertainty_weighting_value() -> None:
    """L = Σ L_t / (2σ_t²) + log σ_t with s_t = log σ_t² (paper B, Eq. 2)."""
    weighting = UncertaintyWeighting(["a", "b"])
    with torch.no_grad():
        weighting.log_vars.copy_(torch.tensor([0.3, -0.5]))
    losses = {"a": torch.tensor(2.0), "b": torch.tensor(0.7)}
    expected = sum(
        float(losses[n]) / (2 * math.exp(s)) + math.log(math.exp(s / 2))
        for n, s in (("a", 0.3), ("b", -0.5))
    )
    assert weighting(losses).item() == pytest.approx(expected, rel=1e-6)  # float32


def test_uncertainty_gradient_matches_analytic() -> None:
    """∂L/∂s_t = ½ − ½·exp(−s_t)·L_t."""
    weighting = UncertaintyWeighting(["a", "b"])
    s = torch.tensor([0.3, -0.5])
    with torch.no_grad():
        weighting.log_vars.copy_(s)
    task_losses = torch.tensor([2.0, 0.7])
    weighting({"a": task_losses[0], "b": task_losses[1]}).backward()
    analytic = 0.5 - 0.5 * torch.exp(-s) * task_losses
    assert torch.allclose(weighting.log_vars.grad, analytic, atol=1e-7)  # float32 rounding
    weights = weighting.weights()
    assert float(weights["a"]) == pytest.approx(0.5 * math.exp(-0.3), rel=1e-6)


# --- hard-sample mining ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("batch", "keep", "expected"),
    [(10, 0.7, 7), (16, 0.7, 12), (32, 0.7, 23), (3, 0.1, 1), (5, 1.0, 5), (8, 0.5, 4)],
)
def test_kept_count_is_ceil_of_fraction(batch: int, keep: float, expected: int) -> None:
    """ceil(keep·B), at least 1, without floating-point noise (0.7·10 keeps 7)."""
    assert kept_count(batch, keep) == expected


def test_hard_mining_keeps_exactly_the_hardest_fraction() -> None:
    """Hand case: B = 10, keep 0.7, difficulty a + 2b; the 3 easiest samples are dropped."""
    a = torch.tensor([5.0, 0.0, 1.0, 9.0, 2.0, 0.5, 3.0, 7.0, 0.1, 4.0])
    b = torch.tensor([0.0, 0.2, 0.0, 1.0, 0.0, 0.0, 0.5, 0.0, 0.0, 1.0])
    # difficulty: 5, 0.4, 1, 11, 2, 0.5, 4, 7, 0.1, 6 -> drop samples 1, 5, 8
    kept = [0, 2, 3, 4, 6, 7, 9]
    out = hard_sample_mining({"a": a, "b": b}, {"a": 1.0, "b": 2.0}, 0.7)
    assert float(out["a"]) == pytest.approx(float(a[kept].mean()))
    assert float(out["b"]) == pytest.approx(float(b[kept].mean()))
    assert float(out["a"]) == pytest.approx((5 + 1 + 9 + 2 + 3 + 7 + 4) / 7)


def test_hard_mining_gradient_flows_only_through_kept_samples() -> None:
    """Dropped samples get zero gradient, kept ones 1/n_keep."""
    losses = torch.tensor([3.0, 1.0, 2.0, 0.5], requires_grad=True)
    hard_sample_mining({"a": losses}, {"a": 1.0}, 0.5)["a"].backward()
    assert torch.equal(losses.grad, torch.tensor([0.5, 0.0, 0.5, 0.0]))


def test_balancer_composes_hard_mining_with_pcgrad() -> None:
    """Paper A's combination: logged losses are the mined means, shared grads are PCGrad's."""
    model = TinyModel()
    x = torch.randn(10, 5)
    balancer = create_balancer("pcgrad", TASKS, hard_mining=0.7)
    per_sample = _per_sample_losses(model, x)
    mined = hard_sample_mining(per_sample, dict.fromkeys(TASKS, 1.0), 0.7)
    log = balancer.backward(per_sample, model)
    for name in TASKS:
        assert log[name]["loss"] == pytest.approx(mined[name].item(), rel=1e-6)
        assert log[name]["weight"] == 1.0
    assert log["all"]["loss"] == pytest.approx(sum(v.item() for v in mined.values()), rel=1e-6)
    assert all(p.grad is not None for p in model.parameters())


# --- Balancer and factory ----------------------------------------------------------------------
def test_sum_balancer_gradient_equals_plain_backward() -> None:
    """'equal' back-propagates Σ_t mean L_t, plus an extra loss when given."""
    model = TinyModel()
    x = torch.randn(6, 5)
    sum(loss.mean() for loss in _per_sample_losses(model, x).values()).backward()
    expected = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    create_balancer("equal", TASKS).backward(_per_sample_losses(model, x), model)
    for p, g in zip(model.parameters(), expected, strict=True):
        assert torch.allclose(p.grad, g, atol=1e-6)  # float32, different summation order


def test_balancer_state_dict_restores_generator_and_log_vars() -> None:
    """The checkpointable state holds the PCGrad generator and the log-variances."""
    balancer = Balancer(UncertaintyWeighting(TASKS), gradient="pcgrad")
    balancer.manual_seed(11)
    torch.randperm(5, generator=balancer.generator)
    with torch.no_grad():
        balancer.weighting.log_vars.add_(1.5)
    state = balancer.state_dict()
    other = Balancer(UncertaintyWeighting(TASKS), gradient="pcgrad")
    other.load_state_dict(state)
    assert torch.equal(other.generator.get_state(), balancer.generator.get_state())
    assert torch.equal(other.weighting.log_vars, balancer.weighting.log_vars)


def test_balancer_registry_holds_exactly_the_expected_names() -> None:
    assert BALANCERS.names() == ["equal", "fixed", "pcgrad", "uncertainty"]


def test_create_balancer_builds_the_named_combinations() -> None:
    equal = create_balancer("equal", TASKS)
    assert (equal.gradient, type(equal.weighting)) == ("sum", FixedWeights)
    uncertainty = create_balancer("uncertainty", TASKS, hard_mining=0.5)
    assert isinstance(uncertainty.weighting, UncertaintyWeighting)
    assert uncertainty.hard_mining == 0.5 and len(list(uncertainty.parameters())) == 1
    pcgrad = create_balancer("pcgrad", TASKS, weights={"a": 1.0, "b": 2.0, "c": 0.0})
    assert pcgrad.gradient == "pcgrad" and pcgrad.weighting.fixed["b"] == 2.0
    assert create_balancer("fixed", ["a"], weights={"a": 3.0}).describe() == {
        "name": "fixed",
        "weighting": "FixedWeights",
        "hard_mining": None,
        "gradient": "sum",
    }


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "gradnorm"}, "unknown balancer"),
        ({"task_names": []}, "at least one"),
        ({"task_names": "ab"}, "sequence"),
        ({"task_names": ["a", "a"]}, "distinct"),
        ({"task_names": ["a", ""]}, "non-empty"),
        ({"hard_mining": 0.0}, "hard_mining"),
        ({"hard_mining": 1.5}, "hard_mining"),
        ({"hard_mining": "0.7"}, "hard_mining"),
        ({"weights": {"a": 1.0, "b": 1.0, "c": 1.0}}, "takes no weights"),
        ({"name": "uncertainty", "weights": {"a": 1.0, "b": 1.0, "c": 1.0}}, "no weights"),
        ({"name": "fixed"}, "needs weights"),
        ({"name": "fixed", "weights": {"a": 1.0}}, "exactly the tasks"),
        ({"name": "pcgrad", "weights": {"a": 1.0, "b": -1.0, "c": 1.0}}, "weight of task 'b'"),
        ({"name": "fixed", "weights": {"a": 1.0, "b": math.inf, "c": 1.0}}, "finite"),
    ],
)
def test_create_balancer_validation_errors(kwargs: dict, message: str) -> None:
    args = {"name": "equal", "task_names": TASKS} | kwargs
    with pytest.raises(ConfigError, match=message):
        create_balancer(**args)


def test_balancer_rejects_unknown_gradient_mode() -> None:
    with pytest.raises(ConfigError, match="gradient mode"):
        Balancer(FixedWeights({"a": 1.0}), gradient="mgda")
