"""Paper B's independent training runs: one *unit* = (kind, dataset, λ, seed), one JSON file.

R. Upadhyay et al., "Less is More -- Towards parsimonious multi-task models using structured
sparsity".  Every network is paper B's (:mod:`mtlrepro.models.deeplab`): a dilated ResNet
shared by all tasks, DeepLab-v3 ASPP heads for dense tasks and conv + two-FC heads for the
binary attributes, trained with uncertainty weighting (Eq. 2) and Adam followed by the proximal
step of the channel-wise group lasso (Eq. 4-6, :mod:`mtlrepro.methods.group_sparsity`), with the
optimiser settings of the authors' code where the paper is silent
(:data:`~mtlrepro.methods.group_sparsity.AUTHORS_OPTIMISER`).

**Units.**  The study is a grid of units, each trained by :func:`run_unit` and saved as one
JSON file (:func:`unit_path`) with the settings it was made with.  The DVC pipeline runs every
unit as its own stage (``dvc.yaml``'s matrix stages over ``params.yaml``'s lists, through
``python -m mtlrepro.runs group_sparsity KIND DATASET LAMBDA SEED``, :func:`run_cli_unit`); the
notebook (:func:`run_study`) reads them and trains only the units whose file
is missing or was made with other settings.  Unit kinds (:data:`UNIT_KINDS`):

* ``table`` -- every single- and multi-task combination of the dataset's three tasks, at each
  λ of ``lambdas`` (Tables 1 and 2);
* ``sweep`` -- the all-task combination of ``sweep_dataset`` at the extra λ of
  ``sweep_lambdas`` (Fig. 3 (a)-(d) use these and the table λ);
* ``l1`` -- the multi-task combinations of ``sweep_dataset`` with the unstructured L1 prox at
  ``l1_lambda`` (Table 3);
* ``ablation`` -- the all-task combination of ``sweep_dataset`` at ``ablation_lambda`` with
  each setting of the authors' optimiser undone in turn (:data:`ABLATION_VARIANTS`).

Every unit exists once per *start* of ``starts`` (:data:`STARTS`): the backbone from the
embedded pretraining (``pretrained``, :mod:`mtlrepro.pretraining`, the cpu default and the
paper's setting) or from scratch (``scratch``); the first start is the study's, the others
decide the claims again.

**Choices** (paper B leaves them open, or the cpu profile needs them):

* metrics on the *test* split after the last epoch (no model selection);
* depth is trained with MSE (paper B, §4), the others with their usual losses; the two binary
  attributes use 2-way softmax cross-entropy, which equals BCE on the logit difference;
* the whole network shares one Adam optimiser and learning rate, in the authors' parameter
  groups (backbone: ε = 1e-6, decoupled weight decay 0.1; heads: L2 0.01), and the authors'
  form of the uncertainty weighting (:class:`~mtlrepro.methods.group_sparsity.AuthorsOptimiser`,
  :func:`~mtlrepro.methods.group_sparsity.uncertainty_balancer`);
* the L1 prox is the plain soft-threshold with threshold lr·λ (the group prox is in Adam's
  metric by default), so ``l1_lambda`` is on its own scale and chosen separately.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from mtlrepro.config import (
    DEFAULT_PROFILE,
    ConfigError,
    build_config,
    check_choice,
    check_distinct,
    check_profile,
    check_range,
)
from mtlrepro.data import get_dataset
from mtlrepro.methods.group_sparsity import (
    AUTHORS_OPTIMISER,
    BEFORE_AUTHORS,
    PROXES,
    AuthorsOptimiser,
    GroupSparsityProx,
    OptimiserSettings,
    sparsity_stats,
    uncertainty_balancer,
    zero_group_mask,
)
from mtlrepro.models import count_parameters, create_model
from mtlrepro.pretraining import (
    DEEPLAB_BACKBONE,
    PRETRAINED_PROFILES,
    START_TITLES,
    load_pretrained,
)
from mtlrepro.recipe import train_config_for, train_network
from mtlrepro.runs import load_or_train, map_jobs

SECTION = "group_sparsity"
"""The ``params.yaml`` section of paper B (its notebook's name without the order prefix)."""
NOTEBOOK = "02_group_sparsity"
"""Paper B's notebook (its runs go to ``results/runs/<NOTEBOOK>/``)."""
UNIT_KINDS: tuple[str, ...] = ("table", "sweep", "l1", "ablation")
"""Kinds of independent run units (see the module doc)."""
DATASET_TASKS: dict[str, tuple[str, ...]] = {
    "scenes": ("segmentation", "depth", "normal"),
    "nyuv2": ("segmentation", "depth", "normal"),
    "faces": ("segmentation", "male", "smile"),
    "celebamask": ("segmentation", "male", "smile"),
}
"""Dataset -> its three tasks in paper B's table order (NYU-v2-like and CelebAMask-HQ-like)."""
BATCH_SIZE: dict[str, int] = {"scenes": 16, "nyuv2": 16, "faces": 32, "celebamask": 32}
"""Paper B's batch sizes (§4: 16 for NYU-v2, 32 for CelebAMask-HQ)."""
STARTS: tuple[str, ...] = ("pretrained", "scratch")
"""Where a unit's backbone starts: the embedded pretraining's weights, or random."""
START_NAMES: dict[str, str] = {"scratch": START_TITLES[0], "pretrained": START_TITLES[1]}
"""Start -> its name in the claims tables (as paper A's)."""
AUTHORS_VARIANT = "authors' settings"
"""The optimiser ablation's reference: the authors' settings, the default of every unit."""
ABLATION_VARIANTS: dict[str, OptimiserSettings] = {
    AUTHORS_VARIANT: AUTHORS_OPTIMISER,
    "bias-corrected metric, ε = 1e-8": dataclasses.replace(
        AUTHORS_OPTIMISER, metric="bias_corrected", backbone_eps=1e-8
    ),
    "no weight decay": dataclasses.replace(
        AUTHORS_OPTIMISER, backbone_weight_decay=0.0, head_weight_decay=0.0
    ),
    "Kendall's weighting (½·e^(−s)·L + ½·s, s₀ = 0)": dataclasses.replace(
        AUTHORS_OPTIMISER, uncertainty="kendall"
    ),
    "all three undone (this project before)": BEFORE_AUTHORS,
}
"""The ablation unit's variants of the optimiser (issue: paper B's optimiser as its authors ran
it): the authors' settings, each of them undone in turn, and all undone."""


@dataclass(frozen=True)
class SparsityStudyConfig:
    """Settings of paper B's experiments (presets per profile in :data:`PRESETS`).

    Attributes:
        profile: ``smoke``, ``cpu`` or ``paper``: the data and model presets.
        datasets: datasets of Tables 1-2 (``scenes``/``nyuv2`` and ``faces``/``celebamask``).
        lambdas: λ values of the tables (0 = dense); every combination is trained at each.
        sweep_dataset: dataset of Fig. 3 and Table 3.
        sweep_lambdas: extra λ values of Fig. 3 (the all-task combination only).
        l1_lambda: λ of the unstructured L1 prox (Table 3).
        ablation_lambda: λ of the optimiser ablation (:data:`ABLATION_VARIANTS`).
        seeds: seeds; tables report mean ± std over them (paper: 5).
        starts: the backbone's starts (:data:`STARTS`), the study's first: every unit runs
            once per start.
        prox: proximal operator of the group lasso (``weighted_group`` = Adam's metric, as
            the authors' code; ``group`` = Eq. 5 as printed).
        epochs: training epochs.
        lr: Adam learning rate (paper: 1e-4).
        n_train: training images (``None``: the dataset preset's).
        latency_repeats: timed forward passes per latency measurement (Fig. 3 (d)).
        threads: torch CPU threads per training process (``None``: torch's default).
        workers: processes training a unit's combinations in parallel (numbers do not depend
            on it; on 2 cores, 2 workers of 1 thread beat 1 worker of 2 threads).
    """

    profile: str = DEFAULT_PROFILE
    datasets: tuple[str, ...] = ("scenes", "faces")
    lambdas: tuple[float, ...] = (0.0, 1e-6, 1e-5)
    sweep_dataset: str = "scenes"
    sweep_lambdas: tuple[float, ...] = (1e-7, 1e-4, 1e-3, 1e-2)
    l1_lambda: float = 1e-5
    ablation_lambda: float = 1e-6
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    starts: tuple[str, ...] = ("scratch",)
    prox: str = "weighted_group"
    epochs: int = 100
    lr: float = 1e-4
    n_train: int | None = None
    latency_repeats: int = 20
    threads: int | None = None
    workers: int = 1

    def __post_init__(self) -> None:
        """Check every field; messages name it ``SparsityStudyConfig.<field>``
        (``group_sparsity.<field>`` through :func:`study_config`)."""
        check_profile(self.profile)
        if not self.datasets:
            raise ConfigError("SparsityStudyConfig.datasets must name at least one dataset")
        for key, names in (("datasets", self.datasets), ("sweep_dataset", (self.sweep_dataset,))):
            for name in names:
                check_choice(
                    "dataset", name, tuple(DATASET_TASKS), name=f"SparsityStudyConfig.{key}"
                )
        check_distinct("SparsityStudyConfig.datasets", self.datasets)
        for key in ("lambdas", "sweep_lambdas"):
            for lam in getattr(self, key):
                parse_lambda(lam, f"SparsityStudyConfig.{key}")
            check_distinct(f"SparsityStudyConfig.{key}", getattr(self, key), lambda_label)
        parse_lambda(self.l1_lambda, "SparsityStudyConfig.l1_lambda")
        parse_lambda(self.ablation_lambda, "SparsityStudyConfig.ablation_lambda")
        if 0.0 not in self.lambdas or len(self.lambdas) < 2:
            raise ConfigError(
                f"SparsityStudyConfig.lambdas must hold 0 and a sparse value; got {self.lambdas}"
            )
        repeated = sorted(set(self.sweep_lambdas) & set(self.lambdas))
        if repeated:
            raise ConfigError(
                "SparsityStudyConfig.sweep_lambdas must not repeat a value of lambdas; both hold "
                f"{lambda_label(repeated[0])}"
            )
        if not self.seeds:
            raise ConfigError("SparsityStudyConfig.seeds must hold at least one seed")
        for seed in self.seeds:
            check_range("SparsityStudyConfig.seeds", seed, 0, integer=True)
        check_distinct("SparsityStudyConfig.seeds", self.seeds)
        if not self.starts:
            raise ConfigError("SparsityStudyConfig.starts must hold at least one start")
        for start in self.starts:
            check_choice("start", start, STARTS, name="SparsityStudyConfig.starts")
        check_distinct("SparsityStudyConfig.starts", self.starts)
        if "pretrained" in self.starts and self.profile not in PRETRAINED_PROFILES:
            raise ConfigError(
                f"SparsityStudyConfig.starts: profile {self.profile!r} has no embedded "
                "pretraining; use starts: [scratch]"
            )
        check_choice("prox", self.prox, PROXES[:2], name="SparsityStudyConfig.prox")
        check_range("SparsityStudyConfig.epochs", self.epochs, 1, integer=True)
        check_range("SparsityStudyConfig.lr", self.lr, 0.0, low_inclusive=False)
        for name in ("n_train", "threads"):
            if getattr(self, name) is not None:
                check_range(f"SparsityStudyConfig.{name}", getattr(self, name), 1, integer=True)
        for name in ("latency_repeats", "workers"):
            check_range(f"SparsityStudyConfig.{name}", getattr(self, name), 1, integer=True)

    @property
    def sweep_all_lambdas(self) -> tuple[float, ...]:
        """Every λ of Fig. 3, sorted: the table λ and the sweep's own."""
        return tuple(sorted({*self.lambdas, *self.sweep_lambdas}))


PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {
        "lambdas": (0.0, 0.3),
        "sweep_lambdas": (1.0,),
        "l1_lambda": 3.0,
        "ablation_lambda": 0.3,
        "seeds": (0,),
        "epochs": 2,
        "lr": 1e-3,
        "latency_repeats": 2,
    },
    "cpu": {
        "lambdas": (0.0, 1e-3, 3e-3),
        "sweep_lambdas": (3e-4, 1e-2, 1e-1),
        "l1_lambda": 0.7,
        "ablation_lambda": 3e-3,
        "seeds": (0, 1),
        "starts": ("pretrained", "scratch"),
        "epochs": 6,
        "lr": 1e-3,
        "n_train": 480,
        "threads": 1,
        "workers": 2,
    },
    "paper": {"datasets": ("nyuv2", "celebamask"), "sweep_dataset": "nyuv2"},
}
"""Per-profile overrides of :class:`SparsityStudyConfig` (the paper profile: its defaults)."""


def study_config(profile: str, **overrides: Any) -> SparsityStudyConfig:
    """The profile's preset with ``overrides`` applied (``None`` values keep the preset).

    λ values may be given as strings (``"1e-3"``, as ``params.yaml`` writes them); lists become
    tuples.  Messages name parameters as ``params.yaml`` does (``group_sparsity.lambdas``).

    Args:
        profile: ``smoke``, ``cpu`` or ``paper``.
        **overrides: :class:`SparsityStudyConfig` fields.
    """
    given: dict[str, Any] = {}
    for key, value in overrides.items():
        if value is None:
            continue
        if key in ("lambdas", "sweep_lambdas") and isinstance(value, list | tuple):
            value = tuple(parse_lambda(v, f"{SECTION}.{key}") for v in value)
        elif key in ("l1_lambda", "ablation_lambda"):
            value = parse_lambda(value, f"{SECTION}.{key}")
        elif isinstance(value, list):
            value = tuple(value)
        given[key] = value
    return build_config(SparsityStudyConfig, PRESETS, profile, given, section=SECTION)


def parse_lambda(value: str | float, name: str = "lambda") -> float:
    """A λ from ``params.yaml`` (a string such as ``"1e-3"`` or a number) as a finite float >= 0.

    Args:
        value: the λ.
        name: the parameter holding it, for the message (e.g. ``"group_sparsity.lambdas"``).
    """
    try:
        lam = math.nan if isinstance(value, bool) else float(value)
    except (TypeError, ValueError):
        lam = math.nan
    if not (math.isfinite(lam) and lam >= 0):
        raise ConfigError(f"{name}: λ must be a finite number >= 0 such as 1e-3; got {value!r}")
    return lam


def lambda_label(lam: float) -> str:
    """The canonical text of λ in file and stage names: ``0``, ``1e-3``, ``2.5e-4``, ``1``.

    Args:
        lam: λ >= 0.
    """
    if lam == 0:
        return "0"
    mantissa, exponent = f"{lam:.6e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    return mantissa if int(exponent) == 0 else f"{mantissa}e{int(exponent)}"


def combinations(tasks: Sequence[str]) -> list[tuple[str, ...]]:
    """Every non-empty task subset in paper B's table order: singles, pairs, ..., all.

    Args:
        tasks: the dataset's tasks in table order.
    """
    return [c for k in range(1, len(tasks) + 1) for c in itertools.combinations(tasks, k)]


def unit_combinations(kind: str, dataset: str) -> list[tuple[str, ...]]:
    """The task combinations one unit trains (see the module doc).

    Args:
        kind: one of :data:`UNIT_KINDS`.
        dataset: the unit's dataset.
    """
    check_choice("unit kind", kind, UNIT_KINDS)
    combos = combinations(DATASET_TASKS[dataset])
    if kind == "table":
        return combos
    if kind in ("sweep", "ablation"):
        return [combos[-1]]
    return [c for c in combos if len(c) > 1]


def unit_prox(kind: str, config: SparsityStudyConfig) -> str:
    """The proximal operator a unit of ``kind`` trains with.

    Args:
        kind: one of :data:`UNIT_KINDS`.
        config: the study settings.
    """
    return "l1" if kind == "l1" else config.prox


def unit_path(
    runs_dir: str | Path, kind: str, dataset: str, lam: float, seed: int, start: str = "scratch"
) -> Path:
    """The JSON file of one unit:
    ``<runs_dir>/<kind>/<dataset>-lam<λ label>-seed<seed>-<start>.json``.

    Args:
        runs_dir: the runs folder (:func:`runs_dir_for`).
        kind: one of :data:`UNIT_KINDS`.
        dataset: the unit's dataset.
        lam: the unit's λ.
        seed: the unit's seed.
        start: one of :data:`STARTS`.
    """
    check_choice("unit kind", kind, UNIT_KINDS)
    check_choice("start", start, STARTS)
    return Path(runs_dir) / kind / f"{dataset}-lam{lambda_label(lam)}-seed{seed}-{start}.json"


def unit_settings(
    kind: str,
    dataset: str,
    lam: float,
    seed: int,
    config: SparsityStudyConfig,
    start: str = "scratch",
) -> dict[str, Any]:
    """Everything a unit's numbers depend on (stored in its file; a mismatch means re-run).

    Args:
        kind: one of :data:`UNIT_KINDS`.
        dataset: the unit's dataset.
        lam: the unit's λ.
        seed: the unit's seed.
        config: the study settings (with the profile).
        start: one of :data:`STARTS`.
    """
    return {
        "kind": kind,
        "start": start,
        "dataset": dataset,
        "lam": lam,
        "seed": seed,
        "profile": config.profile,
        "prox": unit_prox(kind, config),
        "epochs": config.epochs,
        "lr": config.lr,
        "n_train": config.n_train,
        "threads": config.threads,
        "batch_size": BATCH_SIZE[dataset],
        "optimisers": {label: dataclasses.asdict(o) for label, o in unit_variants(kind).items()},
    }


def unit_variants(kind: str) -> dict[str, OptimiserSettings]:
    """The optimiser settings a unit of ``kind`` trains its combinations with, by label: every
    one of :data:`ABLATION_VARIANTS` for ``ablation``, else only the authors'.

    Args:
        kind: one of :data:`UNIT_KINDS`.
    """
    check_choice("unit kind", kind, UNIT_KINDS)
    if kind == "ablation":
        return dict(ABLATION_VARIANTS)
    return {AUTHORS_VARIANT: AUTHORS_OPTIMISER}


# --------------------------------------------------------------------------------------------
# Training one combination, one unit
# --------------------------------------------------------------------------------------------
def _split(dataset: str, split: str, profile: str, tasks: tuple[str, ...], n_train: int | None):
    """One split of ``dataset`` restricted to ``tasks`` (``n_train`` caps the training split)."""
    overrides: dict[str, Any] = {"tasks": tasks}
    if split == "train" and n_train is not None:
        overrides["n_train"] = n_train
    return get_dataset(dataset, split, profile, **overrides)


def train_combination(
    dataset: str,
    tasks: tuple[str, ...],
    lam: float,
    prox: str,
    seed: int,
    config: SparsityStudyConfig,
    optimiser: OptimiserSettings = AUTHORS_OPTIMISER,
    start: str = "scratch",
) -> dict[str, Any]:
    """Train paper B's network on one task combination and describe the result.

    Args:
        dataset: the dataset.
        tasks: the combination's tasks.
        lam: λ of the prox (0: dense training).
        prox: ``group``, ``weighted_group`` or ``l1``.
        seed: seed of initialisation and data order.
        config: the study settings (profile, epochs, lr, n_train, threads).
        optimiser: the optimiser settings (the authors' by default).
        start: one of :data:`STARTS`: the backbone from the embedded pretraining or random.

    Returns:
        A JSON-able record: ``tasks``, ``test`` (task -> metric -> value), ``group_sparsity``
        and ``param_sparsity`` (%, final), ``history`` (per epoch, from epoch 0 = the
        initialisation), ``zero_groups`` (layer -> "0"/"1" string, 1 = zero group),
        ``layer_sparsity`` (layer -> final ``group_sparsity`` and ``param_sparsity`` in %),
        ``backbone_parameters``.
    """
    train_set = _split(dataset, "train", config.profile, tasks, config.n_train)
    test_set = _split(dataset, "test", config.profile, tasks, None)
    initial: list[pd.Series] = []

    def build_model() -> nn.Module:
        model = create_model("deeplab_resnet", train_set.task_specs, profile=config.profile)
        if start == "pretrained":
            load_pretrained(model.backbone, config.profile, DEEPLAB_BACKBONE)
        initial.append(sparsity_stats(model.backbone).iloc[-1])
        return model

    # No validation split: nothing is selected on it, and every number reported is a test one.
    trained = train_network(
        build_model,
        train_set.task_specs,
        uncertainty_balancer(tasks, optimiser.uncertainty),
        train_set,
        None,
        test_set,
        train_config_for(config, batch_size=BATCH_SIZE[dataset], seed=seed, progress=False),
        hooks=[AuthorsOptimiser(optimiser), GroupSparsityProx(lam, prox, metric=optimiser.metric)],
        losses={"depth": "mse"},
    )
    model, test = trained.model, trained.test
    layers = sparsity_stats(model.backbone)
    final = layers.iloc[-1]
    logged = trained.history[trained.history["metric"].isin(["group_sparsity", "param_sparsity"])]
    per_epoch = logged.pivot_table(index="epoch", columns="metric", values="value")
    history = [
        {
            "epoch": 0,
            "group_sparsity": float(initial[0]["group_sparsity"]),
            "param_sparsity": float(initial[0]["param_sparsity"]),
        },
        *(
            {
                "epoch": int(epoch),
                "group_sparsity": float(row["group_sparsity"]),
                "param_sparsity": float(row["param_sparsity"]),
            }
            for epoch, row in per_epoch.iterrows()
        ),
    ]
    masks = zero_group_mask(model.backbone)
    return {
        "tasks": list(tasks),
        "test": {t: {m: float(v) for m, v in scores.items()} for t, scores in test.items()},
        "group_sparsity": float(final["group_sparsity"]),
        "param_sparsity": float(final["param_sparsity"]),
        "history": history,
        "zero_groups": {
            name: "".join("1" if z else "0" for z in m.tolist()) for name, m in masks.items()
        },
        "layer_sparsity": {
            row["name"]: {
                "group_sparsity": float(row["group_sparsity"]),
                "param_sparsity": float(row["param_sparsity"]),
            }
            for _, row in layers.iloc[:-1].iterrows()
        },
        "backbone_parameters": count_parameters(model.backbone),
    }


def run_unit(
    kind: str,
    dataset: str,
    lam: float,
    seed: int,
    config: SparsityStudyConfig,
    runs_dir: str | Path,
    *,
    start: str = "scratch",
    progress: bool = True,
    retrain: bool = False,
) -> list[dict[str, Any]]:
    """One unit's runs: read from its file when it matches the settings, else trained and saved.

    Args:
        kind: one of :data:`UNIT_KINDS`.
        dataset: the dataset.
        lam: λ of the unit.
        seed: the seed.
        config: the study settings (with the profile).
        runs_dir: the runs folder (:func:`~mtlrepro.runs.runs_dir_for`).
        start: one of :data:`STARTS`.
        progress: show a progress bar over the unit's combinations.
        retrain: train and save even if a matching file exists (the DVC stages do: they run
            because the code changed, which the settings do not record).

    Returns:
        One record per combination and optimiser variant (see :func:`train_combination`) with
        the unit's settings (``kind``, ``start``, ``dataset``, ``lam``, ``seed``, ``prox``) and
        the ``variant``'s label (:func:`unit_variants`) added.
    """
    check_choice("dataset", dataset, tuple(DATASET_TASKS))
    parse_lambda(lam)
    check_range("seed", seed, 0, integer=True)
    check_choice("start", start, STARTS)
    settings = unit_settings(kind, dataset, lam, seed, config, start)
    variants = unit_variants(kind)

    def train() -> list[dict[str, Any]]:
        jobs = [
            (dataset, combo, lam, settings["prox"], seed, config, optimiser, start)
            for combo in unit_combinations(kind, dataset)
            for optimiser in variants.values()
        ]
        # fit sets the study's torch thread count in whichever process trains
        records = map_jobs(
            train_combination,
            jobs,
            workers=config.workers,
            desc=f"{kind} {dataset} λ={lambda_label(lam)} seed {seed} {start}",
            progress=progress,
        )
        labels = [label for _ in unit_combinations(kind, dataset) for label in variants]
        return [{**record, "variant": label} for record, label in zip(records, labels, strict=True)]

    path = unit_path(runs_dir, kind, dataset, lam, seed, start)
    runs = load_or_train(path, settings, train, retrain=retrain)
    keys = ("kind", "start", "dataset", "lam", "seed", "prox")
    return [{**{k: settings[k] for k in keys}, **run} for run in runs]


def study_units(config: SparsityStudyConfig) -> list[tuple[str, str, float, int, str]]:
    """Every unit of the study as ``(kind, dataset, λ, seed, start)``, in pipeline order.

    Args:
        config: the study settings.
    """
    return [(*unit, start) for start in config.starts for unit in _start_units(config)]


def _start_units(config: SparsityStudyConfig) -> list[tuple[str, str, float, int]]:
    """The units of one start as ``(kind, dataset, λ, seed)``."""
    units = [
        ("table", dataset, lam, seed)
        for dataset in config.datasets
        for lam in config.lambdas
        for seed in config.seeds
    ]
    units += [
        ("sweep", config.sweep_dataset, lam, s)
        for lam in config.sweep_lambdas
        for s in config.seeds
    ]
    units += [("l1", config.sweep_dataset, config.l1_lambda, s) for s in config.seeds]
    units += [("ablation", config.sweep_dataset, config.ablation_lambda, s) for s in config.seeds]
    return units


def run_study(
    config: SparsityStudyConfig, runs_dir: str | Path, *, progress: bool = True
) -> pd.DataFrame:
    """Every unit's runs (trained only where no matching unit file exists).

    Args:
        config: the study settings (with the profile).
        runs_dir: the runs folder (:func:`~mtlrepro.runs.runs_dir_for`).
        progress: show progress bars.

    Returns:
        One row per trained network: ``kind``, ``start``, ``dataset``, ``lam``, ``seed``,
        ``prox``, ``combo`` (task names joined by ``+``), and the record's fields.
    """
    # fit sets it for training; here it also holds when every unit is read from disk, so the
    # notebook's later timings (Fig. 3 (d)) run with the study's thread count either way
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    rows = [
        run
        for *unit, start in study_units(config)
        for run in run_unit(*unit, config, runs_dir, start=start, progress=progress)
    ]
    frame = pd.DataFrame(rows)
    frame.insert(6, "combo", frame["tasks"].map("+".join))
    return frame


def of_start(runs: pd.DataFrame, start: str) -> pd.DataFrame:
    """The runs of one start (:data:`STARTS`), for tables and claims of that start.

    Args:
        runs: :func:`run_study`'s frame.
        start: one of :data:`STARTS`.
    """
    check_choice("start", start, STARTS)
    part = runs[runs["start"] == start]
    if part.empty:
        starts = sorted(set(runs["start"]))
        raise ConfigError(f"no runs start {start!r}; the study's starts: {starts}")
    return part.reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# Command line (the DVC run stages, through python -m mtlrepro.runs)
# --------------------------------------------------------------------------------------------
UNIT_VALUES: tuple[str, ...] = ("DATASET", "LAMBDA", "SEED", "START")
"""The values of a unit on the command line: ``python -m mtlrepro.runs group_sparsity KIND
DATASET LAMBDA SEED START`` (λ written as in ``params.yaml``, e.g. ``1e-3``; START one of
:data:`STARTS`)."""


def run_cli_unit(
    kind: str, values: Sequence[str], params: dict[str, Any], runs_dir: Path, progress: bool
) -> Path:
    """Train one unit for :func:`mtlrepro.runs.main` with ``params.yaml``'s settings (top-level
    ``profile`` and the ``group_sparsity`` section, as the notebook gets them), always.

    Args:
        kind: one of :data:`UNIT_KINDS`.
        values: :data:`UNIT_VALUES` as given on the command line.
        params: the parameters from ``params.yaml``.
        runs_dir: the runs folder.
        progress: show a progress bar.

    Returns:
        The unit's file.
    """
    if len(values) != len(UNIT_VALUES):
        raise ConfigError(f"a {SECTION} unit takes {' '.join(UNIT_VALUES)}; got {list(values)}")
    dataset, lam_text, seed_text, start = values
    check_choice("argument start", start, STARTS)
    params = dict(params)
    profile = params.pop("profile")
    config = study_config(profile, **params)
    lam = parse_lambda(lam_text, "argument lam")
    if lambda_label(lam) != lam_text:
        raise ConfigError(f"write λ {lam_text!r} as {lambda_label(lam)!r} (file names use it)")
    try:
        seed = int(seed_text)
    except ValueError:
        raise ConfigError(f"argument seed: a seed is an integer >= 0; got {seed_text!r}") from None
    run_unit(
        kind, dataset, lam, seed, config, runs_dir, start=start, progress=progress, retrain=True
    )
    return unit_path(runs_dir, kind, dataset, lam, seed, start)


def unit_files(params: dict[str, Any], runs_dir: Path) -> list[Path]:
    """The file of every unit of the study ``params`` (from ``params.yaml``) describes: the
    outputs of the DVC run stages.

    Args:
        params: ``profile`` and the ``group_sparsity`` section.
        runs_dir: the runs folder.
    """
    params = dict(params)
    profile = params.pop("profile")
    params.pop("progress", None)
    config = study_config(profile, **params)
    return [unit_path(runs_dir, *unit) for unit in study_units(config)]
