"""Bad input stops up front with one clear message (issue 8, section 4): one table row per case.

* parameters, as ``params.yaml`` gives them: each row writes one bad line into a section of a
  scratch ``params.yaml``, loads it as the pipeline does and runs the notebook's parameters
  cell and its first code cell; the message must name the value as ``<section>.<key>``;
* paper B's λ on the DVC stages' command line (negative values included);
* real data (NYU-v2 files) out of range: the message names the file;
* truncated checkpoints and weights files: the message names the file and what to do.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from torch import Tensor, nn

from mtlrepro import papers
from mtlrepro.balancing import create_balancer
from mtlrepro.config import ConfigError
from mtlrepro.data import get_dataset
from mtlrepro.data.base import DataFilesError
from mtlrepro.data.nyuv2 import NYUV2_CLASSES
from mtlrepro.experiments.baselines import study as baselines
from mtlrepro.experiments.distinctiveness import study as distinctiveness
from mtlrepro.experiments.group_sparsity import units as runs_module
from mtlrepro.experiments.overparam import units as overparam_units
from mtlrepro.files import REPO_ROOT
from mtlrepro.models.backbones import create_backbone
from mtlrepro.params import load_params, section_name
from mtlrepro.runs import main as runs_main
from mtlrepro.tasks import TaskSpec, make_tasks
from mtlrepro.torch_files import CheckpointError
from mtlrepro.train import TrainConfig, fit

NOTEBOOKS: dict[str, str] = {p.name: p.notebook for p in papers.PAPERS}
"""params.yaml section -> notebook."""


# ------------------------------------------------------------------------------- parameters
def test_each_study_names_its_params_yaml_section() -> None:
    sections = yaml.safe_load((REPO_ROOT / "params.yaml").read_text(encoding="utf-8"))
    for module in (baselines, distinctiveness, runs_module, overparam_units):
        assert module.SECTION in sections and module.SECTION in NOTEBOOKS
        assert section_name(NOTEBOOKS[module.SECTION]) == module.SECTION


def _first_cells(notebook: str) -> tuple[str, str]:
    """Sources of the ``parameters`` cell and of the first code cell after it."""
    cells = json.loads((REPO_ROOT / "notebooks" / f"{notebook}.ipynb").read_text("utf-8"))
    code = [c for c in cells["cells"] if c["cell_type"] == "code"]
    first = next(i for i, c in enumerate(code) if "parameters" in c["metadata"].get("tags", []))
    return "".join(code[first]["source"]), "".join(code[first + 1]["source"])


PARAMETER_CASES: list[tuple[str, str, str]] = [
    ("baselines", "epochs: -1", "baselines.epochs must be an integer in [1, inf); got -1"),
    ("baselines", "seeds: [-3]", "baselines.seeds must be an integer in [0, inf); got -3"),
    ("baselines", "seeds: [1, 1]", "baselines.seeds has 1 twice"),
    ("baselines", "seeds: []", "baselines.seeds must hold at least one seed"),
    ("baselines", "threads: 0", "baselines.threads must be an integer in [1, inf); got 0"),
    ("baselines", "workers: 0", "baselines.workers must be an integer in [1, inf); got 0"),
    ("baselines", "epochs: 2.5", "baselines.epochs must be of type int; got 2.5"),
    ("baselines", "seeds: [true]", "baselines.seeds must be of type"),
    ("distinctiveness", "epochs: -1", "distinctiveness.epochs must be an integer"),
    ("distinctiveness", "seeds: [-3]", "distinctiveness.seeds must be an integer"),
    ("distinctiveness", "seeds: [1, 1]", "distinctiveness.seeds has 1 twice"),
    ("distinctiveness", "seeds: []", "distinctiveness.seeds must hold at least one seed"),
    ("distinctiveness", "threads: 0", "distinctiveness.threads must be an integer"),
    (
        "distinctiveness",
        "weights_dir: /no/such/folder",
        "distinctiveness.weights_dir: folder /no/such/folder does not exist",
    ),
    (
        "group_sparsity",
        'lambdas: ["0", "inf"]',
        "group_sparsity.lambdas: λ must be a finite number >= 0 such as 1e-3; got 'inf'",
    ),
    ("group_sparsity", 'lambdas: ["0", "nan"]', "group_sparsity.lambdas: λ must be a finite"),
    (
        "group_sparsity",
        'lambdas: ["0", "-1e-2"]',
        "group_sparsity.lambdas: λ must be a finite number >= 0 such as 1e-3; got '-1e-2'",
    ),
    ("group_sparsity", 'lambdas: ["0", "1e-2", "0.01"]', "group_sparsity.lambdas has 1e-2 twice"),
    ("group_sparsity", 'sweep_lambdas: ["1", "1e0"]', "group_sparsity.sweep_lambdas has 1 twice"),
    ("group_sparsity", 'l1_lambda: "-inf"', "group_sparsity.l1_lambda: λ must be a finite"),
    ("group_sparsity", "l1_lambda: big", "group_sparsity.l1_lambda: λ must be a finite"),
    ("group_sparsity", "seeds: [0, 1, 0]", "group_sparsity.seeds has 0 twice"),
    ("group_sparsity", "seeds: [-1]", "group_sparsity.seeds must be an integer in [0, inf)"),
    ("group_sparsity", "datasets: [scenes, scenes]", "group_sparsity.datasets has 'scenes' twice"),
    ("group_sparsity", "datasets: [mnist]", "group_sparsity.datasets: unknown dataset 'mnist'"),
    ("group_sparsity", "epochs: -1", "group_sparsity.epochs must be an integer in [1, inf)"),
    ("group_sparsity", "threads: 0", "group_sparsity.threads must be an integer in [1, inf)"),
    ("group_sparsity", "workers: 0", "group_sparsity.workers must be an integer in [1, inf)"),
    ("overparam", "seeds: [2, 2]", "overparam.seeds has 2 twice"),
    ("overparam", "seeds: []", "overparam.seeds must hold at least one seed"),
    ("overparam", "epochs: 0", "overparam.epochs must be an integer in [1, inf); got 0"),
    ("overparam", "workers: 0", "overparam.workers must be an integer in [1, inf)"),
    ("overparam", "threads: two", "overparam.threads must be of type"),
]


@pytest.mark.parametrize(
    ("section", "line", "message"),
    PARAMETER_CASES,
    ids=[f"{section}.{line}" for section, line, _ in PARAMETER_CASES],
)
def test_a_bad_parameter_stops_the_notebooks_first_cell_naming_its_params_yaml_key(
    section: str, line: str, message: str, tmp_path: Path
) -> None:
    params_file = tmp_path / "params.yaml"
    params_file.write_text(f"profile: smoke\n{section}:\n  {line}\n", encoding="utf-8")
    notebook = NOTEBOOKS[section]
    params = load_params(params_file, notebook)
    parameters_cell, first_cell = _first_cells(notebook)
    namespace: dict[str, Any] = {}
    exec(parameters_cell, namespace)  # the notebook's defaults, then what papermill injects
    namespace.update(params, output_dir=str(tmp_path / "out"), progress=False)
    with pytest.raises(ConfigError) as info:
        exec(first_cell, namespace)
    assert message in str(info.value)


def test_a_config_built_directly_names_its_class_field() -> None:
    with pytest.raises(ConfigError, match=re.escape("SparsityStudyConfig.lambdas: λ must be")):
        runs_module.SparsityStudyConfig(lambdas=(0.0, math.inf))
    with pytest.raises(ConfigError, match=re.escape("BaselinesConfig.lr must be a finite number")):
        baselines.BaselinesConfig(lr=math.inf)


# ------------------------------------------------------------------------------- λ on the CLI
CLI_CASES: list[tuple[str, list[str], str]] = [
    (
        'lambdas: ["0", "-1e-2"]',
        ["table", "scenes", "-1e-2", "0"],
        "group_sparsity.lambdas: λ must be a finite number >= 0 such as 1e-3; got '-1e-2'",
    ),
    ('lambdas: ["0", "inf"]', ["table", "scenes", "inf", "0"], "group_sparsity.lambdas: λ must"),
    ("seeds: [0, 0]", ["table", "scenes", "0", "0"], "group_sparsity.seeds has 0 twice"),
    ("seeds: [0]", ["table", "scenes", "-1e-2", "0"], "argument lam: λ must be a finite number"),
    ("seeds: [0]", ["table", "scenes", "-.5", "0"], "argument lam: λ must be a finite number"),
    (
        "seeds: [0]",
        ["table", "scenes", "1e-2", "-3"],
        "seed must be an integer in [0, inf); got -3",
    ),
]


@pytest.mark.parametrize(("line", "argv", "message"), CLI_CASES)
def test_the_dvc_stage_command_reports_a_bad_lambda_or_seed_by_name(
    line: str, argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    params_file = tmp_path / "params.yaml"
    params_file.write_text(f"profile: smoke\ngroup_sparsity:\n  {line}\n", encoding="utf-8")
    runs = tmp_path / "runs"
    code = runs_main(
        ["group_sparsity", *argv, "scratch", "--params", str(params_file), "--runs", str(runs)]
    )
    err = capsys.readouterr().err
    assert code == 2 and message in err, err
    assert "arguments are required" not in err
    assert not runs.exists()


# ------------------------------------------------------------------------------- real data
H, W = 4, 6


def _nyuv2(root: Path) -> Path:
    """A two-image NYU-v2 train folder in the MTAN layout (float64, as released)."""
    rng = np.random.default_rng(0)
    for i in range(2):
        normal = rng.normal(size=(H, W, 3))
        normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
        normal[0] = 0.0  # invalid pixels
        fields = {
            "image": rng.random((H, W, 3)),
            "label": rng.integers(-1, len(NYUV2_CLASSES), (H, W)).astype(np.float64),
            "depth": rng.uniform(0.0, 10.0, (H, W, 1)),
            "normal": normal,
        }
        for field, value in fields.items():
            (root / "train" / field).mkdir(parents=True, exist_ok=True)
            np.save(root / "train" / field / f"{i}.npy", value)
    return root


def _unit_normals(scale: float) -> np.ndarray:
    normal = np.zeros((H, W, 3))
    normal[..., 2] = scale
    return normal


DATA_CASES: list[tuple[str, np.ndarray, str]] = [  # problem "": the file is accepted
    ("image/1.npy", np.full((H, W, 3), 255.0), "holds image values in [255, 255], outside [0, 1]"),
    ("image/1.npy", np.full((H, W, 3), -0.5), "holds image values in [-0.5, -0.5], outside"),
    ("normal/1.npy", _unit_normals(2.0), "holds 24 normals that are not unit vectors (length 2"),
    (  # normals coded into [0, 1] as for a PNG, (n + 1) / 2, instead of unit vectors
        "normal/1.npy",
        (_unit_normals(1.0) + 1) / 2,
        "holds 24 normals that are not unit vectors (length 1.225",
    ),
    ("normal/1.npy", _unit_normals(1.002), "holds 24 normals that are not unit vectors"),
    ("normal/1.npy", _unit_normals(1.0005), ""),  # within the tolerance
    ("depth/1.npy", np.full((H, W, 1), -1.0), "holds negative depths (down to -1"),
    ("label/1.npy", np.ones((H, W), dtype=bool), "has dtype bool, expected a number type holding"),
    ("image/1.npy", np.full((H, W, 3), 255, dtype=np.uint8), ""),  # uint8 is scaled to [0, 1]
]


@pytest.mark.parametrize(("name", "value", "problem"), DATA_CASES)
def test_real_data_out_of_range_is_an_error_naming_the_file(
    name: str, value: np.ndarray, problem: str, tmp_path: Path
) -> None:
    root = _nyuv2(tmp_path / "nyuv2")
    path = root / "train" / name
    np.save(path, value)
    if not problem:
        sample = get_dataset("nyuv2", "train", "paper", root=str(root), n_train=2)[1]
        assert 0 <= sample["image"].min() and sample["image"].max() <= 1
        return
    with pytest.raises(DataFilesError) as info:
        get_dataset("nyuv2", "train", "paper", root=str(root), n_train=2).batch([0, 1])
    assert f"file {path} {problem}" in str(info.value)


# ------------------------------------------------------------------------------- checkpoints
class _Toy(nn.Module):
    """One linear head on flattened 2x2 images."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(12, 2)

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        return {"a": self.head(images.flatten(1))}

    def shared_parameters(self) -> list[nn.Parameter]:
        return list(self.head.parameters())


class _ToyData(torch.utils.data.Dataset):
    def __init__(self) -> None:
        self.images = torch.rand(8, 3, 2, 2)
        self.labels = (self.images.mean((1, 2, 3)) > 0.5).long()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {"image": self.images[i], "a": self.labels[i]}


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_resuming_from_a_truncated_checkpoint_names_it_and_the_fix(tmp_path: Path) -> None:
    checkpoint = tmp_path / "ckpt.pt"

    def train(resume: bool) -> None:
        config = TrainConfig(
            epochs=1,
            batch_size=4,
            progress=False,
            device="cpu",
            checkpoint_path=str(checkpoint),
            resume=resume,
        )
        tasks = make_tasks([TaskSpec("a", "classification", 2)])
        fit(_Toy(), tasks, _ToyData(), None, create_balancer("equal", ("a",)), config)

    train(resume=False)
    _truncate(checkpoint)
    with pytest.raises(CheckpointError) as info:
        train(resume=True)
    message = str(info.value)
    assert message.startswith(f"{checkpoint} cannot be read (")
    assert "delete it to train from the start" in message


def test_a_truncated_weights_file_names_it_and_the_fix(tmp_path: Path) -> None:
    weights = tmp_path / "resnet18.pth"
    torch.save(create_backbone("resnet18", "smoke").state_dict(), weights)
    _truncate(weights)
    with pytest.raises(CheckpointError, match=re.escape(f"{weights} cannot be read")) as info:
        create_backbone("resnet18", "smoke", weights_path=weights)
    assert "replace it with a complete copy of the 'resnet18' weights" in str(info.value)
