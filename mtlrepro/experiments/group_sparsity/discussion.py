"""The Discussion of paper B's notebook, written from this run's numbers (so a rerun cannot leave
stale text): the scale of the run, the single-task level against the paper's and against a
constant predictor, how much the seeds disagree, and for each claim that did not reproduce the
likeliest cause."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from mtlrepro import paper_numbers
from mtlrepro.data import get_dataset
from mtlrepro.experiments.group_sparsity.study import PAPER_METRIC
from mtlrepro.experiments.group_sparsity.units import SparsityStudyConfig, lambda_label
from mtlrepro.pretraining import START_TITLES
from mtlrepro.report import INCONCLUSIVE, NOT_APPLICABLE, NOT_REPRODUCED, REPRODUCED, Claim
from mtlrepro.tables import verdict_changes

_SHORT_TRAINING = (
    "the backbone trains for a few epochs on a few hundred images (from a short pretraining on "
    "an embedded mix, or from scratch), where the paper fine-tunes an ImageNet-pretrained "
    "ResNet for 100 epochs"
)
CAUSES: dict[str, dict[str, str]] = {
    "B1": {
        NOT_REPRODUCED: f"{_SHORT_TRAINING}; zeroing channels then removes capacity the short "
        "training still needs instead of redundancy",
        INCONCLUSIVE: f"{_SHORT_TRAINING}; at about 70 % zero groups the sparse multi-task "
        "networks and the dense ones differ by less than they vary from seed to seed",
    },
    "B2": {
        NOT_REPRODUCED: "at this scale every λ > 0 costs accuracy from the start, so there is "
        "no intermediate λ where the regularisation helps",
        INCONCLUSIVE: "the gain at the intermediate λ is within the seed spread",
    },
    "B3": {
        NOT_REPRODUCED: "the backbone is tiny at the cpu profile (tens of thousands of "
        "weights), so even in its inference form (BatchNorm folded) its time is per-layer "
        "overhead, which removing channels does not reduce; the paper times a ResNet-50 at "
        "256 px",
        INCONCLUSIVE: "the backbone is tiny at the cpu profile (tens of thousands of weights), "
        "so at moderate sparsity the time removing channels saves is of the size of the "
        "timing's and the seeds' spread; the paper times a ResNet-50 at 256 px",
    },
    "B4": {
        NOT_REPRODUCED: "at the same parameter sparsity the group lasso keeps whole channels "
        "where ℓ1 spreads its zeros, and on this short training the ℓ1 networks keep the edge",
        INCONCLUSIVE: "at the same parameter sparsity ℓ1 and the group lasso differ by less "
        "than they vary from seed to seed",
    },
    "B5": {
        NOT_REPRODUCED: "the negative transfer is there, but sparsity makes the multi-task "
        "network worse still instead of closing the gap (see B1)",
        INCONCLUSIVE: "the gaps between single-task and multi-task networks are of the size of "
        "the seed spread",
    },
}
"""Claim -> verdict -> its likeliest cause (for the verdicts other than reproduced)."""
SINGLE_TASK_ROWS: dict[str, str] = {
    "segmentation": "Semantic Segmentation (lambda=0)",
}
"""Task -> paper B's Table 1 row of its dense single-task network (IoU printed as a fraction)."""


def constant_accuracy(config: SparsityStudyConfig, dataset: str, task: str) -> float:
    """Test accuracy (%) of always predicting the training split's majority class of a binary
    attribute: the level a constant predictor reaches."""
    train = get_dataset(dataset, "train", config.profile, tasks=(task,))
    test = get_dataset(dataset, "test", config.profile, tasks=(task,))
    train_labels = train.batch(range(len(train)))[task].float()
    test_labels = test.batch(range(len(test)))[task].float()
    majority = float(train_labels.mean() >= 0.5)
    return 100.0 * float((test_labels == majority).float().mean())


def _dense_single(table: pd.DataFrame, task: str) -> pd.Series:
    metric = PAPER_METRIC[task]
    row = table[(table["tasks"] == task) & (table["lambda"] == 0)].iloc[0]
    return pd.Series({"mean": row[f"{task} {metric}"], "std": row[f"{task} {metric} std"]})


def _scale(config: SparsityStudyConfig) -> str:
    return (
        f"This run: profile `{config.profile}`, data {', '.join(config.datasets)}, "
        f"{len(config.seeds)} seeds, {config.epochs} epochs {_start(config)} on "
        f"{config.n_train or 'all'} training images, λ ∈ "
        f"{{{', '.join(lambda_label(v) for v in config.lambdas)}}}. The paper trains an "
        "ImageNet-pretrained dilated ResNet for 100 epochs on NYU-v2 and CelebAMask-HQ."
    )


def _start(config: SparsityStudyConfig) -> str:
    """Where the study's backbone starts."""
    if config.starts[0] == "pretrained":
        return "from a backbone pretrained on the embedded classification mix"
    return "from scratch"


def _segmentation_sentence(table1: pd.DataFrame) -> str:
    ours = _dense_single(table1, "segmentation")
    paper = 100 * paper_numbers.value("B", "Table 1", SINGLE_TASK_ROWS["segmentation"],
                                      "segmentation", PAPER_METRIC["segmentation"])
    return (
        f"The dense single-task segmentation reaches {ours['mean']:.2f} ± {ours['std']:.2f} % "
        f"mIoU against the paper's {paper:.2f} % on NYU-v2: every relative number below is "
        "measured from a much weaker starting point."
    )


def _attribute_sentences(config: SparsityStudyConfig, table2: pd.DataFrame,
                         dataset: str) -> list[str]:
    lines = []
    for task in ("male", "smile"):
        if f"{task} accuracy" not in table2.columns:
            continue
        ours = _dense_single(table2, task)
        constant = constant_accuracy(config, dataset, task)
        verdict = (
            "no better than" if ours["mean"] <= constant + ours["std"] else "above"
        )
        lines.append(
            f"The dense single-task `{task}` classifier scores {ours['mean']:.1f} ± "
            f"{ours['std']:.1f} % accuracy, {verdict} the {constant:.1f} % of always "
            "predicting the majority class."
        )
    return lines


def _seed_spread_sentence(table1: pd.DataFrame) -> str:
    metric = PAPER_METRIC["depth"]
    rows = table1[table1[f"depth {metric}"].notna()]
    ratio = (rows[f"depth {metric} std"] / rows[f"depth {metric}"]).max()
    return (
        f"Depth varies between seeds by up to {100 * ratio:.0f} % of its mean error (std over "
        "seeds of the absolute error), so single differences between λ of that size are noise."
    )


def _ablation_sentence(config: SparsityStudyConfig, ablation: pd.DataFrame) -> str:
    """How far each of the authors' optimiser settings moves the sparsity λ reaches."""
    rows = ablation.set_index("variant")
    authors = rows.iloc[0]
    others = "; ".join(
        f"{variant}: {row['group_sparsity']:.1f} % (Δ vs the authors' "
        f"{row['delta_vs_authors']:+.1f} ± {row['delta_vs_authors std']:.1f} %)"
        for variant, row in rows.iloc[1:].iterrows()
    )
    return (
        f"The optimiser's details move the sparsity a λ reaches: at λ = "
        f"{lambda_label(config.ablation_lambda)} the all-task {config.sweep_dataset} network ends "
        f"with {authors['group_sparsity']:.1f} % zero groups under the authors' settings; {others}."
    )


def discussion(
    config: SparsityStudyConfig,
    table1: pd.DataFrame,
    table2: pd.DataFrame,
    verdicts: Sequence[Claim],
    ablation: pd.DataFrame,
    both_ways: pd.DataFrame | None = None,
) -> str:
    """The body of the notebook's Discussion as Markdown (the notebook holds its heading).

    Args:
        config: the study settings.
        table1: :func:`~mtlrepro.experiments.group_sparsity.study.combination_table` of the
            first dataset (scenes).
        table2: the same of the last dataset (faces).
        verdicts: :func:`~mtlrepro.experiments.group_sparsity.claims.evaluate`.
        ablation: :func:`~mtlrepro.experiments.group_sparsity.study.ablation_table`.
        both_ways: :func:`~mtlrepro.tables.compare_claims` of the starts, or ``None``.
    """
    reproduced = [c.claim_id for c in verdicts if c.verdict == REPRODUCED]
    moved = verdict_changes(both_ways, *START_TITLES)
    lines = [
        _scale(config),
        "",
        f"* {_segmentation_sentence(table1)}",
        *(f"* {s}" for s in _attribute_sentences(config, table2, config.datasets[-1])),
        f"* {_seed_spread_sentence(table1)}",
        f"* {_ablation_sentence(config, ablation)}",
        f"* Reproduced: {', '.join(reproduced) or 'none'}.",
        *([f"* {moved}"] if moved else []),
        *(
            f"* {c.claim_id} is {c.verdict} ({c.our_value}): "
            f"{CAUSES.get(c.claim_id, {}).get(c.verdict, 'see the claim details')}."
            for c in verdicts
            if c.verdict not in (REPRODUCED, NOT_APPLICABLE)
        ),
        "* At the paper profile (NYU-v2 and CelebAMask-HQ, 100 epochs, the paper's λ) the same "
        "code runs the paper's setting; it needs the real data and a GPU, and starts from "
        "scratch unless pretrained weights are given, which this repository cannot download.",
    ]
    return "\n".join(lines)
