"""Tests of mtlrepro.methods.proximal: paper B's proximal operators on input-channel groups."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from mtlrepro.methods.proximal import (
    group_soft_threshold_,
    l1_prox_,
    weighted_group_prox_,
    weighted_group_prox_layers_,
)

EXACT64 = 1e-12
"""Tolerance of float64 results that are exact up to a few roundings of O(1) values."""


def test_group_prox_zeroes_groups_under_the_threshold_and_shrinks_the_rest_exactly(
    hand_weight: Tensor,
) -> None:
    w = hand_weight
    original = w.clone()
    group_soft_threshold_(w, threshold=0.5)  # cut = 0.5·√4 = 1: norms 2 and 4 stay, 1 goes
    assert bool((w[:, 1] == 0).all())  # norm 1 <= 1: zeroed (boundary included)
    torch.testing.assert_close(w[:, 0], original[:, 0] * (1 - 1 / 2), atol=0.0, rtol=0.0)
    torch.testing.assert_close(w[:, 2], original[:, 2] * (1 - 1 / 4), atol=0.0, rtol=0.0)


def test_group_prox_keeps_a_zero_group_zero_and_is_the_identity_for_threshold_zero(
    hand_weight: Tensor,
) -> None:
    w = hand_weight
    w[:, 1] = 0.0
    original = w.clone()
    group_soft_threshold_(w, threshold=0.0)
    assert torch.equal(w, original)  # bitwise; no NaN from the zero group's 0/0
    group_soft_threshold_(w, threshold=0.1)
    assert bool((w[:, 1] == 0).all()) and not bool(w.isnan().any())


@pytest.mark.parametrize("scale", [1.0, 0.01, 7.0])
def test_weighted_prox_with_uniform_metric_equals_the_plain_prox(scale: float) -> None:
    # d ≡ c: zero iff c‖z‖ <= lr·λ·√|g|, else w = (1 - lr·(λ/c)·√|g|/‖z‖)·z, i.e. the plain
    # prox with λ/c (module doc); so the weighted prox with λ·c equals the plain one with λ.
    torch.manual_seed(1)
    lr, lam = 0.1, 0.8
    z = torch.randn(6, 5, 3, 3, dtype=torch.float64)
    z[:, 3] *= 0.05  # a group far under the threshold
    z[:, 4] *= 0.3  # one near it (norm ≈ 0.3·√54 ≈ 2.2 vs cut 0.1·0.8·√54 ≈ 0.59)
    plain = group_soft_threshold_(z.clone(), lr * lam)
    weighted = weighted_group_prox_(z.clone(), torch.full_like(z, scale), lr, lam * scale)
    torch.testing.assert_close(weighted, plain, atol=EXACT64, rtol=EXACT64)
    assert torch.equal(weighted == 0, plain == 0)  # the same groups are zero
    assert bool((plain[:, 3] == 0).all()) and bool((plain[:, 4] != 0).all())


def test_weighted_prox_satisfies_its_optimality_conditions() -> None:
    # minimiser of ½Σd_i(w_i - z_i)² + t‖w‖: d⊙(w - z) + t·w/‖w‖ = 0 where w ≠ 0,
    # ‖z⊙d‖ <= t where w = 0
    torch.manual_seed(2)
    lr, lam = 0.1, 1.0
    z = torch.randn(4, 6, 3, 3, dtype=torch.float64)
    d = torch.rand(4, 6, 3, 3, dtype=torch.float64) * 2.0 + 0.05  # very uneven metric
    z[:, 5] *= 0.1
    w = weighted_group_prox_(z.clone(), d, lr, lam)
    t = lr * lam * math.sqrt(36)
    zero = [c for c in range(6) if bool((w[:, c] == 0).all())]
    assert 5 in zero and len(zero) < 6  # both branches are exercised
    for c in range(6):
        zc, dc, wc = z[:, c], d[:, c], w[:, c]
        if c in zero:
            assert float((zc * dc).norm()) <= t
        else:
            residual = dc * (wc - zc) + t * wc / wc.norm()
            assert float(residual.abs().max()) < EXACT64
            assert float((zc * dc).norm()) > t


def test_weighted_prox_raises_when_newton_has_too_few_steps() -> None:
    torch.manual_seed(3)
    z = torch.randn(4, 6, 3, 3, dtype=torch.float64)
    d = torch.rand(4, 6, 3, 3, dtype=torch.float64) + 1e-3  # a_i spread over 3 decades
    with pytest.raises(RuntimeError, match="Newton"):
        weighted_group_prox_(z, d, 0.1, 1.0, newton_steps=1, tol=1e-14)


def test_l1_prox_soft_thresholds_each_weight() -> None:
    w = torch.tensor([-2.0, -0.5, 0.0, 0.3, 1.25])
    l1_prox_(w, 0.5)
    assert w.tolist() == [-1.5, 0.0, 0.0, 0.0, 0.75]  # exact in binary floating point
    v = torch.randn(10, generator=torch.Generator().manual_seed(0))
    assert torch.equal(l1_prox_(v.clone(), 0.0), v)


def test_batched_weighted_prox_of_several_layers_equals_one_layer_at_a_time() -> None:
    generator = torch.Generator().manual_seed(3)
    shapes = [(4, 3, 3, 3), (8, 4, 1, 1), (2, 8, 3, 3)]  # groups of 36, 8 and 18 weights
    weights = [torch.randn(s, generator=generator) * 0.3 for s in shapes]
    denoms = [torch.rand(s, generator=generator) + 0.05 for s in shapes]
    separate = [
        weighted_group_prox_(w.clone(), d, lr=0.1, lam=1.5)
        for w, d in zip(weights, denoms, strict=True)
    ]
    together = [w.clone() for w in weights]
    weighted_group_prox_layers_(list(zip(together, denoms, [1, 1, 1], strict=True)), 0.15, 30, 1e-9)
    zero = [(s == 0).all(dim=(0, 2, 3)) for s in separate]
    assert any(z.any() for z in zero) and not all(z.all() for z in zero)  # zeroed and kept
    for a, b in zip(separate, together, strict=True):
        # padding adds exact zeros to every sum: only float64 summation order differs
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
