"""Paper E's claims E1–E6, each verdict computed from our runs.

Comparative claims read :func:`mtlrepro.report.paired` comparisons: a difference (ours minus
the other, positive = the claim's direction) with its spread, ``inconclusive`` when the mean is
within the spread (:data:`mtlrepro.report.SPREAD_RULE`).  What a comparison is paired over is
named in each claim's details: seeds for Table 2 (both partitions of a seed share the data
order), tasks and search seeds for Table 1's correlations, search seeds and penalties for E4.
The paper's values come from ``mtlrepro/paper_numbers/E.csv``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mtlrepro import paper_numbers
from mtlrepro.experiments.partition import study
from mtlrepro.experiments.partition.units import DATASETS, PartitionStudyConfig, es_row
from mtlrepro.report import SPREAD_RULE, Claim, describe, make_claim, paired


def evaluate(runs: pd.DataFrame, config: PartitionStudyConfig) -> list[Claim]:
    """Claims E1–E6 of paper E (E5, Table 2's baselines, and E6, Fig. 5, beside the four the
    digest lists).

    Args:
        runs: :func:`~mtlrepro.experiments.partition.study.runs_frame` of the study.
        config: the study settings.
    """
    common = {"profile": config.profile, "dataset": DATASETS[config.profile]}

    # E1 (Table 1, Fig. 3): distillation correlates better with the final accuracy.
    frame = study.correlation_frame(runs, config)
    costs = study.cost_table(runs, config)
    e1 = []
    for budget in config.short_epochs:
        gap = (frame[study.DISTILL] - frame[study.short_label(budget)]).dropna()
        if len(gap):
            e1.append((f"dist vs {study.short_label(budget)}", paired(gap.tolist())))
    paper_t1 = paper_numbers.table("E", "Table 1").groupby("row")["value"].mean()
    ratios = "; ".join(f"{row} {r:.1f}× the distillation's CPU time"
                       for row, r in costs["relative_to_distillation"].items()
                       if row != "distillation")
    claim_e1 = make_claim(
        "E1",
        '"the distillation procedure (which takes a fraction of the time) correlates higher '
        'with final accuracy" (than training for 5k or 10k iterations)',
        f"mean correlation over nine tasks: dist {paper_t1['dist']:.3f}, 5k iters "
        f"{paper_t1['5k iters']:.3f}, 10k iters {paper_t1['10k iters']:.3f}; distillation 1 "
        "minute vs 5 and 10 minutes of training",
        f"{describe(e1, ' in r')}; {ratios}" if e1 else "every correlation is undefined",
        [c for _, c in e1] if e1 else None,
        details=f"Pearson r with the final validation accuracy over {config.table1_partitions} "
        "fully trained random partitions per task; per task and search seed, r(dist) minus "
        f"r(short training); the spread is over tasks and seeds; {SPREAD_RULE}",
        **common,
    )

    # E2 (Table 2): the ES partition uses fewer channels and is at least as accurate.
    accuracy = study.accuracy_frame(runs)
    es = es_row(config.table2_penalty)
    by_seed = accuracy.pivot_table(index="seed", columns="row", values=study.TOTAL)
    gap = (by_seed[es] - by_seed[study.SHARE_ALL]).dropna()
    use = float(accuracy.loc[accuracy["row"] == es, "average_use"].mean())
    comparison = paired(gap.tolist())
    paper_total = {r: paper_numbers.value("E", "Table 2", r, "all", "accuracy")
                   for r in ("es (wd 1e-3)", study.SHARE_ALL)}
    claim_e2 = make_claim(
        "E2",
        '"using the parameterization found from our optimization both reduces average channel '
        'use and achieves better performance overall" (than sharing all channels)',
        f"Table 2 total: es (wd 1e-3) {paper_total['es (wd 1e-3)']:.1f} % vs share all "
        f"{paper_total[study.SHARE_ALL]:.1f} %, with fewer channels",
        f"average channel use {use:.2f} (share all 1.00); total accuracy "
        f"{describe([(f'{es} vs {study.SHARE_ALL}', comparison)], ' points')}",
        [comparison] if use < 1.0 else False,
        details="test accuracy averaged over the tasks, per seed, ES partition minus share "
        f"all; not reproduced if the ES partition uses every channel; else {SPREAD_RULE}",
        **common,
    )

    # E3 (Fig. 4 middle): at low channel use the sharing pattern matters more.
    spread = study.sharing_spread(runs, by_task=True)
    low, high = min(config.diagonals), max(config.diagonals)
    ranges = spread.pivot_table(index=["seed", "task"], columns="diagonal", values="range")
    e3 = paired((ranges[low] - ranges[high]).tolist())
    claim_e3 = make_claim(
        "E3",
        '"sharing affects performance more and more as average parameter use goes down as '
        'there is more flexibility when choosing how to overlap features"',
        "Fig. 4 middle: the spread of scores over sharings widens as the fixed diagonal falls",
        f"a task's score range over sharings: diagonal {low:g} {ranges[low].mean():.3f}, "
        f"diagonal {high:g} {ranges[high].mean():.3f}; "
        f"{describe([(f'{low:g} vs {high:g}', e3)], '')}",
        [e3] if len(config.diagonals) > 1 else None,
        details="per task, the range (max − min) of its distillation score over the sharings "
        "of each fixed diagonal, lowest minus highest diagonal, per search seed and task (the "
        "spread is over tasks and seeds); " + SPREAD_RULE,
        **common,
    )

    # E4 (Fig. 5, Table 2): easy tasks get few channels.
    teachers = study.of_kind(runs, "teachers").pivot_table(
        index="seed", columns="task", values="val_accuracy")
    tasks = list(study.tasks_of(runs))
    rhos = []
    for r in study.found_partitions(runs).itertuples():
        difficulty = teachers.loc[r.seed, tasks].to_numpy()
        rho = study.correlation(difficulty, np.diag(np.asarray(r.P)), "spearman")
        if not np.isnan(rho):
            rhos.append(rho)
    e4 = paired([-rho for rho in rhos]) if rhos else None
    claim_e4 = make_claim(
        "E4",
        '"This is in large part due to simple tasks that only need a small fraction of '
        'channels (DPed for example in Fig 5)" (why partitions can cut the average use and '
        'keep the accuracy)',
        "Fig. 5 / the found P̃: the near-solved tasks get the fewest channels",
        f"Spearman ρ between a task's teacher accuracy and its channel share P̃_tt: "
        f"{np.mean(rhos):+.2f} ± {np.std(rhos, ddof=1) if len(rhos) > 1 else 0.0:.2f} over "
        f"{len(rhos)} ES partitions" if rhos else "every found partition gives all tasks the "
        "same share",
        [e4] if e4 is not None else None,
        details="ρ of every ES run's final partition (each penalty and search seed) against "
        "the validation accuracy of that seed's teachers; the difference is −ρ, spread over "
        f"the runs; {SPREAD_RULE}",
        **common,
    )

    # E5 (Table 2): among the baselines, sharing everything does best.
    share_all = study.SHARE_ALL
    baselines = [row for row in study.table2_row_order(config) if row not in (es, share_all)]
    e5 = [(f"{share_all} vs {row}", paired((by_seed[share_all] - by_seed[row]).dropna().tolist()))
          for row in baselines]
    paper_baselines = {r: paper_numbers.value("E", "Table 2", r, "all", "accuracy")
                       for r in (*baselines, study.SHARE_ALL)}
    claim_e5 = make_claim(
        "E5",
        '"In line with our random sampling, the more channels given across tasks, the better '
        'performance. Sharing everything does the best amongst these baselines."',
        "Table 2 total: " + ", ".join(f"{r} {v:.1f} %" for r, v in paper_baselines.items()),
        describe(e5, " points"),
        [c for _, c in e5],
        details="test accuracy averaged over the tasks, per seed, share all minus each other "
        f"baseline (independent, share half); {SPREAD_RULE}",
        **common,
    )

    # E6 (Fig. 5): each task scores higher the more channels it is given.
    points = study.task_channels_frame(runs)
    rhos6 = {(seed, task): study.correlation(group["share"], group["score"], "spearman")
             for (seed, task), group in points.groupby(["seed", "task"], sort=False)}
    defined = {key: rho for key, rho in rhos6.items() if not np.isnan(rho)}
    e6 = paired(list(defined.values())) if defined else None
    claim_e6 = make_claim(
        "E6",
        '"In this particular setting, every task benefits from using as many features as '
        'possible."',
        "Fig. 5: each task's distillation score rises with the channels allocated to it",
        "Spearman ρ between a task's channel share P̃_tt and its score over the random "
        "partitions: " + ", ".join(f"{task} {rho:+.2f}" for (_, task), rho in defined.items())
        + f"; mean {e6.difference:+.2f} ± {e6.spread:.2f}" if e6 is not None
        else "every task's score is constant over the random partitions",
        [e6] if e6 is not None else None,
        details="per task and search seed, ρ over the random partitions; a positive mean "
        f"beyond the spread over tasks and seeds reproduces; {SPREAD_RULE}",
        **common,
    )
    return [claim_e1, claim_e2, claim_e3, claim_e4, claim_e5, claim_e6]
