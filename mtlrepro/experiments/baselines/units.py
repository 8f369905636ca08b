"""The baselines' independent training runs: one *unit* per seed, one JSON file.

A unit trains every network of :func:`~mtlrepro.experiments.baselines.study.networks` with one
seed (the three single-task networks, the shared bottom with each balancer, cross-stitch and
MTAN) in ``workers`` processes of ``threads`` torch threads each, and writes one record per
network (:func:`~mtlrepro.experiments.baselines.study.train_network_record`) to
``results/runs/00_baselines/networks/seed<seed>.json``; every network logs its training curves
with dvclive into ``networks/logs/seed<seed>/<network>/`` (``dvc plots show``).  The DVC matrix
stage ``baselines_networks`` runs each seed through ``python -m mtlrepro.runs baselines networks
SEED``; notebook 00 reads the units (training only those missing).  Files, re-use and the
command line are :class:`~mtlrepro.seed_units.SeedUnits`'.
"""

from __future__ import annotations

from mtlrepro.config import check_choice
from mtlrepro.experiments.baselines.study import (
    SECTION,
    BaselinesConfig,
    Network,
    baselines_config,
    networks,
    train_network_record,
)
from mtlrepro.seed_units import SeedUnits

NOTEBOOK = "00_baselines"
"""The baselines' notebook (its runs go to ``results/runs/<NOTEBOOK>/``)."""
UNIT_KINDS: tuple[str, ...] = ("networks",)
"""The one kind of unit: every network of a seed."""
UNIT_KEYS: tuple[str, ...] = (
    "profile",
    "dataset",
    "tasks",
    "balancers",
    "architectures",
    "epochs",
    "batch_size",
    "lr",
    "lr_schedule",
    "lr_step_size",
    "lr_factor",
    "eval_every",
    "n_train",
    "threads",
    "figure_samples",
    "figure_seed",
)
"""The config fields a unit's records depend on (stored in its file).  ``seeds`` is not one (a
seed's networks do not depend on the other seeds); ``figure_seed`` is, as the networks of that
seed store the figure's predictions."""


def unit_jobs(kind: str, config: BaselinesConfig) -> list[Network]:
    """A seed's networks, the costliest first (MTAN, cross-stitch, the shared bottoms, then the
    single-task networks), so that the workers finish together; the notebook restores the table
    order."""
    check_choice("baselines unit kind", kind, UNIT_KINDS)
    return networks(config)[::-1]


UNITS: SeedUnits[BaselinesConfig] = SeedUnits(
    SECTION, UNIT_KINDS, baselines_config, unit_jobs, train_network_record, UNIT_KEYS, logs=True
)
"""The baselines' units: files ``<runs>/networks/seed<seed>.json``, the command line
``python -m mtlrepro.runs baselines networks SEED``."""
UNIT_VALUES = UNITS.values
unit_path = UNITS.unit_path
run_unit = UNITS.run_unit
run_study = UNITS.run_study
run_cli_unit = UNITS.run_cli_unit
unit_files = UNITS.unit_files
