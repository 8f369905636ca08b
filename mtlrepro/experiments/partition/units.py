"""Paper E's independent runs: one *unit* = (kind, seed), one JSON file.

A. Newell, L. Jiang, C. Wang, L.-J. Li & J. Deng, "Feature Partitioning for Efficient
Multi-Task Architectures".  The network, its masks, training hooks and the distillation score
are :mod:`mtlrepro.methods.partition_net`; ``P``, its refinement, masks from ``P̃`` and the
searches are :mod:`mtlrepro.methods.partition`.

**Units** (:data:`UNIT_KINDS`, in pipeline order; DVC matrix stages ``partition_<kind>``,
``python -m mtlrepro.runs partition KIND SEED``):

* ``teachers`` -- one single-task network per task (§4.2: the distillation's teachers); the
  record keeps its validation accuracy and its weights (``torch.save`` bytes, base64), so the
  search reads them instead of retraining them.
* ``search`` -- everything scored by feature distillation (§4.2) with that seed's teachers:
  :attr:`PartitionStudyConfig.random_partitions` random ``P̃`` (§4.1 random search; Fig. 4
  left, Fig. 5, the distillation column of Table 1), the fixed diagonals with varying sharing
  (Fig. 4 middle) and one ES run per penalty strength (§4.1; Fig. 4 right), each ES run's final
  ``P̃`` scored too.
* ``table1`` -- full training of the first :attr:`PartitionStudyConfig.table1_partitions`
  random partitions of the same seed (the same ``P̃`` the search scored), with the validation
  accuracy after each short budget and at the end (Table 1, Fig. 3).
* ``table2`` -- full training of Table 2's partitions: independent, share half, share all and
  the partition ES found at :attr:`PartitionStudyConfig.table2_penalty` (the search unit of the
  first search seed), test accuracy per task.

``teachers``, ``search`` and ``table1`` run for each of
:attr:`PartitionStudyConfig.search_seeds`, ``table2`` for each of
:attr:`PartitionStudyConfig.seeds` (Table 2 averages trials; the search is costly).  A
``search`` unit reads its seed's ``teachers`` file and a ``table2`` unit the first search seed's
``search`` file through :meth:`SeedUnits.run_unit` (read when present and matching, else
trained and written), so they need the runs folder: :func:`run_study` and
:func:`run_cli_unit` pass it in :attr:`PartitionStudyConfig.runs_dir`.  Every run stage of the
pipeline shares one list of dependencies (the code and ``params.yaml``), so they all rerun
together, in the order above.

**Choices** (the paper leaves them open, or the cpu profile needs them):

* Data (§5): the embedded ``decathlon`` (six domains) at the smoke and cpu profiles, the real
  ``visual_decathlon`` (nine domains) at the paper profile.  The search and Table 1 score on
  the validation split ("final validation accuracy"); Table 2 reports the test split (the
  paper reports validation accuracy: the Decathlon's test labels are hidden; ours are not, and
  the search has looked at the validation split).
* Teachers: the same :class:`~mtlrepro.methods.partition_net.PartitionResNet`, one task,
  trained from scratch with every stage trainable (the paper fine-tunes ImageNet weights,
  which the embedded data has none of) with SGD and the full training's schedule (lr ×0.1
  after 75 %), for at least :attr:`PartitionStudyConfig.teacher_steps` steps whatever the
  domain's size (the paper trains them "until converging to high accuracy"; a budget in epochs
  gave the smallest domains a few dozen steps: at 8 epochs of batch 16 on the cpu data, flowers
  trained 96 steps to 32 % and textures 240 steps to 8 % validation accuracy; the cpu
  preset's 2,000 steps reach 81 % and 71 %, and 85-98 % on the other four domains).
* Distillation (§4.2, App. A.2): the student starts from a fresh initialisation seeded by the
  unit's seed -- the same student and batches for every partition of a unit, so partitions are
  compared on equal terms (the paper starts from ImageNet weights).  Scores are normalised by
  the teacher's validation accuracy floored at chance (an untrained smoke teacher must not
  divide by zero).
* Masks from ``P̃`` (App. A.1): the authors' sampler (``mask_method="sampler"``, seeded by the
  unit's seed, so the search and Table 2 derive the same mask from the same ``P̃``) or the
  MILP (``"milp"``, the pattern formulation of :func:`~mtlrepro.methods.partition.masks_milp`).
* Fig. 4 middle: per fixed diagonal (every task the same share), the raw sharing 0 (least
  overlap the diagonal allows), 1 (most) and :attr:`PartitionStudyConfig.sharing_samples`
  random raw off-diagonals (uniform).
* ES (§4.1): every penalty strength starts from the same initial samples and draws the same
  directions (one seed per unit), so the trajectories differ by the penalty alone; the found
  partition is where the search ends (its final ``P̃``: the penalty's trade-off), not the
  highest-scoring sample.
* Full training (App. A.2): one mask per task on the last stage, per-task BN, the accuracy
  curriculum drawing one task per step and a batch of that task's samples, per-task momentum,
  the first two stages frozen
  (:class:`~mtlrepro.methods.partition_net.PartitionTraining`) -- at the smoke and cpu
  profiles the early stages train too (``freeze_early=False``): the paper's frozen stages hold
  ImageNet weights, ours would be frozen at their random initialisation (measured on the cpu
  data with mixed-domain batches, share-all masks, 6 epochs: signs 11-13 % of validation
  accuracy frozen, at lr 0.05 / batch 32 and lr 0.1 / batch 16, and 27 % with every stage
  trained at lr 0.05 / batch 16);
  SGD, the lr ×0.1 after 75 % of the epochs (App. A.2: at 75k of 100k iterations), counted
  in epochs of the training split (all domains).  The short budgets of Table 1 (5k and 10k
  of 100k iterations) are the same run's validation accuracy after
  :attr:`PartitionStudyConfig.short_epochs`, resumed from its checkpoint (the same
  trajectory).
* Costs are CPU seconds of one thread (``time.process_time``; the pipeline runs one torch
  thread per process), the short training's including its evaluation, the distillation's
  including its scoring.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

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
from mtlrepro.methods import partition as part
from mtlrepro.methods import partition_net as pnet
from mtlrepro.recipe import train_config_for, train_network
from mtlrepro.seed_units import SeedUnits
from mtlrepro.tasks import make_tasks
from mtlrepro.train import evaluate, fit, seed_everything

SECTION = "partition"
"""The ``params.yaml`` section of paper E."""
NOTEBOOK = "05_partition"
"""Paper E's notebook (its runs go to ``results/runs/<NOTEBOOK>/``)."""
UNIT_KINDS: tuple[str, ...] = ("teachers", "search", "table1", "table2")
"""Kinds of independent run units (see the module doc), in pipeline order."""
SEARCH_KINDS: tuple[str, ...] = ("teachers", "search", "table1")
"""Kinds run for each of ``search_seeds`` (``table2`` runs for each of ``seeds``)."""
DATASETS: dict[str, str] = {"smoke": "decathlon", "cpu": "decathlon", "paper": "visual_decathlon"}
"""Profile -> dataset."""
TABLE2_ROWS: dict[str, str] = {
    "independent": "independent",
    "share_half": "share half",
    "share_all": "share all",
    "es": "es",
}
"""Table 2's partitions -> the paper's row label (``es`` gets its penalty appended)."""
MASK_METHODS: tuple[str, ...] = ("sampler", "milp")
"""How a mask is derived from ``P̃`` (module doc)."""
RANDOM_CHUNKS = 4
"""Jobs the random partitions of a search unit are split into (for the worker processes)."""
LR_DROP_AT = 0.75
"""App. A.2: the lr drops ×0.1 after 75 % of the training (75k of 100k iterations)."""


def lr_drop_epoch(epochs: int) -> int:
    """The epoch after which the lr drops ×0.1 (App. A.2: after 75 % of the training)."""
    return max(1, round(LR_DROP_AT * epochs))


def es_row(penalty: float) -> str:
    """Table 2's label of the ES partition found at ``penalty``, as the paper writes it
    (``es (wd 1e-3)``)."""
    if penalty == 0:
        return "es (wd 0)"
    mantissa, exponent = f"{penalty:e}".split("e")
    return f"es (wd {float(mantissa):g}e{int(exponent)})"


@dataclass(frozen=True)
class PartitionStudyConfig:
    """Settings of paper E's experiments (presets per profile in :data:`PRESETS`).

    Attributes:
        profile: ``smoke``, ``cpu`` or ``paper``: the data and network presets.
        seeds: seeds of Table 2's trials (mean ± std over them; the paper: 5 trials).
        search_seeds: seeds of the teachers, the search and Table 1.
        scale: the embedded data's images per domain relative to its preset (``None``: the
            preset's); unused by the real data.
        teacher_steps: SGD steps of each single-task teacher on its own domain (at least;
            whole epochs).
        teacher_lr: the teachers' SGD learning rate.
        epochs: epochs of a full training (App. A.2: 100k iterations).
        short_epochs: the two short budgets of Table 1, in epochs of the same run (5k and 10k
            iterations), each below ``epochs``.
        batch_size: samples per step of the full training (one domain; App. A.2: 64).
        lr: its SGD learning rate (App. A.2: 0.05).
        momentum: its SGD momentum (per task; the paper names no value).
        freeze_early: freeze the stem and the first two stages in the full training (App.
            A.2, where they hold ImageNet weights; see the module doc).
        distill_iterations: distillation steps (App. A.2: 3,000).
        distill_batch_size: images per distillation step (4).
        distill_lr: distillation SGD learning rate (1).
        distill_drop_at: the step after which the distillation lr drops ×0.1 (2,000).
        random_partitions: random ``P̃`` the search scores (Fig. 4 left, Fig. 5).
        table1_partitions: the first this many of them are also fully trained (Table 1).
        diagonals: the fixed diagonal values of Fig. 4 middle (each task that share).
        sharing_samples: random sharings per fixed diagonal (besides the extremes 0 and 1).
        es_penalties: the L2 penalties on diag P of the ES runs (Fig. 4 right).
        es_steps: ES steps per run.
        es_directions: antithetic directions per step (authors' code: 8).
        es_top_k: directions kept (7).
        es_initial: initial samples, the best one the start (32).
        table2_penalty: the penalty whose ES partition Table 2 trains (one of
            ``es_penalties``; the paper: 1e-3).
        mask_method: ``sampler`` or ``milp`` (module doc).
        mask_draws: the sampler's draws per task (authors' partition manager: 100).
        milp_time_limit: seconds per MILP when ``mask_method="milp"``.
        benchmark_channels: channel counts c of the MILP / sampler benchmark (notebook).
        benchmark_tasks: task counts n of that benchmark.
        benchmark_time_limit: seconds each MILP of the benchmark may run.
        threads: torch CPU threads per process (``None``: torch's default).
        workers: processes running a unit's jobs in parallel (numbers do not depend on it).
        runs_dir: the runs folder, where a unit finds the units it reads (set by
            :func:`run_study` and :func:`run_cli_unit`; not a setting).
    """

    profile: str = DEFAULT_PROFILE
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    search_seeds: tuple[int, ...] = (0,)
    scale: float | None = None
    teacher_steps: int = 10_000
    teacher_lr: float = 0.05
    epochs: int = 33
    short_epochs: tuple[int, ...] = (2, 3)
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    freeze_early: bool = True
    distill_iterations: int = 3000
    distill_batch_size: int = 4
    distill_lr: float = 1.0
    distill_drop_at: int = 2000
    random_partitions: int = 200
    table1_partitions: int = 30
    diagonals: tuple[float, ...] = (0.25, 0.5, 0.75)
    sharing_samples: int = 20
    es_penalties: tuple[float, ...] = (0.0, 1e-3, 1e-2)
    es_steps: int = 50
    es_directions: int = part.ES_DIRECTIONS
    es_top_k: int = part.ES_TOP_K
    es_initial: int = part.ES_INITIAL_SAMPLES
    table2_penalty: float = part.ES_PENALTY
    mask_method: str = "sampler"
    mask_draws: int = part.DEFAULT_DRAWS
    milp_time_limit: float = 10.0
    benchmark_channels: tuple[int, ...] = (64, 256)
    benchmark_tasks: tuple[int, ...] = (6, 10)
    benchmark_time_limit: float = 60.0
    threads: int | None = None
    workers: int = 1
    runs_dir: str | None = None

    def __post_init__(self) -> None:
        """Check every field; messages name it ``PartitionStudyConfig.<field>``
        (``partition.<field>`` through :func:`study_config`)."""
        check_profile(self.profile)
        name = "PartitionStudyConfig"
        for field in ("seeds", "search_seeds"):
            values = getattr(self, field)
            if not values:
                raise ConfigError(f"{name}.{field} must hold at least one seed")
            for seed in values:
                check_range(f"{name}.{field}", seed, 0, integer=True)
            check_distinct(f"{name}.{field}", values)
        if self.scale is not None:
            check_range(f"{name}.scale", self.scale, 0.0, low_inclusive=False)
        for field in ("teacher_steps", "epochs", "batch_size", "distill_iterations",
                      "distill_batch_size", "distill_drop_at", "random_partitions",
                      "table1_partitions", "es_directions", "es_initial", "mask_draws",
                      "workers"):
            check_range(f"{name}.{field}", getattr(self, field), 1, integer=True)
        check_range(f"{name}.sharing_samples", self.sharing_samples, 0, integer=True)
        check_range(f"{name}.es_steps", self.es_steps, 0, integer=True)
        if self.threads is not None:
            check_range(f"{name}.threads", self.threads, 1, integer=True)
        if len(self.short_epochs) != 2 or list(self.short_epochs) != sorted(
                set(self.short_epochs)):
            raise ConfigError(
                f"{name}.short_epochs must be two increasing budgets (Table 1's 5k and 10k "
                f"iterations); got {list(self.short_epochs)}"
            )
        for budget in self.short_epochs:
            check_range(f"{name}.short_epochs", budget, 1, self.epochs - 1, integer=True)
        if self.table1_partitions > self.random_partitions:
            raise ConfigError(
                f"{name}.table1_partitions ({self.table1_partitions}) must not exceed "
                f"{name}.random_partitions ({self.random_partitions}): Table 1 trains the "
                "search's first random partitions"
            )
        if self.table1_partitions < 3:
            raise ConfigError(
                f"{name}.table1_partitions must be at least 3 (a correlation needs them); got "
                f"{self.table1_partitions}"
            )
        check_range(f"{name}.es_top_k", self.es_top_k, 1, self.es_directions, integer=True)
        for field in ("teacher_lr", "lr", "distill_lr", "milp_time_limit",
                      "benchmark_time_limit"):
            check_range(f"{name}.{field}", getattr(self, field), 0.0, low_inclusive=False)
        check_range(f"{name}.momentum", self.momentum, 0.0, 1.0, high_inclusive=False)
        if not self.diagonals:
            raise ConfigError(f"{name}.diagonals must hold at least one diagonal value")
        for value in self.diagonals:
            check_range(f"{name}.diagonals", value, 0.0, 1.0, low_inclusive=False)
        check_distinct(f"{name}.diagonals", self.diagonals)
        if not self.es_penalties:
            raise ConfigError(f"{name}.es_penalties must hold at least one penalty")
        for value in self.es_penalties:
            check_range(f"{name}.es_penalties", value, 0.0)
        check_distinct(f"{name}.es_penalties", self.es_penalties)
        if self.table2_penalty not in self.es_penalties:
            raise ConfigError(
                f"{name}.table2_penalty ({self.table2_penalty:g}) must be one of "
                f"{name}.es_penalties {list(self.es_penalties)}: Table 2 trains that ES run's "
                "partition"
            )
        check_choice(f"{name}.mask_method", self.mask_method, MASK_METHODS)
        if not isinstance(self.freeze_early, bool):
            raise ConfigError(f"{name}.freeze_early must be true or false")
        for field, low in (("benchmark_channels", 1), ("benchmark_tasks", 2)):
            values = getattr(self, field)
            if not values:
                raise ConfigError(f"{name}.{field} must hold at least one value")
            for value in values:
                check_range(f"{name}.{field}", value, low, integer=True)

    @property
    def architecture(self) -> dict[str, Any]:
        """The network's size (:data:`~mtlrepro.methods.partition_net.ARCHITECTURES`)."""
        return pnet.ARCHITECTURES[self.profile]

    @property
    def channels(self) -> int:
        """c: channels of the partitioned (last) stage."""
        return int(self.architecture["widths"][-1])

    def distill_config(self, seed: int) -> pnet.DistillConfig:
        """The distillation settings of a unit (App. A.2's, scaled by the profile)."""
        return pnet.DistillConfig(
            iterations=self.distill_iterations,
            batch_size=self.distill_batch_size,
            lr=self.distill_lr,
            drop_at=self.distill_drop_at if self.distill_drop_at < self.distill_iterations
            else None,
            seed=seed,
        )


PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {
        "seeds": (0, 1),
        "freeze_early": False,
        "teacher_steps": 4,
        "epochs": 3,
        "short_epochs": (1, 2),
        "batch_size": 16,
        "distill_iterations": 6,
        "distill_batch_size": 4,
        "distill_drop_at": 4,
        "random_partitions": 4,
        "table1_partitions": 3,
        "diagonals": (0.25, 0.75),
        "sharing_samples": 1,
        "es_penalties": (0.0, 1e-3),
        "es_steps": 1,
        "es_directions": 2,
        "es_top_k": 1,
        "es_initial": 2,
        "mask_draws": 4,
        "benchmark_channels": (8,),
        "benchmark_tasks": (3,),
        "benchmark_time_limit": 2.0,
    },
    # CPU seconds of one thread, measured on the 2-core "Intel(R) Xeon(R) Processor" (family
    # 6 model 207, KVM).  Pieces: data 4 s per process; a teacher 2,000 steps in 43-50 s;
    # a distillation (150 steps of 16 images) 1.7 s plus 1.0 s of scoring the validation split
    # (mean 2.7 s over 134); a full training of 7 epochs of single-task batches of 16 (334
    # steps per epoch) with every stage trained, its three validations included, 63-65 s
    # (share all 88 / 63 / 88 / 80 / 88 / 75 % validation accuracy per domain; with mixed
    # batches, where a step trained only its task's ~3 samples, 81 / 11 / 44 / 5 / 23 / 7 %
    # in 76 s).  Units: teachers ~290 s, search (134 distillations) ~370 s, table1 ~510 s,
    # table2 ~290 s per seed.  Total ~1,750 s, ~15 minutes on two cores with two workers per
    # unit, plus ~1.5 minutes of notebook.
    "cpu": {
        "seeds": (0, 1),
        "teacher_steps": 2000,
        "teacher_lr": 0.05,
        "epochs": 7,
        "short_epochs": (2, 4),
        "batch_size": 16,
        "lr": 0.05,
        "freeze_early": False,
        "distill_iterations": 150,
        "distill_batch_size": 16,
        "distill_lr": 0.5,
        "distill_drop_at": 100,
        "random_partitions": 32,
        "table1_partitions": 8,
        "diagonals": (0.25, 0.5, 0.75),
        "sharing_samples": 3,
        "es_penalties": (0.0, 1e-3, 1e-2),
        "es_steps": 3,
        "es_directions": 4,
        "es_top_k": 3,
        "es_initial": 4,
        "benchmark_time_limit": 10.0,
        "threads": 1,
        "workers": 2,
    },
    "paper": {},
}
"""Per-profile overrides of :class:`PartitionStudyConfig` (the paper profile: its defaults;
100k iterations at batch 64 are about 33 epochs of the nine domains' ~196k training images,
5k and 10k about 2 and 3)."""


def study_config(profile: str, **overrides: Any) -> PartitionStudyConfig:
    """The profile's preset with ``overrides`` applied (``None`` values keep the preset).

    Args:
        profile: ``smoke``, ``cpu`` or ``paper``.
        **overrides: :class:`PartitionStudyConfig` fields (lists become tuples).
    """
    given = {k: v for k, v in overrides.items() if v is not None}
    return build_config(PartitionStudyConfig, PRESETS, profile, given, section=SECTION)


KEYS: tuple[str, ...] = tuple(
    f.name
    for f in dataclasses.fields(PartitionStudyConfig)
    if f.name not in ("seeds", "search_seeds", "workers", "runs_dir", "benchmark_channels",
                      "benchmark_tasks", "benchmark_time_limit")
)
"""The config fields a unit's numbers depend on."""


def seeds_of(kind: str, config: PartitionStudyConfig) -> tuple[int, ...]:
    """The seeds a kind runs for (module doc)."""
    check_choice("partition unit kind", kind, UNIT_KINDS)
    return config.search_seeds if kind in SEARCH_KINDS else config.seeds


# --------------------------------------------------------------------------------------------
# Jobs
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Job:
    """One job of a unit.

    Attributes:
        kind: the unit kind.
        name: ``teachers``: the task; ``search``: ``random``, ``diagonal`` or ``es``;
            ``table1``: ``random``; ``table2``: a key of :data:`TABLE2_ROWS`.
        indices: the random partitions it covers (``search`` / ``table1``).
        value: the fixed diagonal or the ES penalty.
    """

    kind: str
    name: str
    indices: tuple[int, ...] = ()
    value: float | None = None


def task_names(config: PartitionStudyConfig) -> tuple[str, ...]:
    """The study's tasks (the dataset's domains)."""
    return tuple(split(config, "val").task_specs)


def settings(kind: str, config: PartitionStudyConfig) -> list[Job]:
    """The jobs of one unit, the costliest first (so that workers finish together).

    Args:
        kind: one of :data:`UNIT_KINDS`.
        config: the study settings.
    """
    check_choice("partition unit kind", kind, UNIT_KINDS)
    if kind == "teachers":
        return [Job(kind, task) for task in task_names(config)]
    if kind == "search":
        chunks = np.array_split(np.arange(config.random_partitions), RANDOM_CHUNKS)
        return [
            *(Job(kind, "es", value=p) for p in config.es_penalties),
            *(Job(kind, "diagonal", value=d) for d in config.diagonals),
            *(Job(kind, "random", tuple(int(i) for i in c)) for c in chunks if len(c)),
        ]
    if kind == "table1":
        return [Job(kind, "random", (i,)) for i in range(config.table1_partitions)]
    return [Job(kind, row) for row in TABLE2_ROWS]


def random_P(n_tasks: int, seed: int, index: int) -> np.ndarray:
    """The ``index``-th random ``P̃`` of a seed (§4.1; the search and Table 1 share them)."""
    return part.random_partition(n_tasks, np.random.default_rng([seed, index]))


def sharings(config: PartitionStudyConfig, n_tasks: int, seed: int, k: int) -> list[Any]:
    """Fig. 4 middle's raw sharings for the ``k``-th diagonal: 0, 1 and random matrices."""
    rng = np.random.default_rng([seed, 1_000_000 + k])
    random = []
    for _ in range(config.sharing_samples):
        upper = rng.uniform(0.0, 1.0, size=n_tasks * (n_tasks - 1) // 2)
        random.append(part._symmetric(np.zeros(n_tasks), upper))
    return [0.0, 1.0, *random]


def derive_masks(P_tilde: np.ndarray, config: PartitionStudyConfig, seed: int) -> np.ndarray:
    """The ``c × n`` mask of ``P̃`` (App. A.1), by :attr:`PartitionStudyConfig.mask_method`."""
    if config.mask_method == "milp":
        return part.masks_milp(P_tilde, config.channels, time_limit=config.milp_time_limit,
                               formulation="patterns")
    return part.masks_sampled(P_tilde, config.channels, seed=seed, draws=config.mask_draws)


# --------------------------------------------------------------------------------------------
# Data and the units a unit reads
# --------------------------------------------------------------------------------------------
def split(config: PartitionStudyConfig, name: str, tasks: Sequence[str] | None = None):
    """One split of the study's data, restricted to ``tasks`` (``None``: every domain).

    Args:
        config: the study settings.
        name: ``train``, ``val`` or ``test``.
        tasks: the domains.
    """
    overrides: dict[str, Any] = {} if tasks is None else {"tasks": tuple(tasks)}
    if config.scale is not None and DATASETS[config.profile] == "decathlon":
        overrides["scale"] = config.scale
    return get_dataset(DATASETS[config.profile], name, config.profile, **overrides)


def _whole(dataset: Any) -> dict[str, torch.Tensor]:
    """Every sample of a split as one batch (float images in [0, 1], targets)."""
    return dataset.batch(torch.arange(len(dataset)))


def _encode_weights(model: torch.nn.Module) -> str:
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _decode_weights(text: str) -> dict[str, torch.Tensor]:
    return torch.load(io.BytesIO(base64.b64decode(text)), weights_only=True)


def read_unit(kind: str, seed: int, config: PartitionStudyConfig) -> list[dict[str, Any]]:
    """The records of another unit, read from the runs folder (trained and written there when
    missing or stale; one process).

    Raises:
        ConfigError: the config has no :attr:`~PartitionStudyConfig.runs_dir`.
    """
    if config.runs_dir is None:
        raise ConfigError(
            f"a partition {kind!r} unit is read from the runs folder, which the config does not "
            "name: run units through units.run_study(config, runs_dir) or `python -m "
            "mtlrepro.runs partition KIND SEED`"
        )
    one = dataclasses.replace(config, workers=1)
    return UNITS.run_unit(kind, seed, one, config.runs_dir, progress=False)


@dataclass
class SearchContext:
    """What scoring a partition by distillation needs (one per process and unit).

    Attributes:
        tasks: the task names, in mask column order.
        teachers: task -> its trained single-task teacher (eval mode).
        train_images: task -> its training images.
        eval_sets: task -> its validation images and labels.
        reference: task -> the teacher's validation accuracy (fraction, floored at chance).
    """

    tasks: tuple[str, ...]
    teachers: dict[str, pnet.PartitionResNet]
    train_images: dict[str, torch.Tensor]
    eval_sets: dict[str, tuple[torch.Tensor, torch.Tensor]]
    reference: dict[str, float]


_CONTEXTS: dict[tuple[int, PartitionStudyConfig], SearchContext] = {}


def search_context(seed: int, config: PartitionStudyConfig) -> SearchContext:
    """The teachers of ``seed`` (from their unit) and the data, built once per process."""
    key = (seed, dataclasses.replace(config, workers=1))
    if key in _CONTEXTS:
        return _CONTEXTS[key]
    records = {r["task"]: r for r in read_unit("teachers", seed, config)}
    tasks = task_names(config)
    specs = split(config, "val").task_specs
    teachers, train_images, eval_sets, reference = {}, {}, {}, {}
    for task in tasks:
        teacher = pnet.create_partition_resnet({task: specs[task]}, config.profile)
        teacher.load_state_dict(_decode_weights(records[task]["weights"]))
        teachers[task] = teacher.eval()
        train_images[task] = _whole(split(config, "train", (task,)))["image"]
        val = _whole(split(config, "val", (task,)))
        eval_sets[task] = (val["image"], val[task].long())
        chance = 1.0 / specs[task].num_classes
        reference[task] = max(records[task]["val_accuracy"] / 100.0, chance)
    _CONTEXTS.clear()
    _CONTEXTS[key] = SearchContext(tasks, teachers, train_images, eval_sets, reference)
    return _CONTEXTS[key]


# --------------------------------------------------------------------------------------------
# The jobs
# --------------------------------------------------------------------------------------------
def _partition_fields(P_tilde: np.ndarray, masks: np.ndarray, tasks: Sequence[str]) -> dict:
    """A partition's JSON fields: ``P̃``, its average use and each task's mask size."""
    return {
        "P": np.asarray(P_tilde).tolist(),
        "average_use": part.average_use(P_tilde),
        "mask_use": float(masks.mean()),
        "channels": {t: int(masks[:, k].sum()) for k, t in enumerate(tasks)},
    }


def score_partition(P_tilde: np.ndarray, seed: int, config: PartitionStudyConfig) -> dict:
    """Score one ``P̃`` by feature distillation (§4.2) with the seed's teachers.

    Returns:
        The partition's fields, ``score`` (mean normalised accuracy), ``task_scores``,
        ``accuracy`` (task -> fraction with the student substituted) and ``cpu_seconds``.
    """
    context = search_context(seed, config)
    masks = derive_masks(P_tilde, config, seed)
    start = time.process_time()
    result = pnet.distill(context.teachers, masks, context.train_images, context.eval_sets,
                          config.distill_config(seed), reference=context.reference)
    return {
        **_partition_fields(P_tilde, masks, context.tasks),
        "score": result.score,
        "task_scores": result.task_scores,
        "accuracy": result.accuracy,
        "cpu_seconds": time.process_time() - start,
    }


def _train_teacher(job: Job, seed: int, config: PartitionStudyConfig) -> dict[str, Any]:
    """One single-task teacher (§4.2)."""
    train_set = split(config, "train", (job.name,))
    val_set = split(config, "val", (job.name,))
    specs = train_set.task_specs
    start = time.process_time()
    steps_per_epoch = max(1, len(train_set) // config.batch_size)
    epochs = -(-config.teacher_steps // steps_per_epoch)
    trained = train_network(
        lambda: pnet.create_partition_resnet(specs, config.profile),
        specs,
        create_balancer("equal", list(specs)),
        train_set,
        None,
        val_set,
        train_config_for(config, epochs=epochs, lr=config.teacher_lr, optimizer="sgd",
                         lr_schedule="step", lr_step_size=lr_drop_epoch(epochs),
                         seed=seed, progress=False),
    )
    return {
        "task": job.name,
        "val_accuracy": float(trained.test[job.name]["accuracy"]),
        "cpu_seconds": time.process_time() - start,
        "weights": _encode_weights(trained.model),
    }


def _search(job: Job, seed: int, config: PartitionStudyConfig) -> list[dict[str, Any]]:
    """Random partitions, a fixed diagonal with varying sharing, or one ES run (§4.1)."""
    n = len(task_names(config))
    if job.name == "random":
        return [{"job": "random", "index": i, **score_partition(random_P(n, seed, i), seed,
                                                                 config)}
                for i in job.indices]
    if job.name == "diagonal":
        k = config.diagonals.index(job.value)
        return [
            {"job": "diagonal", "diagonal": job.value, "sharing_index": j,
             **score_partition(part.diagonal_partition([job.value] * n, sharing), seed, config)}
            for j, sharing in enumerate(sharings(config, n, seed, k))
        ]
    records: list[dict[str, Any]] = []

    def score(P_tilde: np.ndarray) -> float:
        records.append(score_partition(P_tilde, seed, config))
        return records[-1]["score"]

    es = part.EvolutionStrategy(
        n, seed=seed, directions=config.es_directions, top_k=config.es_top_k,
        penalty=job.value, initial=config.es_initial,
    )
    result = es.run(score, config.es_steps)
    out = [{"job": "es", "penalty": job.value, "step": sample.step, **record}
           for sample, record in zip(result.history, records, strict=True)]
    final = score_partition(result.final, seed, config)
    return [*out, {"job": "es_final", "penalty": job.value, "step": config.es_steps, **final}]


def train_partition(
    masks: np.ndarray,
    seed: int,
    config: PartitionStudyConfig,
    budgets: Sequence[int] = (),
    test: bool = False,
) -> dict[str, Any]:
    """Fully train the partitioned network with ``masks`` (App. A.2; module doc).

    Args:
        masks: the ``c × n`` forward masks (backward masks = forward masks).
        seed: seed of initialisation, data order and task draws.
        config: the study settings.
        budgets: epochs (below ``config.epochs``) after which the validation accuracy is also
            recorded (Table 1's short trainings), resumed from a checkpoint.
        test: also evaluate the test split at the end (Table 2).

    Returns:
        ``val`` (epochs -> task -> accuracy %, at each budget and at the end), ``cpu_seconds``
        (epochs -> CPU seconds up to and including that evaluation), ``test`` (task ->
        accuracy %, when asked) and ``parameters`` (the partitioned stage's weights per task,
        ``union`` and ``full``).
    """
    train_set, val_set = split(config, "train"), split(config, "val")
    specs = train_set.task_specs
    tasks = make_tasks(specs)
    balancer = create_balancer("equal", list(specs))
    seed_everything(seed)
    model = pnet.create_partition_resnet(specs, config.profile)
    model.set_masks(masks)
    drop = lr_drop_epoch(config.epochs)
    val: dict[str, dict[str, float]] = {}
    seconds: dict[str, float] = {}
    start = time.process_time()
    with tempfile.TemporaryDirectory() as folder:
        for epochs in (*budgets, config.epochs):
            run_config = train_config_for(
                config, epochs=epochs, seed=seed, optimizer="sgd", lr_schedule="step",
                lr_step_size=drop, eval_every=epochs, progress=False,
                checkpoint_path=str(Path(folder) / "run.pt"), resume=True,
            )
            hooks = [pnet.PartitionTraining(model, seed=seed, freeze_early=config.freeze_early)]
            result = fit(model, tasks, train_set, val_set, balancer, run_config, hooks)
            val[str(epochs)] = {t: float(m["accuracy"]) for t, m in result.final.items()}
            seconds[str(epochs)] = time.process_time() - start
    out: dict[str, Any] = {
        "val": val,
        "cpu_seconds": seconds,
        "parameters": pnet.partition_parameter_counts(model),
    }
    if test:
        scores = evaluate(model, tasks, split(config, "test"), run_config.eval_batch_size)
        out["test"] = {t: float(m["accuracy"]) for t, m in scores.items()}
    return out


def table2_partition(row: str, seed: int, config: PartitionStudyConfig) -> np.ndarray:
    """The ``P̃`` of a Table 2 row: a baseline, or the ES partition at ``table2_penalty``
    found by the first search seed's search unit."""
    if row != "es":
        return part.baseline_partition(row, len(task_names(config)))
    search = read_unit("search", config.search_seeds[0], config)
    found = [r for r in search
             if r["job"] == "es_final" and r["penalty"] == config.table2_penalty]
    return np.asarray(found[0]["P"])


def _train_table(job: Job, seed: int, config: PartitionStudyConfig) -> dict[str, Any]:
    """A Table 1 partition (validation at the short budgets) or a Table 2 row (test)."""
    tasks = task_names(config)
    if job.kind == "table1":
        (index,) = job.indices
        P_tilde = random_P(len(tasks), seed, index)
        masks = derive_masks(P_tilde, config, seed)
        return {"index": index, **_partition_fields(P_tilde, masks, tasks),
                **train_partition(masks, seed, config, config.short_epochs)}
    P_tilde = table2_partition(job.name, seed, config)
    masks = derive_masks(P_tilde, config, config.search_seeds[0] if job.name == "es" else seed)
    label = es_row(config.table2_penalty) if job.name == "es" else TABLE2_ROWS[job.name]
    return {"row": label, "partition": job.name, **_partition_fields(P_tilde, masks, tasks),
            **train_partition(masks, seed, config, test=True)}


def train_job(job: Job, seed: int, config: PartitionStudyConfig) -> Any:
    """Run one job of a unit; JSON-able record(s) (see the module doc per kind).

    The job first sets :attr:`PartitionStudyConfig.threads` torch threads: the distillations of
    a search never go through the training loop (which sets them), and a worker forked before
    any training would keep torch's default -- two workers of two threads on two cores made a
    search unit 4× slower (13.7 instead of ~3.5 minutes).
    """
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    if job.kind == "teachers":
        return _train_teacher(job, seed, config)
    if job.kind == "search":
        return _search(job, seed, config)
    return _train_table(job, seed, config)


class PartitionUnits(SeedUnits[PartitionStudyConfig]):
    """:class:`SeedUnits` whose kinds run for different seeds (:func:`seeds_of`)."""

    def units(self, config: PartitionStudyConfig) -> list[tuple[str, int]]:
        """Every unit of the study, ``(kind, seed)``, in pipeline order."""
        return [(kind, seed) for kind in self.kinds for seed in seeds_of(kind, config)]


UNITS = PartitionUnits(SECTION, UNIT_KINDS, study_config, settings, train_job, KEYS)
"""Paper E's units: files ``<runs>/<kind>/seed<seed>.json``."""
UNIT_VALUES = UNITS.values
unit_files = UNITS.unit_files


def run_study(
    config: PartitionStudyConfig, runs_dir: str | Path, *, progress: bool = True
) -> list[dict[str, Any]]:
    """Every unit's records (trained only where no matching file exists), each with ``kind``
    and ``seed``; the teachers' weights are left out.

    Args:
        config: the study settings.
        runs_dir: the runs folder.
        progress: show progress bars.
    """
    config = dataclasses.replace(config, runs_dir=str(runs_dir))
    records = UNITS.run_study(config, runs_dir, progress=progress)
    return [{k: v for k, v in r.items() if k != "weights"} for r in records]


def run_cli_unit(
    kind: str, values: Sequence[str], params: dict[str, Any], runs_dir: Path, progress: bool
) -> Path:
    """Train one unit for :func:`mtlrepro.runs.main` (:meth:`SeedUnits.run_cli_unit`, with
    the runs folder in the config)."""
    return UNITS.run_cli_unit(kind, values, {**params, "runs_dir": str(runs_dir)}, runs_dir,
                              progress)
