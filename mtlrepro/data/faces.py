"""``faces``: an embedded CelebAMask-HQ-like dataset of drawn portraits (paper B).

Every image is a frontal portrait with three tasks (paper B's CelebAMask-HQ set-up):

* ``segmentation`` -- one of the 3 :data:`FACES_CLASSES` per pixel: ``background`` (including
  the clothes and the neck), ``skin`` (the face; the eyes, eyebrows, nose and mouth count as
  skin) and ``hair`` -- the classes :mod:`mtlrepro.data.celebamask` builds from CelebAMask-HQ's
  part masks (its ``skin`` label covers the face only; ``neck`` and ``cloth`` are background).
  No pixel is ignored.
* ``male`` -- binary attribute (1 = male), about half of the images.
* ``smile`` -- binary attribute (1 = smiling), about half of the images, independent of ``male``.

Both attributes are ``classification`` tasks with two classes: a 2-way softmax cross-entropy
on logits ``(z0, z1)`` equals the binary cross-entropy on the single logit ``z1 - z0``, so this
is paper B's BCE for the attributes.

**Drawing** (all in NumPy over a chunk of images at once, a handful of shape primitives; the
unit of length is the frame height).  Painter's order:

1. background: a linear gradient between two random colours (in a random direction) times a
   faint sinusoidal texture; in one image out of five its colour is close to the hair colour;
2. clothes: rounded shoulders at the bottom of the frame (background class);
3. back hair: an ellipse around the head plus, for long hair, curtains hanging beside the
   face, cut at a (wavy) hair length; strand texture;
4. neck (background class, as in the CelebAMask-HQ loader), a little darker than the face;
5. face: a skin ellipse (skin tone from light to dark), centre jittered by +-8 % of the
   frame, scale +-10 %, tilt +-0.15 rad, lower half widened by a jaw factor;
6. fringe: hair over the face above a curved hairline (low for one image in four: bangs);
7. face parts drawn in colour only: eyes (white and iris), eyebrows (hair colour, darker),
   nose shading and nostrils, and the mouth, a thin low-contrast darker curve;
8. directional lighting: Lambertian shading of a head sphere, a neck and a shoulder
   cylinder; then Gaussian pixel noise (:data:`NOISE_STD`), clipped to ``[0, 1]`` (stored as
   uint8).

Hair colours: black, dark brown, brown, blond, grey, red (:data:`HAIR_COLOURS`), with random
tone.

**Attribute cues.**  ``male`` is visible but not perfectly separable: long hair (curtains
below the ears) is drawn for 18 % of men and 82 % of women, and men have on average a wider
jaw, thicker eyebrows, a slightly larger head and a wider neck, each with overlapping
class-conditional distributions.  ``smile`` is the subtle, hard task (paper B reports smile
accuracy near chance): the mouth corners are lifted by ``N(1, 0.35)`` pixels (at 48 px,
scaled with the image) for a smile and ``N(0, 0.35)`` otherwise, and a smiling mouth is 12 %
wider (its width varies by +-14 % anyway), on a thin, low-contrast mouth line a few pixels wide.
With the face found exactly, a linear probe on the mouth pixels reaches about 79 % at 48 px; a
small CNN trained on the ``cpu`` preset stays near chance, as in the paper.

**Splits.**  Chunk ``c`` of 32 images of split ``s`` is drawn from ``SeedSequence([seed,
index of s, c])``, so splits are independent and a smaller split is a prefix of a larger one.

**Presets** (:data:`FACES_PRESETS`): ``smoke`` 32x32, 48 / 16 / 16 images; ``cpu`` 48x48,
1,500 / 300 / 300; ``paper`` 256x256 with CelebAMask-HQ's 30,000 images split 60 / 20 / 20
(18,000 / 6,000 / 6,000, paper B's random split; about 90 images/s on one core, i.e. 6 min,
and 6 GB of uint8 images -- generated only when asked for).  The ``cpu`` preset takes about
0.5 s per split.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from mtlrepro.config import check_choice, check_range
from mtlrepro.data.base import DATASETS, SPLITS, TensorDataset, check_task_subset
from mtlrepro.data.generated import (
    RowRenderer,
    build_generated,
    chunk_rng,
    render_in_chunks,
    rows_per_render,
)
from mtlrepro.tasks import CANONICAL_KINDS, TaskSpec

FACES_TASKS: tuple[str, ...] = ("segmentation", "male", "smile")
FACES_CLASSES: tuple[str, ...] = ("background", "skin", "hair")
FACES_VERSION = 2  # bump whenever generation changes: it is part of the cache key
CHUNK = 32  # images per random-number chunk (fixed: part of the determinism contract)
NOISE_STD = 0.025
"""Standard deviation of the Gaussian pixel noise (image in ``[0, 1]``)."""
_PIXEL_BUDGET = 1 << 17  # pixels rendered at once (bounds memory at large resolutions)
_REFERENCE_HEIGHT = 48  # pixel sizes of the subtle cues are given at this image height

# fmt: off
HAIR_COLOURS: dict[str, tuple[tuple[float, float, float], float]] = {
    "black": ((0.07, 0.06, 0.05), 0.30),
    "dark_brown": ((0.22, 0.14, 0.09), 0.24),
    "brown": ((0.42, 0.28, 0.16), 0.18),
    "blond": ((0.80, 0.66, 0.40), 0.13),
    "grey": ((0.62, 0.61, 0.60), 0.07),
    "red": ((0.58, 0.24, 0.10), 0.08),
}
"""Hair colour name -> (RGB, share of images)."""
# fmt: on
_HAIR_RGB = np.array([rgb for rgb, _ in HAIR_COLOURS.values()])
_HAIR_SHARE = np.array([share for _, share in HAIR_COLOURS.values()])
_SKIN_LIGHT = np.array([0.96, 0.80, 0.70])
_SKIN_DARK = np.array([0.36, 0.23, 0.15])
_EYE_WHITE = np.array([0.88, 0.86, 0.83], dtype=np.float32)
_LIP_TINT = np.array([0.80, 0.52, 0.52])
# Drawing regions (painter's order) and their segmentation class.
_BACKGROUND, _CLOTHES, _HAIR, _NECK, _FACE = range(5)
_REGION_CLASS = np.array([0, 0, 2, 0, 1], dtype=np.int8)  # neck: background


@dataclasses.dataclass(frozen=True)
class FacesConfig:
    """Parameters of the ``faces`` dataset (validated on creation).

    Attributes:
        height: image height in pixels.
        width: image width in pixels.
        n_train: number of training images.
        n_val: number of validation images.
        n_test: number of test images.
        seed: base random seed; each split derives its own.
        tasks: the tasks to publish, a subset of :data:`FACES_TASKS`.
    """

    height: int = 48
    width: int = 48
    n_train: int = 1500
    n_val: int = 300
    n_test: int = 300
    seed: int = 0
    tasks: tuple[str, ...] = FACES_TASKS

    def __post_init__(self) -> None:
        check_range("height", self.height, 16, 1024, integer=True)
        check_range("width", self.width, 16, 1024, integer=True)
        for name in ("n_train", "n_val", "n_test"):
            check_range(name, getattr(self, name), 1, 10**7, integer=True)
        check_range("seed", self.seed, 0, 2**63 - 1, integer=True)
        check_task_subset("faces", self.tasks, FACES_TASKS)


FACES_PRESETS: dict[str, dict[str, object]] = {
    "smoke": {"height": 32, "width": 32, "n_train": 48, "n_val": 16, "n_test": 16},
    "cpu": {"height": 48, "width": 48, "n_train": 1500, "n_val": 300, "n_test": 300},
    "paper": {"height": 256, "width": 256, "n_train": 18000, "n_val": 6000, "n_test": 6000},
}
"""Per-profile :class:`FacesConfig` overrides (paper: CelebAMask-HQ's 30,000 images, 60/20/20)."""


def faces_task_specs(tasks: tuple[str, ...] = FACES_TASKS) -> dict[str, TaskSpec]:
    """Task specs of the ``faces`` tasks: 3-class segmentation, 2-class ``male`` and ``smile``.

    Args:
        tasks: task names, a subset of :data:`FACES_TASKS`.
    """
    return {
        t: TaskSpec(t, CANONICAL_KINDS[t], len(FACES_CLASSES))
        if t == "segmentation"
        else TaskSpec(t, "classification", 2)
        for t in tasks
    }


def _uniform(rng: np.random.Generator, low: float, high: float, size: object) -> np.ndarray:
    """Uniform draws in ``[low, high)``."""
    return low + (high - low) * rng.random(size)


def _sample_faces(rng: np.random.Generator, n: int, aspect: float) -> dict[str, np.ndarray]:
    """Labels and drawing parameters of ``n`` portraits (every draw has a fixed size, so the
    parameters of an image do not depend on how many images are drawn after it).

    Lengths are in frame heights; ``p`` and ``q`` units are the face's horizontal and vertical
    semi-axes.

    Args:
        rng: the chunk's generator.
        n: number of portraits.
        aspect: width / height of the frame.
    """
    male = rng.random(n) < 0.5
    smile = rng.random(n) < 0.5
    sex = np.where(male, 1.0, -1.0)
    scale = _uniform(rng, 0.9, 1.1, n) * (1 + 0.03 * sex)
    long_hair = rng.random(n) < np.where(male, 0.18, 0.82)
    hair = rng.choice(len(_HAIR_RGB), n, p=_HAIR_SHARE)
    hair_rgb = _HAIR_RGB[hair] * _uniform(rng, 0.8, 1.2, (n, 1)) * rng.normal(1, 0.05, (n, 3))
    skin_t = rng.random(n) ** 1.5
    skin_rgb = _SKIN_LIGHT + (_SKIN_DARK - _SKIN_LIGHT) * skin_t[:, None]
    skin_rgb = skin_rgb * rng.normal(1, 0.03, (n, 3))
    # Background: two desaturated colours; one in five close to the hair colour.
    c1 = rng.random((n, 3)) * 0.85 + 0.1
    c1 += (c1.mean(1, keepdims=True) - c1) * _uniform(rng, 0.3, 0.8, (n, 1))
    c2 = c1 * _uniform(rng, 0.6, 1.2, (n, 1)) + rng.normal(0, 0.08, (n, 3))
    near_hair = rng.random(n) < 0.2
    hair_like = hair_rgb * _uniform(rng, 0.85, 1.15, (n, 1))
    c1 = np.where(near_hair[:, None], hair_like, c1)
    c2 = np.where(near_hair[:, None], hair_like * _uniform(rng, 0.8, 1.1, (n, 1)), c2)
    clothes = rng.random((n, 3)) * 0.8 + 0.05
    clothes *= np.where(rng.random(n) < 0.4, 0.3, 1.0)[:, None]
    azimuth = rng.random(n) * 2 * np.pi
    light_z = _uniform(rng, 0.55, 0.9, n)
    fringe = rng.random(n) < 0.25
    a, b = 0.22 * scale, 0.295 * scale
    return {
        "male": male,
        "smile": smile,
        "cx": aspect / 2 + _uniform(rng, -0.08, 0.08, n) * aspect,
        "cy": 0.47 + _uniform(rng, -0.08, 0.08, n),
        "a": a,
        "b": b,
        "tilt": _uniform(rng, -0.15, 0.15, n),
        "jaw": np.clip(0.08 + 0.07 * sex + rng.normal(0, 0.06, n), -0.05, 0.3),
        "hair_length": np.where(
            long_hair, _uniform(rng, 0.9, 2.6, n), _uniform(rng, -0.35, 0.35, n)
        ),
        "hair_side": np.where(
            long_hair, _uniform(rng, 0.15, 0.35, n), _uniform(rng, 0.05, 0.15, n)
        ),
        "hair_top": _uniform(rng, 0.08, 0.25, n),
        "hair_wave": rng.random(n) * 2 * np.pi,
        "hairline": np.where(fringe, _uniform(rng, -0.35, -0.18, n), _uniform(rng, -0.6, -0.38, n)),
        "hairline_curve": _uniform(rng, 0.15, 0.45, n),
        "strand_freq": _uniform(rng, 10, 20, n) * 2 * np.pi,
        "strand_phase": rng.random(n) * 2 * np.pi,
        "hair_rgb": np.clip(hair_rgb, 0.02, 1.0),
        "skin_rgb": np.clip(skin_rgb, 0.05, 1.0),
        "bg1": np.clip(c1, 0.0, 1.0),
        "bg2": np.clip(c2, 0.0, 1.0),
        "bg_angle": rng.random(n) * 2 * np.pi,
        "bg_texture": _uniform(rng, 0.0, 0.06, n),
        "bg_freq": _uniform(rng, 4, 14, (n, 2)) * 2 * np.pi,
        "bg_phase": rng.random((n, 2)) * 2 * np.pi,
        "clothes_rgb": clothes,
        "shoulder_width": _uniform(rng, 0.38, 0.5, n) * scale * (1 + 0.05 * sex),
        "shoulder_top": b * _uniform(rng, 1.3, 1.5, n),
        "neck_width": a * _uniform(rng, 0.45, 0.55, n) * (1 + 0.06 * sex),
        "light": np.stack(
            [
                np.sqrt(1 - light_z**2) * np.cos(azimuth),
                np.sqrt(1 - light_z**2) * np.sin(azimuth),
                light_z,
            ],
            1,
        ),
        "ambient": _uniform(rng, 0.35, 0.5, n),
        "diffuse": _uniform(rng, 0.55, 0.75, n),
        "eye_p": _uniform(rng, 0.36, 0.42, n),
        "eye_q": _uniform(rng, -0.12, -0.04, n),
        "eye_open": _uniform(rng, 0.05, 0.08, n),
        "iris_rgb": rng.random((n, 3)) * 0.2 + 0.05,
        "brow_gap": _uniform(rng, 0.17, 0.23, n),
        "brow_width": np.clip(0.06 + 0.015 * sex + rng.normal(0, 0.012, n), 0.025, 0.12),
        "mouth_q": _uniform(rng, 0.52, 0.6, n),
        "mouth_half_width": _uniform(rng, 0.3, 0.4, n) * np.where(smile, 1.12, 1.0),
        # Corner lift in pixels at 48 px (converted to frame heights when drawing).
        "mouth_lift": np.where(smile, 1.0, 0.0) + rng.normal(0, 0.35, n),
        "mouth_contrast": _uniform(rng, 0.35, 0.55, n),
        "mouth_sigma": _uniform(rng, 0.55, 0.8, n),
        "lip_rgb": _LIP_TINT * rng.normal(1, 0.04, (n, 3)),
    }


def _render(
    params: dict[str, np.ndarray], config: FacesConfig, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Draw a batch of portraits; arrays in the dataset layout (see :func:`generate_faces`).

    Args:
        params: drawing parameters from :func:`_sample_faces` (a slice of the chunk).
        config: the dataset config (image size).
        rng: the chunk's generator (pixel noise).
    """
    f32 = {k: v.astype(np.float32) if v.dtype == np.float64 else v for k, v in params.items()}

    def col(key: str) -> np.ndarray:
        """A per-image scalar as ``(n, 1, 1)``."""
        return f32[key][:, None, None]

    def rgb(key: str) -> np.ndarray:
        """A per-image colour as ``(n, 3, 1, 1)``."""
        return f32[key][:, :, None, None]

    n, h, w = len(params["male"]), config.height, config.width
    xs = ((np.arange(w, dtype=np.float32) + 0.5) / h)[None, None, :]
    ys = ((np.arange(h, dtype=np.float32) + 0.5) / h)[None, :, None]
    dx, dy = xs - col("cx"), ys - col("cy")
    cos, sin = np.cos(col("tilt")), np.sin(col("tilt"))
    a, b = col("a"), col("b")
    p = (dx * cos + dy * sin) / a
    q = (dy * cos - dx * sin) / b
    abs_p, below = np.abs(p), np.maximum(q, 0)

    # Regions in painter's order.
    face = (p / (1 + col("jaw") * below)) ** 2 + q**2 <= 1
    side, top = 1 + col("hair_side"), 1 + col("hair_top")
    cut = col("hair_length") + 0.1 * np.sin(7 * p + col("hair_wave"))
    outer = (p / side) ** 2 + ((q + 0.08) / top) ** 2 <= 1
    curtain = (abs_p <= side * (1 + 0.08 * below)) & (q >= 0)
    back_hair = (outer | curtain) & (q <= cut)
    neck_dx = xs - (col("cx") - 0.9 * b * sin)
    # Shoulders: an ellipse of height b whose top is at shoulder_top, a band below its centre.
    shoulder_y = np.minimum(ys - (col("cy") + col("shoulder_top") + b), 0)
    shoulders = (neck_dx / col("shoulder_width")) ** 2 + (shoulder_y / b) ** 2 <= 1
    neck = (np.abs(neck_dx) <= col("neck_width")) & (dy >= 0) & ~shoulders
    fringe = face & (q < col("hairline") + col("hairline_curve") * p**2)
    region = np.where(shoulders, _CLOTHES, _BACKGROUND).astype(np.int8)
    region[back_hair] = _HAIR
    region[neck] = _NECK
    region[face] = _FACE
    region[fringe] = _HAIR

    # Base colours per region; background gradient and texture; hair strands.
    table = np.stack(
        [
            np.zeros_like(f32["skin_rgb"]),
            f32["clothes_rgb"],
            f32["hair_rgb"],
            f32["skin_rgb"] * np.float32(0.92),
            f32["skin_rgb"],
        ],
        1,
    )  # (n, 5, 3)
    index = np.arange(n)[:, None, None]
    image = np.stack([table[:, :, c][index, region] for c in range(3)], 1)
    angle = col("bg_angle")
    ramp = np.clip(0.5 + (xs - xs.mean()) * np.cos(angle) + (ys - 0.5) * np.sin(angle), 0, 1)
    freq, phase = f32["bg_freq"], f32["bg_phase"]
    wave_x = np.sin(xs * freq[:, 0, None, None] + phase[:, 0, None, None])
    wave_y = np.sin(ys * freq[:, 1, None, None] + phase[:, 1, None, None])
    texture = 1 + col("bg_texture") * wave_x * wave_y
    background = (rgb("bg1") + (rgb("bg2") - rgb("bg1")) * ramp[:, None]) * texture[:, None]
    is_background = (region == _BACKGROUND)[:, None]
    image = np.where(is_background, background, image)
    strands = 1 + 0.12 * np.sin(col("strand_freq") * p * a + 2.5 * q + col("strand_phase"))
    image *= np.where(region == _HAIR, strands, np.float32(1))[:, None]

    # Face parts (skin class, colour only), drawn where the face is visible.
    on_face = (region == _FACE).astype(np.float32)
    eye_p, eye_q, eye_open = col("eye_p"), col("eye_q"), col("eye_open")
    eye_v = ((q - eye_q) / eye_open) ** 2
    white = np.clip((1 - ((abs_p - eye_p) / 0.15) ** 2 - eye_v) * 2.5, 0, 1) * on_face
    iris = np.clip((1 - ((abs_p - eye_p) / 0.07) ** 2 - eye_v) * 2.0, 0, 1) * on_face
    brow_q = eye_q - col("brow_gap") + 0.25 * (abs_p - 0.42) ** 2
    brow = np.exp(-(((q - brow_q) / col("brow_width")) ** 2))
    brow *= np.clip((0.3 - np.abs(abs_p - 0.42)) / 0.06, 0, 1) * on_face * 0.85
    shadow_side = np.where(f32["light"][:, 0] > 0, -1, 1).astype(np.float32)[:, None, None]
    nose = np.exp(-(((p - 0.1 * shadow_side) / 0.05) ** 2)) * 0.15
    nose *= np.clip((0.3 - q) / 0.1, 0, 1) * np.clip((q + 0.1) / 0.1, 0, 1)
    nose += 0.35 * np.exp(-(((abs_p - 0.07) / 0.05) ** 2) - ((q - 0.33) / 0.04) ** 2)
    half_width = col("mouth_half_width")
    lift = col("mouth_lift") / _REFERENCE_HEIGHT  # frame heights
    offset = (q - col("mouth_q")) * b + lift * (p / half_width) ** 2
    sigma = col("mouth_sigma") / _REFERENCE_HEIGHT
    mouth = np.exp(-((offset / sigma) ** 2)) * np.clip((1.1 - abs_p / half_width) * 5, 0, 1)
    mouth *= col("mouth_contrast") * on_face
    for alpha, colour in (
        (white, _EYE_WHITE[None, :, None, None]),
        (iris, rgb("iris_rgb")),
        (brow, rgb("hair_rgb") * np.float32(0.6)),
        (mouth, rgb("skin_rgb") * rgb("lip_rgb")),
    ):
        image += (colour - image) * alpha[:, None]
    image *= (1 - nose * on_face)[:, None]

    # Lambertian shading: head sphere (face and hair), neck and shoulder cylinders, flat
    # background.
    light = f32["light"]
    head_x = np.clip(dx / (1.25 * a), -1, 1)
    head_y = np.clip(dy / (1.2 * b), -1, 1)
    body_width = np.where(region == _NECK, col("neck_width"), col("shoulder_width"))
    cyl_x = np.clip(neck_dx / (1.2 * body_width), -1, 1)
    is_head = (region == _HAIR) | (region == _FACE)
    is_body = (region == _NECK) | (region == _CLOTHES)
    nx = np.where(is_head, head_x, np.where(is_body, cyl_x, 0))
    ny = np.where(is_head, head_y, 0)
    nz = np.sqrt(np.clip(1 - nx**2 - ny**2, 0, 1))
    lambert = np.maximum(
        nx * light[:, 0, None, None] + ny * light[:, 1, None, None] + nz * light[:, 2, None, None],
        0,
    )
    image *= (col("ambient") + col("diffuse") * lambert)[:, None]
    noise = rng.standard_normal((n, 3, h, w), dtype=np.float32)  # image-major: prefix-stable
    image += NOISE_STD * noise
    return {
        "image": np.rint(np.clip(image, 0, 1) * 255).astype(np.uint8),
        "segmentation": _REGION_CLASS[region],
        "male": params["male"].astype(np.int8),
        "smile": params["smile"].astype(np.int8),
    }


def generate_faces(config: FacesConfig, split: str) -> dict[str, np.ndarray]:
    """Generate one split (no cache).

    Returns ``image`` uint8 ``(N, 3, H, W)``, ``segmentation`` int8 ``(N, H, W)`` (indices into
    :data:`FACES_CLASSES`), ``male`` and ``smile`` int8 ``(N,)`` in ``{0, 1}``.

    Args:
        config: the dataset config (image size, split sizes, seed).
        split: ``train``, ``val`` or ``test``.
    """
    check_choice("split", split, SPLITS)

    def prepare(chunk: int, count: int) -> RowRenderer:
        rng = chunk_rng(config.seed, split, chunk)
        params = _sample_faces(rng, CHUNK, config.width / config.height)
        return lambda rows: _render({k: v[rows] for k, v in params.items()}, config, rng)

    per_render = rows_per_render(CHUNK, _PIXEL_BUDGET, config.height, config.width)
    return render_in_chunks(getattr(config, f"n_{split}"), CHUNK, per_render, prepare)


@DATASETS.register("faces")
def build_faces(split: str, profile: str = "cpu", **overrides: object) -> TensorDataset:
    """The ``faces`` dataset: one split, generated on first use and cached on disk.

    Args:
        split: ``train``, ``val`` or ``test``.
        profile: ``smoke``, ``cpu`` or ``paper`` (selects the :data:`FACES_PRESETS` entry).
        **overrides: :class:`FacesConfig` fields, e.g. ``tasks=("segmentation", "male")``.
    """
    return build_generated(
        "faces",
        split,
        profile,
        overrides,
        config_class=FacesConfig,
        presets=FACES_PRESETS,
        version=FACES_VERSION,
        generate=generate_faces,
        task_specs=lambda config: faces_task_specs(config.tasks),
    )


def faces_images_per_second(n: int = 400, height: int = 48, width: int = 48) -> float:
    """Generation throughput in images per second of CPU time (no cache).

    CPU time of the whole process is used, so other processes do not slow the measurement
    down (set ``OMP_NUM_THREADS=1`` so that no threaded library adds time).

    Args:
        n: number of images to generate.
        height: image height in pixels.
        width: image width in pixels.
    """
    config = FacesConfig(height=height, width=width, n_train=n)
    start = time.process_time()
    generate_faces(config, "train")
    return n / (time.process_time() - start)
