"""One recipe from a study's settings to a trained, tested network, shared by every paper.

:func:`train_config_for` turns a study config into the loop's :class:`~mtlrepro.train.TrainConfig`
(every field the two share, e.g. ``epochs``, ``lr``, ``seed``, ``threads``, ``profile``, plus
explicit overrides), and :func:`train_network` seeds, builds the model, trains it with
:func:`~mtlrepro.train.fit` and tests it.  A paper supplies only what is its own: the model
builder, the balancer, the method's hooks and the data.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
from torch import nn
from torch.utils.data import Dataset

from mtlrepro.balancing import Balancer
from mtlrepro.models import count_parameters
from mtlrepro.tasks import Task, TaskSpec, make_tasks
from mtlrepro.train import Hooks, TrainConfig, evaluate, fit, seed_everything

_TRAIN_FIELDS = frozenset(f.name for f in dataclasses.fields(TrainConfig))


def train_config_for(study: Any, **overrides: Any) -> TrainConfig:
    """The training settings of a study: each :class:`~mtlrepro.train.TrainConfig` field the
    study's config (a dataclass) also has, then ``overrides``.

    Args:
        study: a study config, e.g. paper A's ``PruningStudyConfig``.
        **overrides: ``TrainConfig`` fields set explicitly (e.g. ``lr_schedule="plateau"``).
    """
    shared = {
        f.name: getattr(study, f.name)
        for f in dataclasses.fields(study)
        if f.name in _TRAIN_FIELDS
    }
    return TrainConfig(**{**shared, **overrides})


@dataclass
class TrainedNetwork:
    """What :func:`train_network` returns.

    Attributes:
        model: the trained model.
        tasks: task name -> :class:`~mtlrepro.tasks.Task` it was trained on.
        history: the loop's tidy history.
        test: task -> metric -> value on the test split.
        parameters: the model's parameter count after training.
    """

    model: nn.Module
    tasks: dict[str, Task]
    history: pd.DataFrame
    test: dict[str, dict[str, float]]
    parameters: int


def train_network(
    build_model: Callable[[], nn.Module],
    specs: Mapping[str, TaskSpec],
    balancer: Balancer,
    train_set: Dataset,
    val_set: Dataset | None,
    test_set: Dataset,
    config: TrainConfig,
    *,
    hooks: Sequence[Hooks] = (),
    losses: Mapping[str, str] | None = None,
) -> TrainedNetwork:
    """Seed with ``config.seed``, build the model, train it on ``train_set`` and test it.

    Every network of a seed therefore starts from the same random state, whatever ran before
    it (e.g. the single-task and shared-bottom networks share their initial trunk).

    Args:
        build_model: builds the untrained model (called right after seeding).
        specs: the tasks to learn (name -> spec), in output order.
        balancer: the loss balancer of these tasks (built without drawing random numbers).
        train_set: training split.
        val_set: validation split evaluated during training, or ``None``.
        test_set: the split the returned metrics come from.
        config: training settings (e.g. from :func:`train_config_for`).
        hooks: the method's hooks into the loop.
        losses: task kind -> named loss variant (e.g. ``{"depth": "mse"}``).
    """
    seed_everything(config.seed)
    model = build_model()
    tasks = make_tasks(specs, losses=losses)
    trained = fit(model, tasks, train_set, val_set, balancer, config, hooks=hooks)
    test = evaluate(model, tasks, test_set, config.eval_batch_size)
    return TrainedNetwork(model, tasks, trained.history, test, count_parameters(model))
