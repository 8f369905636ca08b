"""Paper A's training split with Vehicle-X-like class imbalance: a long tail of identities.

Paper A's Fig. 2 and §2.2 are about imbalanced classes: rare colours, a type distribution that
depends on the colour (Eq. 2) and, in Vehicle-X, identities with very different numbers of
images.  The embedded ``vehicles`` generator shows every vehicle equally often (±1) and draws
the colour and type of each *vehicle* by quotas, so with a few pink vehicles P(type | pink) is
quantised (six pink vehicles at the cpu preset: 33 / 17 / 17 / 17 / 17 % against Eq. 2's
35 / 21 / 9 / 24 / 11 %).  As CIFAR-10-LT is built from CIFAR-10 (Cui et al., CVPR 2019), the
study trains on a long-tailed subset of a larger generated pool instead (:func:`long_tailed_train`;
validation and test stay balanced, as in that protocol):

* every colour keeps :data:`~mtlrepro.data.vehicles.COLOUR_SHARES` of the *images*, split over
  its types by :data:`~mtlrepro.data.vehicles.TYPE_GIVEN_COLOUR` (renormalised over the types
  it has vehicles of), so P(type | pink) follows Eq. 2 however few pink vehicles there are;
* within a (colour, type) group the k-th vehicle (in id order, which is random) gets a share
  proportional to k^-α (:func:`identity_shares`; α = 1 at the cpu profile: 5-60 training
  images per vehicle, the most frequent tenth of the vehicles holding 23 % of them);
* every vehicle keeps at least one image (:func:`long_tail_counts`), and a vehicle's images are
  its first ones in the pool, so the subset depends on the pool's seed alone.

Our choice: paper A gives no per-vehicle counts; α and the within-group ranking are ours.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import torch

from mtlrepro.config import build_config, check_range
from mtlrepro.data import get_dataset
from mtlrepro.data.base import TensorDataset
from mtlrepro.data.vehicle_classes import VEHICLE_COLOURS
from mtlrepro.data.vehicles import (
    COLOUR_SHARES,
    TYPE_GIVEN_COLOUR,
    VEHICLES_PRESETS,
    VehiclesConfig,
    vehicle_catalogue,
    vehicles_labels,
)
from mtlrepro.data.vehicles import _quota as largest_remainder_quota  # the generator's quotas

DATASET = "vehicles"
"""The embedded dataset the long tail applies to (the real Vehicle-X has its own)."""


def identity_shares(catalogue: dict[str, np.ndarray], alpha: float) -> np.ndarray:
    """Each vehicle's share of the training images (module doc), summing to 1.

    Args:
        catalogue: :func:`~mtlrepro.data.vehicles.vehicle_catalogue` (``colour``, ``type``).
        alpha: the tail's exponent α (0: equal shares within a group).
    """
    check_range("alpha", alpha, 0.0, 4.0)
    colours, types = catalogue["colour"], catalogue["type"]
    shares = np.empty(len(colours))
    for c, colour in enumerate(VEHICLE_COLOURS):
        present = np.unique(types[colours == c])
        type_shares = TYPE_GIVEN_COLOUR[c, present] / TYPE_GIVEN_COLOUR[c, present].sum()
        for vtype, type_share in zip(present, type_shares, strict=True):
            rows = np.flatnonzero((colours == c) & (types == vtype))
            weights = np.arange(1, len(rows) + 1, dtype=np.float64) ** -alpha
            shares[rows] = COLOUR_SHARES[colour] * type_share * weights / weights.sum()
    return shares / shares.sum()


def long_tail_counts(config: VehiclesConfig, alpha: float) -> np.ndarray:
    """Training images per vehicle, summing to ``config.n_train``: one each, then largest
    remainder quotas of :func:`identity_shares` over the rest.

    Args:
        config: the balanced dataset's config (``n_train``, ``n_ids``, ``seed``).
        alpha: the tail's exponent α.
    """
    shares = identity_shares(vehicle_catalogue(config), alpha)
    return 1 + largest_remainder_quota(shares, config.n_train - config.n_ids)


@functools.lru_cache(maxsize=8)
def long_tail_indices(profile: str, alpha: float) -> tuple[VehiclesConfig, np.ndarray]:
    """The pool's config and the indices (ascending, read-only) of the long-tailed training
    images in it: a pool of ``max(counts) * n_ids`` generated images, each vehicle's first
    :func:`long_tail_counts` images (in pool order, which is random).  Cached: every task set
    of the study asks for the same split.

    Args:
        profile: ``smoke``, ``cpu`` or ``paper``.
        alpha: the tail's exponent α.
    """
    config = build_config(VehiclesConfig, VEHICLES_PRESETS, profile)
    counts = long_tail_counts(config, alpha)
    pool = dataclasses.replace(config, n_train=int(counts.max()) * config.n_ids)
    ids = vehicles_labels(pool, "train")["identity"].astype(np.int64)
    order = np.argsort(ids, kind="stable")  # grouped by vehicle, pool order within
    starts = np.searchsorted(ids[order], np.arange(config.n_ids))
    rank = np.empty(len(ids), dtype=np.int64)
    rank[order] = np.arange(len(ids)) - starts[ids[order]]
    keep = np.flatnonzero(rank < counts[ids])
    keep.setflags(write=False)
    return pool, keep


def long_tailed_labels(profile: str, alpha: float) -> dict[str, np.ndarray]:
    """Every task's labels of the long-tailed training split, without rendering it (NumPy
    only: a process that forks workers afterwards must not have started torch's threads).

    Args:
        profile: ``smoke``, ``cpu`` or ``paper``.
        alpha: the tail's exponent α.
    """
    pool, keep = long_tail_indices(profile, alpha)
    return {task: values[keep] for task, values in vehicles_labels(pool, "train").items()}


def long_tailed_train(profile: str, tasks: tuple[str, ...], alpha: float) -> TensorDataset:
    """The profile's ``vehicles`` training split, long-tailed (:func:`long_tail_indices`).

    Args:
        profile: ``smoke``, ``cpu`` or ``paper``.
        tasks: the tasks to publish.
        alpha: the tail's exponent α.
    """
    pool_config, keep = long_tail_indices(profile, alpha)
    pool = get_dataset(DATASET, "train", profile, tasks=tasks, n_train=pool_config.n_train)
    return TensorDataset(
        pool.name,
        pool.split,
        {k: torch.from_numpy(v.numpy()[keep]) for k, v in pool.tensors.items()},
        pool.task_specs,
        pool.config,
    )
