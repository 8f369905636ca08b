"""Paper C's independent training runs: one *unit* = (kind, seed), one JSON file.

S. Ren & H. Shi, "Learning Compact Neural Networks with Deep Overparameterised Multitask
Learning".  Every network is a SegNet-family model of :mod:`mtlrepro.models` (SegNet as in
MTAN, SegNet-S with every width but the final layer's halved, cross-stitch, MTAN; at the paper
profile also DeepLabv3-ResNet50), over-parameterised by :mod:`mtlrepro.methods.overparam` and
trained on the ``scenes`` data (NYU-v2-like; ``nyuv2`` at the paper profile) with the equally
weighted sum of the task losses (Alg. 1's ``Σ α_i L_i`` with fixed ``α_i = 1``) and Adam.

**Units** (:data:`UNIT_KINDS`), each trained by :func:`run_unit` and saved as one file
(:func:`unit_path`); the DVC matrix stages ``overparam_single`` and ``overparam_multi`` run
every (kind, seed) through ``python -m mtlrepro.runs overparam KIND SEED``, the notebook reads
them:

* ``single`` -- Table 1 (single-task segmentation: baseline, matrix factorisation, RepVGG,
  ExpandNet, for SegNet and SegNet-S) and the single-task depth and normal networks that Table
  3's Δ is measured against (:data:`SINGLE_TASK_ROWS`);
* ``multi`` -- Table 3's multi-task networks (:func:`settings`).

Files, re-use and the command line are :class:`~mtlrepro.seed_units.SeedUnits`'.

**Choices** (the paper leaves them open, or the cpu profile needs them):

* Table 1 over-parameterises every conv but each head's final one (§3.1, "all convolutional
  layers except for the final layer") with the factors initialised like the layer (§2.3);
  Table 3 factorises the convs of the shared backbone (§3.2: the SegNet, or MTAN's shared
  network and its shared blocks; DeepLab: the first conv of each bottleneck) with spectral
  initialisation (§3.2).  A single-task network has no task to share with: its "Matrix
  Factorisation" is Alg. 1 with one task (step 1 trains the one diagonal, step 2 the rest).
* metrics on the *test* split after the last epoch (no model selection, as MTAN's protocol
  reports the last epoch); the lr halves once, at ``lr_step_size`` epochs (§3.1: 150 of 200).
* the cpu profile trains every network with batch 8 and one lr, MTAN included (the paper's
  MTAN rows use batch 2 and lr 5e-5, §3.2: the paper profile keeps them).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

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
from mtlrepro.data import get_dataset
from mtlrepro.methods.overparam import (
    FactorisedLayer,
    OverparamTraining,
    contract,
    overparameterise,
)
from mtlrepro.models import count_parameters, create_model, segnet_config
from mtlrepro.recipe import train_config_for, train_network
from mtlrepro.seed_units import SeedUnits
from mtlrepro.tasks import make_tasks
from mtlrepro.train import iterate_batches

SECTION = "overparam"
"""The ``params.yaml`` section of paper C."""
NOTEBOOK = "03_overparam"
"""Paper C's notebook (its runs go to ``results/runs/<NOTEBOOK>/``)."""
UNIT_KINDS: tuple[str, ...] = ("single", "multi")
"""Kinds of independent run units (see the module doc)."""
TASKS: tuple[str, ...] = ("segmentation", "depth", "normal")
"""Table 3's tasks, in its column order."""
DATASET: dict[str, str] = {"smoke": "scenes", "cpu": "scenes", "paper": "nyuv2"}
"""Profile -> the NYU-v2-like data (the real NYU-v2 at the paper profile)."""


@dataclass(frozen=True)
class Setting:
    """One trained network of the study.

    Attributes:
        table: ``"Table 1"``, ``"Table 3"`` or ``"single-task"`` (Table 3's references).
        row: the paper's row label (``mtlrepro/paper_numbers/C.csv``).
        model: the architecture's registry name.
        small: the -S width (every width halved, the final layers' outputs kept).
        tasks: the tasks it learns.
        method: ``baseline`` or one of :data:`~mtlrepro.methods.overparam.METHODS`.
        variant: the factorisation variant, or ``None``.
    """

    table: str
    row: str
    model: str
    small: bool
    tasks: tuple[str, ...]
    method: str = "baseline"
    variant: str | None = None

    @property
    def contractible(self) -> bool:
        """Whether the network is over-parameterised (and so contracted after training)."""
        return self.method != "baseline"

    @property
    def factorised(self) -> bool:
        """Whether it is trained as paper C's factorisation (Alg. 1 or w/o iter)."""
        return self.method == "factorisation"


def _table1() -> list[Setting]:
    rows = []
    for small, prefix in ((False, ""), (True, "SegNet-S ")):
        seg = ("segmentation",)
        rows += [
            Setting(
                "Table 1", "SegNet-S Baseline" if small else "SegNet Baseline", "segnet", small, seg
            ),
            Setting(
                "Table 1",
                f"{prefix}Matrix Factorisation",
                "segnet",
                small,
                seg,
                "factorisation",
                "fac",
            ),
            Setting("Table 1", f"{prefix}RepVGG", "segnet", small, seg, "repvgg"),
            Setting("Table 1", f"{prefix}ExpandNet", "segnet", small, seg, "expandnet"),
        ]
    return rows


SINGLE_TASK_ROWS: dict[tuple[str, bool], str] = {
    ("depth", False): "Single-task depth",
    ("normal", False): "Single-task normal",
    ("depth", True): "Single-task-S depth",
    ("normal", True): "Single-task-S normal",
}
"""(task, small) -> the row of the single-task reference network (segmentation's is Table 1's
baseline)."""


def _table3(deeplab: bool) -> list[Setting]:
    def row(label: str, model: str, small: bool, variant: str | None = None) -> Setting:
        method = "baseline" if variant is None else "factorisation"
        return Setting("Table 3", label, model, small, TASKS, method, variant)

    rows = [
        row("MTAN Fac", "mtan", False, "fac"),
        row("MTAN Baseline", "mtan", False),
        row("Cross stitch", "cross_stitch", False),
        row("Cross stitch-S", "cross_stitch", True),
        row("Fac", "segnet", False, "fac"),
        row("uvshare", "segnet", False, "uvshare"),
        row("mshare", "segnet", False, "mshare"),
        row("Fac w/o iter", "segnet", False, "fac_noiter"),
        row("Baseline", "segnet", False),
        row("Fac-S", "segnet", True, "fac"),
        row("Fac-S w/o iter", "segnet", True, "fac_noiter"),
        row("Baseline-S", "segnet", True),
    ]
    if deeplab:
        rows += [
            row("Baseline-DeepLabv3", "deeplab_resnet", False),
            row("Fac-DeepLabv3 w/o iter", "deeplab_resnet", False, "fac_noiter"),
            row("Fac-DeepLabv3", "deeplab_resnet", False, "fac"),
        ]
    return rows


def settings(kind: str, deeplab: bool = False) -> list[Setting]:
    """The networks one unit trains, the costliest first (so that two workers finish together).

    Args:
        kind: one of :data:`UNIT_KINDS`.
        deeplab: include Table 3's DeepLabv3-ResNet50 rows (paper profile).
    """
    check_choice("unit kind", kind, UNIT_KINDS)
    if kind == "multi":
        return _table3(deeplab)
    refs = [
        Setting("single-task", row, "segnet", small, (task,))
        for (task, small), row in SINGLE_TASK_ROWS.items()
    ]
    return [*_table1(), *refs]


@dataclass(frozen=True)
class OverparamStudyConfig:
    """Settings of paper C's experiments (presets per profile in :data:`PRESETS`).

    Attributes:
        profile: ``smoke``, ``cpu`` or ``paper``: the data and model presets.
        seeds: seeds; tables report mean ± std over them.
        epochs: training epochs (paper: 200).
        lr: Adam learning rate (MTAN's 1e-4).
        lr_step_size: the epoch at which the lr halves (paper: 150).
        batch_size: samples per step (paper: 8).
        mtan_batch_size: batch size of the MTAN rows (paper: 2).
        mtan_lr: lr of the MTAN rows (paper: 5e-5).
        frobenius_decay: the Frobenius decay rate (paper: 1e-4).
        subset_fraction: share of the training set Alg. 1's step 1 draws from (paper: ~3 %).
        subset_batch_size: samples per step-1 update.
        expansion: ExpandNet's channel expansion (Guo et al.: 4).
        n_train: training images (``None``: the dataset preset's).
        height: image height (``None``: the dataset preset's).
        width: image width (``None``: the dataset preset's).
        deeplab: train Table 3's DeepLabv3-ResNet50 rows.
        latency_repeats: timed forward passes per latency measurement.
        step_repeats: timed training steps per step-time measurement.
        threads: torch CPU threads per training process (``None``: torch's default).
        workers: processes training a unit's networks in parallel (numbers do not depend on it).
    """

    profile: str = DEFAULT_PROFILE
    seeds: tuple[int, ...] = (0, 1, 2)
    epochs: int = 200
    lr: float = 1e-4
    lr_step_size: int = 150
    batch_size: int = 8
    mtan_batch_size: int = 2
    mtan_lr: float = 5e-5
    frobenius_decay: float = 1e-4
    subset_fraction: float = 0.03
    subset_batch_size: int = 8
    expansion: int = 4
    n_train: int | None = None
    height: int | None = None
    width: int | None = None
    deeplab: bool = True
    latency_repeats: int = 20
    step_repeats: int = 10
    threads: int | None = None
    workers: int = 1

    def __post_init__(self) -> None:
        """Check every field; messages name it ``OverparamStudyConfig.<field>``
        (``overparam.<field>`` through :func:`study_config`)."""
        check_profile(self.profile)
        name = "OverparamStudyConfig"
        if not self.seeds:
            raise ConfigError(f"{name}.seeds must hold at least one seed")
        for seed in self.seeds:
            check_range(f"{name}.seeds", seed, 0, integer=True)
        check_distinct(f"{name}.seeds", self.seeds)
        for field in (
            "epochs",
            "lr_step_size",
            "batch_size",
            "mtan_batch_size",
            "subset_batch_size",
            "expansion",
            "latency_repeats",
            "step_repeats",
            "workers",
        ):
            check_range(f"{name}.{field}", getattr(self, field), 1, integer=True)
        for field in ("n_train", "threads"):
            if getattr(self, field) is not None:
                check_range(f"{name}.{field}", getattr(self, field), 1, integer=True)
        for field in ("height", "width"):
            if getattr(self, field) is not None:
                check_range(f"{name}.{field}", getattr(self, field), 8, integer=True)
        for field in ("lr", "mtan_lr"):
            check_range(f"{name}.{field}", getattr(self, field), 0.0, low_inclusive=False)
        check_range(f"{name}.frobenius_decay", self.frobenius_decay, 0.0)
        check_range(f"{name}.subset_fraction", self.subset_fraction, 0.0, 1.0, low_inclusive=False)
        if not isinstance(self.deeplab, bool):
            raise ConfigError(f"{name}.deeplab must be true or false")

    def data_overrides(self) -> dict[str, Any]:
        """The dataset fields the study sets (``None`` fields keep the preset)."""
        fields = {"height": self.height, "width": self.width}
        return {k: v for k, v in fields.items() if v is not None}


PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {
        "seeds": (0,),
        "epochs": 1,
        "lr": 1e-3,
        "lr_step_size": 1,
        "mtan_batch_size": 8,
        "mtan_lr": 1e-3,
        "subset_batch_size": 2,
        "expansion": 2,
        "deeplab": False,
        "latency_repeats": 2,
        "step_repeats": 2,
    },
    # 4 epochs of 40 steps: measured 48 s (multi) + 17 s (single) per seed and epoch with 2
    # workers on the 2-core Xeon, so the 6 units fit ~12 minutes with the notebook's timings
    "cpu": {
        "seeds": (0, 1, 2),
        "epochs": 4,
        "lr": 1e-3,
        "lr_step_size": 3,
        "mtan_batch_size": 8,
        "mtan_lr": 1e-3,
        "subset_batch_size": 2,
        "expansion": 2,
        "n_train": 320,
        "height": 32,
        "width": 48,
        "deeplab": False,
        "threads": 1,
        "workers": 2,
    },
    "paper": {},
}
"""Per-profile overrides of :class:`OverparamStudyConfig` (the paper profile: its defaults)."""


def study_config(profile: str, **overrides: Any) -> OverparamStudyConfig:
    """The profile's preset with ``overrides`` applied (``None`` values keep the preset).

    Args:
        profile: ``smoke``, ``cpu`` or ``paper``.
        **overrides: :class:`OverparamStudyConfig` fields (lists become tuples).
    """
    given = {k: v for k, v in overrides.items() if v is not None}
    return build_config(OverparamStudyConfig, PRESETS, profile, given, section=SECTION)


UNIT_KEYS: tuple[str, ...] = (
    "profile",
    "epochs",
    "lr",
    "lr_step_size",
    "batch_size",
    "mtan_batch_size",
    "mtan_lr",
    "frobenius_decay",
    "subset_fraction",
    "subset_batch_size",
    "expansion",
    "n_train",
    "height",
    "width",
    "deeplab",
    "threads",
)
"""The config fields a unit's numbers depend on (stored in its file)."""


# --------------------------------------------------------------------------------------------
# Building and training one network
# --------------------------------------------------------------------------------------------
def model_options(setting: Setting, config: OverparamStudyConfig) -> dict[str, Any]:
    """The architecture's size options: the -S networks halve every width (§3.1)."""
    if not setting.small:
        return {}
    return {"width_mult": 0.5 * segnet_config(config.profile).width_mult}


def overparam_options(setting: Setting, config: OverparamStudyConfig) -> dict[str, Any]:
    """Keywords of :func:`~mtlrepro.methods.overparam.overparameterise` for the setting."""
    if setting.method == "expandnet":
        return {"expansion": config.expansion}
    if setting.factorised:
        init = "layer" if setting.table == "Table 1" else "spectral"
        return {"variant": setting.variant, "init": init}
    return {}


def layer_selection(setting: Setting) -> str:
    """Which layers the setting over-parameterises (module doc, "Choices")."""
    if setting.table == "Table 1":
        return "all_but_last"
    return "bottleneck_conv1" if setting.model == "deeplab_resnet" else "shared"


def build_network(setting: Setting, specs: Any, config: OverparamStudyConfig) -> nn.Module:
    """The setting's network, untrained, over-parameterised as the setting says.

    Args:
        setting: the network.
        specs: its task specs (name -> spec).
        config: the study settings.
    """
    model = create_model(
        setting.model, specs, profile=config.profile, **model_options(setting, config)
    )
    if setting.contractible:
        overparameterise(
            model,
            setting.method,
            layer_selection(setting),
            list(specs),
            **overparam_options(setting, config),
        )
    return model


def dataset_name(config: OverparamStudyConfig) -> str:
    """The NYU-v2-like dataset of the profile."""
    return DATASET[config.profile]


def split(config: OverparamStudyConfig, name: str, tasks: Sequence[str]):
    """One split of the study's data, restricted to ``tasks``.

    Args:
        config: the study settings.
        name: ``train`` or ``test``.
        tasks: the tasks.
    """
    overrides: dict[str, Any] = {"tasks": tuple(tasks), **config.data_overrides()}
    if name == "train" and config.n_train is not None:
        overrides["n_train"] = config.n_train
    return get_dataset(dataset_name(config), name, config.profile, **overrides)


def training_hooks(
    setting: Setting, tasks: Any, train_set: Any, seed: int, config: OverparamStudyConfig
) -> list[OverparamTraining]:
    """Paper C's hooks for a factorised setting (Alg. 1 unless w/o iter), else none."""
    if not setting.factorised:
        return []
    return [
        OverparamTraining(
            tasks,
            train_set,
            lr=step_settings(setting, config)["lr"],
            iterative=setting.variant != "fac_noiter",
            frobenius_decay=config.frobenius_decay,
            subset_fraction=config.subset_fraction,
            subset_batch_size=config.subset_batch_size,
            seed=seed,
        )
    ]


def step_settings(setting: Setting, config: OverparamStudyConfig) -> dict[str, Any]:
    """Batch size and lr of the setting (the MTAN rows have their own, §3.2)."""
    if setting.model == "mtan":
        return {"batch_size": config.mtan_batch_size, "lr": config.mtan_lr}
    return {"batch_size": config.batch_size, "lr": config.lr}


def _widest_layer(model: nn.Module) -> tuple[str, FactorisedLayer] | None:
    """The factorised layer with the most components (first in model order), or ``None``."""
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, FactorisedLayer)]
    return max(layers, key=lambda item: item[1].rank) if layers else None


@torch.no_grad()
def contraction_gap(model: nn.Module, images: torch.Tensor) -> float:
    """Largest absolute output difference between the over-parameterised network and its
    contraction (eval mode), over every task's output.

    Args:
        model: the trained network (not changed).
        images: a batch of test images.
    """
    model.eval()
    contracted = contract(copy.deepcopy(model))
    before, after = model(images), contracted(images)
    return max(float((before[t] - after[t]).abs().max()) for t in before)


def train_setting(setting: Setting, seed: int, config: OverparamStudyConfig) -> dict[str, Any]:
    """Train one network and describe it.

    Args:
        setting: the network.
        seed: seed of initialisation, data order and step 1's subset.
        config: the study settings.

    Returns:
        A JSON-able record: ``row``, ``table``, ``tasks``, ``test`` (task -> metric -> value),
        ``history`` (per epoch and task, the training loss), ``parameters`` (as trained),
        ``contracted_parameters`` and ``contraction_gap`` (over-parameterised networks only,
        else ``None``), ``diagonals`` (factorised networks: the widest factorised layer's
        name and its task diagonals, else ``None``).
    """
    train_set = split(config, "train", setting.tasks)
    test_set = split(config, "test", setting.tasks)
    specs = train_set.task_specs
    tasks = make_tasks(specs)
    steps = step_settings(setting, config)
    trained = train_network(
        lambda: build_network(setting, specs, config),
        specs,
        create_balancer("equal", list(specs)),
        train_set,
        None,
        test_set,
        train_config_for(
            config, lr_schedule="step", lr_factor=0.5, seed=seed, progress=False, **steps
        ),
        hooks=training_hooks(setting, tasks, train_set, seed, config),
    )
    model = trained.model
    losses = trained.history[
        (trained.history["split"] == "train") & (trained.history["metric"] == "loss")
    ]
    record: dict[str, Any] = {
        "row": setting.row,
        "table": setting.table,
        "tasks": list(setting.tasks),
        "test": {t: {m: float(v) for m, v in s.items()} for t, s in trained.test.items()},
        "history": [
            {"epoch": int(r.epoch), "task": r.task, "loss": float(r.value)}
            for r in losses.itertuples()
        ],
        "parameters": count_parameters(model),
        "contracted_parameters": None,
        "contraction_gap": None,
        "diagonals": None,
    }
    if setting.contractible:
        images = next(iterate_batches(test_set, [torch.arange(min(16, len(test_set)))]))["image"]
        record["contraction_gap"] = contraction_gap(model, images)
        record["contracted_parameters"] = count_parameters(contract(copy.deepcopy(model)))
    widest = _widest_layer(model)
    if widest is not None:
        name, layer = widest
        record["diagonals"] = {
            "layer": name,
            "values": {
                k: [round(x, 6) for x in v.detach().tolist()] for k, v in layer.diagonals.items()
            },
        }
    return record


def unit_jobs(kind: str, config: OverparamStudyConfig) -> list[Setting]:
    """The networks of one unit (:func:`settings` at the config's ``deeplab``)."""
    return settings(kind, config.deeplab)


UNITS: SeedUnits[OverparamStudyConfig] = SeedUnits(
    SECTION, UNIT_KINDS, study_config, unit_jobs, train_setting, UNIT_KEYS
)
"""Paper C's units: files ``<runs>/<kind>/seed<seed>.json``, the command line
``python -m mtlrepro.runs overparam KIND SEED``."""
UNIT_VALUES = UNITS.values
unit_path = UNITS.unit_path
run_unit = UNITS.run_unit
run_study = UNITS.run_study
run_cli_unit = UNITS.run_cli_unit
unit_files = UNITS.unit_files
