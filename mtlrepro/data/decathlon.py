"""``decathlon``: an embedded Visual-Decathlon-like set of image classification domains (paper E).

Paper E trains one network on nine Visual Decathlon domains at once (§5: "all datasets except
for ImageNet"), one classification head per domain: domains of very different size, class
count and difficulty, from the near-solved pedestrian and traffic-sign tasks to textures and
flowers.  This dataset has six procedurally generated domains with that spread
(:data:`DECATHLON_DOMAINS`), each standing in for one real domain (the real data is
:mod:`mtlrepro.data.visual_decathlon`):

==============  ========  ==================================================  =============
domain          classes   images                                              stands for
==============  ========  ==================================================  =============
``pedestrian``  2         grey: a walking stick figure vs clutter strokes     daimlerpedcls
``textures``    16        4 families x 2 scales x 2 orientations, warped      dtd
``signs``       27        3 shapes x 3 rim colours x 3 inner symbols          gtsrb
``glyphs``      40        2 alphabets x 20 characters of :mod:`.glyphs`       omniglot
``digits``      10        stroke digits, coloured, with neighbour digits      svhn
``flowers``     17        radial petals: count, shape, hue, centre            vgg-flowers
==============  ========  ==================================================  =============

**One task labels each sample**, as in :mod:`mtlrepro.data.glyphs`: task ``<domain>``
(``classification``) is the class within that domain, every other task's target is ``-1``
(ignore), and ``tasks`` chooses the domains *and* keeps only their images, so
``tasks=("signs",)`` is the single-task data of ``signs``.
:func:`~mtlrepro.data.glyphs.sample_tasks` gives the domain of every sample.
:data:`NO_FLIP_DOMAINS` are those a horizontal flip would change the meaning of (the authors'
code disables flips for gtsrb, omniglot and svhn).  The digits are drawn from stroke templates
of the ten digits (scikit-learn's bundled 8x8 digits would need a dependency the project does
not have).

**Sizes** (:data:`DECATHLON_DOMAINS`, at ``scale=1``, the ``cpu`` preset): train / val / test
images per domain, each ``max(classes, round(count * scale))``.  Domain ``d``'s image ``j``
of a split shows class ``j % classes`` (every class in every split, and in every prefix of
``classes`` images); images are ordered round robin over the domains (image ``j`` of every
domain, domains in :data:`DECATHLON_DOMAINS` order, then image ``j + 1``), so a prefix of a
split (``n_train`` ...) covers every domain until the small domains run out.

**Generation** is vectorised NumPy over whole chunks of 256 images; chunk ``k`` of domain
``d`` in split ``s`` draws from ``SeedSequence([seed, index of s, d, k])``, so splits are
independent and a smaller scale gives a prefix of each domain.  The class prototypes (glyph
characters, flower classes) depend on ``seed`` only.  Glyphs and digits are rendered as
antialiased distance fields by the ``glyphs`` renderer, pedestrians and clutter as capsules
(straight strokes); signs, textures and flowers are analytic fields over the pixel grid.
Images are stored as uint8 RGB (grey domains repeat the grey value).

**Presets** (:data:`DECATHLON_PRESETS`): ``smoke`` 32x32 at ``scale=0.05`` (299 / 125 / 155
images, 0.6 s for the three splits on one core); ``cpu`` 32x32 at ``scale=1`` (5,354 / 1,152 /
2,700 images, about 4 s); ``paper`` 64x64 (the Decathlon's 64-pixel crops) at ``scale=2``
(10,708 / 2,304 / 5,400 images, about 26 s).

**Difficulty.**  A small CNN (three 3x3 conv layers of 32-64 channels, one linear head per
domain, Adam) trained for one minute on one core (about 11 epochs of the ``cpu`` training
split) reaches on the ``cpu`` test split: pedestrian 95 % (chance 50 %), signs 95 % (3.7 %),
glyphs 82 % (2.5 %), digits 78 % (10 %), flowers 66 % (5.9 %), textures 49 % (6.3 %) -- the
order of paper E's Table 2 (DPed, GTSR > OGlt, SVHN > Flwr > DTD), short of convergence.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch

from mtlrepro.config import ConfigError, build_config, check_choice, check_range
from mtlrepro.data.base import DATASETS, SPLITS, TensorDataset, check_task_subset
from mtlrepro.data.cache import load_or_generate
from mtlrepro.data.generated import RowRenderer

# The glyphs generator's characters, jitter and stroke renderer (same package).
from mtlrepro.data.glyphs import (
    POINTS,
    _jitter_drawings,
    _render,
    alphabet_styles,
    glyph_characters,
)
from mtlrepro.tasks import TaskSpec

DECATHLON_VERSION = 1  # bump whenever generation changes: it is part of the cache key
CHUNK = 256
"""Images per chunk (the unit of random draws)."""
_ELEMENT_BUDGET = 1 << 22  # segment x pixel distances (or pixels x channels x 8) at once


class Domain(NamedTuple):
    """One domain of ``decathlon``: classes, images per split at ``scale=1``, whether the
    images are grey, and the Visual Decathlon domain it stands for."""

    classes: int
    train: int
    val: int
    test: int
    grey: bool
    stands_for: str


DECATHLON_DOMAINS: dict[str, Domain] = {
    "pedestrian": Domain(2, 2000, 300, 600, True, "daimlerpedcls"),
    "textures": Domain(16, 480, 160, 320, False, "dtd"),
    "signs": Domain(27, 1350, 270, 540, False, "gtsrb"),
    "glyphs": Domain(40, 320, 120, 400, True, "omniglot"),
    "digits": Domain(10, 1000, 200, 500, False, "svhn"),
    "flowers": Domain(17, 204, 102, 340, False, "vgg-flowers"),
}
"""The domains (= tasks), in sample order."""
DECATHLON_TASKS: tuple[str, ...] = tuple(DECATHLON_DOMAINS)
NO_FLIP_DOMAINS: tuple[str, ...] = ("signs", "glyphs", "digits")
"""Domains whose images a horizontal flip would change (as gtsrb, omniglot, svhn)."""


def decathlon_task_specs(tasks: Sequence[str] | None = None) -> dict[str, TaskSpec]:
    """Task specs of the domains' tasks (``classification``, the domain's classes).

    Args:
        tasks: domain names, a subset of :data:`DECATHLON_TASKS` (``None`` = all, in order).
    """
    names = DECATHLON_TASKS if tasks is None else tuple(tasks)
    return {t: TaskSpec(t, "classification", DECATHLON_DOMAINS[t].classes) for t in names}


@dataclasses.dataclass(frozen=True)
class DecathlonConfig:
    """Parameters of the ``decathlon`` dataset (validated on creation).

    Attributes:
        height: image height in pixels.
        width: image width in pixels.
        scale: images per domain and split = ``max(classes, round(count * scale))`` with the
            counts of :data:`DECATHLON_DOMAINS`.
        n_train: use only the first ``n_train`` training images (``None`` = all of the chosen
            domains).
        n_val: the same for the validation split.
        n_test: the same for the test split.
        seed: base random seed (class prototypes and every split's images derive from it).
        tasks: the domains (tasks) to publish, a subset of :data:`DECATHLON_TASKS`
            (``None`` = all); only their images are kept.
    """

    height: int = 32
    width: int = 32
    scale: float = 1.0
    n_train: int | None = None
    n_val: int | None = None
    n_test: int | None = None
    seed: int = 0
    tasks: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        check_range("height", self.height, 16, 512, integer=True)
        check_range("width", self.width, 16, 512, integer=True)
        check_range("scale", self.scale, 0.0, 100.0, low_inclusive=False)
        for split in SPLITS:
            if getattr(self, f"n_{split}") is not None:
                check_range(f"n_{split}", getattr(self, f"n_{split}"), 1, integer=True)
        check_range("seed", self.seed, 0, 2**63 - 1, integer=True)
        if self.tasks is not None:
            check_task_subset("decathlon", self.tasks, DECATHLON_TASKS)

    @property
    def task_names(self) -> tuple[str, ...]:
        """The published tasks: :attr:`tasks`, or every domain when it is ``None``."""
        return DECATHLON_TASKS if self.tasks is None else self.tasks

    def domain_size(self, domain: str, split: str) -> int:
        """Images of ``domain`` in ``split``: ``max(classes, round(count * scale))``."""
        info = DECATHLON_DOMAINS[domain]
        return max(info.classes, round(getattr(info, split) * self.scale))


DECATHLON_PRESETS: dict[str, dict[str, object]] = {
    "smoke": {"height": 32, "width": 32, "scale": 0.05},
    "cpu": {"height": 32, "width": 32, "scale": 1.0},
    "paper": {"height": 64, "width": 64, "scale": 2.0},
}
"""Per-profile :class:`DecathlonConfig` overrides (paper: the Decathlon's 64x64 crops)."""


# ---------------------------------------------------------------------------------- helpers


def _seeded(seed: int, *key: int) -> np.random.Generator:
    """A generator for one purpose: ``SeedSequence([seed, len(SPLITS), *key])`` (never the key
    of a split's chunk)."""
    return np.random.default_rng(np.random.SeedSequence([seed, len(SPLITS), *key]))


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel centres ``x`` ``(1, 1, w)`` and ``y`` ``(1, h, 1)`` in units of half the shorter
    side, the frame centred on 0 (the unit of the glyphs renderer)."""
    unit = min(h, w) / 2
    x = (np.arange(w, dtype=np.float32) + 0.5 - w / 2) / unit
    y = (np.arange(h, dtype=np.float32) + 0.5 - h / 2) / unit
    return x[None, None, :], y[None, :, None]


def _interpolation(size: int, cells: int) -> np.ndarray:
    """Linear interpolation weights ``(size, cells + 1)`` from a coarse grid to ``size`` pixels."""
    position = (np.arange(size) + 0.5) / size * cells
    left = np.minimum(np.floor(position).astype(np.int64), cells - 1)
    frac = position - left
    weights = np.zeros((size, cells + 1), dtype=np.float32)
    weights[np.arange(size), left] = 1 - frac
    weights[np.arange(size), left + 1] = frac
    return weights


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], h: int, w: int,
                  cells: int) -> np.ndarray:  # fmt: skip
    """Smooth noise ``(*shape, h, w)`` (about unit s.d.): a ``cells`` x ``cells`` grid of
    normal values interpolated bilinearly."""
    coarse = rng.standard_normal((*shape, cells + 1, cells + 1)).astype(np.float32)
    return _interpolation(h, cells) @ coarse @ _interpolation(w, cells).T


def _polyline(*points: tuple[float, float]) -> np.ndarray:
    """A polyline through ``points`` resampled to :data:`POINTS` points equally spaced along
    its length: ``(POINTS, 2)``."""
    knots = np.asarray(points, dtype=np.float64)
    length = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(knots, axis=0), axis=1))])
    t = np.linspace(0.0, length[-1], POINTS)
    return np.stack([np.interp(t, length, knots[:, 0]), np.interp(t, length, knots[:, 1])], -1)


def _arc(cx: float, cy: float, rx: float, ry: float, a0: float, a1: float) -> np.ndarray:
    """:data:`POINTS` points of an elliptic arc (angles in units of pi, y down)."""
    a = np.linspace(a0, a1, POINTS) * np.pi
    return np.stack([cx + rx * np.cos(a), cy + ry * np.sin(a)], -1)


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """HSV (arrays of one shape, in [0, 1]) to RGB, a new last axis of 3."""
    k = np.mod(np.array([5.0, 3.0, 1.0]) + h[..., None] * 6, 6)
    return v[..., None] - v[..., None] * s[..., None] * np.clip(np.minimum(k, 4 - k), 0, 1)


def _affine(rng: np.random.Generator, n: int, rotation: float, shear: float,
            scale: tuple[float, float]) -> np.ndarray:  # fmt: skip
    """Random 2x2 matrices ``(n, 2, 2)``: rotation (s.d. ``rotation`` rad), shear (s.d.
    ``shear``) and an isotropic scale uniform in ``scale``."""
    angle = rng.normal(0, rotation, n)
    cos, sin = np.cos(angle), np.sin(angle)
    matrix = np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], -2)
    shearing = np.tile(np.eye(2), (n, 1, 1))
    shearing[:, 0, 1] = rng.normal(0, shear, n)
    return matrix @ shearing * rng.uniform(*scale, n)[:, None, None]


def _strokes_per_render(strokes: int, h: int, w: int) -> int:
    """Images rendered at once by the stroke renderer within the element budget."""
    return max(1, _ELEMENT_BUDGET // (strokes * (POINTS - 1) * h * w))


def _pixels_per_render(h: int, w: int) -> int:
    """Images painted at once by the analytic painters within the element budget."""
    return max(1, _ELEMENT_BUDGET // (8 * h * w))


def _to_uint8(image: np.ndarray) -> np.ndarray:
    """Float image(s) in [0, 1] to uint8."""
    return np.rint(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)


def _grey_to_rgb(grey: np.ndarray) -> np.ndarray:
    """``(n, h, w)`` grey in [0, 1] to uint8 ``(n, 3, h, w)`` (the grey value repeated)."""
    return np.repeat(_to_uint8(grey)[:, None], 3, axis=1)


Prepare = Callable[[np.random.Generator, np.ndarray, int, int, dict[str, Any]],
                   tuple[RowRenderer, int]]  # fmt: skip
"""``(rng, labels, h, w, prototypes) -> (renderer of rows, rows per render)``."""


# ------------------------------------------------------------------------------- pedestrian


def _segments_ink(start: np.ndarray, end: np.ndarray, half: np.ndarray, h: int,
                  w: int) -> np.ndarray:  # fmt: skip
    """Ink in ``[0, 1]`` of straight strokes (capsules): ``(n, h, w)`` float32.

    Args:
        start: ``(n, S, 2)`` first end points (the unit of :func:`_grid`).
        end: ``(n, S, 2)`` second end points.
        half: ``(n, S)`` half widths; ``0`` or less draws nothing.
    """
    x, y = _grid(h, w)
    unit = min(h, w) / 2
    a = start.astype(np.float32)[..., None, None, :]
    d = (end - start).astype(np.float32)[..., None, None, :]
    rx, ry = x[:, None] - a[..., 0], y[:, None] - a[..., 1]
    inv = 1.0 / np.maximum(d[..., 0] ** 2 + d[..., 1] ** 2, 1e-12)
    t = np.clip((rx * d[..., 0] + ry * d[..., 1]) * inv, 0.0, 1.0)
    distance = np.hypot(rx - t * d[..., 0], ry - t * d[..., 1]) - half[..., None, None]
    return np.clip(0.5 - distance.min(1) * unit, 0.0, 1.0).astype(np.float32)


def _prepare_pedestrian(rng: np.random.Generator, labels: np.ndarray, h: int, w: int,
                        protos: dict[str, Any]) -> tuple[RowRenderer, int]:  # fmt: skip
    """A walking stick figure (class 1) or as many clutter strokes (class 0) over a smooth
    grey background with long background bars, object and bars of random grey levels."""
    n = len(labels)
    s = 6  # head, torso, two legs, two arms -- or six clutter strokes
    height = rng.uniform(1.1, 1.6, n)  # figure height (the frame is 2 units)
    cx = rng.normal(0, 0.12, n)
    feet = rng.uniform(0.6, 0.9, n)
    top = feet - height
    head, neck, hip = top + 0.1 * height, top + 0.2 * height, top + 0.55 * height
    stride = rng.uniform(-0.22, 0.22, n) * height
    lean = rng.normal(0, 0.04, n)
    arm = rng.uniform(0.05, 0.25, n) * height
    shoulder = neck + 0.04

    def at(px: np.ndarray, py: np.ndarray) -> np.ndarray:
        return np.stack([px, py], -1)

    start = np.stack([at(cx + lean, head), at(cx + lean, neck), at(cx, hip), at(cx, hip),
                      at(cx + lean, shoulder), at(cx + lean, shoulder)], 1)  # fmt: skip
    end = np.stack([at(cx + lean, head), at(cx, hip), at(cx + stride, feet),
                    at(cx - stride, feet), at(cx + arm, hip), at(cx - arm, hip)], 1)  # fmt: skip
    fig_half = np.array([0.1, 0.055, 0.045, 0.045, 0.035, 0.035])[None] * height[:, None]
    fig_half = fig_half * rng.uniform(0.8, 1.25, (n, 1))
    # Clutter: six strokes of random length and direction, half of them near-vertical.
    c_start = np.stack([rng.normal(0, 0.35, (n, s)), rng.uniform(-0.8, 0.8, (n, s))], -1)
    angle = np.where(rng.random((n, s)) < 0.5, np.pi / 2 + rng.normal(0, 0.2, (n, s)),
                     rng.uniform(0, np.pi, (n, s)))  # fmt: skip
    length = rng.uniform(0.2, 0.9, (n, s))
    c_end = c_start + np.stack([np.cos(angle), np.sin(angle)], -1) * length[..., None]
    c_half = rng.uniform(0.025, 0.08, (n, s))
    person = (labels == 1)[:, None]
    start = np.where(person[..., None], start, c_start)
    end = np.where(person[..., None], end, c_end)
    half = np.where(person, fig_half, c_half)
    # Background bars (both classes): three long, near axis-aligned strokes, 60 % drawn.
    b_start = rng.uniform(-1.2, 1.2, (n, 3, 2))
    b_angle = rng.choice([0.0, np.pi / 2], (n, 3)) + rng.normal(0, 0.1, (n, 3))
    b_end = b_start + np.stack([np.cos(b_angle), np.sin(b_angle)], -1) * 2.5
    b_half = np.where(rng.random((n, 3)) < 0.6, rng.uniform(0.03, 0.15, (n, 3)), -1.0)
    base = rng.uniform(0.25, 0.75, n)
    sign = rng.choice([-1.0, 1.0], n)
    obj_value = np.clip(base + sign * rng.uniform(0.3, 0.5, n), 0, 1)
    bar_value = np.clip(base[:, None] + rng.uniform(-0.3, 0.3, (n, 3)), 0, 1)
    background = (base[:, None, None] + 0.12 * _smooth_noise(rng, (n,), h, w, 3)
                  + 0.05 * _smooth_noise(rng, (n,), h, w, 8))  # fmt: skip
    noise = rng.normal(0, 0.03, (n, h, w)).astype(np.float32)

    def render(rows: slice) -> dict[str, np.ndarray]:
        image = background[rows]
        for k in range(3):
            ink = _segments_ink(b_start[rows, k : k + 1], b_end[rows, k : k + 1],
                                b_half[rows, k : k + 1], h, w)  # fmt: skip
            image = image * (1 - ink) + bar_value[rows, k, None, None] * ink
        ink = _segments_ink(start[rows], end[rows], half[rows], h, w)
        image = image * (1 - ink) + obj_value[rows, None, None] * ink
        return {"image": _grey_to_rgb(image + noise[rows])}

    return render, max(1, _ELEMENT_BUDGET // (8 * s * h * w))


# --------------------------------------------------------------------------------- textures


def _prepare_textures(rng: np.random.Generator, labels: np.ndarray, h: int, w: int,
                      protos: dict[str, Any]) -> tuple[RowRenderer, int]:  # fmt: skip
    """Class ``c``: family ``c // 4`` (grating, plaid, dots, waves), scale ``c // 2 % 2``
    (coarse, fine) and orientation ``c % 2`` (axis-aligned, diagonal); random phase, zoom,
    90-degree turn, colours, contrast, a smooth warp of the coordinates and noise."""
    n = len(labels)
    family, fine, diagonal = labels // 4, labels // 2 % 2, labels % 2
    theta = (diagonal * np.pi / 4 + rng.integers(0, 2, n) * np.pi / 2
             + rng.normal(0, 0.08, n))  # fmt: skip
    freq = np.where(fine == 1, 2.6, 1.5) * rng.uniform(0.8, 1.25, n)  # cycles per unit
    phase = rng.uniform(0, 2 * np.pi, (n, 2))
    colours = rng.uniform(0, 1, (n, 2, 3))
    contrast = rng.uniform(0.35, 1.0, n)
    warp = 0.08 * _smooth_noise(rng, (n, 2), h, w, 3)
    illumination = 0.08 * _smooth_noise(rng, (n,), h, w, 2)
    noise = rng.normal(0, 0.06, (n, 3, h, w)).astype(np.float32)
    x, y = _grid(h, w)

    def render(rows: slice) -> dict[str, np.ndarray]:
        r = np.arange(n)[rows]
        cos = np.cos(theta[r])[:, None, None]
        sin = np.sin(theta[r])[:, None, None]
        wx, wy = x + warp[r, 0], y + warp[r, 1]
        f = 2 * np.pi * freq[r][:, None, None]
        u = (wx * cos + wy * sin) * f + phase[r, 0, None, None]
        v = (-wx * sin + wy * cos) * f + phase[r, 1, None, None]
        fam = family[r][:, None, None]
        pattern = np.select(
            [fam == 0, fam == 1, fam == 2],
            [np.sin(u), (np.sin(u) + np.sin(v)) / 2,
             np.clip((np.cos(u) + np.cos(v) - 0.8) * 2.5, -1, 1)],
            np.sin(u + 1.3 * np.sin(v / 2)),
        )  # fmt: skip
        mix = 0.5 + 0.5 * contrast[r, None, None] * pattern + illumination[r]
        c0, c1 = colours[r, 0, :, None, None], colours[r, 1, :, None, None]
        image = c0 * (1 - mix[:, None]) + c1 * mix[:, None] + noise[r]
        return {"image": _to_uint8(image)}

    return render, _pixels_per_render(h, w)


# ------------------------------------------------------------------------------------ signs

SIGN_COLOURS = np.array([[0.8, 0.1, 0.1], [0.1, 0.25, 0.75], [0.9, 0.75, 0.1]])
"""Rim colours of the signs: red, blue, yellow."""


def _prepare_signs(rng: np.random.Generator, labels: np.ndarray, h: int, w: int,
                   protos: dict[str, Any]) -> tuple[RowRenderer, int]:  # fmt: skip
    """Class ``c``: shape ``c // 9`` (disc, triangle, diamond), rim colour ``c // 3 % 3`` and
    inner symbol ``c % 3`` (horizontal bar, vertical bar, dot) on a white face; random
    position, size, tilt, illumination, colour cast and a smooth coloured background."""
    n = len(labels)
    shape, colour, symbol = labels // 9, labels // 3 % 3, labels % 3
    centre = rng.normal(0, 0.1, (n, 2))
    radius = rng.uniform(0.5, 0.85, n)
    tilt = rng.normal(0, 0.12, n)
    rim = np.clip(SIGN_COLOURS[colour] + rng.normal(0, 0.07, (n, 3)), 0, 1)
    face = rng.uniform(0.8, 1.0, n)
    background = (rng.uniform(0.15, 0.8, (n, 3, 1, 1))
                  + 0.15 * _smooth_noise(rng, (n, 3), h, w, 4))  # fmt: skip
    light = rng.uniform(0.35, 1.15, n) * rng.uniform(0.85, 1.15, (3, n))
    noise = rng.normal(0, 0.04, (n, 3, h, w)).astype(np.float32)
    x, y = _grid(h, w)
    unit = min(h, w) / 2
    normals = np.array([[0.0, 1.0], [-math.sqrt(3) / 2, -0.5], [math.sqrt(3) / 2, -0.5]])

    def render(rows: slice) -> dict[str, np.ndarray]:
        r = np.arange(n)[rows]
        cos, sin = np.cos(tilt[r])[:, None, None], np.sin(tilt[r])[:, None, None]
        dx, dy = x - centre[r, 0, None, None], y - centre[r, 1, None, None]
        rad = radius[r][:, None, None]
        px, py = (dx * cos + dy * sin) / rad, (-dx * sin + dy * cos) / rad
        sh = shape[r][:, None, None]
        triangle = np.max([nx * px + ny * py for nx, ny in normals], axis=0) / 0.5
        distance = np.select([sh == 0, sh == 1], [np.hypot(px, py), triangle],
                             np.abs(px) + np.abs(py))  # fmt: skip
        inner = np.select([sh == 0, sh == 1], [1.0, 2.0], 1.4)  # symbol scale inside shape
        sx, sy = px * inner, py * inner
        sym = symbol[r][:, None, None]
        bar_h = np.minimum(0.45 - np.abs(sx), 0.12 - np.abs(sy))
        bar_v = np.minimum(0.1 - np.abs(sx), 0.45 - np.abs(sy))
        dot = 0.28 - np.hypot(sx, sy)
        mark = np.select([sym == 0, sym == 1], [bar_h, bar_v], dot) / inner
        edge = rad * unit  # pixels per unit of the shape's distance
        inside = np.clip(0.5 + (1 - distance) * edge / inner, 0, 1)
        ring = np.clip(0.5 + (distance - 0.72) * edge / inner, 0, 1)
        ink = np.clip(0.5 + mark * edge, 0, 1)
        face_rgb = face[r, None, None, None] * (1 - ink[:, None]) + 0.05 * ink[:, None]
        sign = rim[r, :, None, None] * ring[:, None] + face_rgb * (1 - ring[:, None])
        image = background[r] * (1 - inside[:, None]) + sign * inside[:, None]
        image = image * light[:, r].T[:, :, None, None] + noise[r]
        return {"image": _to_uint8(image)}

    return render, _pixels_per_render(h, w)


# ----------------------------------------------------------------------------------- glyphs


def _glyph_prototypes(seed: int) -> dict[str, Any]:
    """Two alphabets of 20 characters of the ``glyphs`` generator: class ``c`` is character
    ``c % 20`` of alphabet ``c // 20``."""
    return {"characters": glyph_characters(seed, 2, 20), "styles": alphabet_styles(seed, 2)}


def _prepare_glyphs(rng: np.random.Generator, labels: np.ndarray, h: int, w: int,
                    protos: dict[str, Any]) -> tuple[RowRenderer, int]:  # fmt: skip
    """A jittered drawing of the class's character (the ``glyphs`` drawers), dark on white."""
    alphabet, character = labels // 20, labels % 20
    chars = protos["glyphs"]["characters"]
    flat = {key: value[alphabet, character] for key, value in chars.items()}
    drawn = _jitter_drawings(rng, flat, protos["glyphs"]["styles"], alphabet)

    def render(rows: slice) -> dict[str, np.ndarray]:
        ink = _render(drawn["points"][rows], drawn["half_width"][rows], drawn["active"][rows],
                      h, w)  # fmt: skip
        return {"image": _grey_to_rgb(1.0 - ink)}

    return render, _strokes_per_render(chars["knots"].shape[2], h, w)


# ----------------------------------------------------------------------------------- digits

_DIGITS = [
    [_arc(0, 0, 0.45, 0.8, 0, 2)],
    [_polyline((0.05, -0.8), (0.05, 0.8)), _polyline((-0.25, -0.5), (0.05, -0.8))],
    [_arc(0, -0.38, 0.42, 0.42, 1, 2.25), _polyline((0.3, -0.08), (-0.45, 0.8), (0.45, 0.8))],
    [_arc(0, -0.4, 0.38, 0.38, 1.1, 2.5), _arc(0, 0.4, 0.42, 0.4, -0.5, 0.9)],
    [_polyline((0.2, 0.8), (0.2, -0.8), (-0.45, 0.3), (0.45, 0.3))],
    [_polyline((0.4, -0.8), (-0.3, -0.8), (-0.35, -0.1)), _arc(0, 0.3, 0.42, 0.48, -0.75, 0.8)],
    [_arc(0, 0.35, 0.4, 0.43, 0, 2), _polyline((0.3, -0.8), (-0.2, -0.35), (-0.4, 0.35))],
    [_polyline((-0.45, -0.8), (0.45, -0.8), (-0.1, 0.8))],
    [_arc(0, -0.42, 0.32, 0.36, 0, 2), _arc(0, 0.38, 0.4, 0.42, 0, 2)],
    [_arc(0, -0.35, 0.4, 0.43, 0, 2), _polyline((0.4, -0.35), (0.3, 0.3), (0.0, 0.8))],
]
DIGIT_STROKES = 2
DIGIT_POINTS = np.zeros((10, DIGIT_STROKES, POINTS, 2))
DIGIT_ACTIVE = np.zeros((10, DIGIT_STROKES), dtype=bool)
for _d, _strokes in enumerate(_DIGITS):
    DIGIT_POINTS[_d, : len(_strokes)] = _strokes
    DIGIT_ACTIVE[_d, : len(_strokes)] = True


def _prepare_digits(rng: np.random.Generator, labels: np.ndarray, h: int, w: int,
                    protos: dict[str, Any]) -> tuple[RowRenderer, int]:  # fmt: skip
    """The class's digit (stroke templates, a random affine, stroke width and wobble) in the
    middle, random neighbour digits left and right (as in house-number crops), random
    foreground and background colours of some contrast, smooth shading and noise."""
    n = len(labels)
    digits = np.stack([labels, rng.integers(0, 10, n), rng.integers(0, 10, n)], 1)  # (n, 3)
    scale = rng.uniform(0.5, 0.7, n)
    matrices = _affine(rng, 3 * n, 0.1, 0.15, (0.9, 1.1)).reshape(n, 3, 2, 2)
    matrices = matrices * scale[:, None, None, None]
    gap = scale * rng.uniform(0.95, 1.25, n)
    shift = np.stack([np.zeros(n), -gap, gap], 1)[..., None] * np.array([1.0, 0.0])
    shift = shift + rng.normal(0, [0.06, 0.07], (n, 1, 2))
    points = DIGIT_POINTS[digits] + rng.normal(0, 0.03, (n, 3, DIGIT_STROKES, POINTS, 2))
    points = np.einsum("ndij,ndspj->ndspi", matrices, points) + shift[:, :, None, None]
    active = DIGIT_ACTIVE[digits] & np.concatenate(
        [np.ones((n, 1), dtype=bool), rng.random((n, 2)) < 0.75], 1)[..., None]  # fmt: skip
    half = (rng.uniform(0.07, 0.13, n) * scale)[:, None] * rng.uniform(0.9, 1.1, (n, 3 * 2))
    points = points.reshape(n, 3 * DIGIT_STROKES, POINTS, 2)
    active = active.reshape(n, 3 * DIGIT_STROKES)
    background = rng.uniform(0, 1, (n, 3))
    foreground = rng.uniform(0, 1, (n, 3))
    luma = np.array([0.3, 0.59, 0.11])
    close = np.abs((foreground - background) @ luma) < 0.3
    foreground[close] = 1.0 - background[close]
    shading = 0.1 * _smooth_noise(rng, (n,), h, w, 2)
    noise = rng.normal(0, 0.04, (n, 3, h, w)).astype(np.float32)

    def render(rows: slice) -> dict[str, np.ndarray]:
        r = np.arange(n)[rows]
        ink = _render(points[r], half[r], active[r], h, w)[:, None]
        image = (background[r, :, None, None] * (1 - ink) + foreground[r, :, None, None] * ink
                 + shading[r, None] + noise[r])  # fmt: skip
        return {"image": _to_uint8(image)}

    return render, _strokes_per_render(3 * DIGIT_STROKES, h, w)


# ---------------------------------------------------------------------------------- flowers


def _flower_prototypes(seed: int) -> dict[str, np.ndarray]:
    """The 17 flower classes: petal count (4-8), petal sharpness, petal hue, centre colour
    (yellow, brown, white) and centre size, spread by a low-discrepancy sequence."""
    c = np.arange(DECATHLON_DOMAINS["flowers"].classes)
    offset = _seeded(seed, 5).random(3)
    return {
        "petals": 4 + (c * 3) % 5,
        "sharp": np.where((c // 5) % 2 == 0, 0.6, 2.5),
        "hue": np.mod(offset[0] + c * 0.618034, 1.0),
        "centre": np.array([[0.95, 0.8, 0.1], [0.35, 0.2, 0.05], [0.95, 0.95, 0.9]])[c % 3],
        "centre_size": 0.18 + 0.14 * np.mod(offset[1] + c * 0.414214, 1.0),
    }


def _prepare_flowers(rng: np.random.Generator, labels: np.ndarray, h: int, w: int,
                     protos: dict[str, Any]) -> tuple[RowRenderer, int]:  # fmt: skip
    """A flower of the class (radial petals, hue jitter, shading towards the tips) at a random
    position, size and rotation over green foliage noise, with random illumination."""
    n = len(labels)
    proto = protos["flowers"]
    petals = proto["petals"][labels][:, None, None]
    sharp = proto["sharp"][labels][:, None, None]
    hue = np.mod(proto["hue"][labels] + rng.normal(0, 0.03, n), 1.0)
    petal_rgb = _hsv_to_rgb(hue, rng.uniform(0.5, 0.95, n), rng.uniform(0.65, 1.0, n))
    centre_rgb = np.clip(proto["centre"][labels] + rng.normal(0, 0.06, (n, 3)), 0, 1)
    centre_size = proto["centre_size"][labels] * rng.uniform(0.85, 1.15, n)
    position = rng.normal(0, 0.15, (n, 2))
    size = rng.uniform(0.55, 0.95, n)
    spin = rng.uniform(0, 2 * np.pi, n)
    foliage = (np.array([0.15, 0.4, 0.12])[None, :, None, None]
               + 0.12 * _smooth_noise(rng, (n, 1), h, w, 5)
               + 0.05 * _smooth_noise(rng, (n, 3), h, w, 3))  # fmt: skip
    light = rng.uniform(0.55, 1.15, n)
    noise = rng.normal(0, 0.04, (n, 3, h, w)).astype(np.float32)
    x, y = _grid(h, w)
    unit = min(h, w) / 2

    def render(rows: slice) -> dict[str, np.ndarray]:
        r = np.arange(n)[rows]
        dx, dy = x - position[r, 0, None, None], y - position[r, 1, None, None]
        rad = np.hypot(dx, dy) / size[r][:, None, None]
        angle = np.arctan2(dy, dx) + spin[r][:, None, None]
        reach = 0.3 + 0.7 * np.abs(np.cos(petals[r] * angle / 2)) ** sharp[r]
        edge = size[r][:, None, None] * unit
        petal = np.clip(0.5 + (reach - rad) * edge, 0, 1)[:, None]
        centre = np.clip(0.5 + (centre_size[r][:, None, None] - rad) * edge, 0, 1)[:, None]
        shade = (0.6 + 0.4 * np.clip(rad / reach, 0, 1))[:, None]
        image = foliage[r] * (1 - petal) + petal_rgb[r, :, None, None] * shade * petal
        image = image * (1 - centre) + centre_rgb[r, :, None, None] * centre
        image = image * light[r, None, None, None] + noise[r]
        return {"image": _to_uint8(image)}

    return render, _pixels_per_render(h, w)


_PREPARE: dict[str, Prepare] = {
    "pedestrian": _prepare_pedestrian,
    "textures": _prepare_textures,
    "signs": _prepare_signs,
    "glyphs": _prepare_glyphs,
    "digits": _prepare_digits,
    "flowers": _prepare_flowers,
}


# ------------------------------------------------------------------------------- generation


def decathlon_prototypes(seed: int) -> dict[str, Any]:
    """The class prototypes that depend on the seed only (glyph characters, flower classes).

    Args:
        seed: the dataset's seed.
    """
    return {"glyphs": _glyph_prototypes(seed), "flowers": _flower_prototypes(seed)}


def generate_domain(
    config: DecathlonConfig, split: str, domain: str, protos: dict[str, Any] | None = None
) -> np.ndarray:
    """The images of one domain in one split, uint8 ``(n, 3, H, W)``; image ``j`` shows class
    ``j % classes`` (no cache).

    Args:
        config: the dataset config (size, scale, seed).
        split: ``train``, ``val`` or ``test``.
        domain: one of :data:`DECATHLON_TASKS`.
        protos: :func:`decathlon_prototypes` of ``config.seed`` (computed if ``None``).
    """
    check_choice("split", split, SPLITS)
    check_choice("decathlon domain", domain, DECATHLON_TASKS)
    protos = decathlon_prototypes(config.seed) if protos is None else protos
    index = DECATHLON_TASKS.index(domain)
    classes = DECATHLON_DOMAINS[domain].classes
    h, w = config.height, config.width
    total = config.domain_size(domain, split)
    image = np.empty((total, 3, h, w), np.uint8)
    for chunk, start in enumerate(range(0, total, CHUNK)):
        count = min(CHUNK, total - start)
        rng = np.random.default_rng(
            np.random.SeedSequence([config.seed, SPLITS.index(split), index, chunk])
        )
        # Every chunk draws a whole chunk's randomness, so fewer images are a prefix.
        labels = (start + np.arange(CHUNK)) % classes
        render, per_render = _PREPARE[domain](rng, labels, h, w, protos)
        for first in range(0, count, per_render):
            rows = slice(first, min(count, first + per_render))
            image[start + rows.start : start + rows.stop] = render(rows)["image"]
    return image


def generate_decathlon(config: DecathlonConfig, split: str) -> dict[str, np.ndarray]:
    """Generate one split with every domain (no cache, no cap, no task selection).

    Returns ``image`` uint8 ``(N, 3, H, W)``, ``domain`` int8 and ``label`` int16 ``(N,)`` in
    the round-robin order of the module doc.

    Args:
        config: the dataset config.
        split: ``train``, ``val`` or ``test``.
    """
    check_choice("split", split, SPLITS)
    protos = decathlon_prototypes(config.seed)
    images, domains, labels, ranks = [], [], [], []
    for d, name in enumerate(DECATHLON_TASKS):
        image = generate_domain(config, split, name, protos)
        n = len(image)
        images.append(image)
        domains.append(np.full(n, d, dtype=np.int8))
        labels.append((np.arange(n) % DECATHLON_DOMAINS[name].classes).astype(np.int16))
        ranks.append(np.arange(n))
    domain, rank = np.concatenate(domains), np.concatenate(ranks)
    order = np.lexsort((domain, rank))
    return {
        "image": np.concatenate(images)[order],
        "domain": domain[order],
        "label": np.concatenate(labels)[order],
    }


def _cache_key(config: DecathlonConfig) -> dict[str, Any]:
    """The config fields one split's arrays depend on (not the caps or the tasks)."""
    key = dataclasses.asdict(config)
    for name in ("tasks", "n_train", "n_val", "n_test"):
        del key[name]
    return key


def select_domains(
    domain: np.ndarray, label: np.ndarray, tasks: Sequence[str]
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The rows showing the chosen domains and their targets (``-1`` where another domain).

    Args:
        domain: domain index (in :data:`DECATHLON_TASKS`) of every row.
        label: class of every row within its domain.
        tasks: the chosen domains.
    """
    chosen = np.array([DECATHLON_TASKS.index(t) for t in tasks])
    rows = np.flatnonzero(np.isin(domain, chosen))
    kept_d, kept_l = domain[rows], label[rows]
    targets = {t: np.where(kept_d == k, kept_l, -1).astype(np.int16)
               for t, k in zip(tasks, chosen, strict=True)}  # fmt: skip
    return rows, targets


@DATASETS.register("decathlon")
def build_decathlon(split: str, profile: str = "cpu", **overrides: object) -> TensorDataset:
    """The ``decathlon`` dataset: one split, generated on first use and cached on disk.

    Args:
        split: ``train``, ``val`` or ``test``.
        profile: ``smoke``, ``cpu`` or ``paper`` (selects the :data:`DECATHLON_PRESETS` entry).
        **overrides: :class:`DecathlonConfig` fields, e.g. ``tasks=("signs", "flowers")`` or
            ``scale=0.5``.
    """
    check_choice("split", split, SPLITS)
    config = build_config(DecathlonConfig, DECATHLON_PRESETS, profile, overrides)
    config = dataclasses.replace(config, tasks=config.task_names)
    arrays = load_or_generate("decathlon", split, _cache_key(config), DECATHLON_VERSION,
                              lambda: generate_decathlon(config, split))  # fmt: skip
    rows, targets = select_domains(arrays["domain"], arrays["label"], config.tasks)
    limit = getattr(config, f"n_{split}")
    if limit is not None:
        if limit > len(rows):
            raise ConfigError(
                f"decathlon {split}: asked for the first {limit} images but the split holds "
                f"{len(rows)} of the chosen domains"
            )
        rows, targets = rows[:limit], {t: v[:limit] for t, v in targets.items()}
    tensors = {"image": torch.from_numpy(np.ascontiguousarray(arrays["image"][rows]))}
    tensors.update({t: torch.from_numpy(v) for t, v in targets.items()})
    return TensorDataset("decathlon", split, tensors, decathlon_task_specs(config.tasks), config)


def decathlon_images_per_second(scale: float = 0.25, profile: str = "cpu") -> float:
    """Generation throughput in images per second of CPU time (no cache) at a preset.

    Args:
        scale: the ``scale`` of the generated training split.
        profile: the preset whose image size is used.
    """
    config = build_config(DecathlonConfig, DECATHLON_PRESETS, profile, {"scale": scale})
    start = time.process_time()
    n = len(generate_decathlon(config, "train")["image"])
    return n / (time.process_time() - start)
