"""Proximal operators of paper B's penalties on conv weights grouped by input channel.

R. Upadhyay et al., "Less is More", Eq. 4-5; the weighted prox after T. Deleu & Y. Bengio,
"Structured sparsity inducing adaptive optimizers for deep learning" (2021).  A conv weight
(C_out, C_in/G, k_h, k_w) is seen as C_in rows, one per input channel: row j holds the weights
of every filter that reads channel j (:func:`group_rows`; grouped convs as described in
:mod:`mtlrepro.methods.group_sparsity`).  All operators work on every row of a layer at once
and change the weight in place:

* :func:`group_soft_threshold_` -- W_g <- max(0, 1 - τ / ‖W_g‖₂)·W_g (Eq. 5, τ = η·λ·√|g|);
* :func:`weighted_group_prox_` -- the same penalty's prox in Adam's diagonal metric (the
  authors' code), :func:`weighted_group_prox_layers_` for several layers in one solve;
* :func:`l1_prox_` -- unstructured soft-threshold (paper B's Table 3 comparison).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from mtlrepro.config import ConfigError, check_range


def _blocks(weight: Tensor, conv_groups: int) -> Tensor:
    """View (G, C_out/G, C_in/G, k_h, k_w) of a conv weight: group (b, c) is [b, :, c]."""
    return weight.unflatten(0, (conv_groups, weight.shape[0] // conv_groups))


def group_rows(weight: Tensor, conv_groups: int) -> Tensor:
    """The groups as rows: a (C_in, |g|) matrix, row j = input channel j's group (a view of the
    weight when the layout allows, else a copy: write changes back with
    :func:`write_group_rows`)."""
    blocks = _blocks(weight, conv_groups).transpose(1, 2)
    return blocks.reshape(weight.shape[1] * conv_groups, -1)


def write_group_rows(weight: Tensor, rows: Tensor, conv_groups: int) -> None:
    """Write a (C_in, |g|) matrix from :func:`group_rows` back into the weight, in place."""
    blocks = _blocks(weight, conv_groups)
    shape = (conv_groups, weight.shape[1], blocks.shape[1], *weight.shape[2:])
    blocks.copy_(rows.reshape(shape).transpose(1, 2))


def group_norms(weight: Tensor, conv_groups: int) -> Tensor:
    """‖W_g‖₂ of every group, shape (C_in,), input-channel order."""
    return torch.linalg.vector_norm(_blocks(weight, conv_groups), dim=(1, 3, 4)).flatten()


# --------------------------------------------------------------------------------------------
# Proximal operators
# --------------------------------------------------------------------------------------------
def _check_weight(weight: Tensor, conv_groups: int) -> None:
    """A 4-D weight whose output channels split into ``conv_groups`` blocks."""
    if weight.dim() != 4:
        raise ConfigError(f"expected a 4-D conv weight; got shape {tuple(weight.shape)}")
    check_range("conv_groups", conv_groups, 1, integer=True)
    if weight.shape[0] % conv_groups:
        raise ConfigError(f"{weight.shape[0]} output channels do not split into {conv_groups}")


@torch.no_grad()
def group_soft_threshold_(weight: Tensor, threshold: float, conv_groups: int = 1) -> Tensor:
    """The group-lasso prox (Eq. 4-5), in place, vectorised over the layer's groups.

    W_g <- max(0, 1 - τ·√|g| / ‖W_g‖₂)·W_g with τ = η·λ: groups with ‖W_g‖₂ <= τ·√|g| become
    exactly zero (an all-zero group stays zero), the others shrink towards zero.

    Args:
        weight: conv weight (C_out, C_in/G, k_h, k_w); changed in place.
        threshold: τ = η·λ >= 0 (the √|g| factor is applied here).
        conv_groups: the conv's ``groups`` G (see the module doc).

    Returns:
        ``weight``.
    """
    _check_weight(weight, conv_groups)
    check_range("threshold", threshold, 0.0)
    blocks = _blocks(weight, conv_groups)
    cut = threshold * math.sqrt(blocks.shape[1] * weight.shape[2] * weight.shape[3])
    norms = torch.linalg.vector_norm(blocks, dim=(1, 3, 4), keepdim=True)
    factor = torch.where(norms > cut, 1.0 - cut / norms, torch.zeros_like(norms))
    blocks.mul_(factor)
    return weight


@torch.no_grad()
def weighted_group_prox_(
    weight: Tensor,
    denom: Tensor,
    lr: float,
    lam: float,
    conv_groups: int = 1,
    newton_steps: int = 30,
    tol: float = 1e-9,
) -> Tensor:
    """The group-lasso prox in Adam's metric (Deleu & Bengio), in place, vectorised.

    Adam's step is a gradient step in the metric D/η, D = diag(d), d = √v̂ + ε (its update is
    η·m̂/d), so the matching proximal step for the penalty λ√|g|‖w‖ of one group, at the
    post-step weights z, is

        w* = argmin_w ½ Σ_i d_i (w_i - z_i)² + t‖w‖₂,   t = η·λ·√|g|.

    *Zero groups.* 0 is the minimiser iff 0 ∈ -D z + t·B (B the unit ball, the subdifferential of
    ‖·‖ at 0), i.e. iff ‖z ⊙ d‖₂ <= t.  *Otherwise* w* ≠ 0 and the gradient vanishes:
    d_i (w_i - z_i) + t w_i/θ = 0 with θ = ‖w*‖₂, so

        w_i = z_i·d_i·θ / (d_i·θ + t) = z_i·θ / (θ + t/d_i),

    and θ must equal the norm of this w: θ² = Σ z_i² θ² / (θ + t/d_i)², i.e.

        φ(θ) := Σ z_i² / (θ + a_i)² = 1,   a_i = t/d_i > 0.

    φ falls strictly from φ(0) = ‖z ⊙ d‖²/t² > 1 to 0, so there is one root θ* > 0.  We solve
    h(θ) := φ(θ)^(-1/2) = 1 by Newton's method: h is a power mean M_(-2) of the affine functions
    θ + a_i, hence increasing and concave, so Newton started left of the root (at
    θ₀ = max(0, ‖z‖ - max_i a_i), where h <= 1 because φ(θ) >= ‖z‖²/(θ + max a)²) climbs
    monotonically to it (and is exact in one step when all a_i are equal).  Newton step:
    θ <- θ + (1 - h)/h', h' = φ^(-3/2)·Σ z_i²/(θ + a_i)³.

    *Uniform metric.* With d_i = c for all i, θ* = ‖z‖ - t/c and w = (1 - (t/c)/‖z‖)·z, zero iff
    ‖z‖ <= t/c: :func:`group_soft_threshold_` with threshold η·λ/c.  (d = 1: exactly the plain
    prox; d = c with λ scaled to c·λ: the plain prox with λ.)

    Computed in float64, all groups at once (a fixed maximum number of Newton iterations,
    stopping early when every group has converged); :class:`GroupSparsityProx` solves all
    layers of a step together (:func:`weighted_group_prox_layers_`).  With λ = 0 the prox is the
    identity and ``weight`` is left untouched.

    Args:
        weight: conv weight (C_out, C_in/G, k_h, k_w) after the Adam step; changed in place.
        denom: d = √v̂ + ε, the same shape (all entries > 0).
        lr: the step's learning rate η >= 0.
        lam: λ >= 0.
        conv_groups: the conv's ``groups`` G.
        newton_steps: maximum Newton iterations (``>= 1``).
        tol: required |h(θ) - 1| at the end (``> 0``).

    Returns:
        ``weight``.

    Raises:
        RuntimeError: Newton's method did not reach ``tol`` within ``newton_steps``.
    """
    _check_weight(weight, conv_groups)
    if denom.shape != weight.shape:
        raise ConfigError(f"denom shape {tuple(denom.shape)} != weight {tuple(weight.shape)}")
    check_range("lr", lr, 0.0)
    check_range("lam", lam, 0.0)
    if lr * lam == 0.0:
        return weight
    if not bool((denom > 0).all()):
        raise ConfigError("denom must be positive (Adam's √v̂ + ε)")
    weighted_group_prox_layers_([(weight, denom, conv_groups)], lr * lam, newton_steps, tol)
    return weight


def weighted_group_prox_layers_(
    layers: Sequence[tuple[Tensor, Tensor, int]], lr_lam: float, newton_steps: int, tol: float
) -> None:
    """:func:`weighted_group_prox_` of several layers in one batched Newton solve, in place.

    Every layer's groups become rows of one float64 matrix, padded to the longest group: a
    padded entry has z = 0 (it adds nothing to φ or its slope) and the row's largest d (so it
    does not change max_i a_i, the start θ₀).  One solve instead of one per layer keeps the
    number of small tensor operations per optimiser step independent of the depth.

    Args:
        layers: ``(weight, denom, conv_groups)`` per layer; weights changed in place.
        lr_lam: η·λ > 0 (each group's threshold is η·λ·√|g|).
        newton_steps: maximum Newton iterations (``>= 1``).
        tol: required |h(θ) - 1| at the end (``> 0``).
    """
    check_range("newton_steps", newton_steps, 1, integer=True)
    check_range("tol", tol, 0.0, low_inclusive=False)
    z_rows = [group_rows(w, g).double() for w, _, g in layers]
    d_rows = [group_rows(d, g).double() for _, d, g in layers]
    width = max(r.shape[1] for r in z_rows)
    z = torch.cat([F.pad(r, (0, width - r.shape[1])) for r in z_rows])
    d = torch.cat([
        torch.cat([r, r.amax(dim=1, keepdim=True).expand(-1, width - r.shape[1])], dim=1)
        for r in d_rows
    ])
    t = torch.cat([
        torch.full((len(r),), lr_lam * math.sqrt(r.shape[1]), dtype=z.dtype, device=z.device)
        for r in z_rows
    ])
    active = (z * d).norm(dim=1) > t
    zs, a = z[active], t[active, None] / d[active]
    sq = zs.square()
    theta = (zs.norm(dim=1) - a.max(dim=1).values).clamp_min(0.0)
    for step in range(newton_steps + 1):
        inv = (theta[:, None] + a).reciprocal_()  # 1/(θ + a_i)
        q = inv.square().mul_(sq)  # z_i²/(θ + a_i)²
        phi = q.sum(dim=1)
        h = phi.rsqrt()
        error = float((h - 1.0).abs().max()) if len(h) else 0.0
        if error <= tol:
            break
        if step == newton_steps:
            raise RuntimeError(
                f"weighted group prox: Newton did not converge in {newton_steps} steps "
                f"(max |h - 1| = {error:.3g})"
            )
        slope = phi.pow(-1.5) * q.mul_(inv).sum(dim=1)
        theta = theta + (1.0 - h) / slope
    out = torch.zeros_like(z)
    out[active] = zs * theta[:, None] / (theta[:, None] + a)
    start = 0
    for (weight, _, conv_groups), rows in zip(layers, z_rows, strict=True):
        part = out[start : start + len(rows), : rows.shape[1]]
        write_group_rows(weight, part.to(weight.dtype), conv_groups)
        start += len(rows)


@torch.no_grad()
def l1_prox_(weight: Tensor, threshold: float) -> Tensor:
    """Unstructured soft-threshold w <- sign(w)·max(0, |w| - τ), in place (prox of τ‖·‖₁).

    Computed as w - clamp(w, -τ, τ), so τ = 0 leaves every value bitwise unchanged.

    Args:
        weight: any weight tensor; changed in place.
        threshold: τ = η·λ >= 0.

    Returns:
        ``weight``.
    """
    check_range("threshold", threshold, 0.0)
    return weight.sub_(weight.clamp(-threshold, threshold))
