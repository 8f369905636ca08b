"""``glyphs``: an embedded Omniglot-like dataset of stroke-drawn characters (paper D).

Homogeneous multi-task learning as in paper D, Section 4.1 ("a 20-way classification task in a
multi-task setup using Omniglot ... Each task predicts a class of characters in a single
alphabet set"): ``n_alphabets`` alphabets of ``n_characters`` (20) characters each, every
character drawn ``train_drawings + val_drawings + test_drawings`` times, and one
``classification`` task per alphabet, ``alphabet0``, ``alphabet1``, ... (:func:`glyphs_tasks`),
whose class is the character within that alphabet.

**One task labels each sample.**  An image shows one character of one alphabet; the target of
that alphabet's task is the character (``0 .. n_characters - 1``) and every other task's target
is ``-1`` (ignore, the data convention of :mod:`mtlrepro.data.base`).  The ``tasks`` field
chooses the alphabets *and* keeps only their images, so ``tasks=("alphabet3",)`` is the
single-task data of alphabet 3 (no ``-1`` at all) and the multi-task split is the union of the
single-task splits.  :func:`sample_tasks` gives the task (alphabet) of every sample.

**Alphabets** (:func:`alphabet_styles`, from ``seed`` and the alphabet's index only, so adding
alphabets keeps the earlier ones).  Each alphabet has a style: stroke width, curvature (from
straight polylines to smooth curves), snapping of stroke directions to multiples of 45 degrees
(blocky scripts), how much a stroke turns, segments per stroke, the range of the stroke count,
the probability of dots, of hooks at stroke ends and of a stroke starting on the previous one,
and the aspect ratio.  The style values
are spread over their ranges by a low-discrepancy (Kronecker) sequence over the alphabet index
plus a little seeded jitter, so that no two of the first alphabets look alike.

**Characters** (:func:`glyph_characters`): each character is up to :data:`MAX_STROKES` strokes,
a stroke being a random walk of 1-3 segments (4 knots; a dot is a stroke of length 0 drawn
1.8x wider) rendered as the style's blend of the polyline and the Bezier curve of its
knots.  A character is centred and scaled to fill the frame.  Within an alphabet, characters
whose clean templates (16x16) differ by less than :data:`MIN_TEMPLATE_DIFFERENCE` (mean
absolute ink difference) are redrawn, so all characters are distinct.

**Drawings** (the "drawers"): every image is a jittered drawing of its character -- knot noise
(s.d. 0.05 of the half frame) and a per-stroke shift (s.d. 0.04), curvature jitter, a global
affine jitter (rotation s.d. 0.12 rad, shear s.d. 0.12, scale s.d. 8 %, anisotropy s.d. 6 %,
shift s.d. 7 %), stroke-width variation (x0.7-1.35 per drawing, x0.9-1.1 per stroke) and, for
characters of three strokes or more, a 6 % chance to omit one stroke.  Strokes are rendered as
antialiased distance fields (NumPy, every segment of every image of a few images at once); the
image is dark ink on a white background, as Omniglot's, stored as one uint8 channel and
returned as the documented 3-channel float image (the grey value repeated).

**Splits** (by drawing index).  Drawing ``d`` of split ``s`` -- one image of every character
of every alphabet -- is drawn from ``SeedSequence([seed, index of s, d])``, so splits are
independent and a split with fewer drawings is a prefix of one with more.  Images are ordered
drawing by drawing, then character, then alphabet (sample ``i`` shows alphabet
``i % n_alphabets``), so every class is in every split and a prefix of a split (``n_train``
and friends cap the number of images) covers every alphabet.

**Presets** (:data:`GLYPHS_PRESETS`): ``smoke`` 28x28, 3 alphabets, drawings 2 / 1 / 1 per
character (120 / 60 / 60 images); ``cpu`` 28x28, 5 alphabets, 10 / 5 / 15 drawings per
character (1,000 / 500 / 1,500 images, about 2 s on one core for the three splits); ``paper``
105x105 (Omniglot's size), 20 alphabets (paper D's Table 1 gives the single-task baseline
20.00x the shared bottom's parameters: 20 tasks), 10 / 4 / 6 of 20 drawings (the real loader's
50 / 20 / 30 % drawer split): 4,000 / 1,600 / 2,400 images, about 1 min.  The real Omniglot is
:mod:`mtlrepro.data.omniglot`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mtlrepro.config import ConfigError, build_config, check_choice, check_range
from mtlrepro.data.base import DATASETS, SPLITS, TensorDataset, check_task_subset
from mtlrepro.data.cache import load_or_generate
from mtlrepro.data.generated import RowRenderer, chunk_rng, render_in_chunks
from mtlrepro.tasks import TaskSpec

GLYPHS_VERSION = 1  # bump whenever generation changes: it is part of the cache key
MAX_STROKES = 6
"""Strokes per character at most (dots included)."""
KNOTS = 4
"""Knots per stroke (up to 3 segments)."""
VOCABULARY = 8
"""Strokes of an alphabet's vocabulary, which its characters mostly reuse."""
POINTS = 10
"""Points sampled along every stroke (9 rendered segments)."""
MIN_TEMPLATE_DIFFERENCE = 0.05
"""Least mean absolute difference of two characters' clean 16x16 templates within an alphabet."""
_ELEMENT_BUDGET = 1 << 22  # segment x pixel distances computed at once (bounds memory)
_TEMPLATE_SIZE = 16
# Kronecker sequence steps (fractional parts of square roots, the golden ratio first): every
# style value moves by a well-spread step from one alphabet to the next.
_STYLE_STEPS = np.array([0.618034, 0.414214, 0.732051, 0.236068, 0.645751, 0.316625, 0.605551,
                         0.472136, 0.795832, 0.872983])  # fmt: skip
_STYLE_KEYS = (
    "width", "curvature", "snap", "turn", "segments", "strokes", "dot", "hook", "aspect", "attach"
)  # fmt: skip


def glyphs_tasks(n_alphabets: int) -> tuple[str, ...]:
    """The task names of ``n_alphabets`` alphabets: ``alphabet0``, ``alphabet1``, ...

    Args:
        n_alphabets: number of alphabets.
    """
    return tuple(f"alphabet{a}" for a in range(n_alphabets))


def glyphs_task_specs(
    n_alphabets: int, n_characters: int = 20, tasks: Sequence[str] | None = None
) -> dict[str, TaskSpec]:
    """Task specs of the alphabets' tasks (``classification``, ``n_characters`` classes).

    Args:
        n_alphabets: number of alphabets.
        n_characters: characters per alphabet (classes per task).
        tasks: task names, a subset of :func:`glyphs_tasks` (``None`` = all, in order).
    """
    names = glyphs_tasks(n_alphabets) if tasks is None else tuple(tasks)
    return {t: TaskSpec(t, "classification", n_characters) for t in names}


@dataclasses.dataclass(frozen=True)
class GlyphsConfig:
    """Parameters of the ``glyphs`` dataset (validated on creation).

    Attributes:
        height: image height in pixels.
        width: image width in pixels.
        n_alphabets: number of alphabets (tasks).
        n_characters: characters per alphabet (classes per task; paper D: 20).
        train_drawings: drawings of every character in the training split.
        val_drawings: drawings of every character in the validation split.
        test_drawings: drawings of every character in the test split.
        n_train: use only the first ``n_train`` training images (``None`` = all
            ``n_alphabets * n_characters * train_drawings``, or fewer with ``tasks``).
        n_val: the same for the validation split.
        n_test: the same for the test split.
        seed: base random seed; alphabets and characters derive from it, each split its
            drawings.
        tasks: the alphabets (tasks) to publish, a subset of :func:`glyphs_tasks`
            (``None`` = all); only their images are kept.
    """

    height: int = 28
    width: int = 28
    n_alphabets: int = 5
    n_characters: int = 20
    train_drawings: int = 10
    val_drawings: int = 5
    test_drawings: int = 15
    n_train: int | None = None
    n_val: int | None = None
    n_test: int | None = None
    seed: int = 0
    tasks: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        check_range("height", self.height, 12, 1024, integer=True)
        check_range("width", self.width, 12, 1024, integer=True)
        check_range("n_alphabets", self.n_alphabets, 1, 1000, integer=True)
        check_range("n_characters", self.n_characters, 2, 200, integer=True)
        for split in SPLITS:
            check_range(f"{split}_drawings", getattr(self, f"{split}_drawings"), 1, 10**5,
                        integer=True)  # fmt: skip
            if getattr(self, f"n_{split}") is not None:
                check_range(f"n_{split}", getattr(self, f"n_{split}"), 1, integer=True)
        check_range("seed", self.seed, 0, 2**63 - 1, integer=True)
        if self.tasks is not None:
            check_task_subset("glyphs", self.tasks, glyphs_tasks(self.n_alphabets))

    @property
    def task_names(self) -> tuple[str, ...]:
        """The published tasks: :attr:`tasks`, or every alphabet's when it is ``None``."""
        return glyphs_tasks(self.n_alphabets) if self.tasks is None else self.tasks


GLYPHS_PRESETS: dict[str, dict[str, object]] = {
    "smoke": {"height": 28, "width": 28, "n_alphabets": 3, "train_drawings": 2,
              "val_drawings": 1, "test_drawings": 1},
    "cpu": {"height": 28, "width": 28, "n_alphabets": 5, "train_drawings": 10,
            "val_drawings": 5, "test_drawings": 15},
    "paper": {"height": 105, "width": 105, "n_alphabets": 20, "train_drawings": 10,
              "val_drawings": 4, "test_drawings": 6},
}  # fmt: skip
"""Per-profile :class:`GlyphsConfig` overrides (paper: 20 alphabets, 20 drawings, 105x105)."""


# ------------------------------------------------------------------------------ alphabets


def _seeded(seed: int, *key: int) -> np.random.Generator:
    """A generator for one purpose: ``SeedSequence([seed, len(SPLITS), *key])`` (never the
    key of a split's drawings)."""
    return np.random.default_rng(np.random.SeedSequence([seed, len(SPLITS), *key]))


def alphabet_styles(seed: int, n_alphabets: int) -> dict[str, np.ndarray]:
    """The style of every alphabet, arrays of length ``n_alphabets`` (module doc).

    ``width`` (stroke width in half-frame units, 0.09-0.24, i.e. 1.3-3.4 px at 28 px),
    ``curvature`` (0 = polylines, 1 = Bezier curves), ``snap`` (directions snapped to 45
    degrees), ``turn`` (s.d. of a stroke's turn per segment, radians), ``segments`` (most
    segments per stroke, 1-3), ``min_strokes`` / ``max_strokes`` (stroke count range),
    ``dot`` / ``hook`` (probabilities per character / per stroke) and ``aspect`` (width over
    height of the glyphs), ``attach`` (probability that a stroke starts on the previous one).

    Args:
        seed: the dataset's seed.
        n_alphabets: number of alphabets.
    """
    offset = _seeded(seed, 0).random(len(_STYLE_KEYS))
    index = np.arange(n_alphabets)[:, None]
    jitter = np.zeros((n_alphabets, len(_STYLE_KEYS)))
    for a in range(n_alphabets):
        jitter[a] = _seeded(seed, 1, a).uniform(-0.04, 0.04, len(_STYLE_KEYS))
    u = np.mod(offset + index * _STYLE_STEPS + jitter, 1.0)
    col = dict(zip(_STYLE_KEYS, u.T, strict=True))
    min_strokes = 1 + np.floor(col["strokes"] * 3).astype(np.int64)
    return {
        "width": 0.09 + 0.15 * col["width"],
        "curvature": np.clip(1.2 * col["curvature"] - 0.1, 0.0, 1.0),
        "snap": col["snap"] < 0.4,
        "turn": 0.4 + 1.4 * col["turn"],
        "segments": 1 + np.floor(col["segments"] * 3).astype(np.int64),
        "min_strokes": min_strokes,
        "max_strokes": min_strokes + 1 + (col["strokes"] * 7 % 1 > 0.5),
        "dot": 0.7 * col["dot"] ** 1.5,
        "hook": 0.6 * col["hook"],
        "aspect": 0.7 + 0.35 * col["aspect"],
        "attach": 0.3 + 0.6 * col["attach"],
    }


def _bernstein(n: int, t: np.ndarray) -> np.ndarray:
    """Bernstein basis of degree ``n`` at ``t``: ``(len(t), n + 1)``."""
    from math import comb

    k = np.arange(n + 1)
    return np.array([comb(n, i) for i in k]) * t[:, None] ** k * (1 - t[:, None]) ** (n - k)


def _sampling_weights() -> tuple[np.ndarray, np.ndarray]:
    """Weights of the knots for the :data:`POINTS` samples of a stroke with ``n`` segments
    (``n = 0 .. KNOTS - 1``; only the first ``n + 1`` knots count): polyline and Bezier,
    each ``(KNOTS, POINTS, KNOTS)``."""
    t = np.linspace(0.0, 1.0, POINTS)
    linear = np.zeros((KNOTS, POINTS, KNOTS))
    bezier = np.zeros((KNOTS, POINTS, KNOTS))
    linear[0, :, 0] = bezier[0, :, 0] = 1.0
    for n in range(1, KNOTS):
        position = t * n
        left = np.minimum(np.floor(position).astype(np.int64), n - 1)
        frac = position - left
        rows = np.arange(POINTS)
        linear[n, rows, left] = 1 - frac
        linear[n, rows, left + 1] += frac
        bezier[n, :, : n + 1] = _bernstein(n, t)
    return linear, bezier


_LINEAR_W, _BEZIER_W = _sampling_weights()


def _snap(angle: np.ndarray, snap: np.ndarray | bool) -> np.ndarray:
    """``angle`` rounded to a multiple of 45 degrees where ``snap`` holds."""
    return np.where(snap, np.round(angle / (np.pi / 4)) * (np.pi / 4), angle)


def _walk_strokes(
    rng: np.random.Generator, style: dict[str, Any], shape: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Random-walk strokes starting at the origin: knots ``(*shape, K, 2)`` and segment
    counts ``shape`` (1-3, a hook included: a short sharp turn after the last segment)."""
    k = KNOTS
    segments = rng.integers(1, style["segments"] + 1, shape)
    heading = _snap(rng.uniform(-np.pi, np.pi, shape), style["snap"])
    lengths = rng.uniform(0.35, 0.8, (*shape, k - 1))
    turns = _snap(rng.normal(0.0, style["turn"], (*shape, k - 1)), style["snap"])
    hook = (rng.random(shape) < style["hook"]) & (segments < k - 1)
    hook_turn = rng.choice([-2.3, 2.3], shape)
    knots = np.zeros((*shape, k, 2))
    for j in range(1, k):
        heading = heading + (turns[..., j - 1] if j > 1 else 0.0)
        is_hook = hook & (j == segments + 1)
        step_angle = np.where(is_hook, heading + hook_turn, heading)
        step = np.where(is_hook, 0.22, lengths[..., j - 1])
        moving = (j <= segments) | is_hook
        delta = np.stack([np.cos(step_angle), np.sin(step_angle)], -1) * step[..., None]
        knots[..., j, :] = knots[..., j - 1, :] + np.where(moving[..., None], delta, 0.0)
    return knots, segments + hook


def _draw_characters(
    rng: np.random.Generator,
    style: dict[str, Any],
    vocabulary: tuple[np.ndarray, np.ndarray],
    count: int,
) -> dict[str, np.ndarray]:
    """``count`` new characters of one alphabet: ``knots`` ``(count, S, K, 2)``, ``segments``
    ``(count, S)`` (0 = dot), ``active`` ``(count, S)``, ``curvature`` ``(count, S)``,
    ``dot`` ``(count, S)``; centred and scaled to fill ``[-0.8, 0.8]`` (times the aspect).

    A stroke is one of the alphabet's ``vocabulary`` strokes (scaled by 0.75-1.25, knots moved
    by s.d. 0.08) or, one time in four, a new random walk.
    """
    s, k = MAX_STROKES, KNOTS
    n_strokes = rng.integers(style["min_strokes"], style["max_strokes"] + 1, count)
    n_strokes = np.minimum(n_strokes, s - 1)  # room for one dot
    index = np.arange(s)
    active = index[None] < n_strokes[:, None]
    word = rng.integers(0, len(vocabulary[1]), (count, s))
    reused = vocabulary[0][word] * rng.uniform(0.75, 1.25, (count, s, 1, 1))
    reused = reused + rng.normal(0, 0.08, reused.shape) * (np.arange(k) > 0)[:, None]
    fresh, fresh_segments = _walk_strokes(rng, style, (count, s))
    new = rng.random((count, s)) < 0.25
    knots = np.where(new[..., None, None], fresh, reused)
    segments = np.where(new, fresh_segments, vocabulary[1][word])
    knots = knots + rng.uniform(-0.8, 0.8, (count, s, 1, 2))
    # A stroke starts on the previous one (a point of its polyline) with the style's probability.
    attach = rng.random((count, s)) < style["attach"]
    where = rng.random((count, s)) * segments
    rows = np.arange(count)
    for j in range(1, s):
        knot = np.minimum(np.floor(where[:, j - 1]).astype(np.int64), k - 2)
        frac = (where[:, j - 1] - knot)[:, None]
        previous = knots[:, j - 1]
        point = previous[rows, knot] * (1 - frac) + previous[rows, knot + 1] * frac
        shift = np.where(attach[:, j, None], point - knots[:, j, 0], 0.0)
        knots[:, j] += shift[:, None]
    # One dot (a stroke of length 0 after the strokes) with the style's probability.
    dot = (rng.random(count) < style["dot"])[:, None] & (index[None] == n_strokes[:, None])
    dot_at = rng.uniform(-0.7, 0.7, (count, 2))
    knots = np.where(dot[..., None, None], dot_at[:, None, None, :], knots)
    segments = np.where(dot, 0, segments)
    active = active | dot
    curvature = np.clip(style["curvature"] + rng.normal(0, 0.1, (count, s)), 0, 1)
    # Centre on the bounding box of the sampled points, scale the longer side to 1.6.
    points = _stroke_points(knots, segments, curvature)
    far = np.where(active[..., None, None], points, np.nan)
    low = np.nanmin(far, axis=(1, 2))
    high = np.nanmax(far, axis=(1, 2))
    centre = (low + high) / 2
    scale = 1.6 / np.maximum((high - low).max(1), 0.2)
    aspect = np.array([style["aspect"], 1.0])
    knots = (knots - centre[:, None, None]) * scale[:, None, None, None] * aspect
    return {"knots": knots, "segments": segments, "active": active, "curvature": curvature,
            "dot": dot}  # fmt: skip


def _stroke_points(knots: np.ndarray, segments: np.ndarray, curvature: np.ndarray) -> np.ndarray:
    """Points along every stroke: ``(..., S, POINTS, 2)`` from knots ``(..., S, K, 2)``, the
    segment counts and the curvature (blend of polyline and Bezier) of every stroke."""
    weights = (1 - curvature)[..., None, None] * _LINEAR_W[segments] + curvature[
        ..., None, None
    ] * _BEZIER_W[segments]
    return np.einsum("...pk,...kc->...pc", weights, knots)


def _render(
    points: np.ndarray, half_width: np.ndarray, active: np.ndarray, height: int, width: int
) -> np.ndarray:
    """Ink in ``[0, 1]`` of strokes given as points: ``(n, H, W)`` float32.

    Args:
        points: ``(n, S, P, 2)`` stroke points (x right, y down; the unit is half the shorter
            side of the frame, the frame centred on 0).
        half_width: ``(n, S)`` half stroke widths in the same unit.
        active: ``(n, S)`` strokes that are drawn.
    """
    n = len(points)
    unit = min(height, width) / 2  # pixels per unit
    xs = (np.arange(width, dtype=np.float32) + 0.5 - width / 2) / unit
    ys = (np.arange(height, dtype=np.float32) + 0.5 - height / 2) / unit
    px = np.tile(xs, height)[None, None, :]
    py = np.repeat(ys, width)[None, None, :]
    a = points[:, :, :-1].astype(np.float32)
    d = (points[:, :, 1:] - points[:, :, :-1]).astype(np.float32)
    a = np.where(active[:, :, None, None], a, np.float32(1e3)).reshape(n, -1, 2)
    d = d.reshape(n, -1, 2)
    hw = np.repeat(half_width.astype(np.float32), POINTS - 1, axis=1)[..., None]
    inv = 1.0 / np.maximum((d**2).sum(-1), 1e-12)[..., None]
    ax, ay, dx, dy = a[..., 0, None], a[..., 1, None], d[..., 0, None], d[..., 1, None]
    rx = px - ax
    ry = py - ay
    t = np.clip((rx * dx + ry * dy) * inv, 0.0, 1.0)
    rx -= t * dx
    ry -= t * dy
    distance = (np.sqrt(rx * rx + ry * ry) - hw).min(1)
    return np.clip(0.5 - distance * unit, 0.0, 1.0).reshape(n, height, width)


def _templates(chars: dict[str, np.ndarray], style: dict[str, Any]) -> np.ndarray:
    """Clean 16x16 renderings of characters (ink), ``(n, 16 * 16)``."""
    points = _stroke_points(chars["knots"], chars["segments"], chars["curvature"])
    half = np.where(chars["dot"], 0.9, 0.5) * style["width"] * np.ones(chars["dot"].shape)
    ink = _render(points, half, chars["active"], _TEMPLATE_SIZE, _TEMPLATE_SIZE)
    return ink.reshape(len(ink), -1)


def glyph_characters(seed: int, n_alphabets: int, n_characters: int) -> dict[str, np.ndarray]:
    """Every character of every alphabet (from ``seed`` and the alphabet index only).

    Returns arrays with leading dimensions ``(n_alphabets, n_characters)``: ``knots``
    ``(..., S, K, 2)``, ``segments``, ``active``, ``curvature``, ``dot`` ``(..., S)``, and
    ``template`` ``(..., 16, 16)`` (clean ink at 16x16).  Characters of one alphabet are
    redrawn until every pair of templates differs by at least
    :data:`MIN_TEMPLATE_DIFFERENCE`.

    Args:
        seed: the dataset's seed.
        n_alphabets: number of alphabets.
        n_characters: characters per alphabet.
    """
    styles = alphabet_styles(seed, n_alphabets)
    alphabets = []
    for a in range(n_alphabets):
        rng = _seeded(seed, 2, a)
        style = {key: value[a] for key, value in styles.items()}
        vocabulary = _walk_strokes(rng, style, (VOCABULARY,))
        chars = _draw_characters(rng, style, vocabulary, n_characters)
        template = _templates(chars, style)
        for _ in range(50):
            diff = np.abs(template[:, None] - template[None]).mean(-1)
            diff[np.diag_indices(n_characters)] = np.inf
            close = np.flatnonzero((diff < MIN_TEMPLATE_DIFFERENCE).any(1))
            if len(close) == 0:
                break
            redo = close[1::2] if len(close) > 1 else close  # one of each close pair (mostly)
            new = _draw_characters(rng, style, vocabulary, len(redo))
            for key in chars:
                chars[key][redo] = new[key]
            template[redo] = _templates(new, style)
        chars["template"] = template.reshape(n_characters, _TEMPLATE_SIZE, _TEMPLATE_SIZE)
        alphabets.append(chars)
    return {key: np.stack([chars[key] for chars in alphabets]) for key in alphabets[0]}


# ------------------------------------------------------------------------------- drawings


def _jitter_drawings(
    rng: np.random.Generator,
    chars: dict[str, np.ndarray],
    styles: dict[str, np.ndarray],
    alphabet: np.ndarray,
) -> dict[str, np.ndarray]:
    """Jittered drawings of characters (one per row): stroke ``points`` ``(n, S, P, 2)``,
    ``half_width`` and ``active`` ``(n, S)`` (module doc, *Drawings*)."""
    knots, segments = chars["knots"], chars["segments"]
    n, s = segments.shape
    knots = knots + rng.normal(0, 0.07, knots.shape) + rng.normal(0, 0.05, (n, s, 1, 2))
    curvature = np.clip(chars["curvature"] + rng.normal(0, 0.1, (n, s)), 0, 1)
    angle = rng.normal(0, 0.15, n)
    shear = rng.normal(0, 0.15, n)
    scale = (1 + rng.normal(0, 0.08, n))[:, None] * (1 + rng.normal(0, 0.06, (n, 2)))
    shift = rng.normal(0, 0.07, (n, 2))
    cos, sin = np.cos(angle), np.sin(angle)
    rotation = np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], -2)
    shearing = np.zeros((n, 2, 2))
    shearing[:, 0, 0] = shearing[:, 1, 1] = 1
    shearing[:, 0, 1] = shear
    matrix = rotation @ shearing * scale[:, None, :]
    points = _stroke_points(knots, segments, curvature)
    points = np.einsum("nij,nspj->nspi", matrix, points) + shift[:, None, None]
    width = styles["width"][alphabet][:, None] * rng.uniform(0.7, 1.35, (n, 1))
    width = width * rng.uniform(0.9, 1.1, (n, s)) * np.where(chars["dot"], 1.8, 1.0)
    active = chars["active"].copy()
    strokes = active.sum(1)
    drop = (rng.random(n) < 0.1) & (strokes >= 3)
    dropped = rng.integers(0, np.maximum(strokes, 1))
    active[np.flatnonzero(drop), dropped[drop]] = False
    return {"points": points, "half_width": width / 2, "active": active}


def generate_glyphs(config: GlyphsConfig, split: str) -> dict[str, np.ndarray]:
    """Generate one split with every alphabet (no cache, no cap, no task selection).

    Returns ``image`` uint8 ``(N, 1, H, W)`` (255 = paper white), ``alphabet`` and
    ``character`` int16 ``(N,)``, with ``N = n_alphabets * n_characters * <split>_drawings``
    in the order of the module doc.

    Args:
        config: the dataset config.
        split: ``train``, ``val`` or ``test``.
    """
    check_choice("split", split, SPLITS)
    a, c = config.n_alphabets, config.n_characters
    chars = glyph_characters(config.seed, a, c)
    styles = alphabet_styles(config.seed, a)
    per_drawing = a * c
    alphabet = np.tile(np.arange(a), c)  # character-major, alphabet fastest
    character = np.repeat(np.arange(c), a)
    flat = {key: value[alphabet, character] for key, value in chars.items()}
    h, w = config.height, config.width

    def prepare(drawing: int, count: int) -> RowRenderer:
        rng = chunk_rng(config.seed, split, drawing)
        drawn = _jitter_drawings(rng, flat, styles, alphabet)

        def render(rows: slice) -> dict[str, np.ndarray]:
            ink = _render(drawn["points"][rows], drawn["half_width"][rows],
                          drawn["active"][rows], h, w)  # fmt: skip
            image = np.rint((1.0 - ink) * 255).astype(np.uint8)[:, None]
            return {"image": image, "alphabet": alphabet[rows].astype(np.int16),
                    "character": character[rows].astype(np.int16)}  # fmt: skip

        return render

    elements = MAX_STROKES * (POINTS - 1) * h * w
    per_render = max(1, min(per_drawing, _ELEMENT_BUDGET // elements))
    total = per_drawing * getattr(config, f"{split}_drawings")
    return render_in_chunks(total, per_drawing, per_render, prepare)


def _cache_key(config: GlyphsConfig, split: str) -> dict[str, Any]:
    """The config fields one split's arrays depend on (not the caps, tasks or other splits)."""
    key = dataclasses.asdict(config)
    for name in ("tasks", "n_train", "n_val", "n_test", *(f"{s}_drawings" for s in SPLITS)):
        del key[name]
    key["drawings"] = getattr(config, f"{split}_drawings")
    return key


def select_alphabets(
    alphabet: np.ndarray, character: np.ndarray, tasks: Sequence[str], limit: int | None
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The rows showing the chosen alphabets (first ``limit`` of them) and their targets.

    Args:
        alphabet: alphabet index of every row.
        character: character of every row.
        tasks: the chosen tasks, ``alphabet<k>`` names.
        limit: keep only the first ``limit`` chosen rows (``None`` = all); more than there
            are is a :class:`~mtlrepro.config.ConfigError` raised by the caller.

    Returns:
        The kept row indices and task -> int8/int16 targets (``-1`` where another alphabet).
    """
    chosen = np.array([int(t.removeprefix("alphabet")) for t in tasks])
    rows = np.flatnonzero(np.isin(alphabet, chosen))
    if limit is not None:
        rows = rows[:limit]
    kept_a, kept_c = alphabet[rows], character[rows]
    dtype = np.int8 if character.max(initial=0) < 127 else np.int16
    targets = {
        t: np.where(kept_a == k, kept_c, -1).astype(dtype)
        for t, k in zip(tasks, chosen, strict=True)
    }
    return rows, targets


@DATASETS.register("glyphs")
def build_glyphs(split: str, profile: str = "cpu", **overrides: object) -> TensorDataset:
    """The ``glyphs`` dataset: one split, generated on first use and cached on disk.

    Args:
        split: ``train``, ``val`` or ``test``.
        profile: ``smoke``, ``cpu`` or ``paper`` (selects the :data:`GLYPHS_PRESETS` entry).
        **overrides: :class:`GlyphsConfig` fields, e.g. ``tasks=("alphabet0", "alphabet2")``
            or ``n_alphabets=8``.
    """
    check_choice("split", split, SPLITS)
    config = build_config(GlyphsConfig, GLYPHS_PRESETS, profile, overrides)
    config = dataclasses.replace(config, tasks=config.task_names)
    arrays = load_or_generate(
        "glyphs",
        split,
        _cache_key(config, split),
        GLYPHS_VERSION,
        lambda: generate_glyphs(config, split),
    )
    limit = getattr(config, f"n_{split}")
    rows, targets = select_alphabets(arrays["alphabet"], arrays["character"], config.tasks, None)
    if limit is not None:
        if limit > len(rows):
            raise ConfigError(
                f"glyphs {split}: asked for the first {limit} images but the split holds "
                f"{len(rows)} of the chosen alphabets"
            )
        rows, targets = rows[:limit], {t: v[:limit] for t, v in targets.items()}
    image = torch.from_numpy(np.ascontiguousarray(arrays["image"][rows]))
    tensors = {"image": image.expand(-1, 3, -1, -1)}  # grey repeated: a view, no copy
    tensors.update({t: torch.from_numpy(v) for t, v in targets.items()})
    specs = glyphs_task_specs(config.n_alphabets, config.n_characters, config.tasks)
    return TensorDataset("glyphs", split, tensors, specs, config)


def sample_tasks(data: Any) -> Tensor:
    """The task labelling each sample of a ``glyphs`` or ``omniglot`` split: int64 ``(N,)``
    positions in ``data.task_specs`` (the one task whose target is not ``-1``).

    Args:
        data: a split of ``glyphs`` (``tensors``) or ``omniglot`` (``targets``).
    """
    source = data.tensors if hasattr(data, "tensors") else data.targets
    labelled = torch.stack([source[t] >= 0 for t in data.task_specs], 1)
    if not bool((labelled.sum(1) == 1).all()):
        raise ValueError(f"{data!r}: every sample must be labelled by exactly one task")
    return labelled.to(torch.int64).argmax(1)


def glyphs_images_per_second(n_drawings: int = 4, profile: str = "cpu") -> float:
    """Generation throughput in images per second of CPU time (no cache) at a preset.

    Args:
        n_drawings: drawings of every character to generate (``train_drawings``).
        profile: the preset whose size and alphabets are used.
    """
    config = build_config(GlyphsConfig, GLYPHS_PRESETS, profile, {"train_drawings": n_drawings})
    start = time.process_time()
    n = len(generate_glyphs(config, "train")["image"])
    return n / (time.process_time() - start)
