"""Paper A's experiment tables and claims: layouts, paper columns, verdicts from numbers."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from mtlrepro import paper_numbers, pretraining
from mtlrepro.config import ConfigError
from mtlrepro.experiments.distinctiveness import claims, discussion, study
from mtlrepro.report import INCONCLUSIVE, NOT_APPLICABLE, NOT_REPRODUCED, PASSED, REPRODUCED

TASKS = ("colour", "type", "identity")


def _run(label, family, tasks, final, accuracy, angles=(10.0, 20.0)):
    history = pd.DataFrame(
        {
            "epoch": list(range(1, len(angles) + 1)),
            "step": 0,
            "split": "train",
            "task": "all",
            "metric": "min_angle",
            "value": list(angles),
        }
    )
    return study.PruneRun(
        label, family, tasks, 128, final, 1000, {t: accuracy for t in tasks}, history
    )


def _result(
    *,
    dprune_acc=80.0,
    baseline_acc=70.0,
    task_finals=(70, 80, 90, 100),
    family_finals=None,
    angles=(10.0, 20.0),
    baseline_angles=(10.0, 20.0),
    epochs=None,
    seed=0,
):
    config = study.study_config("smoke")
    if epochs is not None:
        config = study.study_config("smoke", epochs=epochs)
    finals = family_finals or {f: 100 - 5 * i for i, f in enumerate(config.families)}
    main = _run("D-Prune", config.backbone, TASKS, finals[config.backbone], dprune_acc, angles)
    families = {
        f: main if f == config.backbone else _run("D-Prune", f, TASKS, h, 75.0, angles)
        for f, h in finals.items()
    }
    by_count = {
        k: _run(f"{k} tasks", config.backbone, study.TABLE3_TASKS[:k], h, 75.0)
        for k, h in enumerate(task_finals, start=1)
    }
    baseline = _run(
        "Baseline", config.backbone, TASKS, main.hidden_final, baseline_acc, baseline_angles
    )
    return study.StudyResult(config, main, baseline, families, by_count, [], seed)


def test_table1_compares_runs_and_carries_the_papers_resnet50_numbers():
    table = study.table1([_result()]).set_index("task")
    assert list(table.index) == [*TASKS, "average"]
    assert table.loc["average", "D-Prune"] == 80.0 and table.loc["average", "Baseline"] == 70.0
    assert table.loc["average", "D-Prune sd"] == 0.0  # one seed
    assert table.loc["identity", "paper D-Prune"] == 56.44  # paper A Table 1, VehicleID


def test_tables_average_the_seeds_and_show_their_spread():
    results = [_result(dprune_acc=80.0, seed=0), _result(dprune_acc=84.0, seed=1)]
    table = study.table1(results).set_index("task")
    assert table.loc["average", "D-Prune"] == 82.0
    assert table.loc["average", "D-Prune sd"] == pytest.approx(2 ** 0.5 * 2)
    assert table.loc["average", "Baseline sd"] == 0.0
    assert list(table.columns) == ["D-Prune", "D-Prune sd", "Baseline", "Baseline sd",
                                   "paper D-Prune", "paper Baseline"]
    t3 = study.table3([_result(task_finals=(70, 80, 90, 100)),
                       _result(task_finals=(80, 80, 90, 100), seed=1)])
    assert list(t3["tasks"]) == [1, 2, 3, 4] and t3.loc[0, "hidden_final"] == 75.0
    assert t3.loc[1, "hidden_final sd"] == 0.0 and t3.loc[0, "compression sd"] > 0
    assert study.summary_metrics(results)["seeds"] == [0, 1]
    with pytest.raises(ConfigError, match="at least one seed"):
        study.table2([])


def test_table2_computes_compression_and_utilisation_from_hidden_sizes():
    table = study.table2([_result(family_finals={f: 64 for f in study.FAMILIES})])
    assert (table["compression"] == 50.0).all() and (table["utilisation"] == 50.0).all()
    assert list(table["architecture"]) == [
        "EfficientNet-B0",
        "EfficientNet-B2",
        "ResNet-18",
        "ResNet-50",
        "NFNet-L0",
        "VGG-11",
    ]


def test_paper_scale_parameter_counts_match_table2():
    assert study.table2_paper_scale_parameters()["matches"].all()


def test_claims_follow_the_measured_numbers():
    good = _result()
    verdicts = {c.claim_id: c.verdict for c in claims.evaluate([good, good])}
    assert verdicts == dict.fromkeys(["A1", "A2", "A3", "A4"], REPRODUCED)
    bad = _result(
        dprune_acc=60.0,
        task_finals=(100, 90, 80, 70),
        family_finals={f: 60 + 5 * i for i, f in enumerate(study.FAMILIES)},
        angles=(20.0, 10.0),
        baseline_angles=(20.0, 10.0),
    )
    flipped = {c.claim_id: c.verdict for c in claims.evaluate([bad])}
    assert flipped == dict.fromkeys(["A1", "A2", "A3", "A4"], NOT_REPRODUCED)


def test_a_difference_within_the_seed_spread_is_inconclusive():
    # D-Prune 10 points ahead in one seed, 8 behind in the other: +1 ± 12.7
    results = [_result(dprune_acc=80.0, seed=0), _result(dprune_acc=62.0, seed=1)]
    a1 = {c.claim_id: c for c in claims.evaluate(results)}["A1"]
    assert a1.verdict == INCONCLUSIVE
    assert "average: +1.00 ± 12.73 points" in a1.our_value
    # and compression that falls in one seed and rises in the other
    mixed = [_result(task_finals=(70, 80, 90, 100)), _result(task_finals=(100, 90, 80, 70))]
    assert {c.claim_id: c for c in claims.evaluate(mixed)}["A2"].verdict == INCONCLUSIVE


def test_a5_is_a_check_kept_apart_from_the_claims():
    (a5,) = claims.checks("smoke")
    assert (a5.claim_id, a5.kind, a5.verdict) == ("A5", "check", PASSED)
    assert all(not c.is_check for c in claims.evaluate([_result()]))


def test_a4_is_judged_on_the_unpruned_baselines_curve():
    # the pruned D-Prune curves rise (pruning removes close pairs), the unpruned one falls
    falling = _result(angles=(10.0, 20.0), baseline_angles=(20.0, 12.0))
    a4 = {c.claim_id: c for c in claims.evaluate([falling])}["A4"]
    assert a4.verdict == NOT_REPRODUCED
    assert a4.our_value == "unpruned baseline, last − first epoch: ResNet-50: -8.00 ± 0.00°"
    assert "increasingly diverse as the training progresses" in a4.claim
    # and the other way round: falling pruned curves do not matter when the unpruned one grows
    rising = _result(angles=(20.0, 10.0), baseline_angles=(10.0, 15.0))
    assert {c.claim_id: c for c in claims.evaluate([rising])}["A4"].verdict == REPRODUCED
    one_epoch = _result(angles=(10.0,), baseline_angles=(10.0,), epochs=1)
    assert {c.claim_id: c for c in claims.evaluate([one_epoch])}["A4"].verdict == NOT_APPLICABLE


def test_fig3_curves_hold_pruned_and_unpruned_runs():
    curves = study.fig3_curves(_result(baseline_angles=(5.0, 6.0)))
    assert set(curves["run"]) == {study.PRUNED_RUN, study.UNPRUNED_RUN}
    unpruned = curves[curves["run"] == study.UNPRUNED_RUN]
    assert list(unpruned["min_angle"]) == [5.0, 6.0]
    assert set(unpruned["architecture"]) == {"ResNet-50"}  # the baseline's backbone


def test_paper_values_of_the_claims_come_from_a_csv(monkeypatch):
    real = paper_numbers.value

    def shifted(paper, table, row, task, metric):
        return real(paper, table, row, task, metric) + 1.0

    monkeypatch.setattr(paper_numbers, "value", shifted)
    by_id = {c.claim_id: c for c in claims.evaluate([_result()])}
    assert by_id["A1"].paper_value == "75.05 vs 72.92 (average)"
    assert by_id["A2"].paper_value == "41.63 -> 22.09 %"
    # A3 reads Table 2 as a whole (paper_numbers.table); its numbers are the CSV's
    assert by_id["A3"].paper_value == (
        "utilisation EfficientNet-B0 > EfficientNet-B2 > ResNet-18 > ResNet-50 > NFNet-L0 > "
        "VGG-11 (Table 2)"
    )


def test_a3_needs_the_papers_ranking_and_efficientnets_on_par_with_vgg11():
    result = _result()  # utilisation ranked as the paper's, every family at 75 % accuracy
    a3 = {c.claim_id: c for c in claims.evaluate([result])}["A3"]
    assert a3.verdict == REPRODUCED and "Spearman ρ with the paper's +1.00" in a3.our_value
    assert "perform on par with bigger networks like VGG-11" in a3.claim
    weaker = dataclasses.replace(
        result.families["efficientnet_b2"], test={t: 72.0 for t in TASKS}
    )
    behind = dataclasses.replace(result, families={**result.families, "efficientnet_b2": weaker})
    a3 = {c.claim_id: c for c in claims.evaluate([behind])}["A3"]
    assert a3.verdict == NOT_REPRODUCED  # 3 points below VGG-11: not on par
    assert "EfficientNet-B2 − VGG-11: -3.00 ± 0.00 points" in a3.our_value
    swapped = _result(family_finals={f: 100 - 5 * i for i, f in enumerate(
        ["resnet50", "vgg11", "nfnet_l0", "resnet18", "efficientnet_b0", "efficientnet_b2"])})
    a3 = {c.claim_id: c for c in claims.evaluate([swapped])}["A3"]
    assert a3.verdict == NOT_REPRODUCED  # on par, but ranked unlike the paper


def test_rarest_condition_names_the_least_frequent_present_colour():
    labels = {"colour": torch.tensor([0, 0, 2, 2, 2, 3]), "type": torch.zeros(6, dtype=torch.long)}
    assert study.rarest_condition(labels) == ("colour", 3, "type")


def test_config_validation_names_what_is_allowed():
    with pytest.raises(ConfigError, match="unknown backbone family 'resnet101'"):
        study.study_config("smoke", backbone="resnet101")
    with pytest.raises(ConfigError, match="must be one of families"):
        study.study_config("smoke", families=("vgg11",))
    with pytest.raises(ConfigError, match="unknown task 'licence'"):
        study.study_config("smoke", tasks=("colour", "licence"))


def test_the_pretrained_start_is_the_cpu_default_and_needs_the_embedded_pretraining(
    tmp_path, monkeypatch
):
    assert study.study_config("cpu").pretrained and not study.study_config("smoke").pretrained
    with pytest.raises(ConfigError, match="no embedded pretraining"):
        study.study_config("paper", pretrained=True)
    with pytest.raises(ConfigError, match="not both"):
        study.study_config("smoke", pretrained=True, weights_dir=str(tmp_path))
    monkeypatch.setattr(pretraining, "PRETRAINED_DIR", tmp_path)
    config = study.study_config("smoke", pretrained=True)
    with pytest.raises(ConfigError, match="dvc repro pretraining"):
        study._weights(config, "resnet18")
    path = pretraining.weights_path("smoke", "resnet18")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"")
    assert study._weights(config, "resnet18") == path
    assert study._weights(study.study_config("smoke"), "resnet18") is None


def test_a_pretrained_study_runs_from_scratch_too(monkeypatch):
    seen = []

    def fake(jobs, *, workers, progress):
        seen.append(([(c.pretrained, seed) for c, seed in jobs], workers))
        return [f"study {c.pretrained} {seed}" for c, seed in jobs]

    monkeypatch.setattr(study, "run_studies", fake)
    config = study.study_config("smoke", pretrained=True, threads=1)
    assert study.run_with_scratch(config, progress=False) == (
        ["study True 0", "study True 1"], ["study False 0", "study False 1"]
    )
    assert seen == [([(True, 0), (True, 1), (False, 0), (False, 1)], 2)]  # one thread each
    alone = study.study_config("smoke", seeds=(3,))
    assert study.run_with_scratch(alone, progress=False) == (["study False 3"], None)
    assert seen[-1] == ([(False, 3)], 1)


def test_smoke_study_trains_every_run_once_and_prunes():
    config = study.study_config("smoke", families=("resnet18", "resnet50"))
    result = study.run_study(config, 5, progress=False)
    assert result.seed == 5
    assert set(result.families) == {"resnet18", "resnet50"}
    assert result.families["resnet50"] is result.main
    assert result.by_task_count[3] is result.main
    assert result.baseline.hidden_initial == result.main.hidden_final
    assert result.baseline.hidden_final == result.baseline.hidden_initial  # never pruned
    assert [r.label for r in result.ablations] == [
        "w/o hard mining",
        "w/o PCGrad",
        "similarity-only",
    ]
    curves = study.min_angle_curves(result)
    assert set(curves["architecture"]) == {"ResNet-18", "ResNet-50"}
    unpruned = study.unpruned_min_angle_curves(result)
    assert len(unpruned) == config.epochs and unpruned["min_angle"].notna().all()


def test_the_discussion_quotes_this_runs_numbers():
    result = _result(dprune_acc=60.0, baseline_acc=70.0, task_finals=(70, 80, 90, 128))
    verdicts = claims.evaluate([result])
    text = discussion.discussion(result.config, [result], verdicts)
    assert not text.startswith("#")
    chance = discussion.majority_accuracy(result.config, "identity")
    assert 0 < chance < 100
    assert f"identity 60.00 ± 0.00 % (constant predictor {chance:.2f} %)" in text
    assert (
        "In seed 0, pruning never acted on the 4-task network on colour, type, identity and "
        "camera: it kept all 128 units, as its smallest angle, 10.0°, never fell to θ = "
        f"{result.config.theta:g}°." in text
    )
    assert "the 3-task network" not in text
    assert "A1 is not reproduced" in text
    for claim in verdicts:
        if claim.verdict == REPRODUCED:
            assert f"{claim.claim_id} is" not in text


def test_the_discussions_cause_follows_the_verdict():
    worse = _result(dprune_acc=60.0, baseline_acc=70.0, task_finals=(70, 80, 90, 128))
    text = discussion.discussion(worse.config, [worse], claims.evaluate([worse]))
    assert "A1 is not reproduced" in text and "keeps the edge" in text
    within = [
        _result(dprune_acc=d, baseline_acc=65.0, task_finals=(70, 80, 90, 128))
        for d in (60.0, 70.0)
    ]
    verdicts = claims.evaluate(within)
    assert verdicts[0].verdict == INCONCLUSIVE
    text = discussion.discussion(within[0].config, within, verdicts)
    assert "A1 is inconclusive" in text and "keeps the edge" not in text
    assert "neither method is ahead beyond the spread" in text


def test_the_discussion_names_every_network_pruning_never_touched():
    result = _result(task_finals=(70, 80, 128, 128))
    text = discussion.discussion(result.config, [result], claims.evaluate([result]))
    assert (
        "In seed 0, pruning never acted on 2 networks, which kept all 128 units because their "
        f"smallest angle never fell to θ = {result.config.theta:g}°: the 3-task network on "
        "colour, type and identity (smallest angle 10.0°) and the 4-task network on colour, "
        "type, identity and camera (smallest angle 10.0°)." in text
    )
    assert "the 2-task network" not in text


def test_training_run_groups_split_runs_by_purpose_with_the_main_run_as_reference():
    result = _result()
    groups = study.training_run_groups(result)
    main = f"D-Prune · {study.PAPER_NAMES[result.config.backbone]}"
    assert list(groups) == ["D-Prune vs the baseline", "architectures", "number of tasks"]
    assert groups["D-Prune vs the baseline"] == [main, f"Baseline · {main.split(' · ')[1]}"]
    assert groups["architectures"][0] == main
    assert len(groups["architectures"]) == len(result.config.families)
    assert all(1 < len(runs) <= 8 for runs in groups.values())


def test_the_long_tailed_training_split_keeps_eq2_and_every_vehicle():
    from mtlrepro.config import build_config
    from mtlrepro.data.vehicles import (
        COLOUR_SHARES,
        PINK_TYPE_SHARES,
        VEHICLES_PRESETS,
        VehiclesConfig,
        vehicle_catalogue,
    )
    from mtlrepro.experiments.distinctiveness import long_tail

    cpu = build_config(VehiclesConfig, VEHICLES_PRESETS, "cpu")
    counts = long_tail.long_tail_counts(cpu, 1.0)
    assert counts.sum() == cpu.n_train and counts.min() >= 1
    ranked = np.sort(counts)[::-1]
    assert ranked[0] >= 5 * ranked[-1]  # a long tail: measured 5-60 images per vehicle
    assert ranked[: cpu.n_ids // 10].sum() > 0.2 * cpu.n_train
    catalogue = vehicle_catalogue(cpu)
    pink = catalogue["colour"] == 11
    per_type = np.bincount(catalogue["type"][pink], weights=counts[pink], minlength=11)
    # Eq. 2 from ~90 pink images; the six pink vehicles' own types give 33/17/17/17/17 %
    np.testing.assert_allclose(per_type / per_type.sum(), PINK_TYPE_SHARES, atol=0.015)
    assert counts[pink].sum() / cpu.n_train == pytest.approx(COLOUR_SHARES["pink"], abs=0.002)
    balanced = long_tail.identity_shares(catalogue, 0.0)
    group = balanced[pink & (catalogue["type"] == 0)]
    assert np.ptp(group) == pytest.approx(0.0)  # α = 0: equal shares within a group

    smoke = long_tail.long_tailed_train("smoke", ("colour", "identity"), 1.0)
    assert len(smoke) == 48 and set(smoke.tensors["identity"].tolist()) == set(range(24))
    assert study.training_labels(study.study_config("smoke"))[0]["identity"].shape == (48,)


def test_the_long_tail_is_for_the_embedded_vehicles_only():
    with pytest.raises(ConfigError, match="applies to the embedded 'vehicles' only"):
        study.study_config("smoke", dataset="vehiclex")
    assert study.study_config("paper").identity_tail is None
