"""Named training phases over the one training loop (paper D, §3.2: warm-up -> search ->
fine-tune, the fine-tune rewound to the end of the warm-up).

Each :class:`Phase` is one :func:`~mtlrepro.train.fit` run with its own length, hooks and
settings; :func:`fit_phases` snapshots the model at each phase's end, rewinds it where a phase
asks, prepares it where a phase asks (paper D's reduction between search and fine-tune), and
returns the phases' histories with a ``phase`` column.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from mtlrepro.balancing import Balancer
from mtlrepro.config import ConfigError
from mtlrepro.tasks import Task
from mtlrepro.train import HISTORY_COLUMNS, Hooks, TrainConfig, TrainResult, fit

_PHASE_FIXED: tuple[str, ...] = ("epochs", "checkpoint_path", "log_dir", "resume", "max_steps")
"""TrainConfig fields a :class:`Phase` cannot override (:func:`fit_phases` sets them)."""


@dataclass(frozen=True)
class Phase:
    """One phase of a :func:`fit_phases` run.

    Attributes:
        name: unique in the run, of letters, digits, ``_`` and ``-``: the history's ``phase``
            and the suffix of the phase's checkpoint file and log directory.
        epochs: epochs of the phase (``>= 1``).
        hooks: the phase's hooks (e.g. paper D's search adds a sparsity loss and trains
            α, β, γ in their own :meth:`Hooks.param_groups`; its warm-up freezes them with
            :meth:`Hooks.excluded_parameters`).
        rewind_to: an earlier phase whose end state the model is reset to before this phase
            (paper D's fine-tune rewinds to the end of the warm-up), or ``None``.
        rewind_keep: state-dict keys, or key prefixes ending before a ``.``, that the rewind
            leaves as they are (paper D keeps the searched α, β, γ).
        overrides: TrainConfig fields of this phase, e.g. ``{"lr": 1e-4}`` (not those
            :func:`fit_phases` sets: epochs, checkpoint_path, log_dir, resume, max_steps).
        prepare: called on the model right before the phase's ``fit`` (after its rewind), or
            ``None``: a change of the model between phases, e.g. paper D's flow-based
            reduction, which fixes the binary topology (and may delete unused modules) before
            the fine-tune.  It runs whenever the phase's ``fit`` is entered, also on resume
            and for a finished phase whose checkpoint ``fit`` only reloads, so the model has
            the phase's structure before a checkpoint is loaded into it; it must therefore be
            a deterministic function of the model's state at that point.
    """

    name: str
    epochs: int
    hooks: Sequence[Hooks] = ()
    rewind_to: str | None = None
    rewind_keep: tuple[str, ...] = ()
    overrides: Mapping[str, Any] = field(default_factory=dict)
    prepare: Callable[[nn.Module], None] | None = None


@dataclass
class PhasedResult:
    """What :func:`fit_phases` returns.

    Attributes:
        model: the trained model (the same object that was passed in).
        history: the phases' histories, concatenated, with a first column ``phase``; ``epoch``
            and ``step`` count within each phase.
        phases: phase name -> its :func:`fit` result, for the phases that ran.
        interrupted: whether ``max_steps`` stopped the run before the end of its last phase.
    """

    model: nn.Module
    history: pd.DataFrame
    phases: dict[str, TrainResult]
    interrupted: bool


def fit_phases(
    model: nn.Module,
    tasks: Mapping[str, Task],
    train_set: Dataset,
    val_set: Dataset | None,
    balancer: Balancer,
    config: TrainConfig,
    phases: Sequence[Phase],
) -> PhasedResult:
    """Train in named phases, one :func:`fit` each (paper D, §3.2: warm-up → search →
    fine-tune, the fine-tune rewound to the end of the warm-up).

    Phase ``k`` runs ``fit`` with ``config`` updated by ``seed = config.seed + k`` (so each
    phase has its own deterministic data order), the phase's ``overrides`` and ``epochs``, and
    its hooks: a fresh optimiser and lr schedule per phase.  Before a phase with ``rewind_to``,
    the model's state (less ``rewind_keep``) is reset to a copy taken at the end of that phase;
    the balancer and the hooks keep their state.  Then the phase's ``prepare`` (if any) is
    called on the model, and the phase's ``fit`` builds its optimiser from the prepared model.
    ``config.max_steps`` counts the steps of all phases.  With ``checkpoint_path`` ``run.pt``
    each phase writes ``run.<phase>.pt`` (and logs to ``<log_dir>/<phase>``), so ``resume``
    skips finished phases and continues the current one exactly.  On resume every phase is
    entered in order, its rewind and ``prepare`` done, before its ``fit`` reloads its
    checkpoint: a finished phase thus leaves the model in the structure and state it had at
    the phase's end, and the current phase continues in the structure it was checkpointed in.

    Args:
        model: multi-task model.
        tasks: task name -> :class:`~mtlrepro.tasks.Task`.
        train_set: training split.
        val_set: validation split, or ``None``.
        balancer: loss balancer, shared by the phases.
        config: training settings of every phase (``epochs`` unused).
        phases: the phases, in order.
    """
    configs = _phase_configs(config, phases)
    keep_end = {phase.rewind_to for phase in phases}
    ends: dict[str, dict[str, Tensor]] = {}
    results: dict[str, TrainResult] = {}
    steps = 0
    for phase, phase_config in zip(phases, configs, strict=True):
        if config.max_steps is not None:
            if steps >= config.max_steps:
                break
            phase_config = dataclasses.replace(phase_config, max_steps=config.max_steps - steps)
        if phase.rewind_to is not None:
            _rewind(model, ends[phase.rewind_to], phase.rewind_keep)
        if phase.prepare is not None:
            phase.prepare(model)
        result = fit(model, tasks, train_set, val_set, balancer, phase_config, phase.hooks)
        results[phase.name], steps = result, steps + result.steps
        if result.interrupted:
            break
        if phase.name in keep_end:
            ends[phase.name] = {k: v.detach().clone() for k, v in model.state_dict().items()}
    history = pd.concat(
        [r.history.assign(phase=name) for name, r in results.items()], ignore_index=True
    )[["phase", *HISTORY_COLUMNS]]
    interrupted = len(results) < len(phases) or any(r.interrupted for r in results.values())
    return PhasedResult(model, history, results, interrupted)


def _phase_configs(config: TrainConfig, phases: Sequence[Phase]) -> list[TrainConfig]:
    """Each phase's TrainConfig; invalid phases raise ``ConfigError`` before any training."""
    if not phases:
        raise ConfigError("fit_phases needs at least one phase")
    names: list[str] = []
    configs = []
    for k, phase in enumerate(phases):
        if not isinstance(phase.name, str) or not re.fullmatch(r"[A-Za-z0-9_-]+", phase.name):
            raise ConfigError(f"phase name {phase.name!r}: use letters, digits, '_' and '-'")
        if phase.name in names:
            raise ConfigError(f"two phases are named {phase.name!r}")
        if phase.rewind_to is not None and phase.rewind_to not in names:
            raise ConfigError(
                f"phase {phase.name!r} rewinds to {phase.rewind_to!r}, not an earlier phase"
            )
        allowed = {f.name for f in dataclasses.fields(TrainConfig)} - set(_PHASE_FIXED)
        if not set(phase.overrides) <= allowed:
            bad = sorted(set(phase.overrides) - allowed)
            raise ConfigError(f"phase {phase.name!r} cannot override {bad}")
        if phase.prepare is not None and not callable(phase.prepare):
            raise ConfigError(
                f"phase {phase.name!r}: prepare must be a callable taking the model, or None; "
                f"got {phase.prepare!r}"
            )
        names.append(phase.name)
        path, log_dir = config.checkpoint_path, config.log_dir
        settings = {
            "seed": config.seed + k,
            **phase.overrides,
            "epochs": phase.epochs,
            "checkpoint_path": None
            if path is None
            else str(Path(path).with_suffix(f".{phase.name}{Path(path).suffix}")),
            "log_dir": None if log_dir is None else str(Path(log_dir) / phase.name),
        }
        configs.append(dataclasses.replace(config, **settings))
    return configs


@torch.no_grad()
def _rewind(model: nn.Module, saved: Mapping[str, Tensor], keep: Sequence[str]) -> None:
    """Copy ``saved`` into the model's state in place, except keys in or under ``keep``."""
    for key, value in model.state_dict().items():
        if not any(key == k or key.startswith(f"{k}.") for k in keep):
            value.copy_(saved[key])
