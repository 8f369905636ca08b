"""Paper B's experiments: run units, their files and re-use, tables, latency and claims."""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mtlrepro.config import ConfigError
from mtlrepro.experiments.group_sparsity import claims, discussion, study
from mtlrepro.experiments.group_sparsity import units as runs_module
from mtlrepro.methods.group_sparsity import channel_groups
from mtlrepro.models import create_model
from mtlrepro.report import VERDICTS, Claim
from mtlrepro.runs import main as runs_main

SCENES = runs_module.DATASET_TASKS["scenes"]


# ------------------------------------------------------------------------------- settings
@pytest.mark.parametrize(
    ("lam", "label"), [(0.0, "0"), (1e-3, "1e-3"), (2.5e-4, "2.5e-4"), (1.0, "1"), (30.0, "3e1")]
)
def test_lambda_labels_are_canonical_and_parse_back(lam: float, label: str) -> None:
    assert runs_module.lambda_label(lam) == label
    assert runs_module.parse_lambda(label) == lam


def test_combinations_are_in_paper_table_order() -> None:
    assert runs_module.combinations(SCENES) == [
        ("segmentation",), ("depth",), ("normal",),
        ("segmentation", "depth"), ("segmentation", "normal"), ("depth", "normal"),
        SCENES,
    ]
    assert runs_module.unit_combinations("sweep", "scenes") == [SCENES]
    assert all(len(c) > 1 for c in runs_module.unit_combinations("l1", "faces"))


def test_study_config_parses_params_yaml_strings_and_validates() -> None:
    config = runs_module.study_config("cpu", lambdas=["0", "2e-3"], l1_lambda="2", seeds=[3])
    assert config.lambdas == (0.0, 2e-3) and config.l1_lambda == 2.0 and config.seeds == (3,)
    with pytest.raises(ConfigError, match="must hold 0"):
        runs_module.study_config("cpu", lambdas=["1e-3", "1e-2"])
    with pytest.raises(ConfigError, match="must not repeat"):
        runs_module.study_config("cpu", lambdas=["0", "2e-3"], sweep_lambdas=["2e-3"])
    with pytest.raises(ConfigError, match="group_sparsity.l1_lambda: λ must be a finite number"):
        runs_module.study_config("cpu", l1_lambda="big")
    with pytest.raises(ConfigError, match="unknown dataset"):
        runs_module.study_config("cpu", datasets=["mnist"])


def test_units_cover_tables_sweep_and_l1() -> None:
    config = runs_module.study_config("smoke")
    units = runs_module.study_units(config)
    kinds = [u[0] for u in units]
    assert kinds.count("table") == len(config.datasets) * len(config.lambdas) * len(config.seeds)
    assert kinds.count("sweep") == len(config.sweep_lambdas) * len(config.seeds)
    assert kinds.count("l1") == len(config.seeds)
    paths = {runs_module.unit_path("r", *u) for u in units}
    assert len(paths) == len(units)  # no two units share a file
    both = runs_module.study_units(runs_module.study_config("cpu"))
    assert [u[-1] for u in both].count("pretrained") == len(both) / 2  # every unit both ways
    assert runs_module.unit_path("r", *both[0]).name == "scenes-lam0-seed0-pretrained.json"


def test_the_pretrained_start_needs_a_profile_with_pretraining() -> None:
    assert runs_module.study_config("cpu").starts == ("pretrained", "scratch")
    assert runs_module.study_config("smoke").starts == ("scratch",)
    with pytest.raises(ConfigError, match="no embedded pretraining"):
        runs_module.study_config("paper", starts=["pretrained"])
    with pytest.raises(ConfigError):
        runs_module.study_config("cpu", starts=["imagenet"])
    with pytest.raises(ConfigError):
        runs_module.study_config("cpu", starts=[])


def test_cli_rejects_a_lambda_not_written_canonically(tmp_path: Path, capsys) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("profile: smoke\ngroup_sparsity:\n  seeds: [0]\n")
    code = runs_main(["group_sparsity", "sweep", "scenes", "0.001", "0", "scratch", "--params",
                      str(params), "--runs", str(tmp_path / "runs")])
    assert code == 2 and "'1e-3'" in capsys.readouterr().err
    code = runs_main(["group_sparsity", "sweep", "scenes", "1e-3", "0", "imagenet", "--params",
                      str(params), "--runs", str(tmp_path / "runs")])
    assert code == 2 and "start" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stopped_unit_leaves_its_file_as_it_was(tmp_path: Path, signum: int) -> None:
    """The DVC stage's command, stopped mid-training: it says so, exits 128 + N, and the unit
    file it would replace keeps its old bytes."""
    params = tmp_path / "params.yaml"
    params.write_text("profile: smoke\ngroup_sparsity:\n  seeds: [0]\n  epochs: 500\n")
    runs = tmp_path / "runs"
    old = runs_module.unit_path(runs, "sweep", "scenes", 1.0, 0)
    old.parent.mkdir(parents=True)
    old.write_text('{"settings": {}, "runs": []}\n')
    command = [sys.executable, "-m", "mtlrepro.runs", "group_sparsity", "sweep", "scenes", "1",
               "0", "scratch", "--params", str(params), "--runs", str(runs)]
    unit = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    assert unit.stderr is not None
    seen = ""
    while "sweep scenes" not in seen:  # the unit's progress bar: it is training now
        char = unit.stderr.read(1)
        assert char, f"the unit ended before training: {seen[-2000:]}"
        seen += char
    time.sleep(1)  # into the training loop (500 smoke epochs take minutes)
    unit.send_signal(signum)
    _, err = unit.communicate(timeout=60)
    assert unit.returncode == 128 + signum, err[-2000:]
    assert f"stopped by {signal.Signals(signum).name}" in err and "left as it was" in err
    assert old.read_text() == '{"settings": {}, "runs": []}\n'
    assert sorted(p.name for p in old.parent.iterdir()) == [old.name]  # no temporary file


# ------------------------------------------------------------------------------- run units
def _fake_record(dataset, tasks, lam, prox, seed, config, optimiser, start) -> dict[str, Any]:
    return {"tasks": list(tasks), "lam": lam, "prox": prox, "seed": seed}


def test_unit_files_are_reused_only_with_the_same_settings(tmp_path, monkeypatch) -> None:
    calls: list[tuple[str, ...]] = []

    def fake(*job):
        calls.append(job[1])
        return _fake_record(*job)

    monkeypatch.setattr(runs_module, "train_combination", fake)
    config = runs_module.study_config("smoke")
    first = runs_module.run_unit("table", "scenes", 0.3, 0, config, tmp_path,
                                 progress=False)
    assert len(calls) == 7 and [r["tasks"] for r in first] == [
        list(c) for c in runs_module.combinations(SCENES)
    ]
    again = runs_module.run_unit("table", "scenes", 0.3, 0, config, tmp_path,
                                 progress=False)
    assert again == first and len(calls) == 7  # read back, nothing trained
    longer = runs_module.study_config("smoke", epochs=3)
    runs_module.run_unit("table", "scenes", 0.3, 0, longer, tmp_path, progress=False)
    assert len(calls) == 14  # other settings: trained again and the file replaced
    stored = json.loads(runs_module.unit_path(tmp_path, "table", "scenes", 0.3, 0).read_text())
    assert stored["settings"]["epochs"] == 3
    # the DVC stages retrain whatever the file holds: they run because the code changed
    runs_module.run_unit("table", "scenes", 0.3, 0, longer, tmp_path, progress=False,
                         retrain=True)
    assert len(calls) == 21


def test_the_ablation_unit_trains_every_optimiser_variant_of_the_all_task_network(
    tmp_path, monkeypatch
) -> None:
    jobs: list[tuple[Any, ...]] = []

    def fake(*job):
        jobs.append(job)
        return _fake_record(*job)

    monkeypatch.setattr(runs_module, "train_combination", fake)
    config = runs_module.study_config("smoke")
    records = runs_module.run_unit("ablation", "scenes", 0.3, 0, config, tmp_path, progress=False)
    variants = runs_module.ABLATION_VARIANTS
    assert [r["variant"] for r in records] == list(variants)
    assert {tuple(j[1]) for j in jobs} == {SCENES} and [j[-2] for j in jobs] == [
        *variants.values()
    ]
    assert list(variants.values())[0] == runs_module.AUTHORS_OPTIMISER
    stored = json.loads(runs_module.unit_path(tmp_path, "ablation", "scenes", 0.3, 0).read_text())
    assert list(stored["settings"]["optimisers"]) == list(variants)
    # the other kinds train with the authors' settings only
    runs_module.run_unit("sweep", "scenes", 0.3, 0, config, tmp_path, progress=False)
    assert jobs[-1][-2] == runs_module.AUTHORS_OPTIMISER


def test_a_pretrained_unit_starts_from_the_pretrained_backbone(tmp_path, monkeypatch) -> None:
    loaded: list[tuple[str, str]] = []

    def fake_load(module, profile, backbone):
        loaded.append((profile, backbone))
        return module

    monkeypatch.setattr(runs_module, "load_pretrained", fake_load)
    config = runs_module.study_config("smoke", threads=1)
    (run,) = runs_module.run_unit("sweep", "scenes", 3.0, 0, config, tmp_path,
                                  start="pretrained", progress=False)
    assert loaded == [("smoke", "deeplab_resnet")] and run["start"] == "pretrained"
    assert runs_module.unit_path(tmp_path, "sweep", "scenes", 3.0, 0, "pretrained").is_file()
    runs_module.run_unit("sweep", "scenes", 3.0, 0, config, tmp_path, progress=False)
    assert len(loaded) == 1  # from scratch: nothing loaded


def test_ablation_table_compares_each_variant_with_the_authors_settings_seed_by_seed() -> None:
    config = runs_module.study_config("smoke", seeds=[0, 1])
    rows = []
    for seed in (0, 1):
        for k, variant in enumerate(runs_module.ABLATION_VARIANTS):
            miou = 40.0 - 10.0 * k + seed  # every variant k·10 IoU points below the authors'
            test = {"segmentation": {"miou": miou}, "depth": {"abs_err": 1.0},
                    "normal": {"cosine": 0.5}}
            rows.append({"kind": "ablation", "variant": variant, "seed": seed, "tasks": SCENES,
                         "test": test, "group_sparsity": 10.0 * k, "param_sparsity": 12.0 * k})
    table = study.ablation_table(pd.DataFrame(rows), config)
    assert table["variant"].tolist() == list(runs_module.ABLATION_VARIANTS)
    assert table["group_sparsity"].tolist() == [0.0, 10.0, 20.0, 30.0, 40.0]
    assert table.loc[0, "delta_vs_authors"] == 0.0
    assert (table["delta_vs_authors"].diff().dropna() < 0).all()  # worse the further down
    assert table.loc[1, "delta_vs_authors std"] > 0  # -10/40 and -10/41 differ


@pytest.mark.slow
def test_a_real_unit_records_sparsity_masks_and_metrics(tmp_path) -> None:
    config = runs_module.study_config("smoke", threads=1)
    runs = runs_module.run_unit("sweep", "scenes", 3.0, 0, config, tmp_path,
                                progress=False)
    (run,) = runs
    assert run["tasks"] == list(SCENES) and set(run["test"]) == set(SCENES)
    assert run["history"][0] == {"epoch": 0, "group_sparsity": 0.0, "param_sparsity": 0.0}
    assert [h["epoch"] for h in run["history"]] == list(range(config.epochs + 1))
    assert run["history"][-1]["group_sparsity"] == run["group_sparsity"] > 0
    # the masks name every backbone conv with one flag per input channel
    model_layers = {
        g.name: g.num_groups
        for g in channel_groups(
            create_model("deeplab_resnet", _specs("scenes"), profile="smoke").backbone
        )
    }
    assert {k: len(v) for k, v in run["zero_groups"].items()} == model_layers
    zero = sum(v.count("1") for v in run["zero_groups"].values())
    assert zero / sum(model_layers.values()) * 100 == pytest.approx(run["group_sparsity"])


def _specs(dataset: str):
    from mtlrepro.data import get_dataset

    return get_dataset(dataset, "val", "smoke").task_specs


@pytest.mark.slow
def test_worker_processes_give_the_same_numbers_as_one_process(tmp_path) -> None:
    one = runs_module.study_config("smoke", threads=1, workers=1)
    two = runs_module.study_config("smoke", threads=1, workers=2)
    a = runs_module.run_unit("l1", "scenes", 3.0, 0, one, tmp_path / "a",
                             progress=False)
    b = runs_module.run_unit("l1", "scenes", 3.0, 0, two, tmp_path / "b",
                             progress=False)
    assert a == b


# ------------------------------------------------------------------------------- analysis
def _run(kind, lam, seed, tasks, scores, group_sparsity, dataset="scenes", zero="") -> dict:
    metric = study.PAPER_METRIC
    return {
        "kind": kind, "start": "scratch", "dataset": dataset, "lam": lam, "seed": seed,
        "prox": "l1" if kind == "l1" else "weighted_group",
        "combo": "+".join(tasks), "tasks": list(tasks),
        "test": {t: {metric[t]: scores[t]} for t in tasks},
        "group_sparsity": group_sparsity, "param_sparsity": group_sparsity + 5,
        "history": [{"epoch": 0, "group_sparsity": 0.0, "param_sparsity": 0.0},
                    {"epoch": 1, "group_sparsity": group_sparsity,
                     "param_sparsity": group_sparsity + 5}],
        "zero_groups": {"conv": zero or "0000"},
    }


def _synthetic_runs(sweep_scale: dict[float, float], sparse_gain: float = 1.05) -> pd.DataFrame:
    """Table runs at λ 0 and 1 (2 seeds; λ = 1 scores ``sparse_gain`` times λ = 0's, the
    multi-task networks 0.9 times the single-task ones) and sweep runs whose metrics scale with
    λ."""
    single = {"segmentation": 40.0, "depth": 1.0, "normal": 0.80}
    rows = []
    for seed in (0, 1):
        for combo in runs_module.combinations(SCENES):
            multi = len(combo) > 1
            for lam, sparsity in ((0.0, 0.0), (1.0, 70.0)):
                factor = (0.9 if multi else 1.0) * (sparse_gain if lam else 1.0) + 0.01 * seed
                scores = {
                    "segmentation": single["segmentation"] * factor,
                    "depth": single["depth"] / factor,
                    "normal": single["normal"] * factor,
                }
                rows.append(_run("table", lam, seed, combo, scores, sparsity))
        for lam, factor in sweep_scale.items():
            scores = {"segmentation": 36.0 * factor, "depth": 1.1 / factor, "normal": 0.72 * factor}
            rows.append(_run("sweep", lam, seed, SCENES, scores, min(100.0, 50 * lam)))
        for combo in runs_module.unit_combinations("l1", "scenes"):
            scores = {"segmentation": 30.0, "depth": 1.2, "normal": 0.7}
            rows.append(_run("l1", 10.0, seed, combo, scores, 1.0))
    return pd.DataFrame(rows)


def test_combination_table_reports_mean_and_std_over_seeds() -> None:
    runs = _synthetic_runs({0.5: 1.0})
    table = study.combination_table(runs, "table", "scenes").set_index(["tasks", "lambda"])
    row = table.loc[("segmentation", 0.0)]
    values = [40.0 * 1.0, 40.0 * 1.01]
    assert row["segmentation miou"] == pytest.approx(np.mean(values))
    assert row["segmentation miou std"] == pytest.approx(np.std(values, ddof=1))
    assert np.isnan(row["depth abs_err"])  # a single-task row has no other task's metric
    assert table.loc[("segmentation+depth+normal", 1.0), "group_sparsity"] == 70.0


def test_relative_table_measures_negative_transfer_and_sparsity_gain() -> None:
    table = study.relative_table(_synthetic_runs({0.5: 1.0}), "scenes").set_index(
        ["tasks", "lambda"]
    )
    full = "+".join(SCENES)
    assert table.loc[(full, 0.0), "vs_single"] < 0  # multi-task at 0.9 of single-task
    assert table.loc[(full, 1.0), "vs_dense"] > 0  # λ = 1 scores 5 % better
    assert table.loc[("depth", 0.0), "vs_single"] == pytest.approx(0.0)


def test_claims_follow_the_numbers() -> None:
    config = runs_module.study_config(
        "smoke", datasets=["scenes"], lambdas=[0, 1.0], sweep_lambdas=[0.5, 1.5], l1_lambda=10.0,
        seeds=[0, 1],
    )
    latencies = pd.DataFrame([
        {"lam": lam, "seed": 0, "device": "cpu", "batch_size": b, "latency_ms": ms * b,
         "flops": 1e6 * ms, "parameters": 10, "group_sparsity": 50 * lam}
        for lam, ms in ((0.0, 10.0), (0.5, 8.0), (1.0, 6.0), (1.5, 5.0))
        for b in study.LATENCY_BATCH_SIZES
    ])
    peaked = _synthetic_runs({0.0: 1.0, 0.5: 1.1, 1.0: 1.05, 1.5: 0.8})
    verdicts = {c.claim_id: c.verdict for c in claims.evaluate(peaked, latencies, config)}
    assert set(verdicts.values()) <= set(VERDICTS)
    assert verdicts["B1"] == verdicts["B2"] == verdicts["B3"] == "reproduced"
    assert verdicts["B4"] == "not applicable"  # L1 6 % of the weights, the group lasso's 75 %
    assert verdicts["B5"] == "not reproduced"  # sparse multi-task 0.9·1.05 of single-task
    declining = _synthetic_runs({0.0: 1.0, 0.5: 0.95, 1.0: 0.9, 1.5: 0.8})
    declined = claims.evaluate(declining, latencies, config)
    verdicts = {c.claim_id: c.verdict for c in declined}
    assert verdicts["B2"] == "not reproduced"  # performance never improves over dense
    slower = latencies.assign(latency_ms=latencies["lam"] + 10.0)
    verdicts = {c.claim_id: c.verdict for c in claims.evaluate(peaked, slower, config)}
    assert verdicts["B3"] == "not reproduced"


def test_b3_compares_each_seeds_slimmed_backbone_with_the_dense_one() -> None:
    def timed(sparse_ms: dict[int, float]) -> pd.DataFrame:
        return pd.DataFrame([
            {"lam": lam, "seed": seed, "device": "cpu", "batch_size": 16,
             "latency_ms": 10.0 if lam == 0 else sparse_ms[seed], "flops": 1.0,
             "parameters": 1, "group_sparsity": 40.0 * lam}
            for lam in (0.0, 0.5, 1.0, 1.5) for seed in (0, 1)
        ])

    runs = _synthetic_runs({0.0: 1.0, 0.5: 1.1, 1.5: 0.8})
    config = _claims_config()

    def b3(latencies: pd.DataFrame) -> Claim:
        return next(c for c in claims.evaluate(runs, latencies, config) if c.claim_id == "B3")

    assert b3(timed({0: 7.0, 1: 7.2})).verdict == "reproduced"  # 30 and 28 % faster
    assert b3(timed({0: 12.0, 1: 12.5})).verdict == "not reproduced"
    noisy = b3(timed({0: 6.0, 1: 11.0}))  # +40 % and -10 %: within the seed spread
    assert noisy.verdict == "inconclusive"
    assert "λ = 1.5 (60 % zero groups): +15.00 ± 35.36 %" in noisy.our_value


def test_claims_by_start_read_each_starts_runs_and_timings() -> None:
    scratch = _synthetic_runs({0.0: 1.0, 0.5: 1.1, 1.5: 0.8})
    pretrained = _synthetic_runs({0.0: 1.0, 0.5: 0.9, 1.5: 0.8}).assign(start="pretrained")
    runs = pd.concat([scratch, pretrained], ignore_index=True)
    latencies = pd.concat([_latencies().assign(start="scratch"),
                           _latencies().assign(start="pretrained", latency_ms=20.0)])
    config = runs_module.study_config(
        "smoke", datasets=["scenes"], lambdas=[0, 1.0], sweep_lambdas=[0.5, 1.5],
        l1_lambda=10.0, seeds=[0, 1], starts=["scratch"],
    )
    config = dataclasses.replace(config, starts=("pretrained", "scratch"))  # smoke: no check
    by_start = claims.evaluate_by_start(runs, latencies, config)
    assert list(by_start) == ["from scratch", "pretrained"]
    verdicts = {name: {c.claim_id: c.verdict for c in found} for name, found in by_start.items()}
    b2 = {name: next(c for c in found if c.claim_id == "B2") for name, found in by_start.items()}
    assert b2["from scratch"].our_value != b2["pretrained"].our_value  # each start's sweep
    assert verdicts["from scratch"]["B3"] == "reproduced"
    assert verdicts["pretrained"]["B3"] == "inconclusive"  # every backbone 20 ms


def _claims_config():
    return runs_module.study_config(
        "smoke", datasets=["scenes"], lambdas=[0, 1.0], sweep_lambdas=[0.5, 1.5], l1_lambda=10.0,
        seeds=[0, 1],
    )


def _latencies() -> pd.DataFrame:
    return pd.DataFrame([
        {"lam": lam, "seed": 0, "device": "cpu", "batch_size": b, "latency_ms": 10.0 - 2 * lam,
         "flops": 1e6, "parameters": 10, "group_sparsity": 50 * lam}
        for lam in (0.0, 0.5, 1.0, 1.5) for b in study.LATENCY_BATCH_SIZES
    ])


def _verdict(runs: pd.DataFrame, claim_id: str) -> str:
    found = claims.evaluate(runs, _latencies(), _claims_config())
    return next(c.verdict for c in found if c.claim_id == claim_id)


def test_b4_needs_similar_parameter_sparsity_and_the_group_lasso_ahead_seed_by_seed() -> None:
    runs = _synthetic_runs({0.5: 1.0})
    l1 = runs["kind"] == "l1"
    runs.loc[l1, "param_sparsity"] = 70.0  # the group lasso's λ = 1 networks: 75 %
    assert _verdict(runs, "B4") == "reproduced"  # ℓ1 networks score 30 / 1.2 / 0.7: worse
    better = runs.copy()
    better.loc[l1, "test"] = better.loc[l1, "tasks"].map(
        lambda tasks: {t: {study.PAPER_METRIC[t]: v} for t, v in
                       {"segmentation": 60.0, "depth": 0.5, "normal": 0.95}.items() if t in tasks}
    )
    assert _verdict(better, "B4") == "not reproduced"
    grouped = runs.copy()
    grouped.loc[l1, "group_sparsity"] = 30.0  # not "a notably low percentage"
    assert _verdict(grouped, "B4") == "not reproduced"
    sparser = runs.copy()
    sparser.loc[l1, "param_sparsity"] = 95.0  # no group-lasso network near it: untestable
    assert _verdict(sparser, "B4") == "not applicable"


def test_b1_is_not_applicable_without_a_network_near_70_percent_and_b5_needs_the_gap_closed(
) -> None:
    runs = _synthetic_runs({0.5: 1.0})
    runs.loc[runs["lam"] == 1.0, "group_sparsity"] = 30.0
    assert _verdict(runs, "B1") == "not applicable"
    assert _verdict(_synthetic_runs({0.5: 1.0}, 1.15), "B5") == "reproduced"  # 0.9·1.15 > 1
    weaker = _synthetic_runs({0.5: 1.0}, 1.15)
    sparse_multi = (weaker["lam"] == 1.0) & (weaker["combo"] == "+".join(SCENES))
    weaker.loc[sparse_multi, "test"] = weaker.loc[sparse_multi, "test"].map(
        lambda test: {t: {m: v * (0.95 if m != "abs_err" else 1.05) for m, v in s.items()}
                      for t, s in test.items()}
    )  # 0.9·1.15·0.95 ≈ 0.98: the gap narrows but does not close
    assert _verdict(weaker, "B5") == "not reproduced"


def test_latency_summary_normalises_by_the_dense_backbone() -> None:
    latencies = pd.DataFrame([
        {"lam": lam, "seed": s, "device": "cpu", "batch_size": 16, "latency_ms": ms + s,
         "flops": f, "parameters": 1, "group_sparsity": g}
        for lam, ms, f, g in ((0.0, 10.0, 100, 0.0), (1.0, 5.0, 40, 60.0))
        for s in (0, 1)
    ])
    summary = study.latency_summary(latencies).set_index("lam")
    assert summary.loc[1.0, "latency_ratio"] == pytest.approx(5.5 / 10.5)
    assert summary.loc[1.0, "flops_ratio"] == pytest.approx(0.4)
    assert summary.loc[0.0, "latency_std_ms"] == pytest.approx(np.std([10, 11], ddof=1))


@pytest.mark.slow
def test_latency_is_measured_on_a_slimmed_backbone_with_the_runs_zero_groups() -> None:
    backbone = create_model("deeplab_resnet", _specs("scenes"), profile="smoke").backbone
    layers = channel_groups(backbone)
    dense = {g.name: "0" * g.num_groups for g in layers}
    # zero all but one input group of layer2's middle conv: the conv before it loses channels
    sparse = dict(dense)
    first = next(g for g in layers if g.name.startswith("layer2.0.conv2"))
    sparse[first.name] = "1" * (first.num_groups - 1) + "0"
    runs = pd.DataFrame([
        {**_run("table", lam, 0, SCENES, {"segmentation": 1.0, "depth": 1.0, "normal": 1.0},
                sparsity), "zero_groups": zeros}
        for lam, sparsity, zeros in ((0.0, 0.0, dense), (0.3, 10.0, sparse))
    ])
    config = runs_module.study_config("smoke", lambdas=[0, 0.3], latency_repeats=1)
    table = study.latency_vs_lambda(runs, config, batch_sizes=(1,), progress=False)
    by_lam = table.set_index("lam")
    assert by_lam.loc[0.3, "flops"] < by_lam.loc[0.0, "flops"]
    assert by_lam.loc[0.3, "parameters"] < by_lam.loc[0.0, "parameters"]


@pytest.mark.slow
def test_heatmap_panels_show_before_single_and_multi_task_masks(tmp_path) -> None:
    config = runs_module.study_config("smoke", datasets=["scenes"], seeds=[0], threads=1)
    runs = pd.DataFrame([
        {**run, "combo": "+".join(run["tasks"])}
        for run in runs_module.run_unit("table", "scenes", 0.3, 0, config, tmp_path,
                                        progress=False)
    ])
    panels = study.heatmap_panels(runs, config, "scenes", 0.3, 0)
    assert list(panels) == [
        "before training", "segmentation (single-task)", "depth (single-task)",
        "normal (single-task)", "all tasks (multi-task)",
    ]
    assert not any(mask.any() for mask in panels["before training"].values())
    layers = [list(p) for p in panels.values()]
    assert all(names == layers[0] for names in layers)
    table = study.layer_sparsity_table(runs, "scenes", 0.3, 0).set_index("layer")
    assert list(table.index) == layers[0]
    single = panels["segmentation (single-task)"]
    expected = [100.0 * mask.mean() for mask in single.values()]
    assert table["segmentation groups"].tolist() == pytest.approx(expected)
    assert ((table >= 0) & (table <= 100)).all().all()


def test_the_discussion_quotes_this_runs_numbers() -> None:
    config = runs_module.study_config(
        "smoke", datasets=["scenes", "faces"], lambdas=[0, 1.0], sweep_lambdas=[0.5, 1.5],
        l1_lambda=10.0, seeds=[0, 1],
    )
    runs = _synthetic_runs({0.0: 1.0, 0.5: 0.95, 1.0: 0.9, 1.5: 0.8})
    faces = runs_module.DATASET_TASKS["faces"]
    for seed, accuracy in ((0, 40.0), (1, 42.0)):
        scores = {"segmentation": 50.0, "male": 70.0, "smile": accuracy}
        for task in faces:
            runs.loc[len(runs)] = _run("table", 0.0, seed, (task,), scores, 0.0, "faces")
    table1 = study.combination_table(runs, "table", "scenes")
    table2 = study.combination_table(runs, "table", "faces")
    verdicts = [_claim("B1", "not reproduced"), _claim("B4", "reproduced")]
    ablation = pd.DataFrame([
        {"variant": v, "group_sparsity": 40.0 - 10 * k, "delta_vs_authors": -2.0 * k,
         "delta_vs_authors std": 0.5}
        for k, v in enumerate(runs_module.ABLATION_VARIANTS)
    ])
    text = discussion.discussion(config, table1, table2, verdicts, ablation)
    assert not text.startswith("#")
    assert "ends with 40.0 % zero groups under the authors' settings; " in text
    assert "no weight decay: 20.0 % (Δ vs the authors' -4.0 ± 0.5 %)" in text
    assert "40.20 ± 0.28 % mIoU against the paper's 31.40 %" in text
    constant = discussion.constant_accuracy(config, "faces", "smile")
    assert 0 < constant < 100
    assert f"scores 41.0 ± 1.4 % accuracy, no better than the {constant:.1f} %" in text
    assert "B1 is not reproduced" in text and "Reproduced: B4." in text
    assert "B4 is" not in text
    assert discussion.CAUSES["B1"]["not reproduced"] in text
    inconclusive = discussion.discussion(
        config, table1, table2, [_claim("B1", "inconclusive")], ablation
    )
    assert discussion.CAUSES["B1"]["inconclusive"] in inconclusive
    assert discussion.CAUSES["B1"]["not reproduced"] not in inconclusive


def _claim(claim_id: str, verdict: str) -> Claim:
    return Claim(claim_id, "c", "p", "o", verdict, "smoke", "scenes", "")
