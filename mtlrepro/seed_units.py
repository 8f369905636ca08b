"""Run units of the shape ``(kind, seed)``: one JSON file per kind and seed, holding one record
per trained network (papers C and D; paper B's units add a dataset and a λ).

A paper's ``units`` module describes its study once as a :class:`SeedUnits` and exposes the
names :mod:`mtlrepro.runs` looks for (``run_cli_unit``, ``unit_files``, ``UNIT_VALUES``)::

    UNITS = SeedUnits(SECTION, UNIT_KINDS, study_config, settings, train_setting, SETTINGS_KEYS)
    run_cli_unit, unit_files, UNIT_VALUES = UNITS.run_cli_unit, UNITS.unit_files, UNITS.values

The study config must have ``seeds``, ``threads`` and ``workers`` fields.  With ``logs=True`` a
unit's networks also write training logs (dvclive) into :meth:`SeedUnits.log_dir`, a DVC output
of the unit's stage beside its file.  Files, re-use and the
process pool are :mod:`mtlrepro.runs`'.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import torch

from mtlrepro.config import ConfigError, check_choice, check_range
from mtlrepro.runs import load_or_train, map_jobs

C = TypeVar("C")
"""A paper's study config class."""


@dataclass(frozen=True)
class SeedUnits(Generic[C]):
    """A study whose independent units are ``(kind, seed)``.

    Attributes:
        section: the paper's ``params.yaml`` section (also the name in error messages).
        kinds: the unit kinds, in pipeline order.
        make_config: ``(profile, **overrides) -> config``; ``None`` overrides keep the preset.
        settings: ``(kind, config) -> jobs``: the networks one unit trains, in order.
        train: ``(job, seed, config) -> record``, a picklable module-level function returning
            one JSON-able record (or a list of records) per job; with ``logs``,
            ``(job, seed, config, log_dir) -> record``.
        keys: the config fields a unit's numbers depend on (stored in its file: a file made
            with other values is retrained).
        logs: whether ``train`` writes training logs into the unit's :meth:`log_dir`.
    """

    section: str
    kinds: tuple[str, ...]
    make_config: Callable[..., C]
    settings: Callable[[str, C], Sequence[Any]]
    train: Callable[[Any, int, C], Any]
    keys: tuple[str, ...]
    logs: bool = False

    values: tuple[str, ...] = ("SEED",)
    """A unit's values on the command line: ``python -m mtlrepro.runs PAPER KIND SEED``."""

    def unit_path(self, runs_dir: str | Path, kind: str, seed: int) -> Path:
        """The unit's file, ``<runs_dir>/<kind>/seed<seed>.json``."""
        check_choice(f"{self.section} unit kind", kind, self.kinds)
        return Path(runs_dir) / kind / f"seed{seed}.json"

    def log_dir(self, runs_dir: str | Path, kind: str, seed: int) -> Path:
        """The unit's training logs, ``<runs_dir>/<kind>/logs/seed<seed>/`` (with ``logs``)."""
        check_choice(f"{self.section} unit kind", kind, self.kinds)
        return Path(runs_dir) / kind / "logs" / f"seed{seed}"

    def unit_settings(self, kind: str, seed: int, config: C) -> dict[str, Any]:
        """Everything the unit's numbers depend on (a file with others is stale), as stored in
        JSON (tuples become lists, so a file's settings compare equal to the config's)."""
        values = {"kind": kind, "seed": seed, **{k: getattr(config, k) for k in self.keys}}
        return json.loads(json.dumps(values))

    def run_unit(
        self,
        kind: str,
        seed: int,
        config: C,
        runs_dir: str | Path,
        *,
        progress: bool = True,
        retrain: bool = False,
    ) -> list[dict[str, Any]]:
        """One unit's records, read from its file when it matches, else trained and saved.

        Args:
            kind: one of :attr:`kinds`.
            seed: the unit's seed.
            config: the study settings.
            runs_dir: the runs folder.
            progress: show a progress bar over the unit's networks.
            retrain: train and save even if a matching file exists (the DVC stages do).

        Returns:
            The records of every job, flattened, each with ``kind`` and ``seed`` added.
        """
        check_range("seed", seed, 0, integer=True)
        path = self.unit_path(runs_dir, kind, seed)

        def train() -> list[dict[str, Any]]:
            logs = (str(self.log_dir(runs_dir, kind, seed)),) if self.logs else ()
            jobs = [(job, seed, config, *logs) for job in self.settings(kind, config)]
            done = map_jobs(
                self.train,
                jobs,
                workers=config.workers,
                desc=f"{kind} seed {seed}",
                progress=progress,
            )
            return [
                r for result in done for r in (result if isinstance(result, list) else [result])
            ]

        runs = load_or_train(path, self.unit_settings(kind, seed, config), train, retrain=retrain)
        return [{"kind": kind, "seed": seed, **run} for run in runs]

    def units(self, config: C) -> list[tuple[str, int]]:
        """Every unit of the study, ``(kind, seed)``, in pipeline order."""
        return [(kind, seed) for kind in self.kinds for seed in config.seeds]

    def run_study(
        self, config: C, runs_dir: str | Path, *, progress: bool = True
    ) -> list[dict[str, Any]]:
        """Every unit's records (trained only where no matching file exists)."""
        threads = config.threads
        if threads is not None:
            torch.set_num_threads(threads)
        return [
            run
            for unit in self.units(config)
            for run in self.run_unit(*unit, config, runs_dir, progress=progress)
        ]

    def config_from(self, params: dict[str, Any]) -> C:
        """The study config of ``params.yaml``'s ``profile`` and paper section."""
        params = dict(params)
        profile = params.pop("profile")
        params.pop("progress", None)
        return self.make_config(profile, **params)

    def run_cli_unit(
        self, kind: str, values: Sequence[str], params: dict[str, Any], runs_dir: Path,
        progress: bool,
    ) -> Path:
        """Train one unit for :func:`mtlrepro.runs.main`, always, and return its file.

        Args:
            kind: one of :attr:`kinds`.
            values: the seed, as given on the command line.
            params: ``profile`` and the paper's section of ``params.yaml``.
            runs_dir: the runs folder.
            progress: show a progress bar.
        """
        if len(values) != len(self.values):
            raise ConfigError(
                f"a {self.section} unit takes {' '.join(self.values)}; got {list(values)}"
            )
        try:
            seed = int(values[0])
        except ValueError:
            raise ConfigError(
                f"argument seed: a seed is an integer >= 0; got {values[0]!r}"
            ) from None
        self.run_unit(kind, seed, self.config_from(params), runs_dir, progress=progress,
                      retrain=True)
        return self.unit_path(runs_dir, kind, seed)

    def unit_files(self, params: dict[str, Any], runs_dir: Path) -> list[Path]:
        """The file of every unit of the study ``params`` describes (the DVC stages' outputs)."""
        return [self.unit_path(runs_dir, *unit) for unit in self.units(self.config_from(params))]
