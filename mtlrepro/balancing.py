"""Loss balancing: task weightings, hard-sample mining and PCGrad gradient surgery.

A :class:`Balancer` turns the per-sample task losses of one batch into parameter gradients in
three composable stages:

1. **hard-sample mining** (optional; paper A, §2.2) -- keep the hardest fraction of the batch
   by the per-sample multi-task loss ``Σ_t λ_t L_t(i)`` (:func:`hard_sample_mining`);
2. **weighting** -- a :class:`Weighting` module: :class:`FixedWeights` (``Σ_t λ_t L_t``,
   paper A Eq. 1) or :class:`UncertaintyWeighting` (Kendall et al. 2018; paper B Eq. 2);
3. **gradient** -- ``"sum"``: back-propagate the weighted sum; ``"pcgrad"``: project the
   per-task gradients of the shared parameters against each other (paper A Eq. 16; Yu et al.
   2020, "Gradient Surgery for Multi-Task Learning") and apply their sum
   (:func:`pcgrad_combine`, :func:`pcgrad_backward`; Gram form, :func:`pcgrad_coefficients`).

:func:`create_balancer` builds the named combinations (``BALANCERS.names()``); any other
combination is ``Balancer(weighting, hard_mining=..., gradient=...)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from mtlrepro.config import ConfigError, check_choice, check_range
from mtlrepro.registry import Registry

GRADIENT_MODES: tuple[str, ...] = ("sum", "pcgrad")
"""How a :class:`Balancer` turns the weighted task losses into gradients."""


class SharedModel(Protocol):
    """What PCGrad needs from a model: its parameters and which of them all tasks share."""

    def parameters(self) -> Any:
        """All parameters of the model."""

    def shared_parameters(self) -> list[nn.Parameter]:
        """The parameters shared by all tasks (the backbone)."""


def _check_task_names(task_names: Sequence[str]) -> tuple[str, ...]:
    """Validate a non-empty sequence of distinct, non-empty task names."""
    if isinstance(task_names, str) or not isinstance(task_names, Sequence | Mapping):
        raise ConfigError(f"task_names must be a sequence of task names; got {task_names!r}")
    names = tuple(task_names)
    if not names:
        raise ConfigError("task_names must hold at least one task name")
    for name in names:
        if not isinstance(name, str) or not name:
            raise ConfigError(f"task names must be non-empty strings; got {name!r}")
    if len(set(names)) != len(names):
        raise ConfigError(f"task_names must be distinct; got {list(names)}")
    return names


# --------------------------------------------------------------------------------------------
# Weightings
# --------------------------------------------------------------------------------------------
class Weighting(nn.Module):
    """Combines per-task losses into one scalar, ``Σ_t term_t``.

    Subclasses define :meth:`terms` (each task's contribution to the total, so that PCGrad can
    differentiate them one by one) and :meth:`weights` (the effective weight ``λ_t`` of each
    task loss, used by hard-sample mining and for logging).
    """

    def __init__(self, task_names: Sequence[str]) -> None:
        """Args:
        task_names: the tasks, in the order their terms are summed.
        """
        super().__init__()
        self.task_names: tuple[str, ...] = _check_task_names(task_names)

    def terms(self, task_losses: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Each task's contribution to the total loss.

        Args:
            task_losses: task name -> scalar loss; exactly this weighting's tasks.
        """
        raise NotImplementedError

    def weights(self) -> dict[str, Tensor]:
        """Task name -> effective weight ``λ_t`` of its loss (detached scalar tensor)."""
        raise NotImplementedError

    def forward(self, task_losses: Mapping[str, Tensor]) -> Tensor:
        """The total loss ``Σ_t term_t``.

        Args:
            task_losses: task name -> scalar loss; exactly this weighting's tasks.
        """
        return torch.stack(list(self.terms(task_losses).values())).sum()

    def _require_tasks(self, task_losses: Mapping[str, Tensor]) -> None:
        """Raise ``ValueError`` unless ``task_losses`` holds exactly this weighting's tasks."""
        if task_losses.keys() != set(self.task_names):
            raise ValueError(
                f"task losses for {sorted(task_losses)} given to a weighting of tasks "
                f"{sorted(self.task_names)}"
            )


class FixedWeights(Weighting):
    """Constant weights: ``L = Σ_t λ_t L_t`` (paper A, Eq. 1); all ones = equal weighting."""

    def __init__(self, weights: Mapping[str, float]) -> None:
        """Args:
        weights: task name -> weight ``λ_t`` (finite, ``>= 0``); the order is the tasks' order.
        """
        if not isinstance(weights, Mapping):
            raise ConfigError(f"weights must be a mapping task -> weight; got {weights!r}")
        super().__init__(list(weights))
        for name, value in weights.items():
            check_range(f"weight of task {name!r}", value, 0.0)
        self.fixed: dict[str, float] = {name: float(v) for name, v in weights.items()}
        self.register_buffer("values", torch.tensor(list(self.fixed.values())), persistent=False)

    def terms(self, task_losses: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """``λ_t · L_t`` per task (``L_t`` itself when ``λ_t = 1``: no extra autograd node).

        Args:
            task_losses: task name -> scalar loss; exactly this weighting's tasks.
        """
        self._require_tasks(task_losses)
        return {
            name: task_losses[name]
            if self.fixed[name] == 1.0
            else self.fixed[name] * task_losses[name]
            for name in self.task_names
        }

    def weights(self) -> dict[str, Tensor]:
        """Task name -> ``λ_t`` as a scalar tensor."""
        return dict(zip(self.task_names, self.values, strict=True))


class UncertaintyWeighting(Weighting):
    """Homoscedastic-uncertainty weighting (Kendall et al. 2018; paper B, Eq. 2).

    ``L = Σ_t L_t / (2 σ_t²) + log σ_t``, parameterised by the learnable log-variance
    ``s_t = log σ_t²`` (initialised to 0, i.e. ``σ_t = 1``) for numerical stability:
    ``L = Σ_t ½·exp(−s_t)·L_t + ½·s_t``.  So ``∂L/∂s_t = ½ − ½·exp(−s_t)·L_t``: ``s_t`` grows
    while the task loss exceeds its current variance.  The trainer optimises ``log_vars``
    together with the model (see :func:`mtlrepro.train.fit`).
    """

    def __init__(self, task_names: Sequence[str]) -> None:
        """Args:
        task_names: the tasks, one log-variance each.
        """
        super().__init__(task_names)
        self.log_vars = nn.Parameter(torch.zeros(len(self.task_names)))

    def terms(self, task_losses: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """``½·exp(−s_t)·L_t + ½·s_t`` per task.

        Args:
            task_losses: task name -> scalar loss; exactly this weighting's tasks.
        """
        self._require_tasks(task_losses)
        return {
            name: 0.5 * torch.exp(-s) * task_losses[name] + 0.5 * s
            for name, s in zip(self.task_names, self.log_vars, strict=True)
        }

    def weights(self) -> dict[str, Tensor]:
        """Task name -> ``½·exp(−s_t)`` (detached), the current weight of its loss."""
        w = 0.5 * torch.exp(-self.log_vars.detach())
        return dict(zip(self.task_names, w, strict=True))


# --------------------------------------------------------------------------------------------
# Hard-sample mining (paper A, §2.2)
# --------------------------------------------------------------------------------------------
def kept_count(batch_size: int, keep: float) -> int:
    """Number of samples hard-sample mining keeps: ``ceil(keep · batch_size)``, at least 1.

    The product is rounded to 9 decimals first so that floating-point noise does not add a
    sample (``0.7 · 10 = 7.000000000000001`` keeps 7, not 8).

    Args:
        batch_size: samples in the batch (``>= 1``).
        keep: fraction kept, in ``(0, 1]``.
    """
    return max(1, math.ceil(round(keep * batch_size, 9)))


def hard_sample_mining(
    per_sample_losses: Mapping[str, Tensor], weights: Mapping[str, Tensor | float], keep: float
) -> dict[str, Tensor]:
    """Per-task mean losses over the hardest ``keep`` fraction of the batch (paper A, §2.2).

    A sample's difficulty is its multi-task loss ``Σ_t λ_t L_t(i)`` (computed without
    gradient); the :func:`kept_count` samples with the largest difficulty are kept and each
    task's loss is averaged over them (gradients flow through the kept samples only).

    Args:
        per_sample_losses: task name -> per-sample loss, shape ``(B,)``.
        weights: task name -> weight ``λ_t`` (tensor scalar or float).
        keep: fraction of the batch kept, in ``(0, 1]`` (paper A: 0.7).
    """
    losses = list(per_sample_losses.values())
    difficulty = sum(weights[name] * loss.detach() for name, loss in per_sample_losses.items())
    n_keep = kept_count(losses[0].shape[0], keep)
    kept = torch.topk(difficulty, n_keep, sorted=False).indices
    return {name: loss[kept].mean() for name, loss in per_sample_losses.items()}


# --------------------------------------------------------------------------------------------
# PCGrad (paper A, Eq. 16; Yu et al. 2020)
# --------------------------------------------------------------------------------------------
def pcgrad_coefficients(grads: Tensor, generator: torch.Generator) -> Tensor:
    """PCGrad's projected gradients as combinations of the originals, ``g_i' = Σ_k C_ik g_k``.

    Yu et al. 2020, Algorithm 1 in Gram form: every projection is against an *original*
    ``g_j``, so ``g_i'`` stays in the span of the ``g_k`` and only its coefficient row ``c_i``
    changes.  Starting from ``c_i = e_i``, for each other task ``j`` in a random order (one
    ``torch.randperm(T, generator=generator)`` per task ``i``, in task order): when
    ``g_i' · g_j = c_i · G[:, j] < 0``, ``c_i ← c_i − (c_i · G[:, j] / G[j, j]) e_j``, which
    is ``g_i' ← g_i' − (g_i' · g_j / ‖g_j‖²) g_j`` exactly.  A zero ``g_j`` (``G[j, j] = 0``)
    is never projected against.  ``G = g gᵀ`` is the only pass over the full gradients; the
    ``T × T`` arithmetic runs in float64.

    Args:
        grads: per-task gradients of the shared parameters, shape ``(T, P)``.
        generator: source of the random task orders (its state advances).

    Returns:
        The coefficients ``C``, float64 on the CPU, shape ``(T, T)``.
    """
    gram = (grads @ grads.T).tolist()
    num_tasks = len(gram)
    coefficients = []
    for i in range(num_tasks):
        row = [0.0] * num_tasks
        row[i] = 1.0
        for j in torch.randperm(num_tasks, generator=generator).tolist():
            if j == i or gram[j][j] == 0.0:
                continue
            dot = sum(c * g for c, g in zip(row, gram[j], strict=True))  # g_i' · g_j
            if dot < 0:
                row[j] -= dot / gram[j][j]
        coefficients.append(row)
    return torch.tensor(coefficients, dtype=torch.float64)


def pcgrad_project(grads: Tensor, generator: torch.Generator) -> Tensor:
    """Each task's gradient after PCGrad's projections (paper A, Eq. 16).

    For each task ``i``, the other tasks ``j`` are visited in a random order (one
    ``torch.randperm(T, generator=generator)`` per task ``i``, in task order) and, whenever
    ``g_i · g_j < 0``, ``g_i ← g_i − (g_i · g_j / ‖g_j‖²) g_j`` -- always against the
    *original* ``g_j``, as in Yu et al.'s algorithm (Algorithm 1).  Computed in Gram form
    (:func:`pcgrad_coefficients`), which is exact: ``C g``.

    Args:
        grads: per-task gradients of the shared parameters, shape ``(T, P)``.
        generator: source of the random task orders (its state advances).

    Returns:
        The projected gradients, shape ``(T, P)``, dtype of ``grads``.
    """
    return pcgrad_coefficients(grads, generator).to(grads) @ grads


def pcgrad_combine(grads: Tensor, generator: torch.Generator) -> Tensor:
    """The PCGrad update of the shared parameters: the sum of :func:`pcgrad_project`'s rows.

    Computed as ``(Σ_i c_i) g`` from :func:`pcgrad_coefficients` (one matrix-vector product).

    Args:
        grads: per-task gradients of the shared parameters, shape ``(T, P)``.
        generator: source of the random task orders (its state advances).

    Returns:
        The combined gradient, shape ``(P,)``, dtype of ``grads``.
    """
    return pcgrad_coefficients(grads, generator).sum(dim=0).to(grads) @ grads


def _accumulate_grad(param: Tensor, grad: Tensor) -> None:
    """Add ``grad`` to ``param.grad`` (creating it), as ``Tensor.backward`` would."""
    if param.grad is None:
        param.grad = grad.detach().clone()
    else:
        param.grad += grad


def pcgrad_backward(
    task_terms: Mapping[str, Tensor],
    shared_params: Sequence[Tensor],
    other_params: Sequence[Tensor],
    generator: torch.Generator,
) -> None:
    """Accumulate PCGrad gradients into ``.grad``: projected on shared, ordinary elsewhere.

    One backward pass per task gives its gradient on the shared parameters (flattened into
    one row of a ``(T, P)`` matrix, zeros where a parameter is unused) and on the other
    parameters; the shared parameters receive :func:`pcgrad_combine` of the rows, the other
    parameters (task heads, loss-weighting parameters) the plain sum of their gradients.

    Args:
        task_terms: task name -> that task's scalar term of the total loss.
        shared_params: parameters shared by all tasks (e.g. ``model.shared_parameters()``).
        other_params: every other parameter that should receive a gradient.
        generator: source of PCGrad's random task orders.
    """
    shared = [p for p in shared_params if p.requires_grad]
    others = [p for p in other_params if p.requires_grad]
    rows = []
    terms = list(task_terms.values())
    for k, term in enumerate(terms):
        grads = torch.autograd.grad(
            term, shared + others, retain_graph=k < len(terms) - 1, allow_unused=True
        )
        rows.append(
            torch.cat(
                [
                    (torch.zeros_like(p) if g is None else g).reshape(-1)
                    for p, g in zip(shared, grads[: len(shared)], strict=True)
                ]
            )
        )
        for p, g in zip(others, grads[len(shared) :], strict=True):
            if g is not None:
                _accumulate_grad(p, g)
    combined = pcgrad_combine(torch.stack(rows), generator)
    offset = 0
    for p in shared:
        _accumulate_grad(p, combined[offset : offset + p.numel()].view_as(p))
        offset += p.numel()


# --------------------------------------------------------------------------------------------
# Balancer
# --------------------------------------------------------------------------------------------
class Balancer(nn.Module):
    """Hard-sample mining (optional) → weighting → backward (summed or PCGrad).

    Its parameters (e.g. uncertainty log-variances) must be optimised with the model; its
    state (parameters and PCGrad's random generator) is part of :meth:`state_dict`.

    Attributes:
        weighting: the task weighting.
        hard_mining: fraction of each batch kept by hard-sample mining, or ``None`` (all).
        gradient: ``"sum"`` or ``"pcgrad"``.
        name: the name it was created under (self-description), or ``"custom"``.
        generator: PCGrad's random generator (CPU), seeded by :meth:`manual_seed`.
    """

    def __init__(
        self,
        weighting: Weighting,
        hard_mining: float | None = None,
        gradient: str = "sum",
        name: str = "custom",
    ) -> None:
        """Args:
        weighting: how task losses are weighted.
        hard_mining: fraction in ``(0, 1]`` of each batch kept by hard-sample mining, or
            ``None`` for no mining.
        gradient: ``"sum"`` (back-propagate the weighted sum) or ``"pcgrad"``.
        name: a name for self-description.
        """
        super().__init__()
        if hard_mining is not None:
            check_range("hard_mining", hard_mining, 0.0, 1.0, low_inclusive=False)
        self.weighting = weighting
        self.hard_mining = hard_mining
        self.gradient = check_choice("gradient mode", gradient, GRADIENT_MODES)
        self.name = name
        self.generator = torch.Generator()
        self.manual_seed(0)

    @property
    def task_names(self) -> tuple[str, ...]:
        """The balanced tasks, in order."""
        return self.weighting.task_names

    def manual_seed(self, seed: int) -> None:
        """Reseed PCGrad's random task order (``fit`` does this with its config's seed).

        Args:
            seed: the seed.
        """
        self.generator.manual_seed(seed)

    def describe(self) -> dict[str, Any]:
        """Plain description for logs and checkpoints: name, weighting, mining, gradient."""
        return {
            "name": self.name,
            "weighting": type(self.weighting).__name__,
            "hard_mining": self.hard_mining,
            "gradient": self.gradient,
        }

    def get_extra_state(self) -> dict[str, Tensor]:
        """The generator state, saved by :meth:`state_dict`."""
        return {"generator": self.generator.get_state()}

    def set_extra_state(self, state: dict[str, Tensor]) -> None:
        """Restore the generator state (called by :meth:`load_state_dict`).

        Args:
            state: what :meth:`get_extra_state` returned.
        """
        self.generator.set_state(state["generator"])

    def task_losses(self, per_sample_losses: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Per-task scalar losses: hard-mined means, or plain batch means without mining.

        Args:
            per_sample_losses: task name -> per-sample loss, shape ``(B,)``.
        """
        if self.hard_mining is None:
            return {name: loss.mean() for name, loss in per_sample_losses.items()}
        return hard_sample_mining(per_sample_losses, self.weighting.weights(), self.hard_mining)

    def backward(
        self,
        per_sample_losses: Mapping[str, Tensor],
        model: SharedModel,
        extra_loss: Tensor | None = None,
    ) -> dict[str, dict[str, float]]:
        """Mine, weight and back-propagate one batch's losses (gradients accumulate).

        Args:
            per_sample_losses: task name -> per-sample loss, shape ``(B,)``.
            model: the model; PCGrad projects the gradients of ``model.shared_parameters()``.
            extra_loss: a method's additional scalar loss, back-propagated as is (never
                projected), or ``None``.

        Returns:
            ``{task: {"loss": L_t, "weight": λ_t}, "all": {"loss": total}}`` as floats; ``L_t``
            is the (mined) unweighted task loss, ``total`` the weighted sum without
            ``extra_loss``.
        """
        losses = self.task_losses(per_sample_losses)
        terms = self.weighting.terms(losses)
        total = torch.stack(list(terms.values())).sum()
        if self.gradient == "sum":
            (total if extra_loss is None else total + extra_loss).backward()
        else:
            if extra_loss is not None and extra_loss.requires_grad:
                extra_loss.backward(retain_graph=True)
            shared = model.shared_parameters()
            shared_ids = {id(p) for p in shared}
            others = [p for p in model.parameters() if id(p) not in shared_ids]
            pcgrad_backward(terms, shared, others + list(self.parameters()), self.generator)
        weights = self.weighting.weights()
        values = torch.stack(
            [losses[n].detach() for n in self.task_names]
            + [weights[n] for n in self.task_names]
            + [total.detach()]
        ).tolist()
        num = len(self.task_names)
        logged = {
            name: {"loss": values[k], "weight": values[num + k]}
            for k, name in enumerate(self.task_names)
        }
        logged["all"] = {"loss": values[-1]}
        return logged


BALANCERS: Registry[Callable[..., Balancer]] = Registry("balancer")
"""Balancer builders ``(task_names, hard_mining, weights) -> Balancer``."""


def _fixed(task_names: tuple[str, ...], weights: Mapping[str, float] | None) -> FixedWeights:
    """Fixed weights for ``task_names``: ``weights`` (keys checked) or all ones."""
    if weights is None:
        return FixedWeights(dict.fromkeys(task_names, 1.0))
    if not isinstance(weights, Mapping) or set(weights) != set(task_names):
        raise ConfigError(
            f"weights must map exactly the tasks {list(task_names)} to numbers; got {weights!r}"
        )
    return FixedWeights({name: weights[name] for name in task_names})


def _no_weights(name: str, weights: Mapping[str, float] | None) -> None:
    """Reject ``weights`` for a balancer that defines its own."""
    if weights is not None:
        raise ConfigError(f"balancer {name!r} takes no weights; use 'fixed' or 'pcgrad'")


@BALANCERS.register("equal")
def _equal(
    task_names: tuple[str, ...], hard_mining: float | None, weights: Mapping[str, float] | None
) -> Balancer:
    """Equal weights (all 1), summed gradient."""
    _no_weights("equal", weights)
    return Balancer(_fixed(task_names, None), hard_mining, "sum", "equal")


@BALANCERS.register("fixed")
def _fixed_balancer(
    task_names: tuple[str, ...], hard_mining: float | None, weights: Mapping[str, float] | None
) -> Balancer:
    """Given fixed weights (required), summed gradient."""
    if weights is None:
        raise ConfigError("balancer 'fixed' needs weights (task -> weight)")
    return Balancer(_fixed(task_names, weights), hard_mining, "sum", "fixed")


@BALANCERS.register("uncertainty")
def _uncertainty(
    task_names: tuple[str, ...], hard_mining: float | None, weights: Mapping[str, float] | None
) -> Balancer:
    """Uncertainty weighting (learnable log-variances), summed gradient."""
    _no_weights("uncertainty", weights)
    return Balancer(UncertaintyWeighting(task_names), hard_mining, "sum", "uncertainty")


@BALANCERS.register("pcgrad")
def _pcgrad(
    task_names: tuple[str, ...], hard_mining: float | None, weights: Mapping[str, float] | None
) -> Balancer:
    """Fixed weights (default all 1) with PCGrad on the shared parameters."""
    return Balancer(_fixed(task_names, weights), hard_mining, "pcgrad", "pcgrad")


def create_balancer(
    name: str,
    task_names: Sequence[str],
    hard_mining: float | None = None,
    weights: Mapping[str, float] | None = None,
) -> Balancer:
    """Build a named balancer (``BALANCERS.names()``).

    Names: ``"equal"`` (all weights 1, summed), ``"fixed"`` (given ``weights``, summed),
    ``"uncertainty"`` (:class:`UncertaintyWeighting`, summed), ``"pcgrad"`` (weights 1 or the
    given ``weights``, PCGrad).  Every one composes with hard-sample mining, e.g. paper A's
    ``create_balancer("pcgrad", tasks, hard_mining=0.7)``.

    Args:
        name: balancer name.
        task_names: the tasks to balance (distinct names).
        hard_mining: fraction in ``(0, 1]`` of each batch kept by hard-sample mining (paper A:
            0.7), or ``None`` for none.
        weights: task name -> fixed weight, for ``"fixed"`` (required) and ``"pcgrad"``
            (optional).
    """
    builder = BALANCERS.get(name)
    names = _check_task_names(task_names)
    if hard_mining is not None:
        check_range("hard_mining", hard_mining, 0.0, 1.0, low_inclusive=False)
    return builder(names, hard_mining, weights)
