"""Baselines: single-task networks vs one shared-bottom network, plus paper D's cross-stitch
and MTAN rows (paper D's Tables 2 and 11).

"DAG topology search for MTL" (Choi & Im) compares every method with two baselines on
NYU-v2's segmentation, depth and normal tasks: one network per task ("Single-Task") and one
network shared by all tasks with a head per task ("Shared Bottom", hard parameter sharing),
and with two soft-sharing architectures among its other rows: "Cross-Stitch" (Misra et al.,
CVPR 2016) and "MTAN" (Liu et al., CVPR 2019).  This module trains them on the same data with
the shared training loop -- the shared-bottom network with three loss balancers (equal
weights, uncertainty weighting, PCGrad), then each configured architecture with equal weights
-- and returns paper D's two table layouts:

* Table 11: every metric of every task, plus parameter counts;
* Table 2: relative performance Δ per task and Δ_T (Eq. 10-11) against the single-task row,
  and parameters relative to the shared-bottom network.

Choices (the paper trains its own VGG-16-like network; these baselines use the MTAN SegNet,
the common backbone of papers C and D's NYU-v2 comparisons): each single-task network is the
same encoder-decoder as the shared one with one head, trained with the same schedule; the
shared-bottom row compared with paper D is the equal-weight one (the paper's baseline).  The
cross-stitch and MTAN networks (:mod:`mtlrepro.models.cross_stitch`, :mod:`mtlrepro.models.mtan`)
are built on the same SegNet widths and heads and trained with equal weights; they run after
the other networks, so adding or removing them leaves the other rows' numbers unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from mtlrepro import paper_numbers
from mtlrepro.balancing import create_balancer
from mtlrepro.config import (
    DEFAULT_PROFILE,
    ConfigError,
    build_config,
    check_choice,
    check_distinct,
    check_profile,
    check_range,
)
from mtlrepro.data import dataset_names, get_dataset
from mtlrepro.metrics import LOWER_IS_BETTER, relative_performance
from mtlrepro.models import create_model
from mtlrepro.recipe import train_config_for, train_network
from mtlrepro.tasks import TaskSpec
from mtlrepro.train import LR_SCHEDULES, TrainConfig

SECTION = "baselines"
"""The ``params.yaml`` section of the experiment (its notebook ``00_baselines``)."""
SINGLE_TASK = "Single-Task"
SHARED_BOTTOM = "Shared Bottom"
BALANCER_LABELS: dict[str, str] = {
    "equal": "equal",
    "uncertainty": "uncertainty",
    "pcgrad": "PCGrad",
}
"""Balancer name -> label used in row names, e.g. ``Shared Bottom (PCGrad)``."""
ARCHITECTURE_ROWS: dict[str, str] = {"cross_stitch": "Cross-Stitch", "mtan": "MTAN"}
"""Registered model name (:func:`~mtlrepro.models.create_model`) -> row name, as paper D names
the row in its Tables 2 and 11."""
PAPER_TASK_ORDER: tuple[str, ...] = ("segmentation", "normal", "depth")
"""Column order of paper D's Table 2 (sem, norm, dep)."""
PAPER_D_METRICS: dict[str, tuple[str, ...]] = {
    "segmentation": ("miou", "pixel_acc"),
    "depth": ("abs_err", "rel_err", "delta1", "delta2", "delta3"),
    "normal": ("mean_angle", "median_angle", "within_11_25", "within_22_5", "within_30"),
}
"""The metrics paper D's Table 11 reports per task, i.e. those its Δ (Eq. 10) averages over."""


@dataclass(frozen=True)
class BaselinesConfig:
    """Settings of the baselines experiment (presets per profile in :data:`PRESETS`).

    Attributes:
        profile: ``smoke``, ``cpu`` or ``paper``: the data's and the networks' sizes (every
            network's from :data:`~mtlrepro.models.segnet.SEGNET_PRESETS`).
        dataset: registered dataset name (``scenes`` embedded, ``nyuv2`` real).
        tasks: the dense tasks to learn (at least two).
        balancers: loss balancers of the shared-bottom network (``equal``, ``uncertainty``,
            ``pcgrad``).
        architectures: further multi-task networks, trained with equal weights after the
            others (``cross_stitch``, ``mtan``; may be empty); rows "Cross-Stitch" and "MTAN".
        epochs: training epochs of every network.
        batch_size: samples per step.
        lr: Adam learning rate.
        lr_schedule: ``none`` / ``step`` / ``plateau`` (see :class:`~mtlrepro.train.TrainConfig`).
        lr_step_size: epochs between step decays.
        lr_factor: decay factor.
        eval_every: validate every this many epochs.
        n_train: training images (``None``: the dataset preset's).
        seed: seed of data order, initialisation and PCGrad's task order.
        threads: torch CPU threads (``None``: leave torch's default).
        figure_samples: test images shown in the sample-predictions figure.
    """

    profile: str = DEFAULT_PROFILE
    dataset: str = "scenes"
    tasks: tuple[str, ...] = ("segmentation", "depth", "normal")
    balancers: tuple[str, ...] = ("equal", "uncertainty", "pcgrad")
    architectures: tuple[str, ...] = ("cross_stitch", "mtan")
    epochs: int = 200
    batch_size: int = 8
    lr: float = 1e-4
    lr_schedule: str = "step"
    lr_step_size: int = 150
    lr_factor: float = 0.5
    eval_every: int = 10
    n_train: int | None = None
    seed: int = 0
    threads: int | None = None
    figure_samples: int = 4

    def __post_init__(self) -> None:
        """Check every field; messages name it ``BaselinesConfig.<field>`` (``baselines.<field>``
        through :func:`baselines_config`)."""
        check_profile(self.profile)
        check_choice("dataset", self.dataset, dataset_names(), name="BaselinesConfig.dataset")
        if len(self.tasks) < 2:
            raise ConfigError(f"BaselinesConfig.tasks needs at least two tasks; got {self.tasks!r}")
        for task in self.tasks:
            check_choice("dense task", task, PAPER_TASK_ORDER, name="BaselinesConfig.tasks")
        check_distinct("BaselinesConfig.tasks", self.tasks)
        if not self.balancers:
            raise ConfigError("BaselinesConfig.balancers must name at least one balancer")
        for name in self.balancers:
            check_choice("balancer", name, tuple(BALANCER_LABELS), name="BaselinesConfig.balancers")
        check_distinct("BaselinesConfig.balancers", self.balancers)
        for name in self.architectures:
            check_choice(
                "architecture", name, tuple(ARCHITECTURE_ROWS), name="BaselinesConfig.architectures"
            )
        check_distinct("BaselinesConfig.architectures", self.architectures)
        for name in ("epochs", "batch_size", "lr_step_size", "eval_every", "figure_samples"):
            check_range(f"BaselinesConfig.{name}", getattr(self, name), 1, integer=True)
        check_range("BaselinesConfig.lr", self.lr, 0.0, low_inclusive=False)
        check_choice(
            "lr schedule", self.lr_schedule, LR_SCHEDULES, name="BaselinesConfig.lr_schedule"
        )
        check_range(
            "BaselinesConfig.lr_factor",
            self.lr_factor,
            0.0,
            1.0,
            low_inclusive=False,
            high_inclusive=False,
        )
        check_range("BaselinesConfig.seed", self.seed, 0, integer=True)
        for name in ("n_train", "threads"):
            if getattr(self, name) is not None:
                check_range(f"BaselinesConfig.{name}", getattr(self, name), 1, integer=True)


PRESETS: dict[str, dict[str, Any]] = {
    # seconds: a two-stage slim SegNet, a few dozen images, one epoch
    "smoke": {
        "epochs": 1,
        "batch_size": 8,
        "lr": 1e-3,
        "eval_every": 1,
        "lr_schedule": "none",
        "figure_samples": 2,
    },
    # minutes on 2 CPU cores (see README: measured time of the notebook)
    "cpu": {
        "epochs": 8,
        "batch_size": 16,
        "lr": 2e-3,
        "lr_schedule": "step",
        "lr_step_size": 6,
        "lr_factor": 0.3,
        "eval_every": 2,
    },
    # MTAN's SegNet on NYU-v2 with paper C's schedule (batch 8, 200 epochs, lr halved at 150)
    "paper": {"dataset": "nyuv2"},
}


def baselines_config(profile: str, **overrides: Any) -> BaselinesConfig:
    """The profile's preset with ``overrides`` (``None`` values are ignored) applied; messages
    name parameters as ``params.yaml`` does (``baselines.epochs``)."""
    given = {k: v for k, v in overrides.items() if v is not None}
    return build_config(BaselinesConfig, PRESETS, profile, given, section=SECTION)


@dataclass
class RunResult:
    """One trained network.

    Attributes:
        row: table row it contributes to (``Single-Task``, ``Shared Bottom (<balancer>)``,
            ``Cross-Stitch`` or ``MTAN``).
        tasks: tasks the network learns.
        parameters: its parameter count (heads included).
        history: the training loop's tidy history with a ``run`` column (the row name).
        test: task -> metric -> value on the test split.
        predictions: task -> displayable prediction on the figure's test images.
    """

    row: str
    tasks: tuple[str, ...]
    parameters: int
    history: pd.DataFrame
    test: dict[str, dict[str, float]]
    predictions: dict[str, torch.Tensor]


@dataclass
class BaselinesResult:
    """Everything the notebook shows: configuration, runs and the figure's test samples."""

    config: BaselinesConfig
    task_specs: dict[str, TaskSpec]
    runs: list[RunResult] = field(default_factory=list)
    sample_images: torch.Tensor | None = None
    sample_targets: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def profile(self) -> str:
        """The profile of the experiment."""
        return self.config.profile

    @property
    def rows(self) -> list[str]:
        """Table rows in order: single-task first, then each shared-bottom balancer, then each
        architecture."""
        return list(dict.fromkeys(run.row for run in self.runs))

    def row_scores(self, row: str) -> dict[str, dict[str, float]]:
        """Task -> metric -> test value of one row (single-task rows gather their networks)."""
        return {task: run.test[task] for run in self.runs if run.row == row for task in run.tasks}

    def row_parameters(self, row: str) -> int:
        """Parameters of a row: the sum over its networks."""
        return sum(run.parameters for run in self.runs if run.row == row)

    @property
    def shared_parameters(self) -> int:
        """Parameters of the shared-bottom network (the unit of paper D's "# of Param")."""
        shared = {shared_row(b) for b in self.config.balancers}
        return next(run.parameters for run in self.runs if run.row in shared)


def shared_row(balancer: str) -> str:
    """Row name of the shared-bottom network trained with ``balancer``."""
    return f"{SHARED_BOTTOM} ({BALANCER_LABELS[balancer]})"


def run_baselines(
    config: BaselinesConfig,
    *,
    log_dir: str | Path | None = None,
    progress: bool = True,
) -> BaselinesResult:
    """Train the single-task networks, the shared-bottom network with each balancer, then each
    configured architecture (equal weights).

    Every network is built right after seeding with ``config.seed`` and trained with the same
    data, schedule and seed; the architectures come last, so they do not change the other rows.

    Args:
        config: experiment settings (see :func:`baselines_config`).
        log_dir: folder for the dvclive logs (one sub-folder per network), or ``None``.
        progress: show the training progress bars.

    Returns:
        The runs with their histories, test metrics and sample predictions.
    """
    data_overrides: dict[str, Any] = {"tasks": config.tasks}
    if config.n_train is not None:
        data_overrides["n_train"] = config.n_train
    train_set = get_dataset(config.dataset, "train", config.profile, **data_overrides)
    val_set = get_dataset(config.dataset, "val", config.profile, tasks=config.tasks)
    test_set = get_dataset(config.dataset, "test", config.profile, tasks=config.tasks)
    specs = {name: train_set.task_specs[name] for name in config.tasks}
    samples = test_set.batch(torch.arange(min(config.figure_samples, len(test_set))))
    result = BaselinesResult(
        config,
        specs,
        sample_images=samples["image"],
        sample_targets={t: samples[t] for t in config.tasks},
    )
    # (row, dvclive folder, tasks, balancer, registered model)
    plan = [(SINGLE_TASK, "single-" + t, (t,), "equal", "segnet") for t in config.tasks]
    plan += [(shared_row(b), "shared-" + b, config.tasks, b, "segnet") for b in config.balancers]
    plan += [(ARCHITECTURE_ROWS[a], a, config.tasks, "equal", a) for a in config.architectures]
    for row, slug, tasks, balancer_name, architecture in plan:
        train_config = train_config_for(
            config,
            progress=progress,
            log_dir=None if log_dir is None else str(Path(log_dir) / slug),
        )
        result.runs.append(
            _train_one(
                row,
                tasks,
                balancer_name,
                architecture,
                specs,
                config,
                train_config,
                (train_set, val_set, test_set),
                samples,
            )
        )
    return result


def _train_one(
    row: str,
    tasks: tuple[str, ...],
    balancer_name: str,
    architecture: str,
    specs: Mapping[str, TaskSpec],
    config: BaselinesConfig,
    train_config: TrainConfig,
    splits: tuple[Any, Any, Any],
    samples: Mapping[str, torch.Tensor],
) -> RunResult:
    """Build (registered model ``architecture`` at the profile's size), train and test one
    network; every network of a seed starts from the same random state, so the single-task and
    shared-bottom trunks start identical.  See :func:`run_baselines`."""
    task_specs = {t: specs[t] for t in tasks}
    trained = train_network(
        lambda: create_model(architecture, list(task_specs.values()), profile=config.profile),
        task_specs,
        create_balancer(balancer_name, tasks),
        *splits,
        train_config,
    )
    model = trained.model
    model.eval()
    with torch.no_grad():
        device = next(model.parameters()).device
        raw = model(samples["image"].to(device))
    predictions = {t: trained.tasks[t].predict(raw[t]).cpu() for t in tasks}
    history = trained.history.assign(run=row)
    return RunResult(row, tasks, trained.parameters, history, trained.test, predictions)


# --------------------------------------------------------------------------------------------
# Tables (paper D's layouts)
# --------------------------------------------------------------------------------------------
def metrics_table(result: BaselinesResult) -> pd.DataFrame:
    """Paper D's Table 11 layout: every test metric per row, and parameter counts.

    Columns ``<task>/<metric>`` in task order, then ``params_M`` (millions) and
    ``params_rel`` (relative to the shared-bottom network, as paper D prints; every balancer
    trains the same network).
    """
    records = []
    for row in result.rows:
        scores = result.row_scores(row)
        record: dict[str, Any] = {"method": row}
        for task in result.config.tasks:
            for metric, value in scores[task].items():
                record[f"{task}/{metric}"] = value
        params = result.row_parameters(row)
        record["params_M"] = params / 1e6
        record["params_rel"] = params / result.shared_parameters
        records.append(record)
    return pd.DataFrame.from_records(records)


def delta_table(result: BaselinesResult) -> pd.DataFrame:
    """Paper D's Table 2 layout: Δ per task and Δ_T (Eq. 10-11, in %) against Single-Task.

    A task's Δ averages the metrics paper D reports for it (:data:`PAPER_D_METRICS`; all of
    the task's metrics for other tasks).  A metric whose single-task value is exactly 0 has no
    relative change; it is left out of every row and named in the ``excluded`` column (this
    happens only for untrained smoke-profile networks).  Parameters are relative to the
    shared-bottom network.
    """
    reference = result.row_scores(SINGLE_TASK)
    used = {
        task: [m for m in PAPER_D_METRICS.get(task, tuple(values)) if values[m] != 0]
        for task, values in reference.items()
    }
    excluded = sorted(
        f"{task}/{m}"
        for task, values in reference.items()
        for m in values
        if m in PAPER_D_METRICS.get(task, tuple(values)) and m not in used[task]
    )
    order = [t for t in PAPER_TASK_ORDER if t in result.config.tasks]
    order += [t for t in result.config.tasks if t not in order]
    records = []
    for row in result.rows:
        scores = {
            t: {m: v for m, v in s.items() if m in used[t]}
            for t, s in result.row_scores(row).items()
        }
        deltas = relative_performance(scores, reference, LOWER_IS_BETTER)
        record: dict[str, Any] = {"method": row}
        record.update({f"delta_{task}": deltas[task] for task in order})
        record["delta_all"] = deltas["all"]
        record["params_rel"] = result.row_parameters(row) / result.shared_parameters
        record["excluded"] = ", ".join(excluded)
        records.append(record)
    return pd.DataFrame.from_records(records)


def paper_table2(architectures: Sequence[str] = tuple(ARCHITECTURE_ROWS)) -> pd.DataFrame:
    """Paper D's own Table 2 rows ``Single-Task``, ``Shared Bottom`` and those of the given
    architectures (for side by side with :func:`delta_table`).

    Args:
        architectures: names of :data:`ARCHITECTURE_ROWS` whose paper rows to add, e.g.
            ``config.architectures``.
    """
    for name in architectures:
        check_choice("architecture", name, tuple(ARCHITECTURE_ROWS))
    rows = []
    for row in (SINGLE_TASK, SHARED_BOTTOM, *(ARCHITECTURE_ROWS[a] for a in architectures)):
        record: dict[str, Any] = {"method": f"paper D: {row}"}
        for task in PAPER_TASK_ORDER:
            record[f"delta_{task}"] = paper_numbers.value("D", "Table 2", row, task, "delta")
        record["delta_all"] = paper_numbers.value("D", "Table 2", row, "all", "delta")
        record["params_rel"] = paper_numbers.value("D", "Table 2", row, "", "params")
        rows.append(record)
    return pd.DataFrame.from_records(rows)


def training_history(result: BaselinesResult) -> pd.DataFrame:
    """All runs' histories in one tidy frame (column ``run`` tells them apart)."""
    return pd.concat([run.history for run in result.runs], ignore_index=True)


def sample_predictions(result: BaselinesResult) -> dict[str, dict[str, torch.Tensor]]:
    """Row -> task -> prediction on the figure's test images (single-task rows gathered)."""
    out: dict[str, dict[str, torch.Tensor]] = {}
    for run in result.runs:
        out.setdefault(run.row, {}).update(run.predictions)
    return out


# --------------------------------------------------------------------------------------------
# metrics.json
# --------------------------------------------------------------------------------------------
def summary_metrics(result: BaselinesResult) -> dict[str, Any]:
    """Nested numbers for ``metrics.json`` (read by ``dvc metrics show``)."""
    deltas = delta_table(result).set_index("method")
    return {
        "profile": result.profile,
        "config": {
            k: list(v) if isinstance(v, tuple) else v for k, v in asdict(result.config).items()
        },
        "delta": {
            row: deltas.loc[row].drop(["params_rel", "excluded"]).to_dict() for row in deltas.index
        },
        "params": {row: result.row_parameters(row) for row in result.rows},
        "test": {row: result.row_scores(row) for row in result.rows},
    }
