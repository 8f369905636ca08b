"""Tiny on-disk fixtures of the real datasets in their released layouts, shared by
``test_real_datasets.py`` (the contract every real-data loader keeps) and the per-format tests
``test_nyuv2.py``, ``test_cityscapes.py``, ``test_celebamask.py`` and ``test_vehiclex.py``.

* NYU-v2, MTAN layout: 3 train and 2 val images of 16x24, float64 like the release.
* Cityscapes, MTAN layout: 3 train and 2 val images of 16x32 with the 2-, 7- and 19-class
  labels and disparity.
* CelebAMask-HQ: 10 JPEGs of 32x32, part masks of 16x16 in mask folder 0, the attribute file
  with all 40 names and double spaces, and the mapping file.
* Vehicle-X: 3 train, 2 val and 2 test JPEGs of 40x40 with one ``finegrained_label.xml``.
* Omniglot, torchvision layout: 4 alphabets (one with too few characters) of 1-bit 12x12 PNGs
  by 5 drawers.
* Visual Decathlon, released layout: 3 domains (grey PNGs, colour JPEGs) of 2-3 categories with
  offset category ids, 1-3 images per class and split, COCO-style JSON as released.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
from PIL import Image

from mtlrepro.data.cityscapes import CITYSCAPES_LABEL_SETS
from mtlrepro.data.nyuv2 import NYUV2_CLASSES

# ----------------------------------------------------------------------------------- NYU-v2

NYUV2_HEIGHT, NYUV2_WIDTH = 16, 24
NYUV2_FOLDER_COUNTS = {"train": 3, "val": 2}
"""Images per folder of the fixture (``val`` and ``test`` both read ``val/``)."""
NyuArrays = dict[str, dict[str, list[np.ndarray]]]  # folder -> field -> per-image arrays


def nyuv2_arrays(seed: int = 0) -> NyuArrays:
    """Random arrays in the release's conventions, with ignored / invalid pixels at known
    places: label row 0 is -1, depth row 1 is 0, normal row 3 is all-zero."""
    h, w = NYUV2_HEIGHT, NYUV2_WIDTH
    rng = np.random.default_rng(seed)
    out: NyuArrays = {}
    for folder, n in NYUV2_FOLDER_COUNTS.items():
        fields: dict[str, list[np.ndarray]] = {"image": [], "label": [], "depth": [], "normal": []}
        for _ in range(n):
            label = rng.integers(0, len(NYUV2_CLASSES), (h, w)).astype(np.float64)
            label[0] = -1.0
            depth = rng.uniform(0.5, 10.0, (h, w, 1))
            depth[1] = 0.0
            normal = rng.normal(size=(h, w, 3))
            normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
            normal[3] = 0.0
            fields["image"].append(rng.random((h, w, 3)))
            fields["label"].append(label)
            fields["depth"].append(depth)
            fields["normal"].append(normal)
        out[folder] = fields
    return out


def write_nyuv2(root: Path, arrays: NyuArrays | None = None) -> Path:
    """Write ``arrays`` (default: :func:`nyuv2_arrays` with seed 0) as
    ``root/{folder}/{field}/{i}.npy``; return ``root``."""
    for folder, fields in (nyuv2_arrays() if arrays is None else arrays).items():
        for field, values in fields.items():
            (root / folder / field).mkdir(parents=True)
            for i, value in enumerate(values):
                np.save(root / folder / field / f"{i}.npy", value)
    return root


# ------------------------------------------------------------------------------- Cityscapes

CITYSCAPES_HEIGHT, CITYSCAPES_WIDTH = 16, 32
CITYSCAPES_FOLDER_COUNTS = {"train": 3, "val": 2}
"""Images per folder of the fixture (``val`` and ``test`` both read ``val/``)."""
CITYSCAPES_DEPTH_RANGE = (0.01, 0.49)
"""Range of the fixture's valid disparities (the release's is about 0 .. 0.49)."""


def cityscapes_arrays(seed: int = 0) -> NyuArrays:
    """Random arrays in the release's conventions (float32 images and disparity, float labels),
    with ignored / invalid pixels at known places: row 0 of every label set is -1, row 1 of
    the disparity is 0, and so is the pixel (5, 3)."""
    h, w = CITYSCAPES_HEIGHT, CITYSCAPES_WIDTH
    rng = np.random.default_rng(seed)
    out: NyuArrays = {}
    for folder, n in CITYSCAPES_FOLDER_COUNTS.items():
        fields: dict[str, list[np.ndarray]] = {"image": [], "depth": []}
        fields.update({f"label_{c}": [] for c in CITYSCAPES_LABEL_SETS})
        for _ in range(n):
            fields["image"].append(rng.random((h, w, 3)).astype(np.float32))
            depth = rng.uniform(*CITYSCAPES_DEPTH_RANGE, (h, w, 1)).astype(np.float32)
            depth[1] = 0.0
            depth[5, 3] = 0.0
            fields["depth"].append(depth)
            for classes in CITYSCAPES_LABEL_SETS:
                label = rng.integers(0, classes, (h, w)).astype(np.float32)
                label[0] = -1.0
                fields[f"label_{classes}"].append(label)
        out[folder] = fields
    return out


def write_cityscapes(root: Path, arrays: NyuArrays | None = None) -> Path:
    """Write ``arrays`` (default: :func:`cityscapes_arrays` with seed 0) as
    ``root/{folder}/{field}/{i}.npy``; return ``root``."""
    return write_nyuv2(root, cityscapes_arrays() if arrays is None else arrays)


# ---------------------------------------------------------------------------- CelebAMask-HQ

CELEBAMASK_IMAGES = 10
CELEBAMASK_IMAGE_SIZE, CELEBAMASK_MASK_SIZE = 32, 16
# fmt: off
ATTRIBUTES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs",
    "Big_Lips", "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair",
    "Bushy_Eyebrows", "Chubby", "Double_Chin", "Eyeglasses", "Goatee", "Gray_Hair",
    "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open", "Mustache", "Narrow_Eyes",
    "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline", "Rosy_Cheeks",
    "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat",
    "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young",
)
# fmt: on
# Part rectangles (rows, cols) of every fixture image, in the release's painting order; ``hat``
# only on even images.  They overlap on purpose: hair over skin, hat over hair, neck over skin,
# cloth over neck.
RECTS: dict[str, tuple[slice, slice]] = {
    "skin": (slice(2, 14), slice(2, 14)),
    "nose": (slice(6, 9), slice(7, 9)),
    "hair": (slice(0, 6), slice(0, 16)),
    "hat": (slice(0, 3), slice(0, 8)),
    "neck": (slice(12, 16), slice(5, 11)),
    "cloth": (slice(14, 16), slice(0, 16)),
}


def face_colour(k: int) -> tuple[int, int, int]:
    """The solid RGB colour of fixture face image ``k`` (distinct per image)."""
    return (20 * k + 10, 200 - 15 * k, 100 + 50 * (k % 3))


def male(k: int) -> int:
    """Fixture ``Male`` of image ``k`` as written (-1 / 1)."""
    return 1 if k % 2 == 0 else -1


def smiling(k: int) -> int:
    """Fixture ``Smiling`` of image ``k`` as written (-1 / 1)."""
    return 1 if k % 3 == 0 else -1


def parts_of(k: int) -> list[str]:
    """The parts present in fixture image ``k``, in painting order."""
    return [part for part in RECTS if part != "hat" or k % 2 == 0]


def expected_mask(k: int) -> np.ndarray:
    """The documented 3-class mask of image ``k`` at 16x16, painted from the rectangles with
    the classes written out here (skin, nose -> skin; hair -> hair; hat, neck, cloth ->
    background), later parts overwriting earlier ones."""
    classes = {"skin": 1, "nose": 1, "hair": 2, "hat": 0, "neck": 0, "cloth": 0}
    label = np.zeros((CELEBAMASK_MASK_SIZE, CELEBAMASK_MASK_SIZE), dtype=np.int64)
    for part in parts_of(k):
        label[RECTS[part]] = classes[part]
    return label


def attribute_text(count: int, names: tuple[str, ...] = ATTRIBUTES) -> str:
    """The attribute file of the fixture: values right-aligned in 2 characters, so that a ``1``
    after another value is preceded by two spaces, as in the release."""
    rng = np.random.default_rng(0)
    lines = [str(count), " ".join(names) + " "]
    for k in range(CELEBAMASK_IMAGES):
        values = rng.choice([-1, 1], size=len(names))
        values[names.index("Male")] = male(k)
        values[names.index("Smiling")] = smiling(k)
        lines.append(f"{k}.jpg " + " ".join(f"{v:2d}" for v in values))
    return "\n".join(lines) + "\n"


def write_celebamask(base: Path) -> Path:
    """The CelebAMask-HQ fixture in the released layout under ``base`` (returned)."""
    size, mask_size = CELEBAMASK_IMAGE_SIZE, CELEBAMASK_MASK_SIZE
    (base / "CelebA-HQ-img").mkdir(parents=True)
    masks = base / "CelebAMask-HQ-mask-anno" / "0"
    masks.mkdir(parents=True)
    for k in range(CELEBAMASK_IMAGES):
        Image.new("RGB", (size, size), face_colour(k)).save(
            base / "CelebA-HQ-img" / f"{k}.jpg", quality=95
        )
        for part in parts_of(k):
            pixels = np.zeros((mask_size, mask_size), dtype=np.uint8)
            pixels[RECTS[part]] = 255
            image = Image.fromarray(pixels)
            if part == "hair":  # the rule is any non-zero colour channel: test an RGB mask
                image = Image.merge(
                    "RGB", (Image.new("L", image.size), Image.new("L", image.size), image)
                )
            image.save(masks / f"{k:05d}_{part}.png")
    (base / "CelebAMask-HQ-attribute-anno.txt").write_text(attribute_text(CELEBAMASK_IMAGES))
    mapping = ["idx orig_idx orig_file"]
    mapping += [f"{k} {1000 + k} {1000 + k:06d}.jpg" for k in range(CELEBAMASK_IMAGES)]
    (base / "CelebA-HQ-to-CelebA-mapping.txt").write_text("\n".join(mapping) + "\n")
    return base


# -------------------------------------------------------------------------------- Vehicle-X

# split -> (image name, colorID, typeID, solid RGB colour of the image)
VEHICLEX_ITEMS: dict[str, list[tuple[str, int, int, tuple[int, int, int]]]] = {
    "train": [
        ("0001_c001_1.jpg", 4, 0, (200, 30, 30)),
        ("0002_c003_7.jpg", 11, 3, (240, 140, 180)),
        ("10005_c002_12.jpg", 6, 10, (235, 235, 235)),
    ],
    "val": [("0002_c001_3.jpg", 11, 3, (30, 60, 200)), ("10005_c003_2.jpg", 6, 10, (20, 160, 40))],
    "test": [("0001_c002_5.jpg", 4, 0, (90, 90, 90)), ("0002_c002_9.jpg", 11, 3, (10, 10, 10))],
}
VEHICLEX_IMAGE_SIZE = 40


def item_xml(name: str, colour: int, vtype: int, extra: str = "") -> str:
    """One ``<Item>`` as in Vehicle-X (vehicle and camera ids repeated from the name)."""
    vid, cam = name.split("_")[:2]
    return (
        f'<Item imageName="{name}" vehicleID="{vid}" cameraID="{cam}" colorID="{colour}" '
        f'typeID="{vtype}" orientation="12.5" lightInt="0.8" camHei="9.1" {extra}/>'
    )


def write_xml(path: Path, items: list[str], encoding: str = "utf-8") -> Path:
    """A label file in the released structure with the given items."""
    text = (
        f'<?xml version="1.0" encoding="{encoding}"?>\n<TrainingImages Version="1.0">\n'
        f'<Items number="{len(items)}">\n' + "\n".join(items) + "\n</Items>\n</TrainingImages>\n"
    )
    path.write_bytes(text.encode(encoding))
    return path


def write_vehiclex(base: Path) -> Path:
    """The Vehicle-X fixture layout under ``base`` (returned); the XML is declared ``gb2312``
    (as the AI City Challenge files) and holds a Chinese attribute."""
    items = []
    for split, rows in VEHICLEX_ITEMS.items():
        (base / split).mkdir(parents=True)
        for name, colour, vtype, rgb in rows:
            size = (VEHICLEX_IMAGE_SIZE, VEHICLEX_IMAGE_SIZE)
            Image.new("RGB", size, rgb).save(base / split / name, quality=95)
            items.append(item_xml(name, colour, vtype, 'note="车辆"'))
    write_xml(base / "finegrained_label.xml", items, "gb2312")
    return base


# -------------------------------------------------------------------------------- Omniglot

# folder -> alphabet -> number of characters; with n_characters=3 Braille is too short, so the
# chosen alphabets (name order, both folders) are Angelic, Greek and Latin.
OMNIGLOT_ALPHABETS: dict[str, dict[str, int]] = {
    "images_background": {"Greek": 3, "Braille": 2, "Latin": 3},
    "images_evaluation": {"Angelic": 4},
}
OMNIGLOT_CHOSEN = ("Angelic", "Greek", "Latin")
OMNIGLOT_CHARACTERS = 3
OMNIGLOT_DRAWERS = 5
OMNIGLOT_SIZE = 12


def omniglot_pixels(code: int) -> np.ndarray:
    """A 12x12 bool image (True = white paper) with the bits of ``code`` as black squares."""
    pixels = np.ones((OMNIGLOT_SIZE, OMNIGLOT_SIZE), dtype=bool)
    for bit in range(16):
        if code >> bit & 1:
            row, col = divmod(bit, 4)
            pixels[3 * row : 3 * row + 2, 3 * col : 3 * col + 2] = False
    return pixels


def write_omniglot(base: Path) -> Path:
    """The Omniglot fixture under ``base`` (returned): ``omniglot-py/<folder>/<Alphabet>/
    characterNN/IIII_DD.png``, 1-bit PNGs as released, every image distinct."""
    number = 0
    for folder, alphabets in OMNIGLOT_ALPHABETS.items():
        for a, (alphabet, count) in enumerate(alphabets.items()):
            for c in range(1, count + 1):
                number += 1
                character = base / "omniglot-py" / folder / alphabet / f"character{c:02d}"
                character.mkdir(parents=True)
                for drawer in range(1, OMNIGLOT_DRAWERS + 1):
                    code = 1 + number * 8 + drawer + 1000 * a
                    Image.fromarray(omniglot_pixels(code)).convert("1").save(
                        character / f"{number:04d}_{drawer:02d}.png"
                    )
    return base


# ------------------------------------------------------------------------- Visual Decathlon


@dataclasses.dataclass(frozen=True)
class DecathlonDomain:
    """One domain of the Visual Decathlon fixture.

    Attributes:
        offset: the category-id offset (``offset * 100000 + class + 1``).
        classes: categories.
        per_class: images per class in the official ``train``, ``val`` and ``test`` splits.
        mode: Pillow mode of the files (``L`` = grey, tiled to RGB by the loader).
        size: ``(width, height)`` of the files.
        suffix: file suffix (``.png`` is lossless, ``.jpg`` as most of the release).
    """

    offset: int
    classes: int
    per_class: dict[str, int]
    mode: str
    size: tuple[int, int]
    suffix: str


DECATHLON_FIXTURE: dict[str, DecathlonDomain] = {
    "daimlerpedcls": DecathlonDomain(3, 2, {"train": 3, "val": 2, "test": 1}, "L", (12, 24),
                                     ".png"),
    "gtsrb": DecathlonDomain(5, 3, {"train": 3, "val": 1, "test": 1}, "RGB", (16, 12), ".jpg"),
    "omniglot": DecathlonDomain(7, 3, {"train": 2, "val": 1, "test": 1}, "L", (12, 12), ".png"),
}  # fmt: skip
"""The fixture's domains: a grey portrait domain, a colour landscape JPEG domain (one-pixel
black side bands that a centre crop removes) and a grey square domain."""
DECATHLON_LENGTHS = {"train": 13, "val": 8, "test": 10}
"""Samples per split of the loader over all three domains (``val`` is one image per class of
the official ``train``, ``test`` the official ``val``)."""
SPLIT_NAMES = ("train", "val", "test")
"""The official splits."""


def decathlon_colour(domain: str, official: str, label: int, k: int) -> tuple[int, int, int]:
    """The fill colour of image ``k`` of class ``label`` (distinct per domain, split, class and
    image; grey domains use its first channel)."""
    d = list(DECATHLON_FIXTURE).index(domain)
    return (40 + 60 * label + 12 * k, 50 + 40 * d + 30 * k, 60 + 50 * SPLIT_NAMES.index(official))


def decathlon_file(domain: str, official: str, label: int, k: int) -> str:
    """The fixture's ``file_name`` of image ``k`` of class ``label`` (relative to
    ``decathlon-1.0/``; the class is in the name so tests can check labels)."""
    return f"data/{domain}/{official}/c{label}_{k}{DECATHLON_FIXTURE[domain].suffix}"


def decathlon_json(domain: str, official: str) -> dict[str, object]:
    """The COCO-style annotation file of one domain and official split, as released: image and
    category ids with the domain's offset, categories and annotations not in class order,
    no ``annotations`` in the stripped test file."""
    spec = DECATHLON_FIXTURE[domain]
    base = spec.offset * 100_000
    categories = [{"id": base + c + 1, "name": f"{domain}-class{c}"} for c in range(spec.classes)]
    images, annotations = [], []
    for label in range(spec.classes):
        for k in range(spec.per_class[official]):
            image_id = base + 1000 * SPLIT_NAMES.index(official) + 10 * label + k + 1
            width, height = spec.size
            name = decathlon_file(domain, official, label, k)
            images.append({"id": image_id, "file_name": name, "width": width, "height": height})
            annotations.append({"id": image_id, "image_id": image_id, "category_id": base + label
                                + 1, "segmentation": [], "area": width * height,
                                "bbox": [0, 0, width, height], "iscrowd": 0})  # fmt: skip
    info = {"description": f"decathlon-1.0 fixture, {domain} {official}"}
    out: dict[str, object] = {"info": info, "images": images[::-1],
                              "categories": categories[1:] + categories[:1]}  # fmt: skip
    if official != "test":
        out["annotations"] = annotations[1::2] + annotations[::2]
    return out


def decathlon_pixels(domain: str, official: str, label: int, k: int) -> np.ndarray:
    """The pixels of one fixture image (uint8, ``(H, W)`` or ``(H, W, 3)``)."""
    spec = DECATHLON_FIXTURE[domain]
    width, height = spec.size
    colour = np.array(decathlon_colour(domain, official, label, k), dtype=np.uint8)
    pixels = np.broadcast_to(colour, (height, width, 3)).copy()
    if spec.mode == "RGB":
        pixels[:, [0, -1]] = 0  # one-pixel black side bands
        return pixels
    return pixels[..., 0]


def write_visual_decathlon(base: Path, domains: tuple[str, ...] | None = None) -> Path:
    """The Visual Decathlon fixture under ``base`` (returned): ``decathlon-1.0/annotations/
    <domain>_{train,val,test_stripped}.json`` and ``decathlon-1.0/data/<domain>/{train,val,
    test}/c<class>_<k>.<suffix>``.

    Args:
        base: the folder to write (the dataset root).
        domains: the domains to write (default: all of :data:`DECATHLON_FIXTURE`).
    """
    release = base / "decathlon-1.0"
    (release / "annotations").mkdir(parents=True, exist_ok=True)
    for domain in DECATHLON_FIXTURE if domains is None else domains:
        spec = DECATHLON_FIXTURE[domain]
        for official in SPLIT_NAMES:
            suffix = "test_stripped" if official == "test" else official
            path = release / "annotations" / f"{domain}_{suffix}.json"
            path.write_text(json.dumps(decathlon_json(domain, official)), encoding="utf-8")
            (release / "data" / domain / official).mkdir(parents=True)
            for label in range(spec.classes):
                for k in range(spec.per_class[official]):
                    pixels = decathlon_pixels(domain, official, label, k)
                    Image.fromarray(pixels).save(
                        release / decathlon_file(domain, official, label, k), quality=95
                    )
    return base
