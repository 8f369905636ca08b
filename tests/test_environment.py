"""The set-up files agree with each other: pins, CI entry point, DVC config."""

from __future__ import annotations

import configparser
import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _pyproject_requirements() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return set(project["dependencies"]) | set(project["optional-dependencies"]["dev"])


def _environment_yml_requirements() -> set[str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d for d in env["dependencies"] if isinstance(d, dict))["pip"]
    return {r for r in pip_section if not r.startswith("-e")}


def test_every_requirement_is_pinned_exactly():
    for requirement in _pyproject_requirements():
        assert re.fullmatch(r"[A-Za-z0-9_.\-]+==[0-9][0-9A-Za-z.]*", requirement), requirement


def test_environment_yml_agrees_with_pyproject():
    assert _environment_yml_requirements() == _pyproject_requirements()


def test_torch_pins_are_the_locally_available_builds():
    assert {"torch==2.14.1", "torchvision==0.29.1"} <= _pyproject_requirements()


def test_dvc_analytics_is_off_in_the_repo_config():
    config = configparser.ConfigParser()
    config.read_string((ROOT / ".dvc" / "config").read_text())
    assert config["core"]["analytics"].strip() == "false"


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in readme.split("\n## ")[0], "README must open with the test command"
    assert re.search(r"^make test$", ci, flags=re.M)


def test_ci_runs_the_training_and_notebook_tests_on_onednn_avx2_kernels():
    ci = (ROOT / ".ci" / "run").read_text()
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^make test-avx2$", ci, flags=re.M)
    recipe = makefile.split("\ntest-avx2:", 1)[1].split("\n\n", 1)[0]
    assert "ONEDNN_MAX_CPU_ISA=AVX2" in recipe and "$(AVX2_TESTS)" in recipe
    for name in ("test_train.py", "test_notebooks.py", "test_onednn.py"):
        assert name in makefile.split("AVX2_TESTS :=", 1)[1].split("\ntest-avx2:", 1)[0]
