"""Channel-wise group sparsity of the shared backbone with proximal Adam (paper B).

R. Upadhyay et al., "Less is More -- Towards parsimonious multi-task models using structured
sparsity", §3, Eq. 1-6; the weighted prox after T. Deleu & Y. Bengio, "Structured sparsity
inducing adaptive optimizers for deep learning" (2021).

**Objective (Eq. 1-3, 6).** Σ_t w_t L_t + λ Σ_l Σ_c √|g_{l,c}| ‖W_l[:, c, :, :]‖₂ over the shared
backbone's conv layers; the task weights w_t are uncertainty weights (Eq. 2): by default in the
form of the authors' code (:class:`AuthorsUncertaintyWeighting`), or Kendall et al.'s
(:class:`mtlrepro.balancing.UncertaintyWeighting`).

**Groups.** One group per *input channel* c of a conv layer: the weights of all filters that
read c, W[:, c, :, :], |g| = C_out·k_h·k_w, group weight √|g| (:func:`channel_groups`).  For a
grouped conv (``groups = G > 1``, depthwise included; weight (C_out, C_in/G, k_h, k_w)) input
channel j = G_j·(C_in/G) + c is read only by the C_out/G filters of its block G_j, so its group
is W[G_j·C_out/G : (G_j + 1)·C_out/G, c], |g| = (C_out/G)·k_h·k_w; with G = 1 this is the
slice above.  Every layer thus has exactly C_in groups, in input-channel order.  Only
``nn.Conv2d`` layers are grouped (transposed convs, with their (C_in, C_out/G, k, k) layout, and
linear layers are not).

**Proximal step (Eq. 4-5).** After each Adam step with learning rate η (read from the
optimiser's parameter group at that step, so lr schedules are followed):

* ``"group"`` -- W_g <- max(0, 1 - η·λ·√|g| / ‖W_g‖₂)·W_g
  (:func:`~mtlrepro.methods.proximal.group_soft_threshold_`);
* ``"weighted_group"`` -- the same penalty's prox in Adam's diagonal metric
  (:func:`~mtlrepro.methods.proximal.weighted_group_prox_`, derivation there).  The metric is
  the authors' d = √v + ε with Adam's *uncorrected* second moment v (``metric="uncorrected"``),
  or d = √v̂ + ε with the bias-corrected v̂ = v / (1 - β₂ᵗ) (``metric="bias_corrected"``).  Early
  in training the uncorrected d is √(1 - β₂ᵗ) times smaller, so a group is zeroed
  1/√(1 - β₂ᵗ) times more easily (×31.6 at step 1, ×2.5 at step 180);
* ``"l1"`` -- unstructured soft-threshold w <- sign(w)·max(0, |w| - η·λ) of the penalty λ‖W‖₁
  (paper B's Table 3 comparison; :func:`~mtlrepro.methods.proximal.l1_prox_`).

**The authors' optimiser** (paper B is silent on all of it; :class:`AuthorsOptimiser`,
:data:`AUTHORS_OPTIMISER`): Adam with ε = 1e-6 on the backbone, decoupled weight decay 0.1 on
the backbone applied after each Adam step and before the prox (their AdamW's order), and L2
weight decay 0.01 inside Adam on every other model parameter (their heads' ``torch.optim.Adam``).

**Reported.** ``group_sparsity``: % of all groups of the backbone's conv layers that are
entirely zero; ``param_sparsity``: % of the backbone's conv weights that are zero
(:func:`sparsity_stats`, logged at every epoch end by :class:`GroupSparsityProx`).

**Not copied from the authors' code** (PAPERS.md): its sparsity metric counts all-zero *output*
filters although the groups are input channels -- we count the input-channel groups the
penalty acts on; its optimiser is rebuilt every epoch (Adam state reset) -- the training loop
keeps one optimiser; its uncertainty weights are never optimised -- ours are (the loop optimises
the balancer's parameters).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch
from torch import Tensor, nn

from mtlrepro.balancing import Balancer, UncertaintyWeighting
from mtlrepro.config import ConfigError, check_choice, check_range
from mtlrepro.methods.proximal import (
    group_norms,
    group_rows,
    group_soft_threshold_,
    l1_prox_,
    weighted_group_prox_layers_,
    write_group_rows,
)
from mtlrepro.train import Hooks, TrainerState

PROXES: tuple[str, ...] = ("group", "weighted_group", "l1")
"""The proximal operators :class:`GroupSparsityProx` offers."""
METRICS: tuple[str, ...] = ("uncorrected", "bias_corrected")
"""Adam's second moment in the weighted prox's metric: the authors' uncorrected v, or v̂."""
UNCERTAINTY_FORMS: tuple[str, ...] = ("authors", "kendall")
"""Uncertainty weightings (:func:`uncertainty_balancer`): the authors' code's
(:class:`AuthorsUncertaintyWeighting`) or Kendall's."""
LAMBDA_GRID: tuple[float, ...] = (1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2)
"""The authors' λ grid (NYU-v2 default 1e-6, CelebAMask-HQ 1e-5)."""


def _check_options(
    lam: Any, prox: Any, backbone: Any, newton_steps: Any, newton_tol: Any, metric: Any
) -> None:
    """Validate the hook's options (see :class:`GroupSparsityProx`)."""
    check_range("lam", lam, 0.0)
    check_choice("prox", prox, PROXES)
    check_choice("metric", metric, METRICS)
    if backbone is not None and (not isinstance(backbone, str) or not backbone):
        raise ConfigError(f"backbone must be a non-empty attribute name or None; got {backbone!r}")
    check_range("newton_steps", newton_steps, 1, integer=True)
    check_range("newton_tol", newton_tol, 0.0, low_inclusive=False)


# --------------------------------------------------------------------------------------------
# Groups
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GroupedWeight:
    """One conv layer's weight and its input-channel groups (see the module doc).

    Attributes:
        name: the layer's qualified name within the module given to :func:`channel_groups`.
        weight: the conv weight (C_out, C_in/G, k_h, k_w).
        conv_groups: the conv's ``groups`` G.
        num_groups: number of channel groups, C_in.
        group_size: |g| = (C_out/G)·k_h·k_w.
    """

    name: str
    weight: nn.Parameter = field(repr=False)
    conv_groups: int
    num_groups: int
    group_size: int

    @property
    def group_weight(self) -> float:
        """√|g|, the group's weight in the penalty (Eq. 3)."""
        return math.sqrt(self.group_size)


def channel_groups(model_or_modules: nn.Module | Iterable[nn.Module]) -> list[GroupedWeight]:
    """Every ``nn.Conv2d`` weight of the module(s) with its input-channel groups.

    Args:
        model_or_modules: the shared backbone, or several modules (their names are prefixed
            with the module's position, ``"0.conv"``, ...).

    Returns:
        One :class:`GroupedWeight` per conv layer, in ``named_modules`` order.
    """
    if isinstance(model_or_modules, nn.Module):
        named = list(model_or_modules.named_modules())
    else:
        named = [
            (f"{i}.{name}" if name else str(i), m)
            for i, module in enumerate(model_or_modules)
            for name, m in module.named_modules()
        ]
    out = []
    for name, module in named:
        if isinstance(module, nn.Conv2d):
            c_out, _, k_h, k_w = module.weight.shape
            out.append(
                GroupedWeight(
                    name or "(root)",
                    module.weight,
                    module.groups,
                    module.in_channels,
                    c_out // module.groups * k_h * k_w,
                )
            )
    return out


# --------------------------------------------------------------------------------------------
# Sparsity measures
# --------------------------------------------------------------------------------------------
@torch.no_grad()
def zero_group_mask(module: nn.Module) -> dict[str, Tensor]:
    """Which channel groups of each conv layer are entirely zero (for the heatmaps).

    Args:
        module: the shared backbone.

    Returns:
        Layer name -> bool tensor (C_in,) on the CPU, ``True`` = group zero.
    """
    return {
        g.name: (group_norms(g.weight, g.conv_groups) == 0).cpu() for g in channel_groups(module)
    }


@torch.no_grad()
def zero_groups_(module: nn.Module, masks: dict[str, Tensor]) -> nn.Module:
    """Set the channel groups marked in ``masks`` to zero, in place (inverse of
    :func:`zero_group_mask`: ``zero_group_mask(zero_groups_(m, masks))`` marks at least
    ``masks``).

    Args:
        module: the shared backbone.
        masks: layer name (as :func:`channel_groups` names it) -> bool tensor (C_in,),
            ``True`` = set that group to zero; every conv layer of ``module`` must be present.

    Returns:
        ``module``.
    """
    layers = channel_groups(module)
    names = [g.name for g in layers]
    if sorted(names) != sorted(masks):
        raise ConfigError(f"masks name layers {sorted(masks)}; the module has {sorted(names)}")
    for g in layers:
        mask = torch.as_tensor(masks[g.name], dtype=torch.bool, device=g.weight.device)
        if mask.shape != (g.num_groups,):
            raise ConfigError(
                f"mask of {g.name} has shape {tuple(mask.shape)}, not ({g.num_groups},)"
            )
        rows = group_rows(g.weight, g.conv_groups).clone()  # _rows may return a view
        rows[mask] = 0
        write_group_rows(g.weight, rows, g.conv_groups)
    return module


@torch.no_grad()
def sparsity_stats(module: nn.Module) -> pd.DataFrame:
    """Per conv layer: groups and parameters, and how many are zero, plus a ``total`` row.

    Args:
        module: the shared backbone.

    Returns:
        Columns ``name``, ``groups``, ``zero_groups``, ``params``, ``zero_params`` (counts) and
        ``group_sparsity``, ``param_sparsity`` (% zero; NaN for a module without conv layers).
    """
    rows = [
        {
            "name": g.name,
            "groups": g.num_groups,
            "zero_groups": int((group_norms(g.weight, g.conv_groups) == 0).sum()),
            "params": g.weight.numel(),
            "zero_params": int((g.weight == 0).sum()),
        }
        for g in channel_groups(module)
    ]
    columns = ["name", "groups", "zero_groups", "params", "zero_params"]
    frame = pd.DataFrame(rows, columns=columns)
    total = {c: int(frame[c].sum()) for c in columns[1:]}
    frame = pd.concat([frame, pd.DataFrame([{"name": "total", **total}])], ignore_index=True)
    frame["group_sparsity"] = 100.0 * frame["zero_groups"] / frame["groups"].replace(0, math.nan)
    frame["param_sparsity"] = 100.0 * frame["zero_params"] / frame["params"].replace(0, math.nan)
    return frame


# --------------------------------------------------------------------------------------------
# The hook
# --------------------------------------------------------------------------------------------
class GroupSparsityProx(Hooks):
    """Proximal step on the shared backbone's conv weights after every optimiser step.

    Uses the learning rate of each weight's parameter group at that step.  ``"weighted_group"``
    needs an Adam-type optimiser (state ``exp_avg_sq``, ``step``; group ``betas``, ``eps``); a
    weight without optimiser state (no gradient yet, so not stepped) is left alone.  At every
    epoch end logs (task ``"all"``, split ``"train"``) ``group_sparsity`` and
    ``param_sparsity`` in % (see :func:`sparsity_stats`).
    """

    def __init__(
        self,
        lam: float = 1e-6,
        prox: str = "group",
        *,
        backbone: str | None = "backbone",
        newton_steps: int = 30,
        newton_tol: float = 1e-9,
        metric: str = "uncorrected",
    ) -> None:
        """Args:
        lam: regularisation strength λ >= 0.
        prox: one of :data:`PROXES`.
        backbone: attribute of the model holding the shared backbone, or ``None`` for the
            whole model.
        newton_steps: maximum Newton iterations of the weighted prox.
        newton_tol: Newton tolerance of the weighted prox.
        metric: one of :data:`METRICS`, the weighted prox's d = √v + ε (the authors') or
            √v̂ + ε (see the module doc).
        """
        _check_options(lam, prox, backbone, newton_steps, newton_tol, metric)
        self.lam = lam
        self.prox = prox
        self.backbone = backbone
        self.newton_steps = newton_steps
        self.newton_tol = newton_tol
        self.metric = metric

    def shared_module(self, model: nn.Module) -> nn.Module:
        """The module whose conv weights are regularised.

        Args:
            model: the model being trained.
        """
        return _shared_module(model, self.backbone)

    @torch.no_grad()
    def after_step(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Apply the prox to every backbone conv weight with its group's current lr.

        Args:
            model: the model.
            optimizer: the optimiser that just stepped.
        """
        groups = {id(p): group for group in optimizer.param_groups for p in group["params"]}
        weighted: dict[float, list[tuple[Tensor, Tensor, int]]] = {}  # lr -> layers
        for g in channel_groups(self.shared_module(model)):
            group = groups.get(id(g.weight))
            if group is None:
                continue  # not optimised (frozen): nothing to regularise
            lr = float(group["lr"])
            if self.prox == "group":
                group_soft_threshold_(g.weight, lr * self.lam, g.conv_groups)
            elif self.prox == "l1":
                l1_prox_(g.weight, lr * self.lam)
            else:
                denom = _adam_denominator(optimizer, g.weight, group, self.metric)
                if denom is not None:
                    weighted.setdefault(lr, []).append((g.weight, denom, g.conv_groups))
        for lr, layers in weighted.items():
            if lr * self.lam > 0:
                weighted_group_prox_layers_(
                    layers, lr * self.lam, self.newton_steps, self.newton_tol
                )

    def end_of_epoch(self, model: nn.Module, epoch: int, trainer_state: TrainerState) -> None:
        """Log ``group_sparsity`` and ``param_sparsity`` (%) of the backbone.

        Args:
            model: the model.
            epoch: the epoch just completed.
            trainer_state: the loop's state (logging).
        """
        total = sparsity_stats(self.shared_module(model)).iloc[-1]
        trainer_state.log("group_sparsity", float(total["group_sparsity"]))
        trainer_state.log("param_sparsity", float(total["param_sparsity"]))


def _shared_module(model: nn.Module, backbone: str | None) -> nn.Module:
    """The model's attribute ``backbone`` (the whole model for ``None``); a missing one is a
    :class:`~mtlrepro.config.ConfigError`."""
    if backbone is None:
        return model
    module = getattr(model, backbone, None)
    if not isinstance(module, nn.Module):
        raise ConfigError(f"{type(model).__name__} has no module attribute {backbone!r}")
    return module


def _adam_denominator(
    optimizer: torch.optim.Optimizer, weight: Tensor, group: dict[str, Any], metric: str
) -> Tensor | None:
    """Adam's d = √v + ε (``metric="uncorrected"``) or √(v / (1 - β₂^step)) + ε for ``weight``
    (``max_exp_avg_sq`` with amsgrad), or ``None`` if the weight has not been stepped yet."""
    if "betas" not in group or "eps" not in group:
        raise ConfigError(
            f"prox 'weighted_group' needs an Adam-type optimiser; got {type(optimizer).__name__}"
        )
    state = optimizer.state.get(weight, {})
    if "exp_avg_sq" not in state:
        return None
    v = state["max_exp_avg_sq"] if group.get("amsgrad") else state["exp_avg_sq"]
    if metric == "bias_corrected":
        v = v / (1.0 - group["betas"][1] ** float(state["step"]))
    return v.sqrt() + group["eps"]


# --------------------------------------------------------------------------------------------
# The authors' optimiser settings
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class OptimiserSettings:
    """How paper B's networks are optimised where the paper is silent (the module doc).

    Attributes:
        metric: the weighted prox's metric, one of :data:`METRICS`.
        backbone_eps: Adam's ε on the backbone (the authors' AdamW: 1e-6; torch's default 1e-8).
        backbone_weight_decay: decoupled weight decay of the backbone (authors: 0.1).
        head_weight_decay: L2 weight decay inside Adam of every other model parameter
            (authors: 0.01).
        uncertainty: the uncertainty weighting's form, one of :data:`UNCERTAINTY_FORMS`.
    """

    metric: str = "uncorrected"
    backbone_eps: float = 1e-6
    backbone_weight_decay: float = 0.1
    head_weight_decay: float = 0.01
    uncertainty: str = "authors"

    def __post_init__(self) -> None:
        """Check every field."""
        check_choice("OptimiserSettings.metric", self.metric, METRICS)
        check_range("OptimiserSettings.backbone_eps", self.backbone_eps, 0.0, low_inclusive=False)
        check_range("OptimiserSettings.backbone_weight_decay", self.backbone_weight_decay, 0.0)
        check_range("OptimiserSettings.head_weight_decay", self.head_weight_decay, 0.0)
        check_choice("OptimiserSettings.uncertainty", self.uncertainty, UNCERTAINTY_FORMS)


AUTHORS_OPTIMISER = OptimiserSettings()
"""The authors' code's settings (their NYU-v2 and CelebA configurations)."""
BEFORE_AUTHORS = OptimiserSettings("bias_corrected", 1e-8, 0.0, 0.0, "kendall")
"""This project's settings before it followed the authors' code (for the ablation)."""


class AuthorsOptimiser(Hooks):
    """The authors' Adam settings through the loop's seams (:class:`OptimiserSettings`).

    Parameter groups: ``"backbone"`` (ε = ``backbone_eps``, no L2) and ``"heads"`` (every other
    model parameter, L2 ``head_weight_decay`` inside Adam); after every optimiser step the
    backbone's parameters decay as w <- (1 - η·wd)·w with the group's current η (their AdamW
    applies it after the Adam update).  List it *before* :class:`GroupSparsityProx` so the prox
    acts on the decayed weights, as in their optimiser.
    """

    def __init__(
        self, settings: OptimiserSettings = AUTHORS_OPTIMISER, *, backbone: str = "backbone"
    ) -> None:
        """Args:
        settings: the optimiser settings.
        backbone: attribute of the model holding the shared backbone.
        """
        if not isinstance(settings, OptimiserSettings):
            raise ConfigError(f"settings must be OptimiserSettings; got {settings!r}")
        self.settings = settings
        self.backbone = backbone

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        """The backbone's and the heads' groups (see the class doc).

        Args:
            model: the model being trained.
        """
        shared = [p for p in _shared_module(model, self.backbone).parameters() if p.requires_grad]
        ids = {id(p) for p in shared}
        heads = [p for p in model.parameters() if p.requires_grad and id(p) not in ids]
        return [
            {
                "name": "backbone",
                "params": shared,
                "eps": self.settings.backbone_eps,
                "weight_decay": 0.0,
            },
            {"name": "heads", "params": heads, "weight_decay": self.settings.head_weight_decay},
        ]

    @torch.no_grad()
    def after_step(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Decoupled weight decay of the backbone with its group's current lr.

        Args:
            model: the model.
            optimizer: the optimiser that just stepped.
        """
        decay = self.settings.backbone_weight_decay
        if decay == 0:
            return
        for group in optimizer.param_groups:
            if group.get("name") == "backbone":
                for param in group["params"]:
                    param.mul_(1.0 - float(group["lr"]) * decay)


class AuthorsUncertaintyWeighting(UncertaintyWeighting):
    """Uncertainty weighting as the authors' code writes it: Σ_t e^(−s_t)·L_t + s_t, s_t
    starting at 1.

    That is twice Kendall et al.'s ½·e^(−s)·L + ½·s (:class:`UncertaintyWeighting`, paper B
    Eq. 2 with s = log σ²): the same minimiser over s; the task weights start at e^(−1) ≈ 0.37
    instead of ½ and the whole loss is doubled (which Adam's step, scale-free up to ε, barely
    feels).
    """

    def __init__(self, task_names: list[str] | tuple[str, ...]) -> None:
        """Args:
        task_names: the tasks, one log-variance each.
        """
        super().__init__(task_names)
        with torch.no_grad():
            self.log_vars.fill_(1.0)

    def terms(self, task_losses: dict[str, Tensor]) -> dict[str, Tensor]:
        """``e^(−s_t)·L_t + s_t`` per task.

        Args:
            task_losses: task name -> scalar loss; exactly this weighting's tasks.
        """
        self._require_tasks(task_losses)
        return {
            name: torch.exp(-s) * task_losses[name] + s
            for name, s in zip(self.task_names, self.log_vars, strict=True)
        }

    def weights(self) -> dict[str, Tensor]:
        """Task name -> ``e^(−s_t)`` (detached), the current weight of its loss."""
        return dict(zip(self.task_names, torch.exp(-self.log_vars.detach()), strict=True))


def uncertainty_balancer(task_names: list[str] | tuple[str, ...], form: str) -> Balancer:
    """Paper B's uncertainty weighting (Eq. 2) in one of :data:`UNCERTAINTY_FORMS`, summed.

    Args:
        task_names: the tasks.
        form: ``"authors"`` (:class:`AuthorsUncertaintyWeighting`) or ``"kendall"``.
    """
    check_choice("uncertainty form", form, UNCERTAINTY_FORMS)
    weighting = (AuthorsUncertaintyWeighting if form == "authors" else UncertaintyWeighting)(
        list(task_names)
    )
    return Balancer(weighting, None, "sum", f"uncertainty ({form})")
