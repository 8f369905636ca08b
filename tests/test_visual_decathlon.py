"""Tests of the real Visual Decathlon loader (``visual_decathlon``, the released layout) and
data_scripts/prepare_visual_decathlon.py, on the tiny fixture of ``real_fixtures.py``.

``visual_decathlon`` is not in ``test_real_datasets.py``'s shared contract, for the reasons
``omniglot`` is not: a task is a domain, choosing tasks chooses the images, and the other
domains' targets are ``-1``; besides, its default tasks are paper E's nine domains, which a
three-domain fixture does not hold.  The same promises (errors naming the file and the fix,
caps, root resolution, sizes, the shared training loop) are tested here.
"""

from __future__ import annotations

import io
import json
import math
import re
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from real_fixtures import (
    DECATHLON_FIXTURE,
    DECATHLON_LENGTHS,
    decathlon_colour,
    decathlon_json,
    decathlon_pixels,
    write_visual_decathlon,
)

from mtlrepro.balancing import create_balancer
from mtlrepro.config import ConfigError
from mtlrepro.data import get_dataset
from mtlrepro.data.base import DATA_DIR_ENV, SPLITS, DataFilesError, LazyDataset
from mtlrepro.data.glyphs import sample_tasks
from mtlrepro.data.visual_decathlon import (
    DOMAIN_NAMES,
    PAPER_DOMAINS,
    VisualDecathlonDataset,
    carve_split,
    class_round_robin,
    visual_decathlon_root,
)
from mtlrepro.models import create_model
from mtlrepro.tasks import TaskSpec, make_tasks
from mtlrepro.train import TrainConfig, evaluate, fit

FIX = "python data_scripts/prepare_visual_decathlon.py --download"
DOMAINS = tuple(DECATHLON_FIXTURE)  # daimlerpedcls, gtsrb, omniglot
FILE_NAME = re.compile(r"data/(?P<domain>[a-z-]+)/(?P<official>\w+)/c(?P<label>\d+)_(?P<k>\d+)\.")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """The Visual Decathlon fixture under ``tmp_path / "visual_decathlon"``."""
    return write_visual_decathlon(tmp_path / "visual_decathlon")


def open_split(root: Path, split: str, **overrides: object) -> VisualDecathlonDataset:
    """One split of the fixture, ``paper`` preset at 8x8 (shorter side 9), its three domains."""
    fields = {"root": str(root), "tasks": DOMAINS, "height": 8, "width": 8, **overrides}
    return get_dataset("visual_decathlon", split, "paper", **fields)


def described(data: VisualDecathlonDataset, i: int) -> tuple[str, str, int, int]:
    """(domain, official split, class, image number) of sample ``i`` from its file name."""
    match = FILE_NAME.search(data.files[i].as_posix())
    assert match is not None, data.files[i]
    return match["domain"], match["official"], int(match["label"]), int(match["k"])


def test_splits_have_the_documented_samples_labels_and_order(root: Path) -> None:
    specs = {d: TaskSpec(d, "classification", DECATHLON_FIXTURE[d].classes) for d in DOMAINS}
    seen: dict[str, set[Path]] = {}
    for split in SPLITS:
        data = open_split(root, split)
        assert isinstance(data, LazyDataset) and data.source == ("val" if split == "test" else
                                                                 "train")  # fmt: skip
        assert (len(data), data.image_size, data.task_specs) == (DECATHLON_LENGTHS[split], (8, 8),
                                                                 specs)  # fmt: skip
        assert data.config.tasks == DOMAINS and data.config.root == str(root)
        seen[split] = set(data.files)
        batch = data.batch(range(len(data)))
        owner = sample_tasks(data)
        keys = [described(data, i) for i in range(len(data))]
        assert {k[1] for k in keys} == {data.source}
        for i, (domain, official, label, k) in enumerate(keys):
            assert int(owner[i]) == DOMAINS.index(domain)
            for task in DOMAINS:  # the class of the file name, -1 for the other domains
                assert int(batch[task][i]) == (label if task == domain else -1), (split, i)
            colour = torch.tensor(decathlon_colour(domain, official, label, k), dtype=torch.float32)
            if DECATHLON_FIXTURE[domain].mode == "L":
                colour = colour[:1].expand(3)  # grey tiled to three channels
            pixels = batch["image"][i] * 255
            assert (pixels - colour[:, None, None]).abs().max() <= 4, (split, i)  # crop: no band
        # Domains round robin, classes round robin within each domain.
        rank = {d: [k[2] for k in keys if k[0] == d] for d in DOMAINS}
        for domain, labels in rank.items():
            classes = DECATHLON_FIXTURE[domain].classes
            assert labels[:classes] == list(range(classes)), (split, domain)
        assert [k[0] for k in keys[:3]] == list(DOMAINS)
    assert not seen["train"] & seen["val"]  # val is carved from the official train
    official_train = {root / "decathlon-1.0" / image["file_name"] for d in DOMAINS
                      for image in decathlon_json(d, "train")["images"]}  # fmt: skip
    assert seen["train"] | seen["val"] == official_train


def test_every_class_is_in_every_split_where_sizes_allow(root: Path) -> None:
    for split in SPLITS:
        data = open_split(root, split)
        owner = sample_tasks(data)
        for d, (task, spec) in enumerate(data.task_specs.items()):
            labels = data.targets[task][owner == d]
            assert set(labels.tolist()) == set(range(spec.num_classes)), (split, task)


def test_category_ids_are_mapped_by_their_offset(root: Path) -> None:
    # The fixture's gtsrb ids are 500001 .. 500003 listed as 500002, 500003, 500001.
    gtsrb = decathlon_json("gtsrb", "train")
    assert [c["id"] for c in gtsrb["categories"]] == [500002, 500003, 500001]
    data = open_split(root, "test", tasks=["gtsrb"])
    assert [described(data, i)[2] for i in range(len(data))] == data.targets["gtsrb"].tolist()
    assert data.targets["gtsrb"].tolist() == [0, 1, 2]
    bad = root / "decathlon-1.0" / "annotations" / "gtsrb_train.json"
    gtsrb["categories"][0]["id"] = 600002  # one category with another offset
    bad.write_text(json.dumps(gtsrb))
    with pytest.raises(DataFilesError) as info:
        open_split(root, "train", tasks=["gtsrb"])
    check_error(info.value, root, bad, "do not map to classes 0 .. 2 by `id % 100000 - 1`")


def test_val_is_carved_per_class_and_the_seed_chooses_it() -> None:
    labels = np.repeat(np.arange(4), [1, 2, 10, 30])
    held = carve_split(labels, 0.1, np.random.default_rng(0))
    assert [int(held[labels == c].sum()) for c in range(4)] == [0, 1, 1, 3]
    other = carve_split(labels, 0.1, np.random.default_rng(1))
    assert not np.array_equal(held, other)
    assert np.array_equal(held, carve_split(labels, 0.1, np.random.default_rng(0)))
    order = class_round_robin(labels, np.arange(len(labels))[::-1])
    assert labels[order[:6]].tolist() == [0, 1, 2, 3, 1, 2]


def test_the_split_is_deterministic_and_follows_the_seed(root: Path) -> None:
    for split in SPLITS:
        assert open_split(root, split).files == open_split(root, split).files
    vals = {tuple(open_split(root, "val", split_seed=seed).files) for seed in range(6)}
    assert len(vals) > 1
    tests = {frozenset(open_split(root, "test", split_seed=seed).files) for seed in range(3)}
    assert len(tests) == 1  # the official val split, whatever the seed


def test_resize_keeps_the_aspect_and_crops_the_centre(root: Path) -> None:
    # gtsrb files are 16x12 with one-pixel black columns left and right.
    same = open_split(root, "test", tasks=["gtsrb"], height=12, width=12, shorter_side=12)
    assert same.image_size == (12, 12) and same.config.resize_to == 12
    expected = torch.from_numpy(decathlon_pixels("gtsrb", "val", 0, 0)[:, 2:14]).permute(2, 0, 1)
    assert (same[0]["image"] * 255 - expected).abs().max() <= 8  # the middle columns (JPEG)
    wide = open_split(root, "test", tasks=["gtsrb"], height=8, width=12)  # shorter side 14
    assert wide[0]["image"].shape == (3, 8, 12) and wide.config.resize_to == 14
    tall = open_split(root, "train", tasks=["daimlerpedcls"], height=20, width=10)
    assert tall[0]["image"].shape == (3, 20, 10)


def test_tasks_choose_the_domains_and_caps_the_first_images(root: Path) -> None:
    full = open_split(root, "train")
    owner = sample_tasks(full)
    one = open_split(root, "train", tasks=["omniglot"])
    assert list(one.task_specs) == ["omniglot"] and len(one) == 3
    assert int(one.targets["omniglot"].min()) == 0  # single-task data: nothing ignored
    two = open_split(root, "train", tasks=["omniglot", "daimlerpedcls"])
    rows = np.flatnonzero(((owner == 0) | (owner == 2)).numpy())
    assert list(two.task_specs) == ["omniglot", "daimlerpedcls"]
    assert two.files == [full.files[i] for i in rows]  # the full order, restricted
    assert torch.equal(two.targets["daimlerpedcls"], full.targets["daimlerpedcls"][rows])
    capped = open_split(root, "val", n_val=4)
    assert capped.files == open_split(root, "val").files[:4]
    message = "visual_decathlon val: asked for the first 9 images but the split holds 8"
    with pytest.raises(ConfigError, match=re.escape(message)):
        open_split(root, "val", n_val=9)
    smoke = get_dataset("visual_decathlon", "test", "smoke", root=str(root), tasks=DOMAINS,
                        n_test=10)  # fmt: skip
    assert smoke.image_size == (32, 32) and len(smoke) == 10
    with pytest.raises(ConfigError, match="asked for the first 64 images but the split holds 13"):
        get_dataset("visual_decathlon", "train", "smoke", root=str(root), tasks=DOMAINS)


def test_default_tasks_are_paper_e_nine_domains_and_only_chosen_files_are_read(
    root: Path,
) -> None:
    assert PAPER_DOMAINS == tuple(d for d in DOMAIN_NAMES if d != "imagenet12")
    assert len(PAPER_DOMAINS) == 9
    with pytest.raises(DataFilesError) as info:
        get_dataset("visual_decathlon", "train", "paper", root=str(root))
    check_error(info.value, root, root / "decathlon-1.0" / "data" / "aircraft", "does not exist")
    annotations = root / "decathlon-1.0" / "annotations"
    (annotations / "gtsrb_train.json").unlink()
    assert len(open_split(root, "train", tasks=["omniglot", "daimlerpedcls"])) == 7


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"root": ""}, "VisualDecathlonConfig.root must be a folder path or None; got ''"),
        ({"height": 4}, "height must be an integer in [8, 4096]; got 4"),
        ({"shorter_side": 63}, "shorter_side must be an integer in [64, 8192]; got 63"),
        ({"n_train": 0}, "n_train must be an integer in [1, inf); got 0"),
        ({"val_fraction": 0.0}, "val_fraction must be a number in (0.0, 0.5]; got 0.0"),
        ({"split_seed": -1}, "split_seed must be an integer in [0, 9223372036854775807]"),
        ({"tasks": ["mnist"]}, "unknown visual_decathlon task 'mnist'; allowed: 'aircraft'"),
        ({"tasks": ["svhn", "svhn"]}, "tasks repeat a task"),
        ({"tasks": []}, "number of tasks must be an integer in [1, 10]; got 0"),
        ({"crop": 3}, "unknown VisualDecathlonConfig parameter 'crop'; allowed: root"),
    ],
)
def test_config_rejects_bad_values(root: Path, overrides: dict[str, object], message: str) -> None:
    fields = {"root": str(root), "tasks": DOMAINS, **overrides}
    with pytest.raises(ConfigError, match=re.escape(message)):
        get_dataset("visual_decathlon", "val", "paper", **fields)


def check_error(error: DataFilesError, root: Path, named: Path | str, problem: str) -> None:
    """The error names the dataset, ``named`` and ``problem``, then the prepare command, the
    layout expected at ``root`` and how to read it from elsewhere."""
    assert isinstance(error, FileNotFoundError)
    what, fix = str(error).split("; run ", 1)
    assert what.startswith("visual_decathlon: ") and str(named) in what and problem in what, what
    assert fix.startswith(f"`{FIX}` or put Visual Decathlon at {root} ("), fix
    assert "<root>/decathlon-1.0/annotations/<domain>_{train,val}.json" in fix
    assert f"set ${DATA_DIR_ENV} or the `root` parameter" in fix


@pytest.mark.parametrize(
    ("missing", "split"),
    [
        ("", "train"),
        ("decathlon-1.0", "train"),
        ("decathlon-1.0/annotations", "val"),
        ("decathlon-1.0/data", "test"),
        ("decathlon-1.0/data/omniglot", "train"),
        ("decathlon-1.0/annotations/gtsrb_train.json", "val"),
        ("decathlon-1.0/annotations/gtsrb_val.json", "test"),
    ],
)
def test_missing_data_stop_with_one_error_naming_it_and_the_fix(
    root: Path, tmp_path: Path, missing: str, split: str
) -> None:
    if not missing:
        root = named = tmp_path / "nowhere"
    elif (named := root / missing).is_dir():
        shutil.rmtree(named)
    else:
        named.unlink()
    with pytest.raises(DataFilesError) as info:
        open_split(root, split)
    check_error(info.value, root, named, "does not exist")


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (lambda d: "not json {", "is not a readable annotation file"),
        (lambda d: decathlon_json("gtsrb", "test"), "has no 'annotations' list"),
        (lambda d: d["annotations"].pop() and None, "has no annotation"),
        (
            lambda d: d["annotations"].append(dict(d["annotations"][0])) and None,
            "has several annotations",
        ),
        (
            lambda d: d["images"][0].update(file_name="data/svhn/train/x.png"),
            "does not start with 'data/gtsrb/'",
        ),
        (lambda d: d["annotations"][0].update(category_id=500009), "unknown image or category"),
        (lambda d: d["images"][0].pop("file_name") and None, "lacks an id, file_name"),
    ],
    ids=["not-json", "stripped", "unannotated", "twice", "prefix", "category", "no-name"],
)
def test_malformed_annotations_stop_with_one_error_naming_the_file(
    root: Path, edit: Callable[[dict], object], problem: str
) -> None:
    path = root / "decathlon-1.0" / "annotations" / "gtsrb_train.json"
    data = decathlon_json("gtsrb", "train")
    result = edit(data)
    path.write_text(result if isinstance(result, str) else json.dumps(
        result if isinstance(result, dict) else data))  # fmt: skip
    with pytest.raises(DataFilesError) as info:
        open_split(root, "train")
    check_error(info.value, root, path, problem)


def test_an_unreadable_image_stops_when_read_with_one_error_naming_it(root: Path) -> None:
    data = open_split(root, "test")
    data.files[1].write_bytes(b"not an image")
    assert data[0]["image"].shape == (3, 8, 8)  # the others still read
    with pytest.raises(DataFilesError) as info:
        data.batch([0, 1])
    check_error(info.value, root, data.files[1], "is not a readable image")


def test_root_is_the_override_then_the_data_dir_variable(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DATA_DIR_ENV, str(root.parent))
    assert visual_decathlon_root() == root
    assert visual_decathlon_root("/elsewhere") == Path("/elsewhere")
    data = get_dataset("visual_decathlon", "test", "cpu", tasks=DOMAINS)
    assert data.config.root == str(root) and data.image_size == (32, 32)
    assert data.config.resize_to == 36 and len(data) == DECATHLON_LENGTHS["test"]
    assert data[len(data) - 1]["image"].shape == (3, 32, 32)
    assert get_dataset("visual_decathlon", "val", "paper", tasks=DOMAINS).image_size == (64, 64)


def test_shared_training_loop_trains_and_evaluates_on_the_fixture(root: Path) -> None:
    train = open_split(root, "train", height=16, width=16)
    test = open_split(root, "test", height=16, width=16)
    tasks = make_tasks(train.task_specs)
    model = create_model("segnet", train.task_specs, widths=(4, 8))
    config = TrainConfig(epochs=1, batch_size=4, progress=False, device="cpu", seed=0)
    result = fit(model, tasks, train, test, create_balancer("equal", list(tasks)), config)
    assert (result.epochs, result.interrupted) == (1, False)
    scores = evaluate(model, tasks, test, batch_size=config.eval_batch_size)
    assert scores == result.final and set(scores) == set(DOMAINS)
    assert all(math.isfinite(v) for metrics in scores.values() for v in metrics.values())


# ------------------------------------------------------- data_scripts/prepare_visual_decathlon


@pytest.fixture
def prepare_script(load_data_script: Callable[[str], ModuleType]) -> ModuleType:
    """``data_scripts/prepare_visual_decathlon.py`` imported as a module."""
    return load_data_script("prepare_visual_decathlon")


def _tar(archive: Path, members: dict[str, Path | bytes]) -> Path:
    """Write a tar archive (gzip if the name ends ``.gz``) of files (``Path``: its tree under
    the member name; ``bytes``: a file)."""
    with tarfile.open(archive, "w:gz" if archive.name.endswith(".gz") else "w") as tf:
        for name, content in members.items():
            if isinstance(content, Path):
                tf.add(content, arcname=name)
            else:
                info = tarfile.TarInfo(name)
                info.size = len(content)
                tf.addfile(info, io.BytesIO(content))
    return archive


def _release(root: Path, tmp_path: Path, domains: tuple[str, ...] = DOMAINS) -> list[Path]:
    """The fixture packed as released: the devkit (annotations of every domain) and the data
    archive holding one ``<domain>.tar`` per domain."""
    release = root / "decathlon-1.0"
    devkit = _tar(tmp_path / "decathlon-1.0-devkit.tar.gz",
                  {"decathlon-1.0/annotations": release / "annotations"})  # fmt: skip
    inner = {f"{d}.tar": _tar(tmp_path / f"{d}.tar", {d: release / "data" / d}) for d in domains}
    data = _tar(tmp_path / "decathlon-1.0-data.tar.gz", dict(inner.items()))
    return [devkit, data]


def test_prepare_places_the_released_archives_and_an_unpacked_folder(
    root: Path, tmp_path: Path, prepare_script: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    archives = _release(root, tmp_path)
    dest = tmp_path / "data" / "visual_decathlon"
    argv = [f"--archive={a}" for a in archives] + ["--root", str(dest), "--domains", *DOMAINS]
    assert prepare_script.main(argv) == 0
    err = capsys.readouterr().err
    assert "train: 13 images" in err and "test: 10 images (the official val split)" in err
    assert [p.name for p in dest.parent.iterdir()] == ["visual_decathlon"]  # no leftovers
    assert open_split(dest, "test").files[0].is_file()
    assert sorted(p.name for p in (dest / "decathlon-1.0" / "data").iterdir()) == list(DOMAINS)
    assert prepare_script.main(argv) == 0
    assert "already holds a valid Visual Decathlon" in capsys.readouterr().err
    other = tmp_path / "other"
    folder = ["--folder", str(root / "decathlon-1.0"), "--root", str(other), "--domains", "gtsrb"]
    assert prepare_script.main(folder) == 0
    assert len(open_split(other, "val", tasks=["gtsrb"])) == 3
    assert (root / "decathlon-1.0" / "data" / "gtsrb").is_dir()  # a user's folder is kept


def test_prepare_rejects_sources_without_annotations_or_domains(
    root: Path, tmp_path: Path, prepare_script: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    devkit, data = _release(root, tmp_path, domains=("gtsrb",))
    dest = tmp_path / "dest"
    argv = ["--root", str(dest), "--domains", "gtsrb", "omniglot"]
    assert prepare_script.main(["--archive", str(devkit), "--archive", str(data), *argv]) == 1
    assert "hold no image folder of omniglot" in capsys.readouterr().err
    assert prepare_script.main(["--archive", str(data), *argv]) == 1
    assert "no annotations/ folder of *_train.json files" in capsys.readouterr().err
    assert not dest.exists()
    with pytest.raises(SystemExit):
        prepare_script.main(["--archive", str(tmp_path / "missing.tar"), *argv])
