"""``vehicles``: an embedded Vehicle-X-like dataset of rendered vehicles (paper A).

Every image shows one vehicle on a ground plane, seen by one of a few fixed cameras, with four
classification labels (the tasks of paper A, Eq. 1):

* ``colour`` -- one of the 12 :data:`VEHICLE_COLOURS` (Vehicle-X's ``colorID`` order);
* ``type`` -- one of the 11 :data:`VEHICLE_TYPES` (Vehicle-X's ``typeID`` order);
* ``identity`` -- the vehicle (``vehicleID``): ``n_ids`` vehicles, each with a fixed colour,
  type and set of details;
* ``camera`` -- the camera (``cameraID``, paper A's "pose" task): ``n_cameras`` fixed cameras.

**Label statistics (paper A, Section 3 and Fig. 2).**  Colours are strongly imbalanced
(:data:`COLOUR_SHARES`: white 22 %, black 19 %, gray 15.5 %, ..., pink 2 %, as the rare
*pink* of 2.26 % in the paper), and the type distribution depends on the colour
(:data:`TYPE_GIVEN_COLOUR`): for pink it is exactly the paper's Eq. 2,
``P(type | pink) = [0.35, 0.21, 0.09, 0.24, 0, 0, 0, 0.11, 0, 0, 0]``, while other colours lean
towards other types (yellow buses and sports cars, white vans and RVs, ...), so re-weighting one
task's classes unbalances another's.  The shares hold for *vehicles* by construction (largest
remainder quotas over the ``n_ids`` vehicles, at least one vehicle per colour) and for
*images* up to rounding, because every vehicle gets the same number of images (+-1).

**Vehicles** (:func:`vehicle_catalogue`, drawn from ``seed`` alone, identical in every split).
Each type has its own silhouette built from up to three extruded profiles -- lower body,
cabin (greenhouse) and cargo box (truck box, pickup bed) -- with corner chamfers (bonnet,
windscreen, hatch, ...) and two or three axles: sedan (three boxes), suv (tall, big wheels),
van (tall box, windows at the front only), hatchback (short, steep hatch), mpv (one-box),
pickup (cab and open dark bed), bus (long, a row of windows, glass front), truck (cab, tall
cargo box, three axles), estate (long roof), sportscar (low, long bonnet, fastback) and rv
(motorhome box over a cab, glazed cab front).  A vehicle adds fixed details: side-window count
(+0..2 panes), roof rack, stripe (none / low / high / wide), wheel size (3 levels), rim colour
(3), contrasting roof; within a (colour, type) group no two vehicles share the same details,
so identity is visible in principle.  Proportions (length, height, cabin position) and paint
shade vary a little per vehicle.

**Cameras** (:func:`vehicle_cameras`, from ``seed`` alone): camera ``k`` looks from yaw
``k * 360 / n_cameras`` degrees (+- 5; 0 = from the front, 90 = the vehicle's left side, 180 =
from behind) at an elevation of 6-40 degrees, with its own zoom, framing, backdrop (clear sky,
overcast, buildings with windows, trees), ground (asphalt with lane markings, tiles, grass,
concrete slabs, oriented in the world so that the pattern turns with the yaw), light direction
(hence shading and the vehicle's shadow) and light intensity / tint.  Cameras are mildly
imbalanced (weights 0.5-1.5, assigned to cameras in a random order).  Per image the pose
jitters (yaw +-4, elevation +-2 degrees, zoom +-5 %, framing +-3 % of the frame, light
+-8 %).

**Rendering.**  Orthographic projection (every face maps affinely to the screen), a z-buffer
over all faces of all images of a chunk at once (NumPy, a loop over the 21 faces only),
Lambertian face shading from the camera's light plus a screen-space light gradient, glass
reflecting the sky, and Gaussian pixel noise.  Face details come from face coordinates:
windows and pillars, windscreens, head- and tail-lights, grille, number plate, bumpers,
wheel arches, rims, stripes, roof rack.

**Splits and identities.**  Every split holds every vehicle (when it has at least ``n_ids``
images): image ``i`` of a split shows vehicle ``perm_c[i mod n_ids]`` where ``perm_c`` is a
random permutation of the ids drawn for cycle ``c = i // n_ids`` of that split, so ids are
spread evenly over every split (counts differ by at most one) and identity classification on
``val`` / ``test`` is of vehicles seen in training (what paper A's vehicle-id task needs);
``n_train >= n_ids`` is required.  Camera and nuisance draws of image chunk ``c`` (32 images)
come from ``SeedSequence([seed, index of split, 0, c])``, the id permutation of cycle ``c``
from ``SeedSequence([seed, index of split, 1, c])``, so splits are independent and a smaller
split is a prefix of a larger one.  :func:`vehicles_labels` gives a split's labels without
rendering it (e.g. paper A's Fig. 2 at the paper profile);
:func:`~mtlrepro.data.stats.label_distribution` and
:func:`~mtlrepro.data.stats.conditional_distribution` tabulate them for any classification
dataset.

**Presets** (:data:`VEHICLES_PRESETS`): ``smoke`` 32x32, 48 / 24 / 24 images of 24 vehicles;
``cpu`` 48x48, 4,500 / 1,500 / 1,500 images of 300 vehicles (15 / 5 / 5 per vehicle; about 4 s
on one core); ``paper`` 256x256 with Vehicle-X's 45,438 / 14,936 / 15,142 images of 1,362
vehicles (about 50 images/s, i.e. 25 min, and 15 GB of uint8 images -- generated only when
asked for).
"""

from __future__ import annotations

import dataclasses
import time
from typing import NamedTuple

import numpy as np

from mtlrepro.config import check_choice, check_range
from mtlrepro.data.base import DATASETS, SPLITS, TensorDataset, check_task_subset
from mtlrepro.data.generated import (
    RowRenderer,
    build_generated,
    render_in_chunks,
    rows_per_render,
)
from mtlrepro.data.vehicle_classes import VEHICLE_COLOURS, VEHICLE_TYPES, VEHICLES_TASKS
from mtlrepro.tasks import TaskSpec

VEHICLES_VERSION = 1  # bump whenever generation changes: it is part of the cache key
CHUNK = 32  # images per random-number chunk (fixed: part of the determinism contract)
_PIXEL_BUDGET = 1 << 16  # pixels rendered at once per face pass (bounds memory)

COLOUR_SHARES: dict[str, float] = {
    "yellow": 0.04, "orange": 0.03, "green": 0.05, "gray": 0.155, "red": 0.08, "blue": 0.08,
    "white": 0.22, "golden": 0.06, "brown": 0.05, "black": 0.19, "purple": 0.025, "pink": 0.02,
}  # fmt: skip
"""Share of vehicles (and, up to rounding, images) of each colour."""
PINK_TYPE_SHARES: tuple[float, ...] = (0.35, 0.21, 0.09, 0.24, 0, 0, 0, 0.11, 0, 0, 0)
"""``P(type | colour = pink)`` of paper A's Eq. 2, in :data:`VEHICLE_TYPES` order."""
_TYPE_BASE = (0.2, 0.15, 0.08, 0.08, 0.09, 0.09, 0.06, 0.07, 0.07, 0.06, 0.05)
_TYPE_AFFINITY: dict[str, dict[str, float]] = {
    "yellow": {"bus": 4.0, "sportscar": 3.0, "truck": 1.5},
    "orange": {"truck": 3.0, "sportscar": 3.0, "van": 1.5},
    "green": {"pickup": 2.0, "rv": 2.0, "truck": 1.5},
    "gray": {"sedan": 1.3},
    "red": {"sportscar": 4.0, "hatchback": 1.5, "truck": 1.5},
    "blue": {"bus": 2.0, "van": 1.5},
    "white": {"van": 3.0, "rv": 3.0, "bus": 1.5, "truck": 1.5},
    "golden": {"sedan": 2.0, "suv": 1.5, "sportscar": 0.5, "bus": 0.0, "truck": 0.5},
    "brown": {"pickup": 2.0, "estate": 2.0, "suv": 1.3},
    "black": {"suv": 2.0, "sedan": 1.5, "mpv": 1.3},
    "purple": {"hatchback": 2.0, "sportscar": 2.0, "mpv": 1.5},
}


def _type_given_colour() -> np.ndarray:
    """``P(type | colour)``, shape (12, 11): the base type shares times per-colour affinities,
    normalised; pink is paper A's Eq. 2."""
    table = np.tile(np.array(_TYPE_BASE), (len(VEHICLE_COLOURS), 1))
    for colour, boosts in _TYPE_AFFINITY.items():
        for vtype, factor in boosts.items():
            table[VEHICLE_COLOURS.index(colour), VEHICLE_TYPES.index(vtype)] *= factor
    table[VEHICLE_COLOURS.index("pink")] = PINK_TYPE_SHARES
    return table / table.sum(1, keepdims=True)


TYPE_GIVEN_COLOUR: np.ndarray = _type_given_colour()
"""``P(type | colour)`` used to draw vehicles, shape ``(12, 11)`` (rows sum to 1)."""

_PAINT: dict[str, tuple[float, float, float]] = {
    "yellow": (0.93, 0.82, 0.12), "orange": (0.95, 0.45, 0.08), "green": (0.13, 0.5, 0.2),
    "gray": (0.48, 0.49, 0.51), "red": (0.78, 0.08, 0.08), "blue": (0.1, 0.24, 0.72),
    "white": (0.93, 0.93, 0.92), "golden": (0.78, 0.63, 0.32), "brown": (0.42, 0.25, 0.13),
    "black": (0.07, 0.07, 0.08), "purple": (0.42, 0.14, 0.55), "pink": (0.96, 0.55, 0.72),
}  # fmt: skip
_PAINT_RGB = np.array([_PAINT[c] for c in VEHICLE_COLOURS])


class _Shape(NamedTuple):
    """Silhouette of a vehicle type in metres (x along the vehicle, front at ``+x``; z up).

    Prisms are ``(x rear, x front, z bottom, z top)`` with chamfers ``(front dx, front dz,
    rear dx, rear dz)`` cut off their top corners.  ``window`` is the glazed length per side
    pane (the window band starts at the cabin front), ``panes`` the base pane count.
    ``glass`` names the glazed faces among ``body_fcut``, ``cabin_front``, ``cabin_rear``,
    ``cabin_fcut`` and ``cabin_rcut``.
    """

    width: float
    body: tuple[float, float, float, float]
    body_cuts: tuple[float, float, float, float]
    cabin: tuple[float, float, float, float]
    cabin_cuts: tuple[float, float, float, float]
    cabin_width: float
    cargo: tuple[float, float, float, float] | None
    wheel: float
    axles: tuple[float, ...]
    window: float
    panes: int
    glass: tuple[str, ...]


_CAR_GLASS = ("cabin_fcut", "cabin_rcut")
# fmt: off
_SHAPES: dict[str, _Shape] = {
    "sedan": _Shape(1.8, (-2.3, 2.3, 0.28, 0.95), (0.5, 0.22, 0.35, 0.15),
                    (-1.3, 1.05, 0.95, 1.45), (0.75, 0.5, 0.6, 0.5), 0.88, None,
                    0.32, (1.45, -1.35), 9.0, 2, _CAR_GLASS),
    "suv": _Shape(1.9, (-2.35, 2.35, 0.42, 1.15), (0.35, 0.2, 0.12, 0.12),
                  (-2.25, 0.9, 1.15, 1.85), (0.45, 0.6, 0.15, 0.35), 0.9, None,
                  0.41, (1.5, -1.45), 9.0, 2, _CAR_GLASS),
    "van": _Shape(2.0, (-2.6, 2.6, 0.3, 1.05), (0.35, 0.25, 0.0, 0.0),
                  (-2.6, 1.95, 1.05, 2.4), (0.75, 0.7, 0.0, 0.0), 0.97, None,
                  0.34, (1.8, -1.65), 0.85, 1, ("cabin_fcut",)),
    "hatchback": _Shape(1.72, (-1.95, 1.95, 0.27, 0.95), (0.45, 0.22, 0.12, 0.1),
                        (-1.85, 0.75, 0.95, 1.5), (0.8, 0.55, 0.4, 0.5), 0.88, None,
                        0.3, (1.25, -1.25), 9.0, 1, _CAR_GLASS),
    "mpv": _Shape(1.85, (-2.4, 2.4, 0.32, 1.0), (0.4, 0.2, 0.1, 0.1),
                  (-2.3, 1.65, 1.0, 1.8), (1.15, 0.72, 0.15, 0.25), 0.9, None,
                  0.33, (1.55, -1.5), 9.0, 2, _CAR_GLASS),
    "pickup": _Shape(1.9, (-2.65, 2.65, 0.42, 1.1), (0.35, 0.2, 0.0, 0.0),
                     (-0.35, 1.25, 1.1, 1.85), (0.5, 0.6, 0.05, 0.1), 0.9,
                     (-2.65, -0.4, 1.1, 1.38), 0.4, (1.75, -1.65), 9.0, 1, _CAR_GLASS),
    "bus": _Shape(2.5, (-5.5, 5.5, 0.35, 1.3), (0.1, 0.1, 0.1, 0.1),
                  (-5.45, 5.5, 1.3, 3.1), (0.15, 0.2, 0.15, 0.2), 1.0, None,
                  0.5, (3.7, -3.3), 1.25, 6, ("cabin_front",)),
    "truck": _Shape(2.3, (-3.8, 3.8, 0.55, 1.3), (0.15, 0.15, 0.0, 0.0),
                    (2.25, 3.8, 1.3, 2.9), (0.25, 0.45, 0.0, 0.0), 1.0,
                    (-3.8, 2.1, 1.3, 3.3), 0.5, (2.85, -1.7, -2.85), 0.9, 1,
                    ("cabin_front", "cabin_fcut")),
    "estate": _Shape(1.8, (-2.4, 2.4, 0.28, 0.95), (0.5, 0.22, 0.12, 0.12),
                     (-2.3, 1.0, 0.95, 1.5), (0.8, 0.55, 0.15, 0.3), 0.88, None,
                     0.32, (1.5, -1.45), 9.0, 3, _CAR_GLASS),
    "sportscar": _Shape(1.95, (-2.2, 2.2, 0.15, 0.72), (0.95, 0.3, 0.4, 0.2),
                        (-1.35, 0.6, 0.72, 1.12), (0.8, 0.38, 1.0, 0.35), 0.86, None,
                        0.33, (1.35, -1.35), 9.0, 1, _CAR_GLASS),
    "rv": _Shape(2.35, (-3.6, 3.6, 0.42, 2.0), (0.65, 0.75, 0.1, 0.1),
                 (-3.6, 3.15, 2.0, 3.3), (0.35, 0.45, 0.1, 0.1), 1.0, None,
                 0.42, (2.4, -1.9), 0.75, 2, ("body_fcut",)),
}
# fmt: on
_GLASS_FACES = ("body_fcut", "cabin_front", "cabin_rear", "cabin_fcut", "cabin_rcut")

# Detail levels per vehicle (mixed radix; a vehicle's details are one combination).
_DETAIL_LEVELS = {"panes": 3, "rack": 2, "stripe": 4, "wheel": 3, "rim": 3, "roof": 2}
_WHEEL_SCALE = (0.88, 1.0, 1.14)
_RIM_GREY = (0.78, 0.3, 0.93)
# Stripe bands on the body side, as fractions of the body side's height (none/low/high/wide).
_STRIPE_BAND = ((2.0, 2.0), (0.3, 0.42), (0.68, 0.8), (0.4, 0.72))

# Faces: 5 per prism (body, cabin, cargo): the side facing the camera (cap), the end facing
# the camera (front or rear), front chamfer, top, rear chamfer; then per axle the wheel disc on
# the near side and the tread / underbody face.
_CAP, _END, _FCUT, _TOP, _RCUT = range(5)
_N_PRISM_FACES = 15
_N_FACES = _N_PRISM_FACES + 6
# Sub-materials (palette entries) of a pixel.
(_PAINT_M, _GLASS, _TYRE, _RIM, _HEADLIGHT, _TAILLIGHT, _TRIM, _STRIPE, _ROOF, _RACK, _BED,
 _PLATE) = range(12)  # fmt: skip
_N_SUB = 12


@dataclasses.dataclass(frozen=True)
class VehiclesConfig:
    """Parameters of the ``vehicles`` dataset (validated on creation).

    Attributes:
        height: image height in pixels.
        width: image width in pixels.
        n_train: number of training images (at least ``n_ids``: every vehicle is seen).
        n_val: number of validation images.
        n_test: number of test images.
        n_ids: number of vehicles (identity classes), at least 12 (one per colour).
        n_cameras: number of fixed cameras (camera classes).
        noise_std: standard deviation of the Gaussian pixel noise (image in ``[0, 1]``).
        seed: base random seed; vehicles and cameras derive from it, each split its images.
        tasks: the tasks to publish, a subset of :data:`VEHICLES_TASKS`.
    """

    height: int = 48
    width: int = 48
    n_train: int = 4500
    n_val: int = 1500
    n_test: int = 1500
    n_ids: int = 300
    n_cameras: int = 20
    noise_std: float = 0.02
    seed: int = 0
    tasks: tuple[str, ...] = VEHICLES_TASKS

    def __post_init__(self) -> None:
        check_range("height", self.height, 16, 1024, integer=True)
        check_range("width", self.width, 16, 1024, integer=True)
        check_range("n_ids", self.n_ids, len(VEHICLE_COLOURS), 5000, integer=True)
        check_range("n_train", self.n_train, self.n_ids, 10**7, integer=True)
        for name in ("n_val", "n_test"):
            check_range(name, getattr(self, name), 1, 10**7, integer=True)
        check_range("n_cameras", self.n_cameras, 2, 64, integer=True)
        check_range("noise_std", self.noise_std, 0.0, 0.5)
        check_range("seed", self.seed, 0, 2**63 - 1, integer=True)
        check_task_subset("vehicles", self.tasks, VEHICLES_TASKS)


VEHICLES_PRESETS: dict[str, dict[str, object]] = {
    "smoke": {"height": 32, "width": 32, "n_train": 48, "n_val": 24, "n_test": 24, "n_ids": 24},
    "cpu": {"height": 48, "width": 48, "n_train": 4500, "n_val": 1500, "n_test": 1500,
            "n_ids": 300},
    "paper": {"height": 256, "width": 256, "n_train": 45438, "n_val": 14936, "n_test": 15142,
              "n_ids": 1362},
}  # fmt: skip
"""Per-profile :class:`VehiclesConfig` overrides (paper: Vehicle-X's sizes, 1,362 vehicles)."""


def vehicles_task_specs(
    tasks: tuple[str, ...] = VEHICLES_TASKS, n_ids: int = 300, n_cameras: int = 20
) -> dict[str, TaskSpec]:
    """Task specs of the ``vehicles`` tasks (all of kind ``classification``).

    Args:
        tasks: task names, a subset of :data:`VEHICLES_TASKS`.
        n_ids: number of vehicles (identity classes).
        n_cameras: number of cameras (camera classes).
    """
    classes = {
        "colour": len(VEHICLE_COLOURS),
        "type": len(VEHICLE_TYPES),
        "identity": n_ids,
        "camera": n_cameras,
    }
    return {t: TaskSpec(t, "classification", classes[t]) for t in tasks}


def _quota(shares: np.ndarray, total: int) -> np.ndarray:
    """Largest-remainder integer counts summing to ``total`` in proportion to ``shares``."""
    exact = np.asarray(shares, dtype=np.float64) / np.sum(shares) * total
    counts = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[: total - counts.sum()]] += 1
    return counts


def _seeded(config: VehiclesConfig, *key: int) -> np.random.Generator:
    """A generator for one purpose: ``SeedSequence([seed, *key])``."""
    return np.random.default_rng(np.random.SeedSequence([config.seed, *key]))


def vehicle_catalogue(config: VehiclesConfig) -> dict[str, np.ndarray]:
    """The ``n_ids`` vehicles: colour, type and details of each id (from ``seed`` only).

    Colours are drawn by largest-remainder quotas of :data:`COLOUR_SHARES` (at least one
    vehicle per colour), types within each colour by quotas of :data:`TYPE_GIVEN_COLOUR`;
    the vehicles are then shuffled so that the id says nothing about them.  Details are
    distinct combinations within each (colour, type) group.

    Returns arrays of length ``n_ids``: ``colour``, ``type``, ``panes`` (extra side panes
    0-2), ``rack`` (0/1), ``stripe`` (0 none, 1 low, 2 high, 3 wide), ``wheel`` (size level
    0-2), ``rim`` (0 silver, 1 dark, 2 white), ``roof`` (1 = contrasting roof), the continuous
    ``length_scale``, ``height_scale``, ``cabin_shift`` (metres) and ``paint`` ``(n_ids, 3)``
    RGB.

    Args:
        config: the dataset config (``n_ids`` and ``seed`` are used).
    """
    rng = _seeded(config, len(SPLITS), 0)
    n = config.n_ids
    colour_counts = _quota(np.array([COLOUR_SHARES[c] for c in VEHICLE_COLOURS]), n)
    while (colour_counts == 0).any():  # every colour keeps at least one vehicle
        colour_counts[np.argmax(colour_counts)] -= 1
        colour_counts[np.argmin(colour_counts)] += 1
    colour = np.repeat(np.arange(len(VEHICLE_COLOURS)), colour_counts)
    vtype = np.concatenate(
        [
            np.repeat(np.arange(len(VEHICLE_TYPES)), _quota(TYPE_GIVEN_COLOUR[c], k))
            for c, k in enumerate(colour_counts)
        ]
    )
    radices = np.array(list(_DETAIL_LEVELS.values()))
    combos = int(np.prod(radices))
    code = np.empty(n, dtype=np.int64)
    for group in np.unique(colour * len(VEHICLE_TYPES) + vtype):
        rows = np.flatnonzero(colour * len(VEHICLE_TYPES) + vtype == group)
        code[rows] = rng.choice(combos, len(rows), replace=False)
    details = {}
    for name, radix in _DETAIL_LEVELS.items():
        details[name] = code % radix
        code = code // radix
    tint = rng.uniform(0.88, 1.06, (n, 1)) + rng.uniform(-0.03, 0.03, (n, 3))
    out = {
        "colour": colour,
        "type": vtype,
        **details,
        "length_scale": rng.uniform(0.95, 1.05, n),
        "height_scale": rng.uniform(0.95, 1.05, n),
        "cabin_shift": rng.uniform(-0.1, 0.1, n),
        "paint": np.clip(_PAINT_RGB[colour] * tint, 0.02, 0.98),
    }
    order = rng.permutation(n)
    return {key: value[order] for key, value in out.items()}


def vehicle_cameras(config: VehiclesConfig) -> dict[str, np.ndarray]:
    """The ``n_cameras`` fixed cameras (from ``seed`` only); arrays of length ``n_cameras``.

    ``yaw`` / ``elevation`` (radians; yaw 0 looks at the front, pi/2 at the left side),
    ``zoom`` (share of the frame a 5 m vehicle spans), ``shift`` (framing offset, fractions
    of the frame), ``weight`` (probability of the camera per image), ``horizon`` (fraction
    of the height where the ground starts), ``light`` (unit direction to the light),
    ``ambient``, ``diffuse``, ``intensity``, ``tint`` (RGB gains), the ground (``ground_rgb``,
    ``ground_angle``, ``ground_tex``: lane / grid / checker / speckle amplitudes and periods)
    and the backdrop (``sky_top``, ``sky_low``, ``band_rgb``, ``band_height``, ``band_windows``,
    ``band_bumps``).

    Args:
        config: the dataset config (``n_cameras`` and ``seed`` are used).
    """
    rng = _seeded(config, len(SPLITS), 1)
    k = config.n_cameras
    yaw = np.radians(np.arange(k) * 360.0 / k + rng.uniform(-5, 5, k))
    elevation = np.radians(rng.uniform(6, 40, k))
    light_az = rng.uniform(0, 2 * np.pi, k)
    light_el = np.radians(rng.uniform(25, 70, k))
    light = np.stack(
        [np.cos(light_el) * np.cos(light_az), np.cos(light_el) * np.sin(light_az),
         np.sin(light_el)], 1
    )  # fmt: skip
    ground_kind = rng.integers(0, 4, k)  # asphalt with lanes, tiles, grass, concrete slabs
    ground_base = np.array([[0.3, 0.3, 0.32], [0.62, 0.55, 0.5], [0.25, 0.45, 0.18],
                            [0.68, 0.68, 0.66]])  # fmt: skip
    tex = np.zeros((k, 6))  # lane, grid, checker, speckle amplitudes; lane, grid periods
    tex[:, 4] = rng.uniform(3.0, 4.5, k)
    tex[:, 5] = rng.uniform(1.5, 3.0, k)
    tex[ground_kind == 0, 0] = 1.6
    tex[ground_kind == 1, 2] = 0.18
    tex[ground_kind == 2, 3] = 0.25
    tex[ground_kind == 3, 1] = -0.35
    backdrop = rng.integers(0, 4, k)  # clear sky, overcast, buildings, trees
    sky_top = np.where(
        (backdrop == 1)[:, None], rng.uniform(0.6, 0.75, (k, 1)) * [1, 1, 1.03], [0.3, 0.5, 0.85]
    ) * rng.uniform(0.9, 1.1, (k, 3))
    band_rgb = np.where(
        (backdrop == 3)[:, None],
        [0.12, 0.32, 0.12],
        rng.uniform(0.35, 0.75, (k, 1)) * [1, 0.95, 0.9],
    ) * rng.uniform(0.85, 1.15, (k, 3))
    weight = np.linspace(0.5, 1.5, k)[rng.permutation(k)]
    return {
        "yaw": yaw,
        "elevation": elevation,
        "zoom": rng.uniform(0.55, 0.95, k),
        "shift": rng.uniform(-0.06, 0.06, (k, 2)),
        "weight": weight / weight.sum(),
        "horizon": np.clip(
            0.42 - elevation / np.radians(40) * 0.32 + rng.uniform(-0.05, 0.05, k), 0.03, 0.5
        ),  # fmt: skip
        "light": light,
        "ambient": rng.uniform(0.6, 0.72, k),
        "diffuse": rng.uniform(0.3, 0.45, k),
        "intensity": rng.uniform(0.88, 1.1, k),
        "tint": 1 + rng.uniform(-0.04, 0.04, (k, 3)),
        "ground_rgb": ground_base[ground_kind] * rng.uniform(0.85, 1.15, (k, 3)),
        "ground_angle": rng.uniform(0, np.pi, k),
        "ground_tex": tex,
        "sky_top": np.clip(sky_top, 0, 1),
        "sky_low": np.clip(sky_top * 0.6 + 0.4 * rng.uniform(0.75, 0.95, (k, 1)), 0, 1),
        "band_rgb": np.clip(band_rgb, 0, 1),
        "band_height": np.where(backdrop >= 2, rng.uniform(0.12, 0.3, k), 0.0),
        "band_windows": np.where(backdrop == 2, rng.uniform(0.25, 0.45, k), 0.0),
        "band_bumps": np.where(backdrop == 3, rng.uniform(0.03, 0.07, k), 0.0),
    }


def _split_ids(config: VehiclesConfig, split: str, start: int, count: int) -> np.ndarray:
    """Vehicle ids of images ``start .. start + count - 1`` of a split (module doc)."""
    n_ids = config.n_ids
    index = np.arange(start, start + count)
    cycles = index // n_ids
    ids = np.empty(count, dtype=np.int64)
    for cycle in np.unique(cycles):
        perm = _seeded(config, SPLITS.index(split), 1, int(cycle)).permutation(n_ids)
        rows = cycles == cycle
        ids[rows] = perm[index[rows] % n_ids]
    return ids


def _shape_table() -> dict[str, np.ndarray]:
    """The :data:`_SHAPES` as arrays indexed by type."""
    shapes = [_SHAPES[t] for t in VEHICLE_TYPES]
    cargo = [s.cargo if s.cargo is not None else (0.0, 0.0, 0.0, 0.0) for s in shapes]
    axles = [s.axles + (0.0,) * (3 - len(s.axles)) for s in shapes]
    return {
        "width": np.array([s.width for s in shapes]),
        "prism": np.array([[s.body, s.cabin, c] for s, c in zip(shapes, cargo, strict=True)]),
        "cuts": np.array([[s.body_cuts, s.cabin_cuts, (0.0,) * 4] for s in shapes]),
        "cabin_width": np.array([s.cabin_width for s in shapes]),
        "has_cargo": np.array([s.cargo is not None for s in shapes]),
        "wheel": np.array([s.wheel for s in shapes]),
        "axles": np.array(axles),
        "n_axles": np.array([len(s.axles) for s in shapes]),
        "window": np.array([s.window for s in shapes]),
        "panes": np.array([s.panes for s in shapes]),
        "glass": np.array([[g in s.glass for g in _GLASS_FACES] for s in shapes]),
    }


_SHAPE_TABLE = _shape_table()
_PICKUP = VEHICLE_TYPES.index("pickup")


def _sample_images(
    config: VehiclesConfig,
    split: str,
    chunk: int,
    count: int,
    cameras: dict[str, np.ndarray],
) -> dict[str, np.ndarray]:
    """Ids, cameras and per-image nuisances of the first ``count`` images of one chunk of a
    split (a whole chunk is always drawn, so a shorter last chunk is a prefix of a full one)."""
    rng = _seeded(config, SPLITS.index(split), 0, chunk)
    cam = rng.choice(config.n_cameras, CHUNK, p=cameras["weight"])
    out = {
        "identity": _split_ids(config, split, chunk * CHUNK, CHUNK),
        "camera": cam,
        "yaw": cameras["yaw"][cam] + np.radians(rng.uniform(-4, 4, CHUNK)),
        "elevation": cameras["elevation"][cam] + np.radians(rng.uniform(-2, 2, CHUNK)),
        "zoom": cameras["zoom"][cam] * rng.uniform(0.95, 1.05, CHUNK),
        "shift": cameras["shift"][cam] + rng.uniform(-0.03, 0.03, (CHUNK, 2)),
        "gain": cameras["intensity"][cam] * rng.uniform(0.92, 1.08, CHUNK),
        "noise_seed": rng.integers(0, 2**63 - 1, CHUNK),
    }
    return {key: value[:count] for key, value in out.items()}


def _prism_faces(
    geo: np.ndarray, side: np.ndarray, front: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Faces of ``n`` extruded profiles: ``(origin, e1, e2, normal, area_ok)``, shapes
    ``(n, 5, 3)`` (last one ``(n, 5)``), in the order cap, end, front chamfer, top, rear
    chamfer.  ``geo`` columns: x0, x1, z0, z1, half width, cut front dx, dz, rear dx, dz;
    ``side`` / ``front`` are +-1: which cap / end faces the camera.
    """
    x0, x1, z0, z1, hw, fdx, fdz, rdx, rdz = geo.T
    n = len(geo)
    zero, one = np.zeros(n), np.ones(n)
    end_x = np.where(front > 0, x1, x0)
    end_h = np.where(front > 0, z1 - fdz, z1 - rdz) - z0
    origin = np.stack(
        [
            np.stack([zero, side * hw, zero], 1),
            np.stack([end_x, -hw, z0], 1),
            np.stack([x1, -hw, z1 - fdz], 1),
            np.stack([x0 + rdx, -hw, z1], 1),
            np.stack([x0, -hw, z1 - rdz], 1),
        ],
        1,
    )
    across = np.stack([zero, 2 * hw, zero], 1)
    e1 = np.stack(
        [
            np.stack([one, zero, zero], 1),
            np.stack([zero, zero, end_h], 1),
            np.stack([-fdx, zero, fdz], 1),
            np.stack([x1 - fdx - x0 - rdx, zero, zero], 1),
            np.stack([rdx, zero, rdz], 1),
        ],
        1,
    )
    e2 = np.stack([np.stack([zero, zero, one], 1), across, across, across, across], 1)
    normal = np.stack(
        [
            np.stack([zero, side, zero], 1),
            np.stack([front, zero, zero], 1),
            np.stack([fdz, zero, fdx], 1),
            np.stack([zero, zero, one], 1),
            np.stack([-rdz, zero, rdx], 1),
        ],
        1,
    )
    normal /= np.maximum(np.linalg.norm(normal, axis=-1, keepdims=True), 1e-9)
    area_ok = np.stack(
        [hw > 0, (end_h > 1e-3) & (hw > 0), fdx * fdz > 1e-4, hw > 0, rdx * rdz > 1e-4], 1
    )
    return origin, e1, e2, normal, area_ok


def _wheel_faces(
    axle_x: np.ndarray, radius: np.ndarray, wheel_y: np.ndarray, side: np.ndarray, front: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Faces of the axles: ``(origin, e1, e2, normal)``, each ``(n, 6, 3)``; per axle the
    wheel disc on the side facing the camera (unit-disc coordinates) and the tread face
    (tyres and underbody, ``1.3 r`` high across the whole track) at the end facing it."""
    zero = np.zeros_like(radius)
    r = radius
    origin, e1, e2, normal = [], [], [], []
    for a in range(axle_x.shape[1]):
        origin += [
            np.stack([axle_x[:, a], side * wheel_y, r], 1),
            np.stack([axle_x[:, a] + front * r, -wheel_y, zero], 1),
        ]
        e1 += [np.stack([r, zero, zero], 1), np.stack([zero, zero, 1.3 * r], 1)]
        e2 += [np.stack([zero, zero, r], 1), np.stack([zero, 2 * wheel_y, zero], 1)]
        normal += [np.stack([zero, side, zero], 1), np.stack([front, zero, zero], 1)]
    return tuple(np.stack(x, 1) for x in (origin, e1, e2, normal))  # type: ignore[return-value]


def _vehicle_geometry(ids: np.ndarray, catalogue: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Metric geometry of the vehicles ``ids``: ``geo`` ``(n, 3, 9)`` per prism (body, cabin,
    cargo: x0, x1, z0, z1, half width, chamfers front dx, dz, rear dx, dz), ``enabled``
    ``(n, 3)``, wheel ``radius`` ``(n,)``, ``axle_x`` / ``axle_on`` ``(n, 3)``, ``width``."""
    vtype = catalogue["type"][ids]
    table = _SHAPE_TABLE
    ls = catalogue["length_scale"][ids][:, None]
    hs = catalogue["height_scale"][ids][:, None]
    box = table["prism"][vtype].copy()  # (n, 3, 4): x0, x1, z0, z1
    movable = vtype != VEHICLE_TYPES.index("bus")  # a bus cabin spans the whole length
    box[:, 1, :2] += (catalogue["cabin_shift"][ids] * movable)[:, None]
    box[:, :, :2] *= ls[:, :, None]
    box[:, :, 2:] *= hs[:, :, None]
    cuts = table["cuts"][vtype] * np.concatenate([ls, hs, ls, hs], 1)[:, None, :]
    width = table["width"][vtype]
    half = np.stack([width, width * table["cabin_width"][vtype], width * 0.98], 1) / 2
    return {
        "geo": np.concatenate([box, half[..., None], cuts], 2),
        "enabled": np.stack(
            [np.ones_like(movable), np.ones_like(movable), table["has_cargo"][vtype]], 1
        ),  # fmt: skip
        "radius": table["wheel"][vtype] * np.array(_WHEEL_SCALE)[catalogue["wheel"][ids]],
        "axle_x": table["axles"][vtype] * ls,
        "axle_on": np.arange(3) < table["n_axles"][vtype][:, None],
        "width": width,
    }


def _framing(
    config: VehiclesConfig,
    sample: dict[str, np.ndarray],
    vehicle: dict[str, np.ndarray],
    right: np.ndarray,
    up: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixels per metre and the pixel position ``(ox, oy)`` of the vehicle's origin: the
    camera's zoom (a 5 m vehicle spans ``zoom`` of the frame), reduced so that the vehicle's
    bounding box fits in 94 % of the frame, centred up to the camera's and image's shift."""
    h, w = config.height, config.width
    geo = vehicle["geo"]
    extent = np.stack(
        [geo[:, 0, 1] - geo[:, 0, 0], vehicle["width"] + 0.06,
         np.maximum(geo[:, :, 3].max(1), 2 * vehicle["radius"])], 1
    )  # fmt: skip
    corners = np.stack(np.meshgrid([-0.5, 0.5], [-0.5, 0.5], [0, 1], indexing="ij"), -1)
    points = corners.reshape(1, -1, 3) * extent[:, None, :]
    sx = np.einsum("npc,nc->np", points, right)
    sy = np.einsum("npc,nc->np", points, up)
    fit = 0.94 * np.minimum(w / np.ptp(sx, 1), h / np.ptp(sy, 1))
    scale = np.minimum(sample["zoom"] * min(h, w) / 5.0, fit)
    ox = w / 2 + sample["shift"][:, 0] * w - scale * (sx.max(1) + sx.min(1)) / 2
    oy = h / 2 + sample["shift"][:, 1] * h + scale * (sy.max(1) + sy.min(1)) / 2
    return scale, ox, oy


def _palette(ids: np.ndarray, catalogue: dict[str, np.ndarray]) -> np.ndarray:
    """RGB of every sub-material of every image: ``(n, 12, 3)``; stripes and contrasting
    roofs are white on dark paint and black on light paint."""
    paint = catalogue["paint"][ids]
    contrast = np.where(paint.mean(1, keepdims=True) < 0.45, 0.92, 0.06)
    palette = np.empty((len(ids), _N_SUB, 3))
    palette[:, _PAINT_M] = paint
    palette[:, _GLASS] = [0.1, 0.13, 0.17]
    palette[:, _TYRE] = [0.05, 0.05, 0.05]
    palette[:, _RIM] = np.array(_RIM_GREY)[catalogue["rim"][ids], None]
    palette[:, _HEADLIGHT] = [0.98, 0.96, 0.85]
    palette[:, _TAILLIGHT] = [0.85, 0.05, 0.05]
    palette[:, _TRIM] = [0.1, 0.1, 0.11]
    palette[:, _STRIPE] = contrast
    palette[:, _ROOF] = np.where(catalogue["roof"][ids, None] == 1, contrast, paint)
    palette[:, _RACK] = [0.2, 0.2, 0.21]
    palette[:, _BED] = [0.12, 0.11, 0.1]
    palette[:, _PLATE] = [0.92, 0.92, 0.86]
    return palette


def _scene(
    config: VehiclesConfig,
    sample: dict[str, np.ndarray],
    catalogue: dict[str, np.ndarray],
    cameras: dict[str, np.ndarray],
) -> dict[str, np.ndarray]:
    """Everything the rasteriser and the shader need for a batch of images: face and ground
    coefficients, palettes, face shading and the per-image parameters of the details."""
    ids, cam = sample["identity"], sample["camera"]
    vtype = catalogue["type"][ids]
    vehicle = _vehicle_geometry(ids, catalogue)
    geo = vehicle["geo"]

    # Orthographic camera looking along -d, screen axes right and up; the cap (side) and end
    # faces drawn are those facing the camera.
    yaw, elev = sample["yaw"], sample["elevation"]
    d = np.stack([np.cos(elev) * np.cos(yaw), np.cos(elev) * np.sin(yaw), np.sin(elev)], 1)
    right = np.stack([-np.sin(yaw), np.cos(yaw), np.zeros_like(yaw)], 1)
    up = np.stack([-np.sin(elev) * np.cos(yaw), -np.sin(elev) * np.sin(yaw), np.cos(elev)], 1)
    side = np.where(d[:, 1] >= 0, 1.0, -1.0)
    front = np.where(d[:, 0] >= 0, 1.0, -1.0)

    prisms = [_prism_faces(geo[:, p], side, front) for p in range(3)]
    wheels = _wheel_faces(
        vehicle["axle_x"], vehicle["radius"], vehicle["width"] / 2 + 0.03, side, front
    )
    origin, e1, e2, normal = (
        np.concatenate([*(p[k] for p in prisms), wheels[k]], 1) for k in range(4)
    )
    valid = np.concatenate(
        [*(p[4] & vehicle["enabled"][:, i, None] for i, p in enumerate(prisms)),
         np.repeat(vehicle["axle_on"], 2, axis=1)], 1
    )  # fmt: skip
    valid &= np.einsum("nfc,nc->nf", normal, d) > 1e-3  # back faces are never drawn

    scale, ox, oy = _framing(config, sample, vehicle, right, up)
    coeff = _face_coefficients(origin, e1, e2, right, up, d, scale, ox, oy)
    coeff[~valid] = 0.0
    coeff[~valid, 0, 2] = -100.0  # alpha = -100: outside every face

    light = cameras["light"][cam]
    lambert = np.maximum(np.einsum("nfc,nc->nf", normal, light), 0)
    shade = cameras["ambient"][cam][:, None] + cameras["diffuse"][cam][:, None] * lambert

    # Details: stripe band (metres), side-window band and pane count, flags.
    body, cabin = geo[:, 0], geo[:, 1]
    stripe = np.array(_STRIPE_BAND)[catalogue["stripe"][ids]]
    panes = _SHAPE_TABLE["panes"][vtype] + catalogue["panes"][ids]
    win_x1 = cabin[:, 1] - np.maximum(0.1, cabin[:, 5] * 0.15)
    win_x0 = np.maximum(
        cabin[:, 0] + 0.12 + 0.8 * cabin[:, 7], win_x1 - _SHAPE_TABLE["window"][vtype] * panes
    )
    cabin_h = cabin[:, 3] - cabin[:, 2]
    sill = np.where(np.isin(vtype, [VEHICLE_TYPES.index(t) for t in ("bus", "rv")]), 0.3, 0.08)
    length, half_width = body[:, 1] - body[:, 0], vehicle["width"] / 2
    return {
        "coeff": coeff.astype(np.float32),
        "ground": _ground_coefficients(
            right, up, scale, ox, oy, cameras["ground_angle"][cam]
        ).astype(np.float32),
        "palette": _palette(ids, catalogue),
        "shade": shade,
        "front": front,
        "geo": geo,
        "body_z": body[:, 2:4],
        "cabin": cabin,
        "axle_x": vehicle["axle_x"],
        "axle_on": vehicle["axle_on"],
        "radius": vehicle["radius"],
        "stripe": body[:, 2:3] + stripe * (body[:, 3:4] - body[:, 2:3]),
        "window": np.stack(
            [win_x0, win_x1, cabin[:, 2] + sill * cabin_h, cabin[:, 3] - 0.1 * cabin_h, panes], 1
        ),
        "glass": _SHAPE_TABLE["glass"][vtype],
        "rack": catalogue["rack"][ids] == 1,
        "bed": vtype == _PICKUP,
        "shadow": np.stack([length / 2 + 0.15, half_width + 0.15], 1),
        "shadow_offset": -light[:, :2] / np.maximum(light[:, 2:], 0.3) * 0.35,
    }


def _face_coefficients(
    origin: np.ndarray,
    e1: np.ndarray,
    e2: np.ndarray,
    right: np.ndarray,
    up: np.ndarray,
    d: np.ndarray,
    scale: np.ndarray,
    ox: np.ndarray,
    oy: np.ndarray,
) -> np.ndarray:
    """Affine maps from pixel ``(col, row, 1)`` to face coordinates ``(alpha, beta, depth)``
    of every face: ``(n, F, 3, 3)``.  A face is ``origin + alpha e1 + beta e2``; screen
    ``sx = (col - ox) / scale = r . p``, ``sy = (oy - row) / scale = u . p``; depth is
    ``d . p`` (larger = nearer the camera)."""

    def dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Per-face dot products of face vectors ``(n, F, 3)`` with view vectors ``(n, 3)``."""
        return np.einsum("nfc,nc->nf", a, b)

    m00, m01, m10, m11 = dot(e1, right), dot(e2, right), dot(e1, up), dot(e2, up)
    det = m00 * m11 - m01 * m10
    det = np.where(np.abs(det) < 1e-9, 1e-9, det)
    i00, i01, i10, i11 = m11 / det, -m01 / det, -m10 / det, m00 / det
    s = scale[:, None]
    c0 = -ox[:, None] / s - dot(origin, right)  # sx - r.o = col / s + c0
    c1 = oy[:, None] / s - dot(origin, up)  # sy - u.o = -row / s + c1
    alpha = np.stack([i00 / s, -i01 / s, i00 * c0 + i01 * c1], -1)
    beta = np.stack([i10 / s, -i11 / s, i10 * c0 + i11 * c1], -1)
    de1, de2 = dot(e1, d)[..., None], dot(e2, d)[..., None]
    depth = alpha * de1 + beta * de2
    depth[..., 2] += dot(origin, d)
    return np.stack([alpha, beta, depth], 2)


def _ground_coefficients(
    right: np.ndarray,
    up: np.ndarray,
    scale: np.ndarray,
    ox: np.ndarray,
    oy: np.ndarray,
    angle: np.ndarray,
) -> np.ndarray:
    """Affine maps from pixel ``(col, row, 1)`` to ground-plane coordinates: ``(n, 4, 3)``
    giving ``x, y`` (vehicle frame) and ``u, v`` (the ground pattern's frame, rotated by
    ``angle``)."""
    m = np.stack([right[:, :2], up[:, :2]], 1)  # (n, 2, 2): screen = m @ (x, y)
    inv = np.linalg.inv(m)
    s = scale
    # (sx, sy) = (col / s - ox / s, -row / s + oy / s)
    screen = np.stack(
        [np.stack([1 / s, 0 * s, -ox / s], 1), np.stack([0 * s, -1 / s, oy / s], 1)], 1
    )  # (n, 2, 3)
    xy = inv @ screen
    c, si = np.cos(angle)[:, None], np.sin(angle)[:, None]
    uv = np.stack([c * xy[:, 0] + si * xy[:, 1], -si * xy[:, 0] + c * xy[:, 1]], 1)
    return np.concatenate([xy, uv], 1)


def _rasterise(
    scene: dict[str, np.ndarray], grid: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Z-buffer over all faces: face id per pixel (-1 = background) and the face coordinates
    ``alpha``, ``beta`` of the visible face, each ``(n, P)``."""
    coeff = scene["coeff"]
    n = coeff.shape[0]
    p = grid.shape[1]
    zbuf = np.full((n, p), -np.inf, dtype=np.float32)
    fid = np.full((n, p), -1, dtype=np.int8)
    alpha = np.zeros((n, p), dtype=np.float32)
    beta = np.zeros((n, p), dtype=np.float32)
    geo = scene["geo"].astype(np.float32)
    for f in range(_N_FACES):
        a, b, depth = (coeff[:, f] @ grid).transpose(1, 0, 2)
        if f < _N_PRISM_FACES and f % 5 == _CAP:
            x0, x1, z0, z1, _, fdx, fdz, rdx, rdz = (g[:, None] for g in geo[:, f // 5].T)
            inside = (a >= x0) & (a <= x1) & (b >= z0) & (b <= z1)
            inside &= fdz * a + fdx * b <= fdx * fdz + fdz * (x1 - fdx) + fdx * (z1 - fdz)
            inside &= -rdz * a + rdx * b <= rdx * rdz - rdz * (x0 + rdx) + rdx * (z1 - rdz)
        elif f >= _N_PRISM_FACES and (f - _N_PRISM_FACES) % 2 == 0:  # wheel disc
            inside = a * a + b * b <= 1
        else:
            inside = (a >= 0) & (a <= 1) & (b >= 0) & (b <= 1)
        inside &= depth > zbuf
        np.copyto(zbuf, depth, where=inside)
        np.copyto(fid, f, where=inside)
        np.copyto(alpha, a, where=inside)
        np.copyto(beta, b, where=inside)
    return fid, alpha, beta


def _materials(
    scene: dict[str, np.ndarray], fid: np.ndarray, a: np.ndarray, b: np.ndarray
) -> np.ndarray:
    """Sub-material (palette entry) of every pixel from its face ``fid`` and face
    coordinates ``a``, ``b`` (metres on the sides, ``[0, 1]`` on the other faces)."""

    def col(key: str, j: int | None = None) -> np.ndarray:
        """A per-image value as an ``(n, 1)`` column."""
        value = scene[key] if j is None else scene[key][:, j]
        return value[:, None].astype(np.float32)

    sub = np.zeros(fid.shape, dtype=np.int8)

    def put(mask: np.ndarray, value: int) -> None:
        """Set the sub-material of the masked pixels (later calls win)."""
        np.copyto(sub, value, where=mask)

    inner = (a > 0.08) & (a < 0.92) & (b > 0.05) & (b < 0.95)  # a face minus its frame

    # Body side: wheel arches, stripe, door seams.
    body = fid == 0
    arch_r = col("radius") * 1.18
    for k in range(3):
        arch = (a - col("axle_x", k)) ** 2 + (b - col("radius")) ** 2 <= arch_r * arch_r
        put(body & arch & (col("axle_on", k) > 0), _TRIM)
    put(body & (b >= col("stripe", 0)) & (b <= col("stripe", 1)), _STRIPE)
    body_z0, body_z1 = col("body_z", 0), col("body_z", 1)
    for x in (col("cabin", 1) - 0.05, (col("cabin", 0) + col("cabin", 1)) / 2):
        seam = (np.abs(a - x) < 0.035) & (b > body_z0 + 0.12) & (b < body_z1 - 0.04)
        put(body & seam, _TRIM)

    # Body end: lights, grille / number plate, bumper.
    end = fid == 1
    front = col("front") > 0
    lamp = (a > 0.55) & (a < 0.85) & (((b > 0.06) & (b < 0.24)) | ((b > 0.76) & (b < 0.94)))
    put(end & lamp & front, _HEADLIGHT)
    put(end & lamp & ~front, _TAILLIGHT)
    centre = (a > 0.22) & (a < 0.5) & (b > 0.36) & (b < 0.64)
    put(end & centre & front, _TRIM)
    put(end & centre & ~front, _PLATE)
    put(end & (a < 0.15), _TRIM)

    # Glazed faces (per type) inside a painted frame; the cabin end (face 6) is glazed at the
    # front or the rear depending on the type and on which end faces the camera.
    glass = scene["glass"]
    cabin_end = np.where(scene["front"] > 0, glass[:, 1], glass[:, 2])
    for face, is_glass in ((2, glass[:, 0]), (6, cabin_end), (7, glass[:, 3]), (9, glass[:, 4])):
        put((fid == face) & is_glass[:, None] & inner, _GLASS)

    # Cabin side: the window band (inset from the chamfers), split into panes by pillars.
    x0, x1, _, z1, _, fdx, fdz, rdx, rdz = (col("cabin", j) for j in range(9))
    wx0, wx1, wz0, wz1, panes = (col("window", j) for j in range(5))
    inset = 0.1
    win = (fid == 5) & (a >= wx0) & (a <= wx1) & (b >= wz0) & (b <= wz1)
    fnorm, rnorm = np.sqrt(fdx * fdx + fdz * fdz), np.sqrt(rdx * rdx + rdz * rdz)
    win &= fdz * a + fdx * b <= fdx * fdz + fdz * (x1 - fdx) + fdx * (z1 - fdz) - inset * fnorm
    win &= -rdz * a + rdx * b <= rdx * rdz - rdz * (x0 + rdx) + rdx * (z1 - rdz) - inset * rnorm
    t = (a - wx0) / np.maximum(wx1 - wx0, 1e-3) * panes
    pillar = np.abs(t - np.round(t)) * (wx1 - wx0) / np.maximum(panes, 1) < 0.07
    put(win & ~pillar, _GLASS)

    # Roof: contrasting colour, roof rack (two rails and two bars); pickup bed.
    roof = fid == 8
    put(roof, _ROOF)
    rails = ((np.abs(b - 0.15) < 0.05) | (np.abs(b - 0.85) < 0.05)) & (a > 0.1) & (a < 0.9)
    bars = ((np.abs(a - 0.3) < 0.04) | (np.abs(a - 0.7) < 0.04)) & (b > 0.1) & (b < 0.9)
    put(roof & (rails | bars) & (col("rack") > 0), _RACK)
    put((fid == 13) & (col("bed") > 0) & (a > 0.04) & (a < 0.96) & (b > 0.05) & (b < 0.95), _BED)

    # Wheels: tyre, rim, hub.
    wheel = fid >= _N_PRISM_FACES
    disc = wheel & ((fid - _N_PRISM_FACES) % 2 == 0)
    rho2 = a * a + b * b
    put(wheel, _TYRE)
    put(disc & (rho2 < 0.36), _RIM)
    put(disc & (rho2 < 0.04), _TRIM)
    return sub


def _background(
    scene: dict[str, np.ndarray],
    sample: dict[str, np.ndarray],
    cameras: dict[str, np.ndarray],
    grid: np.ndarray,
    height: int,
) -> np.ndarray:
    """Ground (pattern, vehicle shadow) below the horizon, backdrop above: ``(3, n, P)``."""
    cam = sample["camera"]
    gx, gy, u, v = (scene["ground"] @ grid).transpose(1, 0, 2)
    tex = cameras["ground_tex"][cam].astype(np.float32)
    lane_p, grid_p = tex[:, 4:5], tex[:, 5:6]
    lane = (np.abs(v / lane_p - np.round(v / lane_p)) < 0.035) & (np.sin(u * 2.0) > 0)
    seam = (np.abs(u / grid_p - np.round(u / grid_p)) < 0.025) | (
        np.abs(v / grid_p - np.round(v / grid_p)) < 0.025
    )
    checker = np.sign(np.sin(np.pi * u / grid_p * 2) * np.sin(np.pi * v / grid_p * 2))
    speck = np.sin(7.3 * u + 2.1 * v) * np.sin(5.1 * v - 3.7 * u + 1.3)
    pattern = 1 + tex[:, 0:1] * lane + tex[:, 1:2] * seam + tex[:, 2:3] * checker
    pattern += tex[:, 3:4] * speck
    sx, sy = scene["shadow_offset"][:, 0:1], scene["shadow_offset"][:, 1:2]
    shadow = (np.abs(gx - sx) <= scene["shadow"][:, 0:1]) & (
        np.abs(gy - sy) <= scene["shadow"][:, 1:2]
    )
    pattern = pattern * np.where(shadow, 0.5, 1.0)
    ground_rgb = cameras["ground_rgb"][cam].T[:, :, None]
    ground = ground_rgb * pattern[None]

    row, colm = grid[1][None], grid[0][None]
    horizon = (cameras["horizon"][cam] + sample["shift"][:, 1])[:, None] * height
    frac = np.clip(row / np.maximum(horizon, 1), 0, 1)
    sky = (
        cameras["sky_top"][cam].T[:, :, None] * (1 - frac)
        + cameras["sky_low"][cam].T[:, :, None] * frac
    )
    band_h = cameras["band_height"][cam][:, None] * height
    bumps = cameras["band_bumps"][cam][:, None] * height * np.sin(colm * 0.7 + cam[:, None])
    in_band = row >= horizon - band_h + bumps
    windows = (np.sin(colm * 1.3 + cam[:, None]) > 0.3) & (np.sin(row * 1.6) > 0.2)
    band = cameras["band_rgb"][cam].T[:, :, None] * (
        1 - cameras["band_windows"][cam][:, None] * windows
    )
    backdrop = np.where(in_band & (band_h > 0), band, sky)
    return np.where((row >= horizon)[None], ground, backdrop)


def _render(
    config: VehiclesConfig,
    sample: dict[str, np.ndarray],
    catalogue: dict[str, np.ndarray],
    cameras: dict[str, np.ndarray],
    extras: bool,
) -> dict[str, np.ndarray]:
    """Render a batch of images: ``image`` uint8 ``(n, 3, H, W)`` (+ ``surface`` / ``face``)."""
    h, w = config.height, config.width
    n = len(sample["identity"])
    scene = _scene(config, sample, catalogue, cameras)
    jj, ii = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    grid = np.stack([jj.ravel() + 0.5, ii.ravel() + 0.5, np.ones(h * w, np.float32)])
    fid, a, b = _rasterise(scene, grid)
    sub = _materials(scene, fid, a, b)
    vehicle = fid >= 0

    flat = np.arange(n)[:, None] * _N_SUB + sub
    palette = np.ascontiguousarray(scene["palette"].reshape(n * _N_SUB, 3).T.astype(np.float32))
    rgb = np.take(palette, flat, axis=1)
    face_shade = scene["shade"].astype(np.float32)
    shade = np.take_along_axis(face_shade, np.maximum(fid, 0).astype(np.int64), 1)
    lit = np.isin(sub, [_HEADLIGHT, _TAILLIGHT])
    shade = np.where(lit, 1.0, shade)
    row = grid[1][None]
    reflection = np.where(sub == _GLASS, 0.3 * (1 - row / h), 0.0)
    cam = sample["camera"]
    veh = rgb * shade[None] + reflection[None] * cameras["sky_top"][cam].T[:, :, None]
    image = np.where(vehicle[None], veh, _background(scene, sample, cameras, grid, h))
    # Light: camera gain and tint, and a gradient across the frame along the light azimuth.
    light = cameras["light"][cam]
    gradient = 1 + 0.12 * (
        light[:, 0:1] * (grid[0][None] / w - 0.5) - light[:, 1:2] * (row / h - 0.5)
    )
    gain = (sample["gain"][:, None] * cameras["tint"][cam]).T[:, :, None]
    image = image * gain * gradient[None]
    noise = np.stack(
        [
            np.random.default_rng(s).standard_normal((3, h * w), dtype=np.float32)
            for s in sample["noise_seed"]
        ],
        1,
    )
    image = image + config.noise_std * noise
    out = {
        "image": np.rint(np.clip(image, 0, 1) * 255)
        .astype(np.uint8)
        .reshape(3, n, h, w)
        .transpose(1, 0, 2, 3)
    }
    if extras:
        out["surface"] = np.where(vehicle, sub, -1).reshape(n, h, w).astype(np.int8)
        out["face"] = fid.reshape(n, h, w)
    return out


def _labels(
    catalogue: dict[str, np.ndarray], ids: np.ndarray, camera: np.ndarray
) -> dict[str, np.ndarray]:
    """The four label arrays of images showing vehicles ``ids`` seen by cameras ``camera``."""
    return {
        "colour": catalogue["colour"][ids].astype(np.int8),
        "type": catalogue["type"][ids].astype(np.int8),
        "identity": ids.astype(np.int16),
        "camera": camera.astype(np.int8),
    }


def vehicles_labels(config: VehiclesConfig, split: str) -> dict[str, np.ndarray]:
    """The labels of one split without rendering it (fast even at the paper profile), equal
    to those :func:`generate_vehicles` returns: ``colour``, ``type``, ``camera`` int8 and
    ``identity`` int16, each ``(N,)``.

    Args:
        config: the dataset config.
        split: ``train``, ``val`` or ``test``.
    """
    check_choice("split", split, SPLITS)
    total = getattr(config, f"n_{split}")
    cameras = vehicle_cameras(config)
    samples = [
        _sample_images(config, split, chunk, min(CHUNK, total - start), cameras)
        for chunk, start in enumerate(range(0, total, CHUNK))
    ]
    ids = np.concatenate([s["identity"] for s in samples])
    camera = np.concatenate([s["camera"] for s in samples])
    return _labels(vehicle_catalogue(config), ids, camera)


def generate_vehicles(
    config: VehiclesConfig, split: str, extras: bool = False
) -> dict[str, np.ndarray]:
    """Generate one split (no cache).

    Returns ``image`` uint8 ``(N, 3, H, W)``, ``colour``, ``type`` and ``camera`` int8
    ``(N,)``, ``identity`` int16 ``(N,)``; with ``extras`` also ``surface`` int8 ``(N, H, W)``
    (sub-material per pixel: 0 paint, 1 glass, 2 tyre, 3 rim, 4 headlight, 5 tail-light,
    6 trim, 7 stripe, 8 roof, 9 roof rack, 10 pickup bed, 11 number plate; -1 background)
    and ``face`` int8 ``(N, H, W)`` (face index, -1 background).

    Args:
        config: the dataset config (image size, split sizes, vehicles, cameras, seed).
        split: ``train``, ``val`` or ``test``.
        extras: also return the per-pixel surface maps used by the tests.
    """
    check_choice("split", split, SPLITS)
    total = getattr(config, f"n_{split}")
    catalogue = vehicle_catalogue(config)
    cameras = vehicle_cameras(config)

    def prepare(chunk: int, count: int) -> RowRenderer:
        sample = _sample_images(config, split, chunk, count, cameras)
        labels = _labels(catalogue, sample["identity"], sample["camera"])

        def render(rows: slice) -> dict[str, np.ndarray]:
            part = {k: v[rows] for k, v in sample.items()}
            return {**_render(config, part, catalogue, cameras, extras),
                    **{k: v[rows] for k, v in labels.items()}}  # fmt: skip

        return render

    per_render = rows_per_render(CHUNK, _PIXEL_BUDGET, config.height, config.width)
    return render_in_chunks(total, CHUNK, per_render, prepare)


@DATASETS.register("vehicles")
def build_vehicles(split: str, profile: str = "cpu", **overrides: object) -> TensorDataset:
    """The ``vehicles`` dataset: one split, generated on first use and cached on disk.

    Args:
        split: ``train``, ``val`` or ``test``.
        profile: ``smoke``, ``cpu`` or ``paper`` (selects the :data:`VEHICLES_PRESETS` entry).
        **overrides: :class:`VehiclesConfig` fields, e.g. ``tasks=("colour", "type")``.
    """
    return build_generated(
        "vehicles",
        split,
        profile,
        overrides,
        config_class=VehiclesConfig,
        presets=VEHICLES_PRESETS,
        version=VEHICLES_VERSION,
        generate=generate_vehicles,
        task_specs=lambda config: vehicles_task_specs(config.tasks, config.n_ids, config.n_cameras),
    )


def vehicles_images_per_second(n: int = 400, height: int = 64, width: int = 64) -> float:
    """Generation throughput in images per second of CPU time (no cache).

    CPU time of the whole process is used, so other processes do not slow the measurement
    down (set ``OMP_NUM_THREADS=1`` so that no threaded library adds time).

    Args:
        n: number of images to generate (and vehicles: ``n_ids = min(n, 300)``).
        height: image height in pixels.
        width: image width in pixels.
    """
    config = VehiclesConfig(height=height, width=width, n_train=n, n_ids=min(n, 300))
    start = time.process_time()
    generate_vehicles(config, "train")
    return n / (time.process_time() - start)
