"""Paper D's independent training runs: one *unit* = (scenario, seed), one JSON file.

W. Choi & S. Im, "Dynamic Neural Network for Multi-Task Learning Searching across Diverse
Network Topologies".  The searched network is :class:`~mtlrepro.methods.dag.DAGNetwork`
(:mod:`mtlrepro.methods.dag`); the single-task and shared-bottom baselines are the same central
network restricted to the chain ``v_1 → … → v_N`` (one per task, or one shared with a head per
task); cross-stitch and MTAN come from the architecture registry (:mod:`mtlrepro.models`).

**Units** (:data:`UNIT_KINDS`; DVC matrix stages ``dag_<kind>``, ``python -m mtlrepro.runs dag
KIND SEED``):

* ``glyphs`` -- Omniglot-like homogeneous multi-task learning (the embedded ``glyphs``; the
  real ``omniglot`` at the paper profile): one 20-way classification per alphabet, Table 1
  (single task, shared bottom, ours at each flow constant; 8 states, classifier heads).
* ``nyu`` -- NYU-v2-like, three tasks (``scenes``; the real ``nyuv2`` at the paper profile):
  Table 2 (single task, shared bottom, cross-stitch, MTAN, ours at each flow constant), Table 5
  and Fig. 3 (the topologies of ours at :attr:`DagStudyConfig.topology_flow`), Fig. 4 (ours
  against the complete DAG), Table 6 and Table 10 (ablations), Fig. 5 (flow-based, random and
  threshold reduction of one searched network at matched sparsity).
* ``city`` -- Cityscapes-like, two tasks (``scenes`` with segmentation and depth): Table 3.
* ``pascal`` -- PASCAL-Context-like, five tasks (``scenes`` with segmentation, object parts,
  saliency, normals and edges): Table 4.

Every unit trains its own single-task networks (at the paper profile the scenarios have
different data; the Cityscapes and PASCAL-Context loaders are not part of this version, and
those units stop with a message saying so at the paper profile).

**Choices** (the paper leaves them open, or the cpu profile needs them):

* The three stages are counted in epochs (App. A counts iterations: 5k / 15k / 20k at NYU-v2,
  i.e. 50 / 150 / 200 epochs of NYU-v2's 795 images at batch 8 -- the paper states no batch
  size); every baseline trains for the fine-tune's epochs (App. A, "the same number of
  fine-tuning iterations").
* κ (Eq. 9's budget, not given in the paper) is :attr:`DagStudyConfig.budget_fraction` of the
  search space's edges.
* Losses (§4.1): cross-entropy for segmentation and parts, L2 for depth; normals use the
  project's 1 − cos of the normalised prediction, which is half the L2 distance between unit
  vectors; saliency and edges the project's binary cross-entropy (the paper's "L2 loss for the
  other tasks" is not meant for binary maps, we read).
* Test metrics after the last epoch (no model selection).
* One searched network per seed feeds several rows (§4.4, §4.5): from the search at
  ``topology_flow`` the flow-based reduction (ours), fine-tuning every edge with the searched
  gates (w/o flow-based reduction), no fine-tune, and random / threshold reduction to the same
  number of edges (Fig. 5) -- each fine-tuned from the end of the warm-up.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
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
from mtlrepro.data import dataset_names, get_dataset
from mtlrepro.data.glyphs import glyphs_tasks
from mtlrepro.methods import dag
from mtlrepro.models import count_parameters, create_model, scale_atrous_rates
from mtlrepro.phases import Phase, fit_phases
from mtlrepro.recipe import train_config_for, train_network
from mtlrepro.seed_units import SeedUnits
from mtlrepro.tasks import make_tasks
from mtlrepro.train import evaluate, seed_everything

SECTION = "dag"
"""The ``params.yaml`` section of paper D."""
NOTEBOOK = "04_dag"
"""Paper D's notebook (its runs go to ``results/runs/<NOTEBOOK>/``)."""
UNIT_KINDS: tuple[str, ...] = ("glyphs", "nyu", "city", "pascal")
"""Kinds of independent run units: the scenarios (see the module doc)."""
SCENARIO_TASKS: dict[str, tuple[str, ...]] = {
    "nyu": ("segmentation", "depth", "normal"),
    "city": ("segmentation", "depth"),
    "pascal": ("segmentation", "parts", "saliency", "normal", "edge"),
}
"""Scenario -> its tasks, in the column order of Tables 2, 3 and 4 (the glyphs' tasks are its
alphabets, :func:`tasks_of`)."""
SCENARIO_TABLE: dict[str, str] = {
    "glyphs": "Table 1", "nyu": "Table 2", "city": "Table 3", "pascal": "Table 4"
}
"""Scenario -> the paper's table."""
DATASETS: dict[str, dict[str, str]] = {
    "glyphs": {"smoke": "glyphs", "cpu": "glyphs", "paper": "omniglot"},
    "nyu": {"smoke": "scenes", "cpu": "scenes", "paper": "nyuv2"},
    "city": {"smoke": "scenes", "cpu": "scenes", "paper": "cityscapes"},
    "pascal": {"smoke": "scenes", "cpu": "scenes", "paper": "pascal_context"},
}
"""Scenario -> profile -> dataset."""
SEARCH_SETTINGS: dict[str, dict[str, float]] = {
    "glyphs": {"upper_lr": 1e-2, "squeeze_weight": 0.05},
    "nyu": {"upper_lr": 1e-2, "squeeze_weight": 0.05},
    "city": {"upper_lr": 5e-2, "squeeze_weight": 0.01},
    "pascal": {"upper_lr": 1e-2, "squeeze_weight": 0.005},
}
"""Scenario -> Table 9's lr of α, β, γ and λ_sq (Omniglot, NYU-v2, Cityscapes, PASCAL-Context)."""
LOSSES: dict[str, str] = {"depth": "mse"}
"""§4.1: L2 for depth (cross-entropy for segmentation; normals: see the module doc)."""
BASELINES: tuple[str, ...] = ("single", "shared_bottom", "cross_stitch", "mtan")
"""Network kinds that are not searched."""
SEARCH_BRANCHES: tuple[str, ...] = ("flow", "no_reduction", "no_finetune", "random", "threshold")
"""What one search at ``topology_flow`` is finalised into (module doc, "Choices")."""


@dataclass(frozen=True)
class Setting:
    """One training job of a unit (one network, or one search and its finalisations).

    Attributes:
        row: the paper's row label (``mtlrepro/paper_numbers/D.csv``), e.g. ``"Ours (M=5)"``.
        scenario: the scenario (unit kind) whose data it trains on.
        network: one of :data:`BASELINES` or ``"dag"``.
        tasks: the tasks it learns.
        flow: the flow constant M (``None``: the complete DAG); DAG only.
        read_in_out: learn read-in/out (Eq. 3, 5); ``False`` is Table 6's ablation.
        squeeze: use L_sq (Eq. 9); ``False`` is Table 6's ablation.
        warmup: run the warm-up; ``False`` is Table 10's ablation.
        search: run the search (and reduction); ``False`` is Table 10's "w/o search + FBR".
        branches: the finalisations of the one search (:data:`SEARCH_BRANCHES`); ``("flow",)``
            for a plain run.
    """

    row: str
    scenario: str
    network: str
    tasks: tuple[str, ...]
    flow: int | None = None
    read_in_out: bool = True
    squeeze: bool = True
    warmup: bool = True
    search: bool = True
    branches: tuple[str, ...] = ("flow",)

    @property
    def searched(self) -> bool:
        """Whether the network is paper D's DAG."""
        return self.network == "dag"


BRANCH_ROWS: dict[str, str] = {
    "no_reduction": "w/o flow-based reduction",
    "no_finetune": "w/o fine-tune",
    "random": "random reduction",
    "threshold": "threshold reduction",
}
"""Branch -> the row it reports (``flow`` reports the setting's own row)."""


def ours(flow: int | None) -> str:
    """The row label of the searched network at flow constant ``flow``."""
    return "Ours (complete DAG)" if flow is None else f"Ours (M={flow})"


def tasks_of(kind: str, config: DagStudyConfig) -> tuple[str, ...]:
    """The tasks of a scenario: :data:`SCENARIO_TASKS`, or the glyphs' alphabets."""
    return glyphs_tasks(config.alphabets) if kind == "glyphs" else SCENARIO_TASKS[kind]


def settings(kind: str, config: DagStudyConfig) -> list[Setting]:
    """The jobs of one unit, the costliest first (so that two workers finish together).

    Args:
        kind: one of :data:`UNIT_KINDS`.
        config: the study settings.
    """
    check_choice("dag unit kind", kind, UNIT_KINDS)
    tasks = tasks_of(kind, config)
    m = config.topology_flow

    def job(row: str, network: str, flow: int | None = None, **options: Any) -> Setting:
        return Setting(row, kind, network, options.pop("tasks", tasks), flow, **options)

    if kind == "nyu":
        jobs = [
            job(ours(m), "dag", m, branches=SEARCH_BRANCHES),
            job(ours(None), "dag", None),
            *(job(ours(f), "dag", f) for f in config.flows if f != m),
            job("w/o read-in/out", "dag", m, read_in_out=False),
            job("w/o L_sq", "dag", m, squeeze=False),
            job("w/o warm-up", "dag", m, warmup=False),
            job("w/o search + FBR", "dag", m, search=False),
        ]
    elif kind == "glyphs":
        jobs = [job(ours(f), "dag", f) for f in config.glyph_flows]
    else:
        jobs = [job(ours(f), "dag", f) for f in config.other_flows]
    if kind != "glyphs":  # Table 1 compares with mixtures of experts instead (not run)
        jobs += [job("Cross-Stitch", "cross_stitch"), job("MTAN", "mtan")]
    return [
        *jobs,
        job("Shared Bottom", "shared_bottom"),
        *(job(f"Single-Task {t}", "single", tasks=(t,)) for t in tasks),
    ]


@dataclass(frozen=True)
class DagStudyConfig:
    """Settings of paper D's experiments (presets per profile in :data:`PRESETS`).

    Attributes:
        profile: ``smoke``, ``cpu`` or ``paper``: the data and model presets.
        seeds: seeds; tables report mean ± std over them.
        n_states: hidden states N of the central network (App. A: 12).
        width_multiplier: the central network's widths relative to VGG-16's (App. A Table 7).
        flows: the flow constants M of the ``nyu`` unit (Table 2, Fig. 4).
        other_flows: those of the ``city`` and ``pascal`` units (Tables 3 and 4).
        glyph_states: hidden states of the ``glyphs`` unit's central network (§4.1: 8).
        glyph_flows: its flow constants (Table 1: 3, 5, 7; 7 is the complete DAG of 8 states).
        alphabets: alphabets, i.e. 20-way tasks, of the ``glyphs`` unit (Table 1's single task
            has 20× the shared bottom's parameters: 20 tasks).
        glyph_size: side of the glyph images in pixels, a multiple of the last state's
            downsampling (the paper gives none; Omniglot's are 105).
        glyph_width_multiplier: the ``glyphs`` unit's width multiplier (``None``:
            ``width_multiplier``).
        glyph_batch_size: its samples per step (``None``: ``batch_size``).
        glyph_epochs: its warm-up, search and fine-tune epochs (``None``: the other units';
            App. B trains Omniglot on its own schedule, 2,000 / 3,000 / 5,000 iterations).
        topology_flow: the M of Table 5, Fig. 3, Fig. 5 and the ablations (Table 6: 7).
        warmup_epochs: warm-up epochs (§3.2).
        search_epochs: search epochs.
        finetune_epochs: fine-tune epochs (also every baseline's).
        batch_size: samples per step.
        lr: Adam lr of the network weights Θ (Table 9: 1e-4).
        budget_fraction: κ of Eq. 9 as a share of the search space's edges.
        n_train: training images (``None``: the dataset preset's).
        height: image height (``None``: the dataset preset's).
        width: image width (``None``: the dataset preset's).
        channels_last: run the central network in channels-last memory format (about twice as
            fast on CPU: PyTorch's CPU max-pool is slow in the standard layout).
        registry_width: ``width_mult`` of the cross-stitch and MTAN SegNets (``None``: the
            profile's).  The cpu profile sizes them so that cross-stitch has about 3× the
            shared bottom's parameters, as in Table 2 (3.00×; MTAN 3.11×).
        latency_repeats: timed forward passes per latency measurement (notebook).
        threads: torch CPU threads per training process (``None``: torch's default).
        workers: processes training a unit's jobs in parallel (numbers do not depend on it).
    """

    profile: str = DEFAULT_PROFILE
    seeds: tuple[int, ...] = (0, 1, 2)
    n_states: int = 12
    width_multiplier: float = 1.0
    flows: tuple[int, ...] = (3, 5, 7, 9)
    other_flows: tuple[int, ...] = (5, 7, 9)
    glyph_states: int = 8
    glyph_flows: tuple[int, ...] = (3, 5, 7)
    alphabets: int = 20
    glyph_size: int = 96
    glyph_width_multiplier: float | None = None
    glyph_batch_size: int | None = None
    glyph_epochs: tuple[int, int, int] | None = None
    topology_flow: int = 7
    warmup_epochs: int = 50
    search_epochs: int = 150
    finetune_epochs: int = 200
    batch_size: int = 8
    lr: float = 1e-4
    budget_fraction: float = 0.25
    n_train: int | None = None
    height: int | None = None
    width: int | None = None
    channels_last: bool = False
    registry_width: float | None = None
    latency_repeats: int = 20
    threads: int | None = None
    workers: int = 1

    def __post_init__(self) -> None:
        """Check every field; messages name it ``DagStudyConfig.<field>`` (``dag.<field>``
        through :func:`study_config`)."""
        check_profile(self.profile)
        name = "DagStudyConfig"
        if not self.seeds:
            raise ConfigError(f"{name}.seeds must hold at least one seed")
        for seed in self.seeds:
            check_range(f"{name}.seeds", seed, 0, integer=True)
        check_distinct(f"{name}.seeds", self.seeds)
        check_range(f"{name}.n_states", self.n_states, 2, integer=True)
        check_range(f"{name}.glyph_states", self.glyph_states, 2, 12, integer=True)
        for field, states in (("flows", self.n_states), ("other_flows", self.n_states),
                              ("glyph_flows", self.glyph_states)):
            values = getattr(self, field)
            if not values:
                raise ConfigError(f"{name}.{field} must hold at least one flow constant")
            for flow in values:
                check_range(f"{name}.{field}", flow, 1, states - 1, integer=True)
            check_distinct(f"{name}.{field}", values)
        check_range(f"{name}.alphabets", self.alphabets, 1, integer=True)
        scale = dag.VGG16_SCALES[self.glyph_states - 1]
        check_range(f"{name}.glyph_size", self.glyph_size, scale, integer=True)
        if self.glyph_size % scale:
            raise ConfigError(
                f"{name}.glyph_size must be a multiple of {scale} (the downsampling of the last "
                f"of {self.glyph_states} states); got {self.glyph_size}"
            )
        check_range(f"{name}.topology_flow", self.topology_flow, 1, self.n_states - 1,
                    integer=True)
        for field in ("warmup_epochs", "search_epochs", "finetune_epochs", "batch_size",
                      "latency_repeats", "workers"):
            check_range(f"{name}.{field}", getattr(self, field), 1, integer=True)
        if self.glyph_epochs is not None:
            if len(self.glyph_epochs) != 3:
                raise ConfigError(
                    f"{name}.glyph_epochs must be three epoch counts (warm-up, search, "
                    f"fine-tune); got {self.glyph_epochs!r}"
                )
            for epochs in self.glyph_epochs:
                check_range(f"{name}.glyph_epochs", epochs, 1, integer=True)
        for field in ("n_train", "threads", "glyph_batch_size"):
            if getattr(self, field) is not None:
                check_range(f"{name}.{field}", getattr(self, field), 1, integer=True)
        for field in ("height", "width"):
            if getattr(self, field) is not None:
                check_range(f"{name}.{field}", getattr(self, field), 8, integer=True)
        for field in ("lr", "width_multiplier"):
            check_range(f"{name}.{field}", getattr(self, field), 0.0, low_inclusive=False)
        for field in ("registry_width", "glyph_width_multiplier"):
            if getattr(self, field) is not None:
                check_range(f"{name}.{field}", getattr(self, field), 0.0, low_inclusive=False)
        check_range(f"{name}.budget_fraction", self.budget_fraction, 0.0, 1.0)
        if not isinstance(self.channels_last, bool):
            raise ConfigError(f"{name}.channels_last must be true or false")

    def data_overrides(self) -> dict[str, Any]:
        """The dataset fields the study sets (``None`` fields keep the preset)."""
        fields = {"height": self.height, "width": self.width}
        return {k: v for k, v in fields.items() if v is not None}


PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {
        "seeds": (0,),
        "n_states": 4,
        "width_multiplier": 1 / 16,
        "flows": (1, 2),
        "other_flows": (2,),
        "glyph_states": 4,
        "glyph_flows": (2,),
        "alphabets": 3,
        "glyph_size": 16,
        "topology_flow": 2,
        "warmup_epochs": 1,
        "search_epochs": 1,
        "finetune_epochs": 1,
        "lr": 1e-3,
        "latency_repeats": 2,
    },
    # measured on the 2-core Xeon, one thread per process: a seed's units took 1.4 (glyphs),
    # 3.5 (nyu), 1.0 (city) and 1.8 (pascal) minutes in `dvc repro` with 2 workers, so 3 seeds
    # (23 minutes with the notebook) exceeded the 20-minute budget: 2 seeds.  Glyphs:
    # at 1/16 width, 32-pixel glyphs and the shared schedule the searched networks reached only
    # 8-28 % (chance 5 %); at 1/8 width, 16-pixel glyphs, batch 32 and 4/6/8 epochs, M = 5
    # reaches 30-44 % in ~75 s of single-core work
    "cpu": {
        "seeds": (0, 1),
        "n_states": 8,
        "width_multiplier": 1 / 16,
        "flows": (3, 5),
        "other_flows": (3, 5),
        "alphabets": 5,
        "glyph_flows": (3, 5),
        "glyph_size": 16,
        "glyph_width_multiplier": 1 / 8,
        "glyph_batch_size": 32,
        "glyph_epochs": (4, 6, 8),
        "topology_flow": 5,
        "warmup_epochs": 2,
        "search_epochs": 3,
        "finetune_epochs": 4,
        "lr": 1e-3,
        "n_train": 320,
        "height": 32,
        "width": 48,
        "channels_last": True,
        "registry_width": 0.1,
        "threads": 1,
        "workers": 2,
    },
    "paper": {},
}
"""Per-profile overrides of :class:`DagStudyConfig` (the paper profile: its defaults)."""


def study_config(profile: str, **overrides: Any) -> DagStudyConfig:
    """The profile's preset with ``overrides`` applied (``None`` values keep the preset).

    Args:
        profile: ``smoke``, ``cpu`` or ``paper``.
        **overrides: :class:`DagStudyConfig` fields (lists become tuples).
    """
    given = {k: v for k, v in overrides.items() if v is not None}
    return build_config(DagStudyConfig, PRESETS, profile, given, section=SECTION)


KEYS: tuple[str, ...] = tuple(
    f.name
    for f in dataclasses.fields(DagStudyConfig)
    if f.name not in ("seeds", "latency_repeats", "workers")
)
"""The config fields a unit's numbers depend on."""


# --------------------------------------------------------------------------------------------
# Data and networks
# --------------------------------------------------------------------------------------------
def scenario_config(config: DagStudyConfig, scenario: str) -> DagStudyConfig:
    """The settings one scenario trains with: the study's, with the ``glyph_*`` width, batch
    size and epochs in place of the shared ones for ``glyphs``."""
    if scenario != "glyphs":
        return config
    overrides: dict[str, Any] = {
        "width_multiplier": config.glyph_width_multiplier,
        "batch_size": config.glyph_batch_size,
    }
    if config.glyph_epochs is not None:
        overrides |= dict(zip(("warmup_epochs", "search_epochs", "finetune_epochs"),
                              config.glyph_epochs, strict=True))
    given = {k: v for k, v in overrides.items() if v is not None}
    return dataclasses.replace(config, **given)


def dataset_name(scenario: str, config: DagStudyConfig) -> str:
    """The dataset of a scenario at the study's profile (a clear message when it has none)."""
    name = DATASETS[scenario][config.profile]
    if name not in dataset_names():
        raise ConfigError(
            f"paper D's {scenario!r} scenario at the {config.profile} profile reads the "
            f"{name!r} dataset, which this version does not provide yet"
        )
    return name


def split(config: DagStudyConfig, name: str, scenario: str, tasks: Sequence[str]):
    """One split of the scenario's data, restricted to ``tasks``.

    Args:
        config: the study settings.
        name: ``train`` or ``test``.
        scenario: one of :data:`UNIT_KINDS`.
        tasks: the tasks.
    """
    overrides: dict[str, Any] = {"tasks": tuple(tasks)}
    if scenario == "glyphs":
        overrides |= {"height": config.glyph_size, "width": config.glyph_size}
    else:
        overrides |= config.data_overrides()
        if name == "train" and config.n_train is not None:
            overrides["n_train"] = config.n_train
    return get_dataset(
        dataset_name(scenario, config), name, config.profile, **overrides
    )


def network_config(config: DagStudyConfig, setting: Setting) -> dag.DAGConfig:
    """The central network of a setting (App. A; slimmer at the cpu profile; the glyphs' has
    ``glyph_states`` states and classifier heads).  With a set ``height`` the ASPP rates keep
    the paper's ratio of rate to feature-map size (6, 12, 18 on NYU-v2's 288-pixel height at
    output stride 16, an 18-row map)."""
    config = scenario_config(config, setting.scenario)
    states = config.glyph_states if setting.scenario == "glyphs" else config.n_states
    scale = dag.VGG16_SCALES[states - 1]
    rates = (
        dag.PAPER_ATROUS_RATES
        if config.height is None
        else scale_atrous_rates(config.height // scale, dag.PAPER_ATROUS_RATES, 18)
    )
    return dag.vgg_like_config(
        states,
        width_multiplier=config.width_multiplier,
        flow=setting.flow,
        read_in_out=setting.read_in_out,
        atrous_rates=rates,
        channels_last=config.channels_last,
    )


def build_network(setting: Setting, specs: Any, config: DagStudyConfig) -> nn.Module:
    """The setting's untrained network.

    Args:
        setting: the network.
        specs: its task specs (name -> spec).
        config: the study settings.
    """
    if setting.network in ("cross_stitch", "mtan"):
        options = {} if config.registry_width is None else {"width_mult": config.registry_width}
        return create_model(setting.network, specs, profile=config.profile, **options)
    if setting.network in ("single", "shared_bottom"):
        return dag.chain_network(network_config(config, setting), specs)
    return dag.DAGNetwork(network_config(config, setting), specs)


def _train_config(config: DagStudyConfig, seed: int, epochs: int):
    return train_config_for(config, epochs=epochs, seed=seed, progress=False)


def _record(setting: Setting, row: str, model: nn.Module, test: dict, extra: dict) -> dict:
    return {
        "row": row,
        "network": setting.network,
        "tasks": list(setting.tasks),
        "flow": setting.flow,
        "test": {t: {m: float(v) for m, v in s.items()} for t, s in test.items()},
        "parameters": count_parameters(model),
        **extra,
    }


def train_setting(setting: Setting, seed: int, config: DagStudyConfig) -> list[dict[str, Any]]:
    """Train one job and describe each network it yields.

    Args:
        setting: the job.
        seed: seed of initialisation and data order.
        config: the study settings.

    Returns:
        JSON-able records: ``row``, ``network``, ``tasks``, ``flow``, ``test`` (task -> metric
        -> value), ``parameters`` (as finalised: the union of the task sub-networks), and for
        searched networks ``search_parameters`` (the search space's), ``topology`` (task ->
        the finalised graph, networkx node-link data), ``search_gates`` (task -> its
        ``read_in`` σ(α) and ``read_out`` σ(β) per state at the end of the search; ``None``
        without a search) and ``history`` (per phase, epoch and task, the training loss).
    """
    config = scenario_config(config, setting.scenario)
    train_set = split(config, "train", setting.scenario, setting.tasks)
    test_set = split(config, "test", setting.scenario, setting.tasks)
    specs = train_set.task_specs
    if not setting.searched:
        trained = train_network(
            lambda: build_network(setting, specs, config),
            specs,
            create_balancer("equal", list(specs)),
            train_set,
            None,
            test_set,
            _train_config(config, seed, config.finetune_epochs),
            losses=LOSSES,
        )
        return [_record(setting, setting.row, trained.model, trained.test, {})]
    return _train_searched(setting, seed, config, train_set, test_set, specs)


def _train_searched(setting, seed, config, train_set, test_set, specs) -> list[dict[str, Any]]:
    """Warm-up → search → for each branch: reduce, rewind to the warm-up, fine-tune (§3.2)."""
    tasks = make_tasks(specs, losses=LOSSES)
    balancer = create_balancer("equal", list(specs))
    seed_everything(seed)
    model = build_network(setting, specs, config)
    search_parameters = count_parameters(model)
    search = SEARCH_SETTINGS[setting.scenario]
    budget = config.budget_fraction * model.n_search_edges
    base = _train_config(config, seed, 1)
    history = []
    if setting.warmup:
        run = fit_phases(model, tasks, train_set, None, balancer, base,
                         [Phase("warmup", config.warmup_epochs, [dag.DAGWarmup()])])
        history.append(run.history)
    warm = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if setting.search:
        hooks = dag.DAGSearch(
            upper_lr=search["upper_lr"],
            squeeze_weight=search["squeeze_weight"] if setting.squeeze else 0.0,
            budget=budget,
        )
        run = fit_phases(model, tasks, train_set, None, balancer,
                         dataclasses.replace(base, seed=seed + 1),
                         [Phase("search", config.search_epochs, [hooks])])
        history.append(run.history)
    gates = {t: _read_gates(model, t) for t in specs} if setting.search else None
    records = []
    for branch in setting.branches:
        final = copy.deepcopy(model)
        dag.reduce_model(final, _reduction(setting, branch), seed=seed)
        phases = list(history)
        if branch != "no_finetune":
            dag.rewind_weights(final, warm)
            run = fit_phases(final, tasks, train_set, None, balancer,
                             dataclasses.replace(base, seed=seed + 2),
                             [Phase("finetune", config.finetune_epochs, [dag.DAGFinetune()])])
            phases.append(run.history)
        test = evaluate(final, tasks, test_set, base.eval_batch_size)
        graphs = {t: dag.graph_data(dag.task_graph(final, t)) for t in specs}
        row = BRANCH_ROWS.get(branch, setting.row)
        records.append(_record(setting, row, final, test, {
            "branch": branch,
            "search_parameters": search_parameters,
            "search_edges": model.n_search_edges,
            "topology": graphs,
            "search_gates": gates,
            "history": _losses(phases),
        }))
    return records


def _read_gates(model: dag.DAGNetwork, task: str) -> dict[str, list[float]]:
    """A task's searched read-in and read-out weights, σ(α) and σ(β) per state (Eq. 3, 5)."""
    read_in, _, read_out = model.soft_gates(task)
    return {"read_in": read_in.tolist(), "read_out": read_out.tolist()}


def _losses(histories: Sequence[pd.DataFrame]) -> list[dict[str, Any]]:
    """Per phase, epoch and task, the mean training loss (JSON-able)."""
    if not histories:
        return []
    frame = pd.concat(histories, ignore_index=True)
    losses = frame[(frame["split"] == "train") & (frame["metric"] == "loss")]
    return [
        {"phase": r.phase, "epoch": int(r.epoch), "task": r.task, "loss": float(r.value)}
        for r in losses.itertuples()
    ]


def _reduction(setting: Setting, branch: str) -> str:
    """The reduction a branch finalises with (``none``: every edge, with the searched gates,
    or all-ones gates without a search)."""
    if not setting.search or branch == "no_reduction":
        return "none"
    return "flow" if branch == "no_finetune" else branch


UNITS: SeedUnits[DagStudyConfig] = SeedUnits(
    SECTION, UNIT_KINDS, study_config, settings, train_setting, KEYS
)
"""Paper D's units: files ``<runs>/<kind>/seed<seed>.json``."""
UNIT_VALUES = UNITS.values
run_cli_unit = UNITS.run_cli_unit
unit_files = UNITS.unit_files
run_study = UNITS.run_study
