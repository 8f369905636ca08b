"""Baselines tables and claims follow paper D's definitions and are computed from the numbers."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from mtlrepro import baselines
from mtlrepro.config import ConfigError
from mtlrepro.metrics import LOWER_IS_BETTER, relative_performance
from mtlrepro.report import NOT_REPRODUCED, REPRODUCED
from mtlrepro.tasks import TaskSpec

TASKS = ("segmentation", "depth", "normal")
SPECS = {
    "segmentation": TaskSpec("segmentation", "segmentation", 13),
    "depth": TaskSpec("depth", "depth"),
    "normal": TaskSpec("normal", "normal"),
}
SINGLE = {
    "segmentation": {"miou": 27.5, "pixel_acc": 58.9},
    "depth": {"abs_err": 0.62, "rel_err": 0.25, "delta1": 57.9, "delta2": 85.8, "delta3": 95.7},
    "normal": {
        "mean_angle": 17.5,
        "median_angle": 15.2,
        "within_11_25": 34.9,
        "within_22_5": 73.3,
        "within_30": 85.7,
        "cosine": 0.9,
    },
}
SHARED = {  # paper D's Table 11 "Shared Bottom" row
    "segmentation": {"miou": 24.1, "pixel_acc": 57.2},
    "depth": {"abs_err": 0.58, "rel_err": 0.23, "delta1": 62.4, "delta2": 88.2, "delta3": 96.5},
    "normal": {
        "mean_angle": 16.6,
        "median_angle": 13.4,
        "within_11_25": 42.5,
        "within_22_5": 73.2,
        "within_30": 84.6,
        "cosine": 0.2,
    },
}


def _result(shared: dict, single_params: int = 300, shared_params: int = 100):
    """A BaselinesResult with given test metrics (no training)."""
    config = baselines.baselines_config("smoke")
    result = baselines.BaselinesResult(config, "smoke", SPECS)
    empty = pd.DataFrame()
    for task in TASKS:
        result.runs.append(
            baselines.RunResult(
                baselines.SINGLE_TASK, (task,), single_params // 3, empty, {task: SINGLE[task]}, {}
            )
        )
    for name in config.balancers:
        result.runs.append(
            baselines.RunResult(baselines.shared_row(name), TASKS, shared_params, empty, shared, {})
        )
    return result


def test_delta_table_reproduces_paper_d_table2_from_its_table11_values():
    table = baselines.delta_table(_result(SHARED)).set_index("method")
    row = table.loc[baselines.shared_row("equal")]
    # the paper prints Δ rounded to 0.1: agreement within half a unit (+ float slack)
    assert row["delta_segmentation"] == pytest.approx(-7.6, abs=0.05)
    assert row["delta_normal"] == pytest.approx(7.5, abs=0.05)
    assert row["delta_depth"] == pytest.approx(5.2, abs=0.05)
    assert row["delta_all"] == pytest.approx(1.7, abs=0.05)


def test_delta_table_single_task_row_is_zero_and_ignores_cosine():
    table = baselines.delta_table(_result(SHARED)).set_index("method")
    deltas = table.loc[
        baselines.SINGLE_TASK, ["delta_segmentation", "delta_normal", "delta_depth", "delta_all"]
    ]
    assert (deltas == 0).all()
    # cosine is not one of paper D's normal metrics: changing it must not move Δ_normal
    changed = {**SHARED, "normal": {**SHARED["normal"], "cosine": -1.0}}
    other = baselines.delta_table(_result(changed)).set_index("method")
    row = baselines.shared_row("equal")
    assert other.loc[row, "delta_normal"] == table.loc[row, "delta_normal"]


def test_delta_table_excludes_metrics_with_zero_reference_and_says_so():
    result = _result(SHARED)
    result.runs[1].test["depth"] = {**SINGLE["depth"], "delta1": 0.0}
    table = baselines.delta_table(result)
    assert set(table["excluded"]) == {"depth/delta1"}
    expected = relative_performance(
        {"depth": {k: v for k, v in SHARED["depth"].items() if k != "delta1"}},
        {"depth": SINGLE["depth"]},
        LOWER_IS_BETTER,
    )["depth"]
    assert table.set_index("method").loc[baselines.shared_row("equal"), "delta_depth"] == (
        pytest.approx(expected)
    )


def test_metrics_table_reports_parameters_relative_to_the_shared_network():
    table = baselines.metrics_table(_result(SHARED)).set_index("method")
    assert table.loc[baselines.SINGLE_TASK, "params_rel"] == pytest.approx(3.0)
    assert table.loc[baselines.shared_row("pcgrad"), "segmentation/miou"] == 24.1


def test_claims_follow_the_measured_numbers():
    agreeing = {c.claim_id: c.verdict for c in baselines.claims(_result(SHARED))}
    assert agreeing == {f"BL{i}": REPRODUCED for i in range(1, 6)}
    # swap the roles: shared bottom now wins segmentation and loses the rest -> all flip
    flipped = {
        c.claim_id: c.verdict
        for c in baselines.claims(
            _result(
                {
                    **SINGLE,
                    "segmentation": {"miou": 30.0, "pixel_acc": 60.0},
                    "depth": SINGLE["depth"] | {"abs_err": 0.9},
                    "normal": SINGLE["normal"] | {"mean_angle": 30.0},
                },
                single_params=100,
                shared_params=100,
            )
        )
    }
    assert flipped == {f"BL{i}": NOT_REPRODUCED for i in range(1, 6)}


def test_config_validation_names_what_is_allowed():
    with pytest.raises(ConfigError, match="allowed: 'equal', 'uncertainty', 'pcgrad'"):
        baselines.baselines_config("smoke", balancers=("equal", "gradnorm"))
    with pytest.raises(ConfigError, match="at least two tasks"):
        baselines.baselines_config("smoke", tasks=("depth",))
    with pytest.raises(ConfigError, match="unknown baselines parameter 'epoch'"):
        baselines.baselines_config("smoke", epoch=3)
    with pytest.raises(ConfigError, match="unknown profile"):
        baselines.baselines_config("laptop")


def test_smoke_run_trains_every_network_and_predicts_the_samples():
    config = baselines.baselines_config("smoke", balancers=("equal",))
    result = baselines.run_baselines(config, "smoke", progress=False)
    assert result.rows == [baselines.SINGLE_TASK, baselines.shared_row("equal")]
    predictions = baselines.sample_predictions(result)
    for row in result.rows:
        assert set(predictions[row]) == set(TASKS)
        assert predictions[row]["segmentation"].shape == result.sample_targets["segmentation"].shape
    assert torch.isfinite(torch.tensor(baselines.delta_table(result)["delta_all"].to_numpy())).all()
    history = baselines.training_history(result)
    assert set(history["run"]) == set(result.rows)
