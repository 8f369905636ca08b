"""Baselines: single-task networks vs one shared-bottom network, plus paper D's cross-stitch
and MTAN rows (paper D's Tables 2 and 11).

"DAG topology search for MTL" (Choi & Im) compares every method with two baselines on
NYU-v2's segmentation, depth and normal tasks: one network per task ("Single-Task") and one
network shared by all tasks with a head per task ("Shared Bottom", hard parameter sharing),
and with two soft-sharing architectures among its other rows: "Cross-Stitch" (Misra et al.,
CVPR 2016) and "MTAN" (Liu et al., CVPR 2019).  This module trains them on the same data with
the shared training loop -- the shared-bottom network with three loss balancers (equal
weights, uncertainty weighting, PCGrad), then each configured architecture with equal weights
-- and returns paper D's two table layouts, as means (and stds) over seeds:

* Table 11: every metric of every task, plus parameter counts;
* Table 2: relative performance Δ per task and Δ_T (Eq. 10-11) against the single-task row,
  and parameters relative to the shared-bottom network.

Choices (the paper trains its own VGG-16-like network; these baselines use the MTAN SegNet,
the common backbone of papers C and D's NYU-v2 comparisons): each single-task network is the
same encoder-decoder as the shared one with one head, trained with the same schedule; the
shared-bottom row compared with paper D is the equal-weight one (the paper's baseline).  The
cross-stitch and MTAN networks (:mod:`mtlrepro.models.cross_stitch`, :mod:`mtlrepro.models.mtan`)
are built on the same SegNet widths and heads and trained with equal weights.

Every network of a seed is one job of that seed's run unit (:mod:`.units`: one JSON file per
seed, DVC matrix stage ``baselines_networks``); each job seeds itself, so adding or removing a
network leaves the other rows' numbers unchanged.  A Δ of a seed is measured against the
single-task networks of the same seed (paired), and the tables give its mean and sample std
over seeds.
"""

from __future__ import annotations

import base64
import statistics
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
from mtlrepro.train import LR_SCHEDULES

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
STORED_DTYPES: dict[bool, torch.dtype] = {True: torch.float16, False: torch.int16}
"""Whether a prediction is floating -> the dtype it is stored in (:func:`encode_tensor`): the
figure needs no more (class maps are small integers; depth and normals are drawn as colours)."""


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
        seeds: seeds of data order, initialisation and PCGrad's task order; every network is
            trained once per seed, and the tables report mean and std over seeds.
        threads: torch CPU threads per training process (``None``: leave torch's default).
        workers: processes training a seed's networks in parallel (numbers do not depend on it).
        figure_samples: test images shown in the sample-predictions figure (first seed's
            networks).
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
    seeds: tuple[int, ...] = (0, 1, 2)
    threads: int | None = None
    workers: int = 1
    figure_samples: int = 2

    @property
    def figure_seed(self) -> int:
        """The seed whose networks predict the figure's samples: the first."""
        return self.seeds[0]

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
        if not self.seeds:
            raise ConfigError("BaselinesConfig.seeds must hold at least one seed")
        for seed in self.seeds:
            check_range("BaselinesConfig.seeds", seed, 0, integer=True)
        check_distinct("BaselinesConfig.seeds", self.seeds)
        names = ("epochs", "batch_size", "lr_step_size", "eval_every", "workers", "figure_samples")
        for name in names:
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
        "seeds": (0,),
    },
    # minutes on 2 CPU cores (see README: measured time of the units); one thread per process
    # and two processes per seed: the thread default that holds up beside a busy process
    # (results/benchmarks/threads.csv)
    "cpu": {
        "epochs": 8,
        "batch_size": 16,
        "lr": 2e-3,
        "lr_schedule": "step",
        "lr_step_size": 6,
        "lr_factor": 0.3,
        "eval_every": 2,
        "threads": 1,
        "workers": 2,
    },
    # MTAN's SegNet on NYU-v2 with paper C's schedule (batch 8, 200 epochs, lr halved at 150)
    "paper": {"dataset": "nyuv2"},
}


def baselines_config(profile: str, **overrides: Any) -> BaselinesConfig:
    """The profile's preset with ``overrides`` (``None`` values are ignored) applied; messages
    name parameters as ``params.yaml`` does (``baselines.epochs``)."""
    given = {k: v for k, v in overrides.items() if v is not None}
    return build_config(BaselinesConfig, PRESETS, profile, given, section=SECTION)


@dataclass(frozen=True)
class Network:
    """One network of the baselines: a job of every seed's unit.

    Attributes:
        row: the table row it contributes to (``Single-Task``, ``Shared Bottom (<balancer>)``,
            ``Cross-Stitch`` or ``MTAN``).
        slug: its dvclive folder name (``single-depth``, ``shared-equal``, ``mtan``).
        tasks: the tasks it learns.
        balancer: its loss balancer.
        architecture: its registered model name.
    """

    row: str
    slug: str
    tasks: tuple[str, ...]
    balancer: str
    architecture: str


def networks(config: BaselinesConfig) -> list[Network]:
    """The networks of one seed in table order: one single-task network per task, the shared
    bottom with each balancer, then each architecture (equal weights)."""
    plan = [Network(SINGLE_TASK, "single-" + t, (t,), "equal", "segnet") for t in config.tasks]
    plan += [
        Network(shared_row(b), "shared-" + b, config.tasks, b, "segnet") for b in config.balancers
    ]
    plan += [
        Network(ARCHITECTURE_ROWS[a], a, config.tasks, "equal", a) for a in config.architectures
    ]
    return plan


@dataclass
class RunResult:
    """One trained network of one seed.

    Attributes:
        row: table row it contributes to (see :class:`Network`).
        tasks: tasks the network learns.
        parameters: its parameter count (heads included).
        history: the training loop's tidy history with a ``run`` column (the row name).
        test: task -> metric -> value on the test split.
        predictions: task -> displayable prediction on the figure's test images (the first
            seed's networks only; empty for the others).
        seed: the seed it was trained with.
    """

    row: str
    tasks: tuple[str, ...]
    parameters: int
    history: pd.DataFrame
    test: dict[str, dict[str, float]]
    predictions: dict[str, torch.Tensor]
    seed: int = 0


@dataclass
class BaselinesResult:
    """Everything the notebook shows: configuration, runs of every seed and the figure's test
    samples."""

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
    def seeds(self) -> list[int]:
        """The seeds of the runs, in the order they first appear."""
        return list(dict.fromkeys(run.seed for run in self.runs))

    @property
    def rows(self) -> list[str]:
        """Table rows in order: single-task first, then each shared-bottom balancer, then each
        architecture."""
        return list(dict.fromkeys(run.row for run in self.runs))

    def row_scores(self, row: str, seed: int | None = None) -> dict[str, dict[str, float]]:
        """Task -> metric -> test value of one row (single-task rows gather their networks):
        of one seed, or with ``seed=None`` the mean over seeds."""
        if seed is not None:
            return {
                task: run.test[task]
                for run in self.runs
                if run.row == row and run.seed == seed
                for task in run.tasks
            }
        per_seed = [self.row_scores(row, s) for s in self.seeds]
        return {
            task: {m: statistics.fmean(s[task][m] for s in per_seed) for m in metrics}
            for task, metrics in per_seed[0].items()
        }

    def row_parameters(self, row: str) -> int:
        """Parameters of a row: the sum over its networks (of one seed; all seeds build the
        same networks)."""
        first = self.seeds[0]
        return sum(run.parameters for run in self.runs if run.row == row and run.seed == first)

    @property
    def shared_parameters(self) -> int:
        """Parameters of the shared-bottom network (the unit of paper D's "# of Param")."""
        shared = {shared_row(b) for b in self.config.balancers}
        return next(run.parameters for run in self.runs if run.row in shared)


def shared_row(balancer: str) -> str:
    """Row name of the shared-bottom network trained with ``balancer``."""
    return f"{SHARED_BOTTOM} ({BALANCER_LABELS[balancer]})"


def splits(config: BaselinesConfig) -> tuple[Any, Any, Any]:
    """The training, validation and test splits of the study's data."""
    data_overrides: dict[str, Any] = {"tasks": config.tasks}
    if config.n_train is not None:
        data_overrides["n_train"] = config.n_train
    return (
        get_dataset(config.dataset, "train", config.profile, **data_overrides),
        get_dataset(config.dataset, "val", config.profile, tasks=config.tasks),
        get_dataset(config.dataset, "test", config.profile, tasks=config.tasks),
    )


def sample_batch(config: BaselinesConfig, test_set: Any) -> dict[str, torch.Tensor]:
    """The test images (and targets) of the sample-predictions figure."""
    return test_set.batch(torch.arange(min(config.figure_samples, len(test_set))))


def encode_tensor(tensor: torch.Tensor) -> dict[str, Any]:
    """A tensor as a compact JSON-able record: dtype (:data:`STORED_DTYPES`), shape and its
    bytes in base64 (:func:`decode_tensor` reverses it)."""
    stored = tensor.detach().cpu().to(STORED_DTYPES[tensor.is_floating_point()]).contiguous()
    data = base64.b64encode(stored.numpy().tobytes()).decode("ascii")
    return {"dtype": str(stored.dtype).removeprefix("torch."), "shape": list(stored.shape),
            "data": data}


def decode_tensor(record: Mapping[str, Any]) -> torch.Tensor:
    """The tensor of an :func:`encode_tensor` record, as float32 or int64."""
    dtype = getattr(torch, record["dtype"])
    raw = bytearray(base64.b64decode(record["data"]))
    tensor = torch.frombuffer(raw, dtype=dtype).reshape(record["shape"])
    return tensor.float() if tensor.is_floating_point() else tensor.long()


def train_network_record(
    network: Network, seed: int, config: BaselinesConfig, log_dir: str | Path | None = None
) -> dict[str, Any]:
    """Build (registered model at the profile's size), train and test one network, seeded with
    ``seed`` right before it is built (so the single-task and shared-bottom trunks of a seed
    start identical).

    Args:
        network: the network.
        seed: seed of initialisation, data order and PCGrad's task order.
        config: the study settings.
        log_dir: folder of the seed's dvclive logs (the network logs into ``<slug>/``), or
            ``None``.

    Returns:
        A JSON-able record: ``row``, ``tasks``, ``parameters``, ``test`` (task -> metric ->
        value), ``history`` (the loop's tidy history, as columns) and ``predictions`` (task ->
        prediction on the figure's images, :func:`encode_tensor`-ed; the networks of
        ``config.figure_seed`` only, else ``{}``).
    """
    train_set, val_set, test_set = splits(config)
    specs = {t: train_set.task_specs[t] for t in network.tasks}
    train_config = train_config_for(
        config,
        seed=seed,
        progress=False,
        log_dir=None if log_dir is None else str(Path(log_dir) / network.slug),
    )
    trained = train_network(
        lambda: create_model(network.architecture, list(specs.values()), profile=config.profile),
        specs,
        create_balancer(network.balancer, network.tasks),
        train_set,
        val_set,
        test_set,
        train_config,
    )
    predictions: dict[str, Any] = {}
    if seed == config.figure_seed:
        model = trained.model.eval()
        with torch.no_grad():
            images = sample_batch(config, test_set)["image"]
            raw = model(images.to(next(model.parameters()).device))
        for task in network.tasks:
            predictions[task] = encode_tensor(trained.tasks[task].predict(raw[task]).cpu())
    history = trained.history
    return {
        "row": network.row,
        "tasks": list(network.tasks),
        "parameters": trained.parameters,
        "test": {t: {m: float(v) for m, v in s.items()} for t, s in trained.test.items()},
        "history": {c: history[c].tolist() for c in history.columns},
        "predictions": predictions,
    }


def result_from_runs(config: BaselinesConfig, runs: Sequence[Mapping[str, Any]]) -> BaselinesResult:
    """The notebook's result from the units' records (:func:`.units.run_study`).

    Args:
        config: the study settings.
        runs: one record per network and seed (with ``seed``), as
            :func:`train_network_record` returns them.
    """
    _, _, test_set = splits(config)
    samples = sample_batch(config, test_set)
    order = {network.row: i for i, network in enumerate(networks(config))}
    result = BaselinesResult(
        config,
        {name: test_set.task_specs[name] for name in config.tasks},
        sample_images=samples["image"],
        sample_targets={t: samples[t] for t in config.tasks},
    )
    ranked = sorted(runs, key=lambda r: (config.seeds.index(r["seed"]), order[r["row"]]))
    for record in ranked:
        result.runs.append(
            RunResult(
                record["row"],
                tuple(record["tasks"]),
                record["parameters"],
                pd.DataFrame(record["history"]).assign(run=record["row"]),
                record["test"],
                {t: decode_tensor(p) for t, p in record["predictions"].items()},
                record["seed"],
            )
        )
    return result


# --------------------------------------------------------------------------------------------
# Tables (paper D's layouts)
# --------------------------------------------------------------------------------------------
def _std(values: Sequence[float]) -> float:
    """Sample std over seeds (0 for one seed)."""
    return statistics.stdev(values) if len(values) > 1 else 0.0


def metrics_table(result: BaselinesResult) -> pd.DataFrame:
    """Paper D's Table 11 layout: every test metric per row (mean over seeds, and its std in
    ``<task>/<metric>_std``), and parameter counts.

    Columns ``<task>/<metric>`` in task order, then ``params_M`` (millions) and
    ``params_rel`` (relative to the shared-bottom network, as paper D prints; every balancer
    trains the same network).
    """
    records = []
    for row in result.rows:
        per_seed = [result.row_scores(row, seed) for seed in result.seeds]
        record: dict[str, Any] = {"method": row}
        for task in result.config.tasks:
            for metric in per_seed[0][task]:
                values = [scores[task][metric] for scores in per_seed]
                record[f"{task}/{metric}"] = statistics.fmean(values)
                record[f"{task}/{metric}_std"] = _std(values)
        params = result.row_parameters(row)
        record["params_M"] = params / 1e6
        record["params_rel"] = params / result.shared_parameters
        records.append(record)
    return pd.DataFrame.from_records(records)


def _delta_metrics(result: BaselinesResult) -> tuple[dict[str, list[str]], list[str]]:
    """The metrics each task's Δ averages (:data:`PAPER_D_METRICS`, less those whose
    single-task value is exactly 0 in some seed), and the excluded ones (``task/metric``)."""
    references = [result.row_scores(SINGLE_TASK, seed) for seed in result.seeds]
    first = references[0]
    used = {
        task: [
            m
            for m in PAPER_D_METRICS.get(task, tuple(values))
            if all(ref[task][m] != 0 for ref in references)
        ]
        for task, values in first.items()
    }
    excluded = sorted(
        f"{task}/{m}"
        for task, values in first.items()
        for m in values
        if m in PAPER_D_METRICS.get(task, tuple(values)) and m not in used[task]
    )
    return used, excluded


def _task_order(result: BaselinesResult) -> list[str]:
    """Tasks in paper D's column order (sem, norm, dep), then any others."""
    order = [t for t in PAPER_TASK_ORDER if t in result.config.tasks]
    return order + [t for t in result.config.tasks if t not in order]


def seed_deltas(result: BaselinesResult) -> pd.DataFrame:
    """Δ per task and Δ_T (Eq. 10-11, in %) of every row and seed against the single-task
    networks of the same seed: columns ``method``, ``seed``, ``delta_<task>``, ``delta_all``.

    A metric whose single-task value is exactly 0 in some seed has no relative change; it is
    left out of every row (see :func:`delta_table`).
    """
    used, _ = _delta_metrics(result)
    records = []
    for seed in result.seeds:
        reference = result.row_scores(SINGLE_TASK, seed)
        reference = {t: {m: v for m, v in s.items() if m in used[t]} for t, s in reference.items()}
        for row in result.rows:
            scores = {
                t: {m: v for m, v in s.items() if m in used[t]}
                for t, s in result.row_scores(row, seed).items()
            }
            deltas = relative_performance(scores, reference, LOWER_IS_BETTER)
            record: dict[str, Any] = {"method": row, "seed": seed}
            record.update({f"delta_{task}": deltas[task] for task in _task_order(result)})
            record["delta_all"] = deltas["all"]
            records.append(record)
    return pd.DataFrame.from_records(records)


def delta_table(result: BaselinesResult) -> pd.DataFrame:
    """Paper D's Table 2 layout: Δ per task and Δ_T (Eq. 10-11, in %) against Single-Task,
    as the mean over seeds of :func:`seed_deltas` (each seed against its own single-task
    networks) with the std in ``<column>_std``.

    A task's Δ averages the metrics paper D reports for it (:data:`PAPER_D_METRICS`; all of
    the task's metrics for other tasks).  A metric whose single-task value is exactly 0 has no
    relative change; it is left out of every row and named in the ``excluded`` column (this
    happens only for untrained smoke-profile networks).  Parameters are relative to the
    shared-bottom network.
    """
    _, excluded = _delta_metrics(result)
    per_seed = seed_deltas(result)
    columns = [f"delta_{task}" for task in _task_order(result)] + ["delta_all"]
    records = []
    for row in result.rows:
        part = per_seed[per_seed["method"] == row]
        record: dict[str, Any] = {"method": row}
        for column in columns:
            record[column] = float(part[column].mean())
            record[f"{column}_std"] = _std(part[column].tolist())
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
    """All runs' histories in one tidy frame (column ``run`` tells the rows apart, ``seed``
    the seeds; a plot averages a row's seeds per epoch)."""
    return pd.concat(
        [run.history.assign(seed=run.seed) for run in result.runs], ignore_index=True
    )


def sample_predictions(result: BaselinesResult) -> dict[str, dict[str, torch.Tensor]]:
    """Row -> task -> prediction on the figure's test images (the first seed's networks;
    single-task rows gathered)."""
    out: dict[str, dict[str, torch.Tensor]] = {}
    for run in result.runs:
        if run.predictions:
            out.setdefault(run.row, {}).update(run.predictions)
    return out


# --------------------------------------------------------------------------------------------
# metrics.json
# --------------------------------------------------------------------------------------------
def summary_metrics(result: BaselinesResult) -> dict[str, Any]:
    """Nested numbers for ``metrics.json`` (read by ``dvc metrics show``): means over seeds,
    with each Δ's std."""
    deltas = delta_table(result).set_index("method")
    return {
        "profile": result.profile,
        "config": {
            k: list(v) if isinstance(v, tuple) else v for k, v in asdict(result.config).items()
        },
        "seeds": result.seeds,
        "delta": {
            row: deltas.loc[row].drop(["params_rel", "excluded"]).to_dict() for row in deltas.index
        },
        "params": {row: result.row_parameters(row) for row in result.rows},
        "test": {row: result.row_scores(row) for row in result.rows},
    }
