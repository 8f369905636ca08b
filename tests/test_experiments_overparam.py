"""Paper C's experiments: settings, run units, tables, contraction table, claims, discussion."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest

from mtlrepro import paper_numbers
from mtlrepro.config import ConfigError
from mtlrepro.experiments.overparam import claims, discussion, study, units
from mtlrepro.report import INCONCLUSIVE, NOT_APPLICABLE, NOT_REPRODUCED, REPRODUCED


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    config = units.study_config("smoke", workers=1, threads=1)
    runs_dir = tmp_path_factory.mktemp("runs")
    runs = study.runs_frame(units.run_study(config, runs_dir, progress=False))
    return config, runs_dir, runs


@pytest.fixture(scope="module")
def contraction(smoke):
    config, _, runs = smoke
    return study.contraction_table(runs, config, progress=False)


def test_every_setting_is_a_row_of_the_papers_tables():
    for kind in units.UNIT_KINDS:
        for setting in units.settings(kind, deeplab=True):
            if setting.table == "single-task":
                continue
            assert setting.row in set(paper_numbers.table("C", setting.table)["row"])
    rows = [s.row for s in units.settings("multi", deeplab=True)]
    assert set(rows) == set(study.TABLE3_ORDER)
    assert "Baseline-DeepLabv3" not in [s.row for s in units.settings("multi")]


def test_config_validates_and_names_params_yaml_fields():
    with pytest.raises(ConfigError, match="overparam.seeds"):
        units.study_config("cpu", seeds=[0, 0])
    with pytest.raises(ConfigError, match="overparam.epochs"):
        units.study_config("cpu", epochs=0)
    with pytest.raises(ConfigError, match="overparam.subset_fraction"):
        units.study_config("cpu", subset_fraction=0.0)
    with pytest.raises(ConfigError, match="unknown overparam parameter .nope."):
        units.study_config("cpu", nope=1)
    paper = units.study_config("paper")
    assert (paper.epochs, paper.batch_size, paper.mtan_batch_size, paper.mtan_lr) == (
        200,
        8,
        2,
        5e-5,
    )
    assert (paper.frobenius_decay, paper.subset_fraction, paper.deeplab) == (1e-4, 0.03, True)


def test_command_line_values_and_unit_files(tmp_path):
    params = {"profile": "smoke", "seeds": [0, 3]}
    files = units.unit_files(params, tmp_path)
    assert [f.relative_to(tmp_path).as_posix() for f in files] == [
        "single/seed0.json",
        "single/seed3.json",
        "multi/seed0.json",
        "multi/seed3.json",
    ]
    with pytest.raises(ConfigError, match="takes SEED"):
        units.run_cli_unit("single", ["0", "1"], params, tmp_path, False)
    with pytest.raises(ConfigError, match="argument seed"):
        units.run_cli_unit("single", ["x"], params, tmp_path, False)
    with pytest.raises(ConfigError, match="unknown overparam unit kind"):
        units.unit_path(tmp_path, "double", 0)


def test_units_train_every_network_and_contract_them_exactly(smoke):
    config, _, runs = smoke
    assert len(runs) == sum(len(units.settings(k)) for k in units.UNIT_KINDS)
    contractible = runs[runs["contracted_parameters"].notna()]
    assert set(contractible["row"]) >= {"Fac", "Matrix Factorisation", "RepVGG", "ExpandNet"}
    assert (contractible["contraction_gap"] <= 1e-4).all()
    by_row = runs.set_index("row")
    for row, base in (
        ("Fac", "Baseline"),
        ("MTAN Fac", "MTAN Baseline"),
        ("SegNet-S Matrix Factorisation", "SegNet-S Baseline"),
        ("ExpandNet", "SegNet Baseline"),
    ):
        assert by_row.loc[row, "contracted_parameters"] == by_row.loc[base, "parameters"]
        assert by_row.loc[row, "parameters"] > by_row.loc[base, "parameters"]
    diagonals = by_row.loc["Fac", "diagonals"]
    assert set(diagonals["values"]) == set(units.TASKS)
    assert list(by_row.loc["mshare", "diagonals"]["values"]) == ["all"]


def test_unit_numbers_do_not_depend_on_the_number_of_workers(smoke, tmp_path):
    config, _, runs = smoke
    two = units.run_unit(
        "single", 0, dataclasses.replace(config, workers=2), tmp_path, progress=False
    )
    one = runs[runs["kind"] == "single"].to_dict("records")
    assert [r["test"] for r in two] == [r["test"] for r in one]


def test_tables_and_the_contraction_table(smoke, contraction):
    config, _, runs = smoke
    t1 = study.table1(runs)
    assert list(t1.index[:4]) == ["SegNet Baseline", "Matrix Factorisation", "RepVGG", "ExpandNet"]
    assert t1.loc["RepVGG", "paper_miou"] == 19.26
    t3 = study.table3(runs, config)
    assert list(t3.index) == [r for r in study.TABLE3_ORDER if r in set(t3.index)]
    assert {"miou", "within_30", "delta_T", "delta_T_std"} <= set(t3.columns)
    versus = study.versus_baseline(runs)
    assert versus.loc["Fac-S", "baseline"] == "Baseline-S"
    assert versus.loc["Fac", "paper_delta_T"] == pytest.approx(4.86, abs=0.01)
    fac = contraction[contraction["method"] == "factorisation"]
    assert (fac["parameters_contracted"] == fac["parameters_baseline"]).all()
    assert (fac["flops_contracted"] == fac["flops_baseline"]).all()
    assert (fac["flops_factorised"] > fac["flops_baseline"]).all()
    assert (contraction["train_step_ratio"] > 0).all()
    for column in ("max_abs_diff", "latency_b1_ms_contracted", "latency_b16_ms_factorised",
                   "latency_b1_ms_contracted_inference", "latency_b16_ms_baseline_inference"):
        assert column in contraction.columns
    # the inference form folds BatchNorm: fewer parameters than the contracted network, and the
    # contracted and baseline networks fold to the same size
    assert (fac["parameters_contracted_inference"] < fac["parameters_contracted"]).all()
    assert (fac["parameters_contracted_inference"] == fac["parameters_baseline_inference"]).all()


def _with_seeds(runs: pd.DataFrame, mious: dict[str, list[float]]) -> pd.DataFrame:
    """The runs copied once per seed, each listed row's mIoU set to its value for that seed."""
    frames = []
    for seed in range(len(next(iter(mious.values())))):
        copy_ = runs.copy()
        copy_["seed"] = seed
        copy_["test"] = [
            {**t, "segmentation": {**t["segmentation"], "miou": mious[r][seed]}}
            if r in mious
            else t
            for r, t in zip(copy_["row"], copy_["test"], strict=True)
        ]
        frames.append(copy_)
    return pd.concat(frames, ignore_index=True)


def test_c1_verdict_follows_the_numbers_and_the_seed_spread(smoke, contraction):
    config, _, runs = smoke
    others = runs[runs["table"] == "Table 1"]["test"].map(lambda t: t["segmentation"]["miou"])
    top = float(others.max())

    def c1(mious):
        frame = _with_seeds(
            runs, {"SegNet-S Matrix Factorisation": [top + 50.0] * 3, "Matrix Factorisation": mious}
        )
        return claims.evaluate(frame, contraction, config)[0]

    assert c1([top + 50.0] * 3).verdict == REPRODUCED
    assert c1([0.0] * 3).verdict == NOT_REPRODUCED
    assert c1([top - 40.0, top + 60.0, top + 70.0]).verdict == INCONCLUSIVE
    verdicts = {c.claim_id: c.verdict for c in claims.evaluate(runs, contraction, config)}
    assert verdicts["C4"] == REPRODUCED and verdicts["C-T2"] == NOT_APPLICABLE
    assert list(verdicts) == ["C1", "C2", "C3", "C4", "C-T2"]


def test_c4_fails_when_contraction_changes_the_outputs(smoke, contraction):
    config, _, runs = smoke
    broken = contraction.copy()
    broken.loc[broken["method"] == "factorisation", "max_abs_diff"] = 0.5
    assert claims.evaluate(runs, broken, config)[3].verdict == NOT_REPRODUCED


def test_the_discussion_quotes_this_runs_numbers(smoke, contraction):
    config, _, runs = smoke
    t1, t3 = study.table1(runs), study.table3(runs, config)
    versus = study.versus_baseline(runs)
    verdicts = claims.evaluate(runs, contraction, config)
    text = discussion.discussion(config, t1, t3, versus, contraction, verdicts)
    assert not text.startswith("#") and "\n#" not in text
    chance = study.majority_class(config)
    assert f"{chance['miou']:.2f} % mIoU and {chance['pixel_acc']:.2f} % pixel accuracy" in text
    assert 0 < chance["miou"] < chance["pixel_acc"] < 100
    assert f"{t1.loc['SegNet Baseline', 'miou']:.2f} ±" in text
    assert f"Fac {versus.loc['Fac', 'delta_T']:+.2f} ±" in text
    for claim in verdicts:
        if claim.verdict not in (REPRODUCED, NOT_APPLICABLE):
            assert f"{claim.claim_id} is {claim.verdict}" in text
