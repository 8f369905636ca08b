"""``params.yaml``: the top-level ``profile`` and one section per notebook.

The section of notebook ``NN_<name>`` is ``<name>`` (:func:`section_name`), which is also the
name of the paper's package ``mtlrepro/experiments/<name>/`` (:mod:`mtlrepro.papers`).  Read by
the notebook pipeline and by the run units' command line (``python -m mtlrepro.runs``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from mtlrepro.config import ConfigError


def section_name(notebook: str) -> str:
    """The ``params.yaml`` section of a notebook: its name without the ``NN_`` order prefix.

    Args:
        notebook: notebook name, e.g. ``"00_baselines"`` (-> ``"baselines"``).
    """
    return re.sub(r"^\d+_", "", notebook)


def load_params(
    params_path: str | Path, notebook: str, *, section: str | None = None
) -> dict[str, Any]:
    """Parameters of one notebook from ``params.yaml``: top-level ``profile`` + its section.

    Args:
        params_path: the YAML file.
        notebook: the notebook's name.
        section: the section to read; default :func:`section_name` of ``notebook``.
    """
    path = Path(params_path)
    if not path.is_file():
        raise ConfigError(f"parameter file {path} does not exist")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path} must hold a mapping at the top level")
    key = section or section_name(notebook)
    own = data.get(key) or {}
    if not isinstance(own, Mapping):
        raise ConfigError(f"{path}: section {key!r} must be a mapping of parameter -> value")
    for reserved in ("profile", "output_dir"):
        if reserved in own:
            raise ConfigError(
                f"{path}: section {key!r} may not set {reserved!r} "
                "(profile is top-level; output_dir is set by the pipeline)"
            )
    parameters = {"profile": data["profile"]} if "profile" in data else {}
    parameters.update(own)
    return parameters
