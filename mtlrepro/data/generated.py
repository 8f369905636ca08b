"""What every embedded (procedurally generated) dataset shares: chunked rendering and the
cached, registered builder.

A generator draws the random parameters of ``chunk`` images at a time from a seed of its own
(``SeedSequence([seed, split index, chunk index])``, so a smaller split is a prefix of a larger
one) and renders them a few rows at a time (bounded memory); :func:`render_in_chunks` runs that
loop and assembles the split.  :func:`build_generated` is the body of every registered builder:
validated config from the profile's preset, arrays from the disk cache (generated on first use),
one :class:`~mtlrepro.data.base.TensorDataset` over the chosen tasks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from mtlrepro.config import build_config, check_choice
from mtlrepro.data.base import SPLITS, TensorDataset
from mtlrepro.data.cache import load_or_generate, split_cache_key
from mtlrepro.tasks import TaskSpec

RowRenderer = Callable[[slice], dict[str, np.ndarray]]
"""Renders rows ``rows`` of a prepared chunk: array name -> array with ``len(rows)`` rows."""


def chunk_rng(seed: int, split: str, chunk: int) -> np.random.Generator:
    """The random generator of one chunk of one split: ``SeedSequence([seed, split index,
    chunk])``.

    Args:
        seed: the dataset's seed.
        split: ``train``, ``val`` or ``test``.
        chunk: the chunk's index within the split.
    """
    return np.random.default_rng(np.random.SeedSequence([seed, SPLITS.index(split), chunk]))


def render_in_chunks(
    total: int,
    chunk_size: int,
    rows_per_render: int,
    prepare_chunk: Callable[[int, int], RowRenderer],
) -> dict[str, np.ndarray]:
    """Assemble ``total`` images drawn chunk by chunk and rendered a few rows at a time.

    Args:
        total: images in the split.
        chunk_size: images per chunk (the unit of random draws).
        rows_per_render: images rendered at once (``>= 1``; bounds memory).
        prepare_chunk: ``(chunk index, images in it) -> renderer`` of that chunk; the renderer
            is called on consecutive row slices, in order (it may keep drawing from the chunk's
            generator).

    Returns:
        Array name -> array of ``total`` rows (dtype and shape per row from the renderer).
    """
    out: dict[str, np.ndarray] = {}
    for chunk, start in enumerate(range(0, total, chunk_size)):
        count = min(chunk_size, total - start)
        render = prepare_chunk(chunk, count)
        for first in range(0, count, rows_per_render):
            arrays = render(slice(first, min(count, first + rows_per_render)))
            if not out:
                out = {k: np.empty((total, *v.shape[1:]), v.dtype) for k, v in arrays.items()}
            for key, value in arrays.items():
                out[key][start + first : start + first + len(value)] = value
    return out


def rows_per_render(chunk_size: int, pixel_budget: int, height: int, width: int) -> int:
    """Images rendered at once: as many as ``pixel_budget`` pixels allow, 1 to ``chunk_size``.

    Args:
        chunk_size: images per chunk.
        pixel_budget: pixels rendered at once.
        height: image height.
        width: image width.
    """
    return max(1, min(chunk_size, pixel_budget // (height * width)))


def build_generated(
    name: str,
    split: str,
    profile: str,
    overrides: Mapping[str, Any],
    *,
    config_class: type,
    presets: Mapping[str, Mapping[str, Any]],
    version: int,
    generate: Callable[[Any, str], dict[str, np.ndarray]],
    task_specs: Callable[[Any], dict[str, TaskSpec]],
) -> TensorDataset:
    """One split of an embedded dataset, generated on first use and cached on disk.

    Args:
        name: the dataset's registered name.
        split: ``train``, ``val`` or ``test``.
        profile: ``smoke``, ``cpu`` or ``paper`` (selects the ``presets`` entry).
        overrides: config fields overriding the preset (validated by ``config_class``).
        config_class: the dataset's config dataclass (with ``tasks`` and ``n_<split>``).
        presets: profile -> config fields.
        version: the generator's version (part of the cache key).
        generate: ``(config, split) -> arrays`` (``"image"`` and one array per task, at least).
        task_specs: ``config -> {task: spec}`` of the config's tasks.
    """
    check_choice("split", split, SPLITS)
    config = build_config(config_class, presets, profile, overrides)
    arrays = load_or_generate(
        name, split, split_cache_key(config, split), version, lambda: generate(config, split)
    )
    tensors = {key: torch.from_numpy(arrays[key]) for key in ("image", *config.tasks)}
    return TensorDataset(name, split, tensors, task_specs(config), config)
