"""``scenes``: an embedded NYU-v2-like dataset of ray-cast rooms with objects.

Each image is a box-shaped room (floor, four walls, ceiling; windows and paintings on the
walls) holding a few objects resting on the floor -- yaw-rotated boxes (table, cabinet, bed,
crate), vertical cylinders (bin, lamp) and spheres (ball, pouf) -- seen by a pinhole camera
at a random position inside the room, with a random yaw and a small downward pitch.  Rays are
cast for all pixels of a chunk of images at once (NumPy, a loop over object slots only), so
the image, the labels, the depth and the normals come from the same hit points and agree
exactly.

Per pixel:

* ``image`` -- RGB = albedo x procedural texture (per class: tiles, wood grain, drawers,
  stripes, rings, spots, ...) x Lambertian shading (ambient + one point light below the
  ceiling, with hard shadows cast by the objects, + one directional light) x white balance,
  plus Gaussian noise, clipped to ``[0, 1]`` (stored as uint8).
* ``segmentation`` -- one of the 13 :data:`SCENES_CLASSES`.
* ``depth`` -- z-depth along the optical axis in metres (as NYU-v2); every pixel is valid.
* ``normal`` -- unit surface normal in the camera frame, NYU-style (OpenGL) axes: x to the
  right, y up, z towards the viewer (out of the screen), so visible surfaces have ``z > 0``, a
  wall facing the camera is ``(0, 0, 1)`` and a level floor seen by a level camera is
  ``(0, 1, 0)``.  A horizontal image flip negates x.
* ``edge`` -- 1 where the surface (room face, wall decal, object face) differs from the right
  or lower neighbour: the union of semantic boundaries, occlusion (depth) boundaries and
  normal creases, one pixel wide.
* ``saliency`` -- 1 on objects, 0 on the room (walls, floor, ceiling, windows, paintings).
* ``parts`` -- object parts, :data:`SCENES_PARTS`; class 0 ``background`` is the room (a
  class, not ignored), then box top / box side, cylinder top / cylinder side, sphere.

The camera intrinsics are fixed by the image size and ``fov_degrees`` (:func:`scenes_intrinsics`,
square pixels, principal point at the image centre, pixel centres at ``(j + 0.5, i + 0.5)``).
Generation is deterministic: split ``s`` of a config draws chunk ``c`` of 32 images from
``SeedSequence([seed, index of s, c])``, so the splits are independent and a smaller split is
a prefix of a larger one.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Iterator
from typing import NamedTuple

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

# fmt: off
SCENES_CLASSES: tuple[str, ...] = (
    "floor", "wall", "ceiling", "window", "painting",  # room; windows and paintings on walls
    "table", "cabinet", "bed", "crate",  # boxes
    "bin", "lamp",  # vertical cylinders
    "ball", "pouf",  # spheres
)
SCENES_PARTS: tuple[str, ...] = (
    "background", "box_top", "box_side", "cylinder_top", "cylinder_side", "sphere",
)
# fmt: on
SCENES_TASKS: tuple[str, ...] = ("segmentation", "depth", "normal", "edge", "saliency", "parts")
SCENES_VERSION = 1  # bump whenever generation changes: it is part of the cache key
MAX_OBJECTS = 10
CHUNK = 32  # images per random-number chunk (fixed: part of the determinism contract)
_PIXEL_BUDGET = 1 << 17  # pixels rendered at once (bounds memory at large resolutions)
_FIRST_OBJECT_CLASS = 5
_WINDOW, _PAINTING = SCENES_CLASSES.index("window"), SCENES_CLASSES.index("painting")
# Materials of a scene: 0 floor, 1 wall, 2 ceiling, 3-4 the two wall-decal slots, 5+ objects.
_DECAL_MATERIAL, _OBJECT_MATERIAL = 3, 5
_BOX, _CYLINDER, _SPHERE = 0, 1, 2
# Surface codes: 0-5 room faces (axis * 2 + hit the high side), 8-13 box faces (8 + axis * 2 +
# normal points along +axis), 14 cylinder side, 15 cylinder top, 16 sphere.
_BOX_CODE, _CYL_SIDE, _CYL_TOP, _SPHERE_CODE = 8, 14, 15, 16
# Surface ids (edges are where they change): room face code, 6 + decal slot, or
# 32 * (object slot + 1) + surface code.
_DECAL_SURFACE, _OBJECT_SURFACE = 6, 32
_ROOM_MATERIAL = np.array([1, 1, 0, 2, 1, 1])  # room face -> material (0 floor, 1 wall, 2 ceil.)
_ROOM_NORMAL = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]])
_CODE_PART = np.array([0] * 8 + [2, 2, 2, 1, 2, 2] + [4, 3, 5])  # surface code -> part


class _Look(NamedTuple):
    """Appearance family of a class: HSV ranges, texture weights and frequencies, emission.

    Texture = 1 + sum of weights x features of ``s = sin(2 pi fu u + a)``, ``c = sin(2 pi fv v
    + b)`` in surface coordinates (u, v) in metres: checker ``sign(s) sign(c)``, waves ``s``
    and ``c``, spots ``s c``, lines ``s > 0.9`` and ``c > 0.9``.  A zero frequency fixes its
    wave at 1 (so a checker becomes stripes).
    """

    hue: tuple[float, float]
    sat: tuple[float, float]
    val: tuple[float, float]
    weights: tuple[float, float, float, float, float, float]
    fu: tuple[float, float] = (0.0, 0.0)  # cycles per metre
    fv: tuple[float, float] = (0.0, 0.0)
    emission: float = 0.0


# fmt: off
_LOOKS: dict[str, _Look] = {
    #            hue           saturation    value         texture weights             fu, fv
    "floor":    _Look((0.05, 0.12), (0.15, 0.45), (0.35, 0.65), (0.14, 0, 0, 0, 0, 0),
                      (1.0, 1.7), (1.0, 1.7)),  # tiles
    "wall":     _Look((0.0, 1.0), (0.03, 0.18), (0.65, 0.85), (0, 0.04, 0, 0, 0, 0),
                      (2.0, 5.0)),  # faint wallpaper stripes
    "ceiling":  _Look((0.0, 1.0), (0.0, 0.05), (0.85, 0.97), (0, 0, 0, 0, 0, 0)),
    "window":   _Look((0.55, 0.62), (0.1, 0.3), (0.9, 1.0), (0, 0, 0, 0, -0.6, -0.6),
                      (1.2, 2.0), (1.2, 2.0), emission=0.75),  # bright panes in a frame
    "painting": _Look((0.0, 1.0), (0.5, 0.9), (0.45, 0.8), (0, 0, 0.15, 0.45, 0, 0),
                      (3.0, 7.0), (3.0, 7.0)),  # colourful blobs
    "table":    _Look((0.05, 0.1), (0.45, 0.7), (0.35, 0.6), (0, 0.15, 0, 0, 0, 0),
                      (6.0, 12.0)),  # wood grain
    "cabinet":  _Look((0.0, 1.0), (0.0, 0.12), (0.55, 0.9), (0, 0, 0, 0, 0, -0.55),
                      (0.0, 0.0), (1.5, 3.0)),  # drawers
    "bed":      _Look((0.0, 1.0), (0.25, 0.45), (0.7, 0.9), (0.15, 0, 0, 0, 0, 0),
                      (1.2, 2.0), (1.2, 2.0)),  # quilt
    "crate":    _Look((0.0, 1.0), (0.6, 0.9), (0.5, 0.8), (0.25, 0, 0, 0, 0, 0),
                      (5.0, 9.0)),  # stripes
    "bin":      _Look((0.0, 1.0), (0.2, 0.5), (0.2, 0.4), (0, 0, 0, 0, 0, 0.9),
                      (0.0, 0.0), (4.0, 6.0)),  # rings
    "lamp":     _Look((0.11, 0.16), (0.5, 0.8), (0.8, 1.0), (0, 0, 0, 0, 0, 0),
                      emission=0.35),  # glowing
    "ball":     _Look((0.97, 1.06), (0.7, 0.95), (0.6, 0.9), (0, 0, 0, 0.35, 0, 0),
                      (4.0, 8.0), (4.0, 8.0)),  # spots
    "pouf":     _Look((0.45, 0.65), (0.4, 0.7), (0.4, 0.7), (0.2, 0, 0, 0, 0, 0),
                      (2.5, 4.0), (2.5, 4.0)),  # checks
}
# fmt: on
_LOOK_TABLE = np.array(
    [
        [*lk.hue, *lk.sat, *lk.val, *lk.weights, *lk.fu, *lk.fv, lk.emission]
        for lk in (_LOOKS[name] for name in SCENES_CLASSES)
    ]
)
# Object categories: shape and full size ranges (x, y = height, z) in metres; cylinders and
# spheres use the x size as diameter (spheres also as height).
# fmt: off
_CATEGORIES: dict[str, tuple[int, tuple[tuple[float, float], ...]]] = {
    "table":   (_BOX, ((0.9, 1.6), (0.65, 0.8), (0.6, 1.0))),
    "cabinet": (_BOX, ((0.5, 1.0), (1.2, 2.0), (0.4, 0.6))),
    "bed":     (_BOX, ((1.4, 2.0), (0.45, 0.6), (1.9, 2.2))),
    "crate":   (_BOX, ((0.35, 0.6), (0.35, 0.6), (0.35, 0.6))),
    "bin":     (_CYLINDER, ((0.4, 0.8), (0.35, 0.7), (0.0, 0.0))),
    "lamp":    (_CYLINDER, ((0.16, 0.32), (1.2, 1.8), (0.0, 0.0))),
    "ball":    (_SPHERE, ((0.3, 0.56), (0.0, 0.0), (0.0, 0.0))),
    "pouf":    (_SPHERE, ((0.7, 1.1), (0.0, 0.0), (0.0, 0.0))),
}
# fmt: on
_OBJECT_CLASSES = SCENES_CLASSES[_FIRST_OBJECT_CLASS:]
_CATEGORY_SHAPE = np.array([_CATEGORIES[name][0] for name in _OBJECT_CLASSES])
_CATEGORY_SIZE = np.array([_CATEGORIES[name][1] for name in _OBJECT_CLASSES])


@dataclasses.dataclass(frozen=True)
class ScenesConfig:
    """Parameters of the ``scenes`` dataset (validated on creation).

    Attributes:
        height: image height in pixels.
        width: image width in pixels.
        n_train: number of training images.
        n_val: number of validation images.
        n_test: number of test images.
        min_objects: fewest objects per room.
        max_objects: most objects per room (at most :data:`MAX_OBJECTS`; an object that does
            not fit without overlapping is dropped).
        noise_std: standard deviation of the Gaussian pixel noise (image in ``[0, 1]``).
        fov_degrees: horizontal field of view (NYU-v2's Kinect: about 63 degrees).
        seed: base random seed; each split derives its own.
        tasks: the tasks to publish, a subset of :data:`SCENES_TASKS`.
    """

    height: int = 48
    width: int = 64
    n_train: int = 2000
    n_val: int = 400
    n_test: int = 400
    min_objects: int = 3
    max_objects: int = 6
    noise_std: float = 0.02
    fov_degrees: float = 63.0
    seed: int = 0
    tasks: tuple[str, ...] = SCENES_TASKS

    def __post_init__(self) -> None:
        check_range("height", self.height, 8, 2048, integer=True)
        check_range("width", self.width, 8, 2048, integer=True)
        for name in ("n_train", "n_val", "n_test"):
            check_range(name, getattr(self, name), 1, 10**7, integer=True)
        check_range("min_objects", self.min_objects, 0, MAX_OBJECTS, integer=True)
        check_range(
            "max_objects", self.max_objects, max(1, self.min_objects), MAX_OBJECTS, integer=True
        )
        check_range("noise_std", self.noise_std, 0.0, 0.5)
        check_range("fov_degrees", self.fov_degrees, 20.0, 120.0)
        check_range("seed", self.seed, 0, 2**63 - 1, integer=True)
        check_task_subset("scenes", self.tasks, SCENES_TASKS)


SCENES_PRESETS: dict[str, dict[str, object]] = {
    "smoke": {"height": 24, "width": 32, "n_train": 48, "n_val": 16, "n_test": 16},
    "cpu": {"height": 48, "width": 64, "n_train": 2000, "n_val": 400, "n_test": 400},
    "paper": {"height": 288, "width": 384, "n_train": 795, "n_val": 654, "n_test": 654},
}


def scenes_task_specs(tasks: tuple[str, ...] = SCENES_TASKS) -> dict[str, TaskSpec]:
    """Task specs of the ``scenes`` tasks.

    Args:
        tasks: task names, a subset of :data:`SCENES_TASKS`.
    """
    classes = {"segmentation": len(SCENES_CLASSES), "parts": len(SCENES_PARTS)}
    return {t: TaskSpec(t, CANONICAL_KINDS[t], classes.get(t, 0)) for t in tasks}


def scenes_intrinsics(height: int, width: int, fov_degrees: float) -> tuple[float, ...]:
    """Pinhole intrinsics ``(fx, fy, cx, cy)`` in pixels (square pixels, centred).

    Args:
        height: image height in pixels.
        width: image width in pixels.
        fov_degrees: horizontal field of view in degrees.
    """
    fx = 0.5 * width / math.tan(math.radians(fov_degrees) / 2)
    return fx, fx, 0.5 * width, 0.5 * height


def _uniform(rng: np.random.Generator, low: object, high: object, size: object) -> np.ndarray:
    """Uniform draws in ``[low, high)`` (broadcast)."""
    low, high = np.asarray(low), np.asarray(high)
    return low + (high - low) * rng.random(size)


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """HSV in ``[0, 1]`` (hue wraps) to RGB, shape ``h.shape + (3,)``."""
    h6 = (h % 1.0) * 6.0
    i = np.floor(h6).astype(np.int64) % 6
    f = h6 - np.floor(h6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    table = np.stack(
        [
            np.stack(c, -1)
            for c in ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))
        ]
    )
    return np.take_along_axis(table, i[None, ..., None], 0)[0]


def _sample_materials(rng: np.random.Generator, classes: np.ndarray) -> np.ndarray:
    """Appearance of surfaces of the given classes (any shape): ``classes.shape + (15,)``.

    Columns: RGB albedo (3), the six texture weights, angular frequencies and phases of the
    two waves (4), emission (1).
    """
    look = _LOOK_TABLE[classes]
    u = rng.random(classes.shape + (7,))
    hue = look[..., 0] + u[..., 0] * (look[..., 1] - look[..., 0])
    sat = look[..., 2] + u[..., 1] * (look[..., 3] - look[..., 2])
    val = look[..., 4] + u[..., 2] * (look[..., 5] - look[..., 4])
    fu = look[..., 12] + u[..., 3] * (look[..., 13] - look[..., 12])
    fv = look[..., 14] + u[..., 4] * (look[..., 15] - look[..., 14])
    # Zero frequency: phase pi/2 makes the wave a constant 1.
    phase_u = np.where(fu > 0, 2 * np.pi * u[..., 5], np.pi / 2)
    phase_v = np.where(fv > 0, 2 * np.pi * u[..., 6], np.pi / 2)
    waves = np.stack([2 * np.pi * fu, 2 * np.pi * fv, phase_u, phase_v], -1)
    rgb = _hsv_to_rgb(hue, sat, val)
    return np.concatenate([rgb, look[..., 6:12], waves, look[..., 16:17]], -1)


def _sample_scenes(rng: np.random.Generator, n: int, config: ScenesConfig) -> dict[str, np.ndarray]:
    """Room, camera, objects, wall decals, lights and materials of ``n`` scenes."""
    hfov = math.radians(config.fov_degrees)
    room = _uniform(rng, [3.5, 2.5, 3.5], [7.0, 3.2, 7.0], (n, 3))  # width x, height y, depth z
    cam = _uniform(rng, [0.4, 1.1, 0.4], room * [1, 0, 1] + [-0.4, 1.7, -0.4], (n, 3))
    yaw = np.arctan2(room[:, 0] / 2 - cam[:, 0], room[:, 2] / 2 - cam[:, 2])
    yaw += _uniform(rng, -0.7, 0.7, n)
    pitch = _uniform(rng, -0.45, 0.02, n)
    forward = np.stack([np.cos(pitch) * np.sin(yaw), np.sin(pitch), np.cos(pitch) * np.cos(yaw)], 1)
    right = np.stack([-np.cos(yaw), np.zeros(n), np.sin(yaw)], 1)  # forward x up, normalised
    down = np.cross(forward, right)

    # Objects: category, size, yaw; placed one slot at a time without overlaps.
    k = config.max_objects
    active = np.arange(k) < rng.integers(config.min_objects, k + 1, n)[:, None]
    category = rng.integers(0, len(_OBJECT_CLASSES), (n, k))
    shape = _CATEGORY_SHAPE[category]
    size_range = _CATEGORY_SIZE[category]
    full = size_range[..., 0] + rng.random((n, k, 3)) * (size_range[..., 1] - size_range[..., 0])
    full[..., 2] = np.where(shape == _BOX, full[..., 2], full[..., 0])
    full[..., 1] = np.where(shape == _SPHERE, full[..., 0], full[..., 1])
    half = full / 2
    aligned = rng.random((n, k)) < 0.5
    obj_yaw = np.where(aligned, rng.integers(0, 2, (n, k)) * np.pi / 2, rng.random((n, k)) * np.pi)
    radius = np.where(shape == _BOX, np.hypot(half[..., 0], half[..., 2]), half[..., 0])
    # Place the largest objects first (they are the hardest to fit); active slots stay first.
    order = np.argsort(np.where(active, -radius, np.inf), axis=1, kind="stable")
    category, shape, radius, obj_yaw = (
        np.take_along_axis(x, order, 1) for x in (category, shape, radius, obj_yaw)
    )
    half = np.take_along_axis(half, order[..., None], 1)
    pos = np.zeros((n, k, 2))
    placed = np.zeros((n, k), dtype=bool)
    lo = radius + 0.05
    for slot in range(k):
        todo = active[:, slot].copy()
        r = radius[:, slot]
        for attempt in range(24):
            if not todo.any():
                break
            if attempt < 16:  # in front of the camera, so that most objects are visible
                angle = yaw + _uniform(rng, -0.42, 0.42, n) * hfov
                dist = r + _uniform(rng, 0.8, 4.0, n)
                xz = cam[:, [0, 2]] + dist[:, None] * np.stack([np.sin(angle), np.cos(angle)], 1)
            else:
                xz = rng.random((n, 2)) * room[:, [0, 2]]
            ok = todo & np.all(
                (xz >= lo[:, slot, None]) & (xz <= room[:, [0, 2]] - lo[:, slot, None]), 1
            )
            ok &= np.hypot(*(xz - cam[:, [0, 2]]).T) >= r + 0.5
            gap = np.hypot(*(xz[:, None, :] - pos[:, :slot]).transpose(2, 0, 1))
            ok &= np.all((gap >= r[:, None] + radius[:, :slot] + 0.1) | ~placed[:, :slot], 1)
            pos[ok, slot] = xz[ok]
            placed[ok, slot] = True
            todo &= ~ok

    # Wall decals (windows, paintings) around where the camera looks.
    decal_class = np.where(rng.random((n, 2)) < 0.5, _WINDOW, _PAINTING)
    decal_on = rng.random((n, 2)) < 0.65
    angle = yaw[:, None] + _uniform(rng, -0.4, 0.4, (n, 2)) * hfov
    dxz = np.stack([np.sin(angle), np.cos(angle)], -1)
    with np.errstate(divide="ignore"):
        t_wall = (np.where(dxz > 0, room[:, None, [0, 2]], 0.0) - cam[:, None, [0, 2]]) / dxz
    along_z = t_wall[..., 0] < t_wall[..., 1]  # hits an x = const wall, runs along z
    decal_wall = np.where(along_z, (dxz[..., 0] > 0).astype(int), 4 + (dxz[..., 1] > 0))
    t_hit = np.minimum(t_wall[..., 0], t_wall[..., 1])
    centre = np.where(
        along_z, cam[:, None, 2] + t_hit * dxz[..., 1], cam[:, None, 0] + t_hit * dxz[..., 0]
    )
    length = np.where(along_z, room[:, None, 2], room[:, None, 0])
    window = decal_class == _WINDOW
    width = np.where(window, _uniform(rng, 0.8, 1.6, (n, 2)), _uniform(rng, 0.5, 1.2, (n, 2)))
    centre = np.clip(
        centre + _uniform(rng, -0.3, 0.3, (n, 2)), width / 2 + 0.1, length - width / 2 - 0.1
    )
    bottom = np.where(window, _uniform(rng, 0.8, 1.1, (n, 2)), _uniform(rng, 1.0, 1.4, (n, 2)))
    top = np.where(
        window,
        np.minimum(room[:, None, 1] - 0.25, bottom + _uniform(rng, 1.0, 1.5, (n, 2))),
        bottom + _uniform(rng, 0.4, 0.9, (n, 2)),
    )
    decal_box = np.stack([centre - width / 2, centre + width / 2, bottom, top], -1)

    classes = np.concatenate(
        [np.tile([0, 1, 2], (n, 1)), decal_class, category + _FIRST_OBJECT_CLASS], 1
    )
    light_dir = _uniform(rng, [-1.0, 0.6, -1.0], [1.0, 1.6, 1.0], (n, 3))
    return {
        "room": room,
        "cam": cam,
        "right": right,
        "down": down,
        "forward": forward,
        "obj_shape": np.where(placed, shape, -1),
        "obj_pos": pos,
        "obj_half": half,
        "obj_yaw": obj_yaw,
        "decal_wall": np.where(decal_on, decal_wall, -1),
        "decal_box": decal_box,
        "light_pos": np.stack(
            [
                _uniform(rng, 0.3, room[:, 0] - 0.3, n),
                room[:, 1] - 0.25,
                _uniform(rng, 0.3, room[:, 2] - 0.3, n),
            ],
            1,
        ),
        "light_dir": light_dir / np.linalg.norm(light_dir, axis=1, keepdims=True),
        "light": _uniform(rng, [0.25, 0.7, 0.15], [0.4, 1.1, 0.35], (n, 3)),  # amb, point, dir
        "white_balance": _uniform(rng, 0.92, 1.08, (n, 3)),
        "material": _sample_materials(rng, classes),
        "material_class": classes,
    }


def _intersect(
    scene: dict[str, np.ndarray],
    origin: list[np.ndarray],
    d: list[np.ndarray],
    slot: int,
    rows: np.ndarray,
    kind: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Ray parameter (inf = miss) and surface code of object ``slot`` for images ``rows``.

    ``origin`` and ``d`` hold the x, y, z components of the ray origins (``(n, 1)`` or
    ``(n, P)``) and directions (``(n, P)``) of all ``n`` images; origins lie outside objects.
    """
    cx, cz = scene["obj_pos"][rows, slot].T
    hx, hy, hz = scene["obj_half"][rows, slot].T
    ox, oy, oz = origin[0][rows] - cx[:, None], origin[1][rows], origin[2][rows] - cz[:, None]
    dx, dy, dz = (c[rows] for c in d)
    with np.errstate(divide="ignore", invalid="ignore"):
        if kind == _BOX:  # slab test in the box frame
            yaw = scene["obj_yaw"][rows, slot]
            c, s = np.cos(yaw)[:, None], np.sin(yaw)[:, None]
            lx, lz, ly = c * ox - s * oz, s * ox + c * oz, oy - hy[:, None]
            ldx, ldz = c * dx - s * dz, s * dx + c * dz
            near = [
                (-np.copysign(h[:, None], dd) - oo) / dd
                for h, oo, dd in ((hx, lx, ldx), (hy, ly, dy), (hz, lz, ldz))
            ]
            far = [
                (np.copysign(h[:, None], dd) - oo) / dd
                for h, oo, dd in ((hx, lx, ldx), (hy, ly, dy), (hz, lz, ldz))
            ]
            t_near = np.maximum(np.maximum(near[0], near[1]), near[2])
            t_far = np.minimum(np.minimum(far[0], far[1]), far[2])
            axis = np.where(
                near[0] >= near[1],
                np.where(near[0] >= near[2], 0, 2),
                np.where(near[1] >= near[2], 1, 2),
            )
            dd_axis = np.where(axis == 0, ldx, np.where(axis == 1, dy, ldz))
            code = _BOX_CODE + 2 * axis + (dd_axis < 0)
            t = np.where((t_near <= t_far) & (t_near > 0), t_near, np.inf)
        elif kind == _CYLINDER:  # vertical cylinder on the floor: side, then top cap
            r2 = (hx * hx)[:, None]
            a = dx * dx + dz * dz
            b = ox * dx + oz * dz
            disc = b * b - a * (ox * ox + oz * oz - r2)
            t_side = (-b - np.sqrt(disc)) / a
            y = oy + t_side * dy
            t_side = np.where(
                (disc >= 0) & (t_side > 0) & (y >= 0) & (y <= 2 * hy[:, None]), t_side, np.inf
            )
            t_top = (2 * hy[:, None] - oy) / dy
            in_cap = (ox + t_top * dx) ** 2 + (oz + t_top * dz) ** 2 <= r2
            t_top = np.where((t_top > 0) & in_cap, t_top, np.inf)
            code = np.where(t_top < t_side, _CYL_TOP, _CYL_SIDE)
            t = np.minimum(t_side, t_top)
        else:  # sphere resting on the floor
            oy = oy - hx[:, None]
            b = ox * dx + oy * dy + oz * dz
            a = dx * dx + dy * dy + dz * dz
            disc = b * b - a * (ox * ox + oy * oy + oz * oz - (hx * hx)[:, None])
            t = (-b - np.sqrt(disc)) / a
            t = np.where((disc >= 0) & (t > 0), t, np.inf)
            code = np.full(t.shape, _SPHERE_CODE)
    return t, code


def _object_hits(
    scene: dict[str, np.ndarray], origin: list[np.ndarray], d: list[np.ndarray]
) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
    """For every object slot and shape: ``(slot, rows, t, code)`` from :func:`_intersect`."""
    for slot in range(scene["obj_shape"].shape[1]):
        for kind in (_BOX, _CYLINDER, _SPHERE):
            rows = np.flatnonzero(scene["obj_shape"][:, slot] == kind)
            if len(rows):
                yield (slot, rows, *_intersect(scene, origin, d, slot, rows, kind))


def _object_geometry(
    scene: dict[str, np.ndarray],
    obj: tuple[np.ndarray, np.ndarray],
    code: np.ndarray,
    p: list[np.ndarray],
) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, np.ndarray]]:
    """World normals (3 x m) and texture coordinates (2 x m) of ``m`` object pixels.

    ``obj`` holds the image and object slot of each pixel, ``p`` its hit point (x, y, z).
    """
    b, k = obj
    shape = scene["obj_shape"][b, k]
    cx, cz = scene["obj_pos"][b, k].T
    hx, hy = scene["obj_half"][b, k, 0], scene["obj_half"][b, k, 1]
    c, s = np.cos(scene["obj_yaw"][b, k]), np.sin(scene["obj_yaw"][b, k])
    rx, ry, rz = p[0] - cx, p[1] - hy, p[2] - cz
    lx, lz = c * rx - s * rz, s * rx + c * rz
    box_axis = np.clip(code - _BOX_CODE, 0, 5) // 2
    sign = np.where((code - _BOX_CODE) % 2 == 1, 1.0, -1.0)
    normal = [np.where(box_axis == a, sign, 0.0) for a in range(3)]
    normal = [np.where(shape == _BOX, n, 0.0) for n in normal]
    normal[1] = np.where(code == _CYL_TOP, 1.0, normal[1])
    curved = (code == _CYL_SIDE) | (code == _SPHERE_CODE)
    sphere = code == _SPHERE_CODE
    normal[0] = np.where(curved, lx / hx, normal[0])
    normal[1] = np.where(sphere, ry / hx, normal[1])
    normal[2] = np.where(curved, lz / hx, normal[2])
    norm = np.sqrt(normal[0] ** 2 + normal[1] ** 2 + normal[2] ** 2)
    nx, ny, nz = (n / norm for n in normal)
    world = (c * nx + s * nz, ny, -s * nx + c * nz)
    top = (box_axis == 1) | (code == _CYL_TOP)
    u = np.where(curved, hx * np.arctan2(lx, lz), np.where((box_axis == 0) & ~top, lz, lx))
    v = np.where(top, lz, ry)
    return world, (u, v)


def _shade(
    scene: dict[str, np.ndarray],
    p: list[np.ndarray],
    normal: list[np.ndarray],
    uv: tuple[np.ndarray, np.ndarray],
    material: np.ndarray,
    rng: np.random.Generator,
    noise_std: float,
) -> np.ndarray:
    """Pixel colours (3, n, P) uint8: albedo x texture x (Lambertian shading with point-light
    shadows, or emission) x white balance, plus Gaussian noise.

    ``p`` and ``normal`` are the world hit points and normals (x, y, z), ``uv`` the texture
    coordinates and ``material`` the material index of every pixel (``(n, P)`` each).
    """
    n, n_mat = material.shape[0], scene["material"].shape[1]
    u, v = uv
    flat = (np.arange(n)[:, None] * n_mat + material).ravel()
    table = np.ascontiguousarray(scene["material"].reshape(n * n_mat, -1).T)
    rgb, weights, (wu, wv, phase_u, phase_v), emission = np.split(
        np.take(table, flat, axis=1).reshape(-1, *material.shape), [3, 9, 13]
    )
    s = np.sin(wu * u + phase_u)
    c = np.sin(wv * v + phase_v)
    texture = (
        1
        + weights[0] * np.sign(s) * np.sign(c)
        + weights[1] * s
        + weights[2] * c
        + weights[3] * s * c
        + weights[4] * (s > 0.9)
        + weights[5] * (c > 0.9)
    )
    to_light = [scene["light_pos"][:, a, None] - p[a] for a in range(3)]
    dist2 = to_light[0] ** 2 + to_light[1] ** 2 + to_light[2] ** 2
    lambert_point = sum(normal[a] * to_light[a] for a in range(3)) / np.sqrt(dist2)
    # Hard shadows of the point light: shadow rays from just off the surface to the light.
    lit = lambert_point > 0
    start = [p[a] + 1e-3 * normal[a] for a in range(3)]
    for _, rows, t_obj, _ in _object_hits(scene, start, to_light):
        lit[rows] &= t_obj >= 1
    lambert_point = np.where(lit, lambert_point, 0)  # 0 facing away or in shadow
    lambert_dir = sum(normal[a] * scene["light_dir"][:, a, None] for a in range(3))
    light = scene["light"]
    shade = (
        light[:, 0, None]
        + light[:, 1, None] * lambert_point / (1 + 0.04 * dist2)
        + light[:, 2, None] * np.maximum(lambert_dir, 0)
    )
    shade = shade * (1 - emission[0]) + emission[0]
    gain = texture * shade * rgb * scene["white_balance"].T[:, :, None]
    noise = rng.standard_normal((n, 3, material.shape[1]), dtype=np.float32)  # image-major
    image = gain + noise_std * noise.transpose(1, 0, 2)
    return np.rint(np.clip(image, 0, 1) * 255).astype(np.uint8)


def _render(
    scene: dict[str, np.ndarray], config: ScenesConfig, rng: np.random.Generator, extras: bool
) -> dict[str, np.ndarray]:
    """Ray-cast a batch of scenes; arrays in the dataset layout (see :func:`generate_scenes`)."""
    scene = {k: v.astype(np.float32) if v.dtype == np.float64 else v for k, v in scene.items()}
    n, h, w = len(scene["cam"]), config.height, config.width
    fx, fy, cx, cy = scenes_intrinsics(h, w, config.fov_degrees)
    jj, ii = np.meshgrid(np.arange(w), np.arange(h))
    ux = ((jj.ravel() + 0.5 - cx) / fx).astype(np.float32)
    vy = ((ii.ravel() + 0.5 - cy) / fy).astype(np.float32)
    # World ray directions with unit forward component: the ray parameter is the z-depth.
    d = [
        (
            ux * scene["right"][:, a, None]
            + vy * scene["down"][:, a, None]
            + scene["forward"][:, a, None]
        ).astype(np.float32)
        for a in range(3)
    ]
    d = [np.where(np.abs(c) < 1e-9, np.float32(1e-9), c) for c in d]
    o, room = scene["cam"], scene["room"]

    # Room: exit through the nearest of the six faces.
    t_axis = [(np.where(d[a] > 0, room[:, a, None], 0) - o[:, a, None]) / d[a] for a in range(3)]
    axis = np.where(
        t_axis[0] <= t_axis[1],
        np.where(t_axis[0] <= t_axis[2], 0, 2),
        np.where(t_axis[1] <= t_axis[2], 1, 2),
    )
    t = np.minimum(np.minimum(t_axis[0], t_axis[1]), t_axis[2])
    code = 2 * axis + (np.where(axis == 0, d[0], np.where(axis == 1, d[1], d[2])) > 0)
    obj = np.full(t.shape, -1, dtype=np.int64)

    # Objects: keep the nearest hit.
    for slot, rows, t_obj, code_obj in _object_hits(scene, [o[:, a, None] for a in range(3)], d):
        closer = t_obj < t[rows]
        t[rows] = np.where(closer, t_obj, t[rows])
        code[rows] = np.where(closer, code_obj, code[rows])
        obj[rows] = np.where(closer, slot, obj[rows])
    p = [o[:, a, None] + t * d[a] for a in range(3)]

    # Room normals, texture coordinates and materials; then wall decals; then objects.
    room_code = np.clip(code, 0, 5)
    normal = [_ROOM_NORMAL[room_code, a].astype(np.float32) for a in range(3)]
    u = np.where(axis == 0, p[2], p[0])
    v = np.where(axis == 1, p[2], p[1])
    material = _ROOM_MATERIAL[room_code]
    surface = code.copy()
    is_room = obj < 0
    for j in range(2):
        x0, x1, y0, y1 = (scene["decal_box"][:, j, i, None] for i in range(4))
        hit = is_room & (code == scene["decal_wall"][:, j, None]) & (u >= x0) & (u <= x1)
        hit &= (v >= y0) & (v <= y1)
        material = np.where(hit, _DECAL_MATERIAL + j, material)
        surface = np.where(hit, _DECAL_SURFACE + j, surface)
    pix = np.nonzero(~is_room)
    obj_idx = (pix[0], obj[pix])
    world, uv = _object_geometry(scene, obj_idx, code[pix], [c[pix] for c in p])
    for a in range(3):
        normal[a][pix] = world[a]
    u[pix], v[pix] = uv
    material[pix] = _OBJECT_MATERIAL + obj[pix]
    surface[pix] = _OBJECT_SURFACE * (obj[pix] + 1) + code[pix]
    image = _shade(scene, p, normal, (u, v), material, rng, config.noise_std)

    # Camera-frame normals, NYU/OpenGL axes (x right, y up, z towards the viewer).
    cam_axes = (scene["right"], -scene["down"], -scene["forward"])
    normal_cam = [sum(normal[a] * axes[:, a, None] for a in range(3)) for axes in cam_axes]
    surface_map = surface.reshape(n, h, w)
    edge = np.zeros((n, h, w), dtype=bool)
    edge[:, :, :-1] |= surface_map[:, :, :-1] != surface_map[:, :, 1:]
    edge[:, :-1, :] |= surface_map[:, :-1, :] != surface_map[:, 1:, :]
    out = {
        "image": image.reshape(3, n, h, w).transpose(1, 0, 2, 3),
        "segmentation": scene["material_class"][np.arange(n)[:, None], material]
        .reshape(n, h, w)
        .astype(np.int8),
        "depth": t.reshape(n, 1, h, w).astype(np.float32),
        "normal": np.stack(normal_cam, 1).reshape(n, 3, h, w).astype(np.float32),
        "edge": edge[:, None].astype(np.uint8),
        "saliency": (~is_room).reshape(n, 1, h, w).astype(np.uint8),
        "parts": _CODE_PART[code].reshape(n, h, w).astype(np.int8),
    }
    if extras:
        out["surface"] = surface_map.astype(np.int32)
        out["instance"] = obj.reshape(n, h, w).astype(np.int8)
        out["camera_to_world"] = np.stack([scene["right"], scene["down"], scene["forward"]], 2)
        out["camera_position"] = scene["cam"]
    return out


def generate_scenes(
    config: ScenesConfig, split: str, extras: bool = False
) -> dict[str, np.ndarray]:
    """Generate one split (no cache).

    Returns ``image`` uint8 ``(N, 3, H, W)``, ``segmentation`` int8 ``(N, H, W)``, ``depth``
    float32 ``(N, 1, H, W)``, ``normal`` float32 ``(N, 3, H, W)``, ``edge`` and ``saliency``
    uint8 ``(N, 1, H, W)``, ``parts`` int8 ``(N, H, W)``; with ``extras`` also ``surface``
    (int32 surface id per pixel), ``instance`` (int8 object slot, -1 = room),
    ``camera_to_world`` ``(N, 3, 3)`` (columns: camera right, down, forward in the world frame,
    whose y axis points up) and ``camera_position`` ``(N, 3)``.

    Args:
        config: the dataset config (image size, split sizes, objects, noise, seed).
        split: ``train``, ``val`` or ``test``.
        extras: also return the geometry used by the tests.
    """
    check_choice("split", split, SPLITS)

    def prepare(chunk: int, count: int) -> RowRenderer:
        rng = chunk_rng(config.seed, split, chunk)
        scene = _sample_scenes(rng, CHUNK, config)
        return lambda rows: _render({k: v[rows] for k, v in scene.items()}, config, rng, extras)

    per_render = rows_per_render(CHUNK, _PIXEL_BUDGET, config.height, config.width)
    return render_in_chunks(getattr(config, f"n_{split}"), CHUNK, per_render, prepare)


@DATASETS.register("scenes")
def build_scenes(split: str, profile: str = "cpu", **overrides: object) -> TensorDataset:
    """The ``scenes`` dataset: one split, generated on first use and cached on disk.

    Args:
        split: ``train``, ``val`` or ``test``.
        profile: ``smoke``, ``cpu`` or ``paper`` (selects the :data:`SCENES_PRESETS` entry).
        **overrides: :class:`ScenesConfig` fields, e.g. ``tasks=("segmentation", "depth")``.
    """
    return build_generated(
        "scenes",
        split,
        profile,
        overrides,
        config_class=ScenesConfig,
        presets=SCENES_PRESETS,
        version=SCENES_VERSION,
        generate=generate_scenes,
        task_specs=lambda config: scenes_task_specs(config.tasks),
    )


def scenes_images_per_second(n: int = 400, height: int = 64, width: int = 64) -> float:
    """Generation throughput in images per second of CPU time (no cache).

    CPU time of the whole process is used, so other processes on the machine do not slow the
    measurement down; NumPy's element-wise operations run on one thread (set
    ``OMP_NUM_THREADS=1`` to be sure no threaded library adds time).

    Args:
        n: number of images to generate.
        height: image height in pixels.
        width: image width in pixels.
    """
    config = ScenesConfig(height=height, width=width, n_train=n)
    start = time.process_time()
    generate_scenes(config, "train")
    return n / (time.process_time() - start)
