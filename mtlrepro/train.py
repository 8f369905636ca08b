"""The one training loop: :func:`train_step`, :func:`fit` and :func:`evaluate`.

Methods plug in through :class:`Hooks` (``extra_loss``, ``after_backward``, ``after_step``,
``end_of_epoch``, each a no-op by default) and a :class:`~mtlrepro.balancing.Balancer` (loss
weighting, hard-sample mining, PCGrad); the loop never asks which method it runs.  Further
seams, unused unless a hook overrides them: optimiser parameter groups with their own lr and
weight decay (``param_groups``, ``excluded_parameters``), inner updates before the shared step
(``before_step``; paper C, Alg. 1), per-task gradient masks (``task_gradient_masks``; paper E,
§3), one task per step with per-task optimiser state (``step_task``,
``per_task_optimizer_state``; paper E, App. A.2); and named phases with rewinds
(:func:`mtlrepro.phases.fit_phases`; paper D, §3.2).

What :func:`fit` adds around the step: device choice (CUDA when available), seeding (python,
numpy, torch and the balancer's generator from ``TrainConfig.seed``), a per-epoch data order
derived from ``(seed, epoch)`` alone, a progress bar, periodic evaluation, an lr schedule, a
non-finite-loss guard, an atomic checkpoint at every epoch end with exact resume, and an
optional dvclive metric log.

History: a tidy DataFrame with columns :data:`HISTORY_COLUMNS` -- ``split="train"`` rows hold
per-epoch means of each task's (mined, unweighted) loss ``loss`` and weight ``weight``, plus
task ``"all"``: the weighted total ``loss`` (and ``extra_loss`` when a hook adds one);
``split="val"`` rows hold each task's metrics at every evaluation; hooks may add rows with
:meth:`TrainerState.log`.  ``epoch`` counts completed epochs (1-based), ``step`` optimiser steps.

dvclive log (``TrainConfig.log_dir``), written with ``Live(log_dir, save_dvc_exp=False,
dvcyaml=None)`` and only ``log_params`` / ``log_metric`` / ``make_summary`` (never
``next_step`` or ``end``), so it makes no git commit, no ``git add``, no DVC experiment and
does not touch any ``dvc.yaml``; no timestamps are logged:

* ``<log_dir>/params.yaml`` -- the training config (without paths and display settings), the
  balancer's description and the hook classes;
* ``<log_dir>/metrics.json`` -- the latest value of every metric, nested
  ``{split: {task: {metric: value}}}``, plus ``"step"`` = the last completed epoch;
* ``<log_dir>/plots/metrics/<split>/<task>/<metric>.tsv`` -- one row per logged epoch,
  columns ``step`` (= epoch) and ``<metric>``.

For ``dvc metrics show`` / ``dvc plots show`` declare ``<log_dir>/metrics.json`` under
``metrics:`` and ``<log_dir>/plots/metrics`` (``x: step``) under ``plots:`` in ``dvc.yaml``.
On resume the log is rebuilt from the checkpoint's history, so it is byte-identical to that of
an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import os
import random
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm.std import tqdm

from mtlrepro.balancing import Balancer
from mtlrepro.config import DEFAULT_PROFILE, ConfigError, check_choice, check_profile, check_range
from mtlrepro.tasks import Task
from mtlrepro.torch_files import load_torch_file

HISTORY_COLUMNS: tuple[str, ...] = ("epoch", "step", "split", "task", "metric", "value")
OPTIMIZERS: tuple[str, ...] = ("adam", "sgd")
LR_SCHEDULES: tuple[str, ...] = ("none", "plateau", "step")
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")
CHECKPOINT_FORMAT = "mtlrepro.train/1"
_RESUME_MUST_MATCH: tuple[str, ...] = (
    "batch_size",
    "lr",
    "weight_decay",
    "optimizer",
    "momentum",
    "lr_schedule",
    "lr_factor",
    "lr_patience",
    "lr_step_size",
    "seed",
)
"""Config fields that decide the trajectory; a checkpoint is resumed only if they agree."""
_NOT_LOGGED: tuple[str, ...] = ("checkpoint_path", "log_dir", "progress", "resume")
_POSTFIX_EVERY = 10
"""Steps between progress-bar postfix updates (formatting every step would cost time)."""

StepLog = dict[str, dict[str, float]]
"""Task (or ``"all"``) -> metric -> value, as returned by :func:`train_step`."""


class NonFiniteLossError(FloatingPointError):
    """A task loss became NaN or infinite; the message names the step and the task.

    Attributes:
        step: the 1-based optimiser step at which it happened.
        task: the task whose loss was not finite.
    """

    def __init__(self, step: int, task: str, value: float) -> None:
        """Args:
        step: the 1-based optimiser step.
        task: the task name.
        value: the offending batch-mean loss.
        """
        super().__init__(
            f"non-finite loss ({value}) for task {task!r} at step {step}; lower the learning "
            "rate, check the data of this task, or add gradient clipping"
        )
        self.step = step
        self.task = task


@dataclass(frozen=True)
class TrainConfig:
    """Training settings (validated on creation; bad values raise ``ConfigError``).

    Attributes:
        profile: the profile the run belongs to (``smoke``, ``cpu`` or ``paper``); it changes
            nothing here, but checkpoints and logged params record it.
        epochs: epochs to train (``>= 1``).
        batch_size: samples per step (``>= 1``); each epoch visits ``len(data) // batch_size``
            full batches in a fresh random order (one batch of all samples if fewer).
        lr: learning rate (``> 0``).
        weight_decay: L2 penalty of the optimiser on the model's parameters (``>= 0``; never on
            the balancer's, e.g. uncertainty log-variances).
        optimizer: ``"adam"`` or ``"sgd"``.
        momentum: SGD momentum in ``[0, 1)`` (unused by Adam).
        lr_schedule: ``"none"``; ``"plateau"`` (multiply by ``lr_factor`` after
            ``lr_patience`` epochs without improvement of the epoch's mean training loss
            ``Σ_t L_t``; the validation split is only evaluated every ``eval_every`` epochs);
            ``"step"`` (multiply by ``lr_factor`` every ``lr_step_size`` epochs).
        lr_factor: lr multiplier of the schedules, in ``(0, 1)``.
        lr_patience: epochs without improvement before ``"plateau"`` reduces (``>= 0``).
        lr_step_size: epochs between ``"step"`` reductions (``>= 1``).
        eval_every: evaluate the validation split every this many epochs (``>= 1``) and always
            after the last epoch.
        eval_batch_size: batch size of evaluation (``>= 1``).
        seed: seed of python, numpy, torch, the data order and the balancer (``>= 0``).
        threads: ``torch.set_num_threads`` value (``>= 1``; process-wide), or ``None`` to
            leave it.
        device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"`` or ``"cuda"``.
        progress: show a progress bar (stderr); ``False`` prints nothing.
        checkpoint_path: file written atomically at every epoch end, or ``None``.
        resume: continue from ``checkpoint_path`` if that file exists (else start afresh).
        log_dir: dvclive output directory (see the module doc), or ``None``.
        max_steps: stop after this many optimiser steps in total (``>= 1``), or ``None``;
            used to simulate an interruption (a partial epoch is neither logged nor saved).
    """

    profile: str = DEFAULT_PROFILE
    epochs: int = 10
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: str = "adam"
    momentum: float = 0.9
    lr_schedule: str = "none"
    lr_factor: float = 0.1
    lr_patience: int = 2
    lr_step_size: int = 10
    eval_every: int = 1
    eval_batch_size: int = 64
    seed: int = 0
    threads: int | None = None
    device: str = "auto"
    progress: bool = True
    checkpoint_path: str | None = None
    resume: bool = False
    log_dir: str | None = None
    max_steps: int | None = None

    def __post_init__(self) -> None:
        """Check every field; raises :class:`~mtlrepro.config.ConfigError`."""
        check_profile(self.profile)
        for name in ("epochs", "batch_size", "lr_step_size", "eval_every", "eval_batch_size"):
            check_range(f"TrainConfig.{name}", getattr(self, name), 1, integer=True)
        check_range("TrainConfig.lr", self.lr, 0.0, low_inclusive=False)
        check_range("TrainConfig.weight_decay", self.weight_decay, 0.0)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_range("TrainConfig.momentum", self.momentum, 0.0, 1.0, high_inclusive=False)
        check_choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        check_range(
            "TrainConfig.lr_factor",
            self.lr_factor,
            0.0,
            1.0,
            low_inclusive=False,
            high_inclusive=False,
        )
        check_range("TrainConfig.lr_patience", self.lr_patience, 0, integer=True)
        check_range("TrainConfig.seed", self.seed, 0, integer=True)
        for name in ("threads", "max_steps"):
            if getattr(self, name) is not None:
                check_range(f"TrainConfig.{name}", getattr(self, name), 1, integer=True)
        check_choice("device", self.device, DEVICES)
        for name in ("progress", "resume"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"TrainConfig.{name} must be True or False")
        for name in ("checkpoint_path", "log_dir"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise ConfigError(f"TrainConfig.{name} must be a non-empty path string or None")
        if self.resume and self.checkpoint_path is None:
            raise ConfigError("TrainConfig.resume needs a checkpoint_path to resume from")


class Hooks:
    """A method's hooks into the training loop; every one does nothing by default.

    Subclass and override what a method needs; :func:`fit` calls each hook of each object in
    its ``hooks`` list, in list order.

    Attributes:
        per_task_optimizer_state: if any hook sets it, :func:`fit` keeps one optimiser per task
            (same parameter groups) and steps the one of the task :meth:`step_task` selects, so
            that e.g. each task has its own momentum (paper E, App. A.2).
    """

    per_task_optimizer_state: bool = False

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        """Optimiser parameter groups with their own settings, added after the default groups.

        Each group is a dict with a unique ``"name"``, its ``"params"`` and any optimiser
        setting, e.g. ``{"name": "arch", "params": [...], "lr": 1e-2, "weight_decay": 0.0}``
        (paper D trains α, β, γ at lr 1e-2 beside network weights at 1e-4; paper C's
        task-specific diagonals get no weight decay).  Its parameters leave the default model
        group; a parameter claimed twice (here or in :meth:`excluded_parameters`, by any hook)
        is a ``ConfigError``.  The lr schedule scales every group's lr.

        Args:
            model: the model being trained.
        """
        return []

    def excluded_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        """Parameters the shared optimiser must not update: frozen ones (paper D's α, β, γ
        during warm-up), or ones the hook updates itself in :meth:`before_step` (paper C's
        M(j), Alg. 1).

        Args:
            model: the model being trained.
        """
        return []

    def before_step(self, model: nn.Module, batch: Mapping[str, Tensor], step: int) -> None:
        """Called at the start of each step, before the shared step's ``zero_grad`` and forward:
        the place for inner updates with the hook's own optimiser (paper C, Alg. 1: per task j,
        update only M(j) with L_j, then the shared step on Σ_i α_i L_i with every M(j) fixed).

        Args:
            model: the model.
            batch: the step's batch, on the model's device.
            step: the 1-based number of this step.
        """

    def epoch_batches(
        self, dataset: Dataset, batch_size: int, seed: int, epoch: int
    ) -> list[Tensor] | None:
        """The sample indices of each batch of an epoch, in place of :func:`epoch_batches`'
        shuffled batches, or ``None`` to keep those (paper E, App. A.2: each step draws a task
        and a batch of that task's samples).  The first hook that returns batches decides.

        The batches must be as many as :func:`epoch_batches` makes (``len(dataset) //
        batch_size``, at least one: the progress and the step numbers count on it) and depend
        on ``(seed, epoch)`` and the hook's checkpointed state only, so that a resumed run sees
        the batches of an uninterrupted one.  Called at the start of each epoch, after the
        previous epoch's :meth:`end_of_epoch`.

        Args:
            dataset: the training split.
            batch_size: ``TrainConfig.batch_size``.
            seed: ``TrainConfig.seed``.
            epoch: the 1-based epoch about to start.
        """
        return None

    def step_task(self, step: int) -> str | None:
        """The one task whose loss this step trains (the others' are computed and logged but
        not back-propagated), or ``None`` for all; paper E, App. A.2 samples one task per
        step.  Called once per step; at most one task may be selected per step.

        Args:
            step: the 1-based number of this step.
        """
        return None

    def task_gradient_masks(self, model: nn.Module) -> dict[str, dict[str, Tensor]] | None:
        """Per-task backward masks (paper E, §3): task -> parameter name -> a mask
        broadcastable to the parameter, or ``None`` for none.

        When any hook returns masks, each task's weighted loss ``λ_t L_t`` is differentiated on
        its own, its gradient multiplied by the task's masks (unmasked where it has none), and
        the sum written to ``.grad`` of the optimiser's parameters; the balancer must use
        ``gradient="sum"``.  Masks of the same task and parameter from several hooks multiply.

        Args:
            model: the model being trained.
        """
        return None

    def extra_loss(
        self, model: nn.Module, batch: Mapping[str, Tensor], preds: Mapping[str, Tensor]
    ) -> Tensor | None:
        """An additional scalar loss for this step (added to the balanced loss), or ``None``.

        Args:
            model: the model being trained.
            batch: the batch (``"image"`` and one target per task).
            preds: the model's outputs for the batch (task name -> raw output).
        """
        return None

    def after_backward(self, model: nn.Module) -> None:
        """Called after the gradients are computed, before the optimiser step.

        Args:
            model: the model, with ``.grad`` filled.
        """

    def after_step(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Called after each optimiser step (e.g. a proximal step).

        Args:
            model: the model.
            optimizer: the optimiser (its learning rates and state).
        """

    def end_of_epoch(self, model: nn.Module, epoch: int, trainer_state: TrainerState) -> None:
        """Called after each epoch's training and evaluation, before the checkpoint.

        Args:
            model: the model.
            epoch: the epoch just completed (1-based).
            trainer_state: the loop's state; log extra history rows with
                :meth:`TrainerState.log`; set ``rebuild_optimizer`` after changing the
                model's parameters.
        """

    def state_dict(self) -> dict[str, Any]:
        """The hook's state for checkpoints (must load with ``torch.load(weights_only=True)``)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned.

        Args:
            state: a previous :meth:`state_dict`.
        """


Scheduler = torch.optim.lr_scheduler.LRScheduler | torch.optim.lr_scheduler.ReduceLROnPlateau


@dataclass
class TrainerState:
    """The training loop's state, visible to :meth:`Hooks.end_of_epoch`.

    Attributes:
        config: the training config.
        optimizer: the optimiser.
        scheduler: the lr scheduler, or ``None``.
        epoch: completed epochs.
        step: optimiser steps taken.
        rows: history rows so far (dicts with :data:`HISTORY_COLUMNS`).
        rebuild_optimizer: set by a hook that changed the model's parameters; the loop then
            builds a fresh optimiser (keeping the current learning rates) and scheduler state.
        task_optimizers: task -> its own optimiser (:attr:`Hooks.per_task_optimizer_state`),
            stepped instead of ``optimizer``, which then only carries the scheduled lrs; ``{}``
            otherwise.
    """

    config: TrainConfig
    optimizer: torch.optim.Optimizer
    scheduler: Scheduler | None
    epoch: int = 0
    step: int = 0
    rows: list[dict[str, Any]] = field(default_factory=list)
    rebuild_optimizer: bool = False
    task_optimizers: dict[str, torch.optim.Optimizer] = field(default_factory=dict)

    def log(self, metric: str, value: float, task: str = "all", split: str = "train") -> None:
        """Append a history row at the current epoch and step.

        Args:
            metric: metric name.
            value: its value.
            task: task name, or ``"all"`` for a model-wide value.
            split: ``"train"``, ``"val"`` or a method's own label.
        """
        self.rows.append(
            {
                "epoch": self.epoch,
                "step": self.step,
                "split": split,
                "task": task,
                "metric": metric,
                "value": float(value),
            }
        )


@dataclass
class TrainResult:
    """What :func:`fit` returns.

    Attributes:
        model: the trained model (the same object that was passed in).
        history: tidy DataFrame with columns :data:`HISTORY_COLUMNS` (see the module doc).
        final: task -> metric -> value on the validation split after training (``{}`` without
            a validation split).
        epochs: completed epochs.
        steps: optimiser steps taken.
        interrupted: whether ``max_steps`` stopped training before ``config.epochs``.
    """

    model: nn.Module
    history: pd.DataFrame
    final: dict[str, dict[str, float]]
    epochs: int
    steps: int
    interrupted: bool


# --------------------------------------------------------------------------------------------
# The training step
# --------------------------------------------------------------------------------------------
def train_step(
    model: nn.Module,
    tasks: Mapping[str, Task],
    batch: Mapping[str, Tensor],
    balancer: Balancer,
    optimizer: torch.optim.Optimizer | Mapping[str, torch.optim.Optimizer],
    hooks: Sequence[Hooks] = (),
    step: int = 1,
) -> StepLog:
    """One optimisation step on one batch (the model must be in training mode).

    Args:
        model: multi-task model, ``model(images) -> {task: output}``.
        tasks: task name -> :class:`~mtlrepro.tasks.Task` (per-sample ``loss``).
        batch: ``"image"`` and one target per task, on the model's device.
        balancer: mining, weighting and backward (summed or PCGrad).
        optimizer: the optimiser of the model's and the balancer's parameters, or task -> its
            optimiser, of which the one of the task :meth:`Hooks.step_task` selects steps.
        hooks: method hooks, called in order.
        step: 1-based number of this step, for error messages and the step hooks.

    Returns:
        The balancer's log (``{task: {"loss", "weight"}, "all": {"loss"}}``), plus
        ``"all"/"extra_loss"`` when a hook adds a loss.

    Raises:
        NonFiniteLossError: a task loss is NaN or infinite.
    """
    # 0. the methods' inner updates (paper C, Alg. 1) and the step's task (paper E)
    for hook in hooks:
        hook.before_step(model, batch, step)
    task = _step_task(hooks, step, tasks)
    if isinstance(optimizer, Mapping):
        if task is None:
            raise ConfigError(
                f"per-task optimisers need a hook's step_task to select a task at step {step}"
            )
        optimizer = optimizer[task]
    optimizer.zero_grad(set_to_none=True)
    # 1. forward
    preds = model(batch["image"])
    # 2. per-sample task losses (B,), checked for NaN / Inf
    per_sample = {name: task.loss(preds[name], batch[name]) for name, task in tasks.items()}
    _check_finite(per_sample, step)
    # 3. the methods' extra loss
    extra: Tensor | None = None
    for hook in hooks:
        loss = hook.extra_loss(model, batch, preds)
        if loss is not None:
            extra = loss if extra is None else extra + loss
    # 4. balancer: hard mining -> weighting -> backward (or PCGrad); task by task when a hook
    #    selects the step's task or masks the task gradients (paper E)
    masks = _task_masks(hooks, model, tasks)
    if task is None and not masks:
        log = balancer.backward(per_sample, model, extra_loss=extra)
    else:
        trained = list(balancer.task_names) if task is None else [task]
        log = _per_task_backward(per_sample, balancer, optimizer, extra, trained, masks)
    # 5. the methods' gradient hooks
    for hook in hooks:
        hook.after_backward(model)
    # 6. optimiser step
    optimizer.step()
    # 7. the methods' post-step hooks (e.g. proximal operators)
    for hook in hooks:
        hook.after_step(model, optimizer)
    # 8. metrics of this step
    if extra is not None:
        log["all"]["extra_loss"] = float(extra.detach())
    return log


def _step_task(hooks: Sequence[Hooks], step: int, tasks: Mapping[str, Task]) -> str | None:
    """The task the hooks' :meth:`Hooks.step_task` selects for this step, or ``None``."""
    chosen = {task for task in (hook.step_task(step) for hook in hooks) if task is not None}
    if len(chosen) > 1 or not chosen <= set(tasks):
        raise ConfigError(
            f"step_task selected {sorted(chosen)} at step {step}; select one of {list(tasks)}"
        )
    return next(iter(chosen), None)


def _task_masks(
    hooks: Sequence[Hooks], model: nn.Module, tasks: Mapping[str, Task]
) -> dict[str, dict[int, Tensor]]:
    """The hooks' :meth:`Hooks.task_gradient_masks`: task -> parameter id -> mask (``{}`` for
    none); unknown tasks or parameter names are a ``ConfigError``."""
    returned = [masks for masks in (hook.task_gradient_masks(model) for hook in hooks) if masks]
    if not returned:
        return {}
    params = dict(model.named_parameters())
    merged: dict[str, dict[int, Tensor]] = {}
    for masks in returned:
        for task, by_name in masks.items():
            check_choice("task of a gradient mask", task, list(tasks))
            task_masks = merged.setdefault(task, {})
            for name, mask in by_name.items():
                if name not in params:
                    raise ConfigError(f"gradient mask for {name!r}, not a parameter of the model")
                key = id(params[name])
                task_masks[key] = mask if key not in task_masks else task_masks[key] * mask
    return merged


def _per_task_backward(
    per_sample: Mapping[str, Tensor],
    balancer: Balancer,
    optimizer: torch.optim.Optimizer,
    extra: Tensor | None,
    trained: Sequence[str],
    masks: Mapping[str, Mapping[int, Tensor]],
) -> StepLog:
    """Gradients ``Σ_{t ∈ trained} m_t ⊙ ∇(λ_t L_t)`` (paper E, §3) into ``.grad`` of the
    optimiser's parameters, plus the unmasked gradient of ``extra``; the balancer's mining and
    weighting are used as in :meth:`~mtlrepro.balancing.Balancer.backward`, and so is its log."""
    if balancer.gradient != "sum":
        raise ConfigError(
            "step_task and task_gradient_masks need a balancer with gradient='sum'; got "
            f"{balancer.gradient!r}"
        )
    losses = balancer.task_losses(per_sample)
    terms = balancer.weighting.terms(losses)
    params = [p for group in optimizer.param_groups for p in group["params"] if p.requires_grad]
    for task in trained:
        grads = torch.autograd.grad(terms[task], params, retain_graph=True, allow_unused=True)
        for param, grad in zip(params, grads, strict=True):
            if grad is not None:
                mask = masks.get(task, {}).get(id(param))
                grad = grad if mask is None else grad * mask
                param.grad = grad if param.grad is None else param.grad + grad
    if extra is not None and extra.requires_grad:
        extra.backward()
    weights = balancer.weighting.weights()
    log = {
        name: {"loss": float(losses[name].detach()), "weight": float(weights[name])}
        for name in balancer.task_names
    }
    log["all"] = {"loss": float(torch.stack(list(terms.values())).sum().detach())}
    return log


def _check_finite(per_sample: Mapping[str, Tensor], step: int) -> None:
    """Raise :class:`NonFiniteLossError` naming the first task whose loss is NaN / Inf."""
    means = torch.stack([loss.detach().mean() for loss in per_sample.values()])
    if bool(torch.isfinite(means).all()):
        return
    for name, value in zip(per_sample, means.tolist(), strict=True):
        if not np.isfinite(value):
            raise NonFiniteLossError(step, name, value)


# --------------------------------------------------------------------------------------------
# Data order and batches
# --------------------------------------------------------------------------------------------
def epoch_batches(num_samples: int, batch_size: int, seed: int, epoch: int) -> list[Tensor]:
    """The sample indices of each batch of an epoch, a function of ``(seed, epoch)`` only.

    A random permutation from a ``torch.Generator`` seeded with ``(seed, epoch)``, cut into
    full batches (the remainder is dropped; one batch of all samples if fewer than
    ``batch_size``), so a resumed run sees exactly the batches of an uninterrupted one.

    Args:
        num_samples: dataset size.
        batch_size: samples per batch.
        seed: the run's seed.
        epoch: 1-based epoch number.
    """
    generator = torch.Generator().manual_seed((seed * 1_000_003 + epoch) % 2**63)
    order = torch.randperm(num_samples, generator=generator)
    if num_samples <= batch_size:
        return [order]
    usable = num_samples // batch_size * batch_size
    return list(order[:usable].split(batch_size))


def iterate_batches(dataset: Dataset, batches: Sequence[Tensor]) -> Iterator[dict[str, Tensor]]:
    """Yield the batches with the given indices: ``dataset.batch(index)`` if the dataset has
    that fast path, else a ``DataLoader`` with the same batches.

    Args:
        dataset: a dataset of dicts (``"image"`` and targets).
        batches: sample indices of each batch.
    """
    fast = getattr(dataset, "batch", None)
    if callable(fast):
        for index in batches:
            yield fast(index)
    else:
        # its own generator: a DataLoader otherwise draws a seed from torch's global RNG
        loader_rng = torch.Generator().manual_seed(0)
        yield from DataLoader(
            dataset, batch_sampler=[b.tolist() for b in batches], generator=loader_rng
        )


def _to_device(batch: Mapping[str, Tensor], device: torch.device) -> dict[str, Tensor]:
    """The batch's tensors on ``device``."""
    return {key: value.to(device, non_blocking=True) for key, value in batch.items()}


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(
    model: nn.Module, tasks: Mapping[str, Task], dataset: Dataset, batch_size: int = 64
) -> dict[str, dict[str, float]]:
    """Metrics of every task over a whole dataset (eval mode, no gradient).

    Uses each task's meter, so split-level metrics (e.g. mIoU from the confusion matrix over
    all batches) are exact.  The model's training mode is restored afterwards.

    Args:
        model: multi-task model.
        tasks: task name -> :class:`~mtlrepro.tasks.Task`.
        dataset: the split to evaluate (all samples, in order).
        batch_size: samples per forward pass.

    Returns:
        Task name -> metric name -> value.
    """
    check_range("batch_size", batch_size, 1, integer=True)
    device = next(model.parameters()).device
    meters = {name: task.new_meter() for name, task in tasks.items()}
    was_training = model.training
    model.eval()
    try:
        chunks = list(torch.arange(len(dataset)).split(batch_size))
        for batch in iterate_batches(dataset, chunks):
            batch = _to_device(batch, device)
            preds = model(batch["image"])
            for name, meter in meters.items():
                meter.update(preds[name], batch[name])
    finally:
        model.train(was_training)
    return {name: meter.compute() for name, meter in meters.items()}


# --------------------------------------------------------------------------------------------
# Setup helpers: device, seeds, optimiser, scheduler
# --------------------------------------------------------------------------------------------
def resolve_device(device: str) -> torch.device:
    """The torch device for a ``TrainConfig.device`` value.

    Args:
        device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"`` or ``"cuda"``.
    """
    check_choice("device", device, DEVICES)
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' requested but CUDA is not available; use 'auto'")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


def seed_everything(seed: int) -> None:
    """Seed python's ``random``, numpy's global generator and torch (CPU and CUDA).

    Args:
        seed: the seed.
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _make_optimizer(
    model: nn.Module, balancer: Balancer, config: TrainConfig, hooks: Sequence[Hooks] = ()
) -> torch.optim.Optimizer:
    """The configured optimiser over the model's trainable parameters the hooks do not claim,
    the balancer's (without weight decay), then the hooks' :meth:`Hooks.param_groups`."""
    hook_groups, claimed = _hook_groups(model, hooks)
    groups: list[dict[str, Any]] = [
        {"params": [p for p in model.parameters() if p.requires_grad and id(p) not in claimed]}
    ]
    balancer_params = [p for p in balancer.parameters() if p.requires_grad]
    if balancer_params:
        groups.append({"params": balancer_params, "weight_decay": 0.0})
    groups += hook_groups
    if config.optimizer == "adam":
        return torch.optim.Adam(groups, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(
        groups, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )


def _hook_groups(model: nn.Module, hooks: Sequence[Hooks]) -> tuple[list[dict[str, Any]], set[int]]:
    """The hooks' parameter groups (copied) and the ids of every parameter the hooks claim in
    a group or as excluded; a parameter claimed twice is a ``ConfigError`` naming it."""
    groups: list[dict[str, Any]] = []
    claimed: set[int] = set()
    for hook in hooks:
        claims = [(f"{type(hook).__name__}.excluded_parameters", hook.excluded_parameters(model))]
        for group in hook.param_groups(model):
            if not {"name", "params"} <= group.keys():
                raise ConfigError(
                    f"{type(hook).__name__}.param_groups: a group needs a name and params"
                )
            if any(group["name"] == other["name"] for other in groups):
                raise ConfigError(f"two hook parameter groups are named {group['name']!r}")
            groups.append(dict(group, params=list(group["params"])))
            claims.append((f"group {group['name']!r}", groups[-1]["params"]))
        for owner, params in claims:
            for param in params:
                if id(param) in claimed:
                    name = next((n for n, p in model.named_parameters() if p is param), "?")
                    raise ConfigError(
                        f"parameter {name!r} is claimed twice by the hooks (again by {owner})"
                    )
                claimed.add(id(param))
    return groups, claimed


def _group_lrs(optimizer: torch.optim.Optimizer) -> dict[str | int, float]:
    """Each parameter group's lr, keyed by its name (hook groups) or else its position."""
    return {group.get("name", k): group["lr"] for k, group in enumerate(optimizer.param_groups)}


def _set_group_lrs(optimizer: torch.optim.Optimizer, lrs: Mapping[str | int, float]) -> None:
    """Set the lrs :func:`_group_lrs` returned (groups it does not hold keep theirs)."""
    for k, group in enumerate(optimizer.param_groups):
        group["lr"] = lrs.get(group.get("name", k), group["lr"])


def _make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig) -> Scheduler | None:
    """The configured lr scheduler, stepped once per epoch, or ``None``."""
    if config.lr_schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=config.lr_factor, patience=config.lr_patience
        )
    if config.lr_schedule == "step":
        return torch.optim.lr_scheduler.StepLR(
            optimizer, step_size=config.lr_step_size, gamma=config.lr_factor
        )
    return None


def _rebuild_optimizer(
    state: TrainerState, model: nn.Module, balancer: Balancer, hooks: Sequence[Hooks]
) -> None:
    """Fresh optimiser(s) for the model's current parameters, keeping each group's lr and the
    schedule state."""
    lrs = _group_lrs(state.optimizer)
    optimizer = _make_optimizer(model, balancer, state.config, hooks)
    _set_group_lrs(optimizer, lrs)
    scheduler = _make_scheduler(optimizer, state.config)
    if scheduler is not None and state.scheduler is not None:
        scheduler.load_state_dict(state.scheduler.state_dict())
    state.optimizer, state.scheduler, state.rebuild_optimizer = optimizer, scheduler, False
    state.task_optimizers = {
        task: _make_optimizer(model, balancer, state.config, hooks)
        for task in state.task_optimizers
    }


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------
def _rng_state() -> dict[str, Any]:
    """Python, numpy and torch RNG states, in a form ``torch.load(weights_only=True)`` reads."""
    _, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def _set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`_rng_state` returned."""
    random.setstate(state["python"])
    np_state = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _save_atomic(payload: Mapping[str, Any], path: str | os.PathLike[str]) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename it over ``path``."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        torch.save(dict(payload), tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _checkpoint(
    state: TrainerState, model: nn.Module, balancer: Balancer, hooks: Sequence[Hooks]
) -> dict[str, Any]:
    """Everything needed to resume exactly, plus a self-description (config, method); the
    per-task optimisers' states only when there are any."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "config": dataclasses.asdict(state.config),
        "method": {"balancer": balancer.describe(), "hooks": [type(h).__name__ for h in hooks]},
        "epoch": state.epoch,
        "step": state.step,
        "model": model.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "scheduler": None if state.scheduler is None else state.scheduler.state_dict(),
        "balancer": balancer.state_dict(),
        "hooks": [hook.state_dict() for hook in hooks],
        "rng": _rng_state(),
        "history": state.rows,
    }
    if state.task_optimizers:
        payload["task_optimizers"] = {t: o.state_dict() for t, o in state.task_optimizers.items()}
    return payload


def _restore(
    path: str,
    state: TrainerState,
    model: nn.Module,
    balancer: Balancer,
    hooks: Sequence[Hooks],
) -> None:
    """Load a checkpoint written by :func:`fit` into the model, optimiser, ... and ``state``."""
    ckpt = load_torch_file(
        path,
        "the checkpoint is truncated or corrupt (e.g. an interrupted copy): delete it to train "
        "from the start, or set TrainConfig.checkpoint_path to another file",
    )
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ConfigError(f"{path} is not a training checkpoint of format {CHECKPOINT_FORMAT}")
    saved = ckpt["config"]
    differing = [k for k in _RESUME_MUST_MATCH if saved.get(k) != getattr(state.config, k)]
    if differing:
        raise ConfigError(
            f"cannot resume from {path}: TrainConfig fields {differing} differ from the "
            "checkpoint's; use the same values or another checkpoint_path"
        )
    if ckpt["epoch"] > state.config.epochs:
        raise ConfigError(
            f"{path} holds {ckpt['epoch']} epochs, more than TrainConfig.epochs="
            f"{state.config.epochs}"
        )
    if len(ckpt["hooks"]) != len(hooks):
        raise ConfigError(f"{path} was written with {len(ckpt['hooks'])} hooks; got {len(hooks)}")
    if bool(state.task_optimizers) != ("task_optimizers" in ckpt):
        raise ConfigError(
            f"{path} and the hooks differ in per_task_optimizer_state; resume with the hooks "
            "the checkpoint was written with"
        )
    for hook, hook_state in zip(hooks, ckpt["hooks"], strict=True):
        hook.load_state_dict(hook_state)
    model.load_state_dict(ckpt["model"])
    balancer.load_state_dict(ckpt["balancer"])
    state.optimizer.load_state_dict(ckpt["optimizer"])
    for task, optimizer in state.task_optimizers.items():
        optimizer.load_state_dict(ckpt["task_optimizers"][task])
    if state.scheduler is not None:
        state.scheduler.load_state_dict(ckpt["scheduler"])
    _set_rng_state(ckpt["rng"])
    state.epoch, state.step, state.rows = ckpt["epoch"], ckpt["step"], list(ckpt["history"])


# --------------------------------------------------------------------------------------------
# dvclive
# --------------------------------------------------------------------------------------------
def _check_dvclive_safe(cwd: Path) -> None:
    """Refuse to start dvclive in a git work tree without DVC: its ``Live()`` would run
    ``dvc init`` there (``dvclive.dvc.get_dvc_repo``)."""
    ancestors = (cwd, *cwd.parents)
    if any((d / ".dvc").is_dir() for d in ancestors):
        return
    repo = next((d for d in ancestors if (d / ".git").exists()), None)
    if repo is not None:
        raise ConfigError(
            f"TrainConfig.log_dir: the working directory is in the git repository {repo}, "
            "which has no DVC set-up, and dvclive would run `dvc init` in it; run `dvc init` "
            "there first, or work from outside the repository"
        )


def _open_live(log_dir: str, params: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> Any:
    """A dvclive ``Live`` logger at ``log_dir`` (emptied), with ``params`` and ``rows`` logged."""
    _check_dvclive_safe(Path.cwd().resolve())
    from dvclive import Live

    live = Live(log_dir, save_dvc_exp=False, dvcyaml=None, report=None, monitor_system=False)
    live.log_params(dict(params))
    _log_rows(live, rows)
    return live


def _log_rows(live: Any, rows: Sequence[Mapping[str, Any]]) -> None:
    """Log history rows to dvclive (``step`` = epoch), writing the summary after each epoch
    exactly as the epoch-by-epoch logging of an uninterrupted run does."""
    for k, row in enumerate(rows):
        live.step = row["epoch"]
        live.log_metric(f"{row['split']}/{row['task']}/{row['metric']}", row["value"])
        if k + 1 == len(rows) or rows[k + 1]["epoch"] != row["epoch"]:
            live.make_summary()


# --------------------------------------------------------------------------------------------
# fit
# --------------------------------------------------------------------------------------------
def fit(
    model: nn.Module,
    tasks: Mapping[str, Task],
    train_set: Dataset,
    val_set: Dataset | None,
    balancer: Balancer,
    config: TrainConfig,
    hooks: Sequence[Hooks] = (),
) -> TrainResult:
    """Train ``model`` on ``train_set`` (see the module doc for what the loop provides).

    Per epoch: train on the epoch's batches (:func:`train_step`); record the mean train log;
    evaluate ``val_set`` every ``eval_every`` epochs and after the last; call the hooks'
    ``end_of_epoch``; step the lr schedule; rebuild the optimiser if a hook asked; log to
    dvclive; write the checkpoint.

    Args:
        model: multi-task model (moved to the chosen device; with ``resume`` its weights are
            replaced by the checkpoint's).
        tasks: task name -> :class:`~mtlrepro.tasks.Task`; the balancer's tasks.
        train_set: training split (``dataset.batch(index)`` used when available).
        val_set: validation split, or ``None`` for none.
        balancer: loss balancer (its parameters are optimised with the model's).
        config: training settings.
        hooks: method hooks, called in order (their ``param_groups``,
            ``excluded_parameters`` and ``per_task_optimizer_state`` shape the optimiser).

    Returns:
        The model, the history, the final validation metrics and the progress counts.
    """
    hooks = tuple(hooks)
    if set(tasks) != set(balancer.task_names):
        raise ConfigError(
            f"tasks {list(tasks)} and the balancer's tasks {list(balancer.task_names)} differ"
        )
    if len(train_set) == 0:
        raise ConfigError("train_set is empty")
    device = resolve_device(config.device)
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    model.to(device)
    balancer.to(device)
    seed_everything(config.seed)
    balancer.manual_seed(config.seed)
    optimizer = _make_optimizer(model, balancer, config, hooks)
    state = TrainerState(config, optimizer, _make_scheduler(optimizer, config))
    if any(hook.per_task_optimizer_state for hook in hooks):
        state.task_optimizers = {
            task: _make_optimizer(model, balancer, config, hooks) for task in tasks
        }
    if config.resume and config.checkpoint_path and Path(config.checkpoint_path).exists():
        _restore(config.checkpoint_path, state, model, balancer, hooks)
    live = None
    if config.log_dir is not None:
        params = {k: v for k, v in dataclasses.asdict(config).items() if k not in _NOT_LOGGED}
        params |= {"balancer": balancer.describe(), "hooks": [type(h).__name__ for h in hooks]}
        live = _open_live(config.log_dir, params, state.rows)

    steps_per_epoch = max(1, len(train_set) // config.batch_size)  # as in epoch_batches
    total = config.epochs * steps_per_epoch
    if config.max_steps is not None:
        total = min(total, config.max_steps)
    bar = tqdm(
        total=total,
        initial=min(state.step, total),
        disable=not config.progress,
        desc=f"epoch {min(state.epoch + 1, config.epochs)}/{config.epochs}",
        unit="step",
        dynamic_ncols=True,
    )
    interrupted = False
    try:
        for epoch in range(state.epoch + 1, config.epochs + 1):
            if config.max_steps is not None and state.step >= config.max_steps:
                interrupted = True
                break
            bar.set_description(f"epoch {epoch}/{config.epochs}", refresh=False)
            means = _train_epoch(model, tasks, train_set, balancer, hooks, state, epoch, bar)
            if means is None:  # max_steps reached inside the epoch: nothing saved (a crash)
                interrupted = True
                break
            _end_epoch(model, tasks, val_set, balancer, hooks, state, epoch, means)
            if live is not None:
                _log_rows(live, [row for row in state.rows if row["epoch"] == epoch])
            if config.checkpoint_path is not None:
                _save_atomic(_checkpoint(state, model, balancer, hooks), config.checkpoint_path)
    finally:
        bar.close()

    history = pd.DataFrame(state.rows, columns=list(HISTORY_COLUMNS))
    final: dict[str, dict[str, float]] = {}
    if val_set is not None:
        final = _val_at(state.rows, state.step) or evaluate(
            model, tasks, val_set, config.eval_batch_size
        )
    return TrainResult(model, history, final, state.epoch, state.step, interrupted)


def _hook_batches(
    hooks: Sequence[Hooks], dataset: Dataset, batch_size: int, seed: int, epoch: int
) -> list[Tensor] | None:
    """The first hook's :meth:`Hooks.epoch_batches` that is not ``None``, checked for its
    count."""
    for hook in hooks:
        batches = hook.epoch_batches(dataset, batch_size, seed, epoch)
        if batches is not None:
            expected = max(1, len(dataset) // batch_size)
            if len(batches) != expected:
                raise ConfigError(
                    f"{type(hook).__name__}.epoch_batches gave {len(batches)} batches for "
                    f"epoch {epoch}; the loop counts {expected} (len(dataset) // batch_size)"
                )
            return list(batches)
    return None


def _train_epoch(
    model: nn.Module,
    tasks: Mapping[str, Task],
    train_set: Dataset,
    balancer: Balancer,
    hooks: Sequence[Hooks],
    state: TrainerState,
    epoch: int,
    bar: tqdm,
) -> StepLog | None:
    """Train one epoch; the mean of each logged value, or ``None`` if ``max_steps`` cut it."""
    config = state.config
    device = next(model.parameters()).device
    batches = _hook_batches(hooks, train_set, config.batch_size, config.seed, epoch)
    if batches is None:
        batches = epoch_batches(len(train_set), config.batch_size, config.seed, epoch)
    sums: dict[str, dict[str, float]] = {}
    model.train()
    for count, batch in enumerate(iterate_batches(train_set, batches), start=1):
        log = train_step(
            model,
            tasks,
            _to_device(batch, device),
            balancer,
            state.task_optimizers or state.optimizer,
            hooks,
            state.step + 1,
        )
        state.step += 1
        for task, values in log.items():
            task_sums = sums.setdefault(task, {})
            for metric, value in values.items():
                task_sums[metric] = task_sums.get(metric, 0.0) + value
        bar.update()
        if not bar.disable and (count % _POSTFIX_EVERY == 0 or count == len(batches)):
            bar.set_postfix(
                {task: f"{s['loss'] / count:.4f}" for task, s in sums.items()}, refresh=False
            )
        if config.max_steps is not None and state.step >= config.max_steps:
            if count < len(batches):
                return None
            break
    return {
        task: {metric: total / len(batches) for metric, total in values.items()}
        for task, values in sums.items()
    }


def _end_epoch(
    model: nn.Module,
    tasks: Mapping[str, Task],
    val_set: Dataset | None,
    balancer: Balancer,
    hooks: Sequence[Hooks],
    state: TrainerState,
    epoch: int,
    means: StepLog,
) -> None:
    """Record the epoch: train means, evaluation, hooks, lr schedule, optimiser rebuild."""
    config = state.config
    state.epoch = epoch
    for task, values in means.items():
        for metric, value in values.items():
            state.log(metric, value, task=task, split="train")
    if val_set is not None and (epoch % config.eval_every == 0 or epoch == config.epochs):
        for task, values in evaluate(model, tasks, val_set, config.eval_batch_size).items():
            for metric, value in values.items():
                state.log(metric, value, task=task, split="val")
    for hook in hooks:
        hook.end_of_epoch(model, epoch, state)
    if isinstance(state.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        state.scheduler.step(sum(means[task]["loss"] for task in tasks))
    elif state.scheduler is not None and state.task_optimizers:
        with warnings.catch_warnings():  # torch's warning: the lr holder itself never steps
            warnings.filterwarnings("ignore", "Detected call of `lr_scheduler.step")
            state.scheduler.step()
    elif state.scheduler is not None:
        state.scheduler.step()
    if state.rebuild_optimizer:
        _rebuild_optimizer(state, model, balancer, hooks)
    for optimizer in state.task_optimizers.values():  # they follow the schedule too
        _set_group_lrs(optimizer, _group_lrs(state.optimizer))


def _val_at(rows: Sequence[Mapping[str, Any]], step: int) -> dict[str, dict[str, float]]:
    """The validation metrics logged at ``step`` (``{}`` if none were)."""
    out: dict[str, dict[str, float]] = {}
    for row in rows:
        if row["split"] == "val" and row["step"] == step:
            out.setdefault(row["task"], {})[row["metric"]] = row["value"]
    return out
