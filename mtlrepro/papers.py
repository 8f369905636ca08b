"""The registry of the repository's experiments: one entry per notebook.

An entry's ``name`` names everything that belongs to it: the package
``mtlrepro/experiments/<name>/``, the method ``mtlrepro/methods/<name>.py`` (where the paper has
one), the notebook ``notebooks/NN_<name>.ipynb``, its results ``results/NN_<name>/`` and its
``params.yaml`` section.  The tests, the DVC checks and the run units' command line
(``python -m mtlrepro.runs <name> <kind> ...``) iterate this registry instead of naming papers.

Adding a paper: its package (``study.py``, ``claims.py``, ``figures.py``, and ``units.py`` when it
has independent run units), its notebook, its ``params.yaml`` section, one :class:`Paper` line
here, and its stages in ``dvc.yaml`` (see the README, "Adding a paper").  No stage's code reads
this registry (the run units' command line finds a paper's ``units`` module by its name), so
adding a paper re-runs none of the others' stages.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass

from mtlrepro.config import check_choice


@dataclass(frozen=True)
class Paper:
    """One experiment notebook and what belongs to it.

    Attributes:
        name: package, ``params.yaml`` section and method module name.
        notebook: the notebook's name, ``NN_<name>``.
        letter: the paper's letter in the papers' list (``"A"``...), ``None`` for the baselines.
    """

    name: str
    notebook: str
    letter: str | None

    @property
    def package(self) -> str:
        """The dotted name of the paper's package."""
        return f"mtlrepro.experiments.{self.name}"

    @property
    def unit_kinds(self) -> tuple[str, ...]:
        """Kinds of the paper's independent run units (``UNIT_KINDS`` of its ``units`` module;
        DVC matrix stages run each unit through ``python -m mtlrepro.runs <name> <kind> ...``),
        empty when the notebook trains everything itself."""
        if importlib.util.find_spec(f"{self.package}.units") is None:
            return ()
        return tuple(importlib.import_module(f"{self.package}.units").UNIT_KINDS)


PAPERS: tuple[Paper, ...] = (
    Paper("baselines", "00_baselines", None),
    Paper("distinctiveness", "01_distinctiveness", "A"),
    Paper("group_sparsity", "02_group_sparsity", "B"),
    Paper("overparam", "03_overparam", "C"),
    Paper("dag", "04_dag", "D"),
    Paper("partition", "05_partition", "E"),
)


def paper(name: str) -> Paper:
    """The registered paper called ``name``; an unknown name raises ``ConfigError`` listing
    the names."""
    by_name = {p.name: p for p in PAPERS}
    return by_name[check_choice("paper", name, tuple(by_name))]
