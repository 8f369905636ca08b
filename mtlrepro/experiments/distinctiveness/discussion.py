"""The Discussion of paper A's notebook, written from this run's numbers (so a rerun cannot leave
stale text): the scale of the run, each task's accuracy against a constant predictor, which
networks pruning never touched, and for each claim that did not reproduce the likeliest
cause."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from mtlrepro.data import get_dataset
from mtlrepro.data.stats import class_labels
from mtlrepro.experiments.distinctiveness.study import (
    SD_SUFFIX,
    PruneRun,
    PruningStudyConfig,
    StudyResult,
    table1,
)
from mtlrepro.pretraining import START_TITLES
from mtlrepro.report import INCONCLUSIVE, NOT_APPLICABLE, NOT_REPRODUCED, REPRODUCED, Claim
from mtlrepro.tables import verdict_changes

_SHORT_TRAINING = (
    "every extractor trains for a few epochs on small embedded images (from a short "
    "pretraining on an embedded mix, or from scratch), where the paper fine-tunes "
    "ImageNet-pretrained ones on Vehicle-X"
)
CAUSES: dict[str, dict[str, str]] = {
    "A1": {
        NOT_REPRODUCED: f"{_SHORT_TRAINING}; merging units early removes capacity the "
        "still-learning network needs, so the baseline at the final size, trained unpruned "
        "throughout, keeps the edge",
        INCONCLUSIVE: f"{_SHORT_TRAINING}; at this scale D-Prune and the baseline at its final "
        "size differ by less than they vary from seed to seed, so neither method is ahead "
        "beyond the spread",
    },
    "A2": {
        NOT_REPRODUCED: "how far pruning goes depends on when the minimum angle first falls "
        "below θ within the few epochs run, which varies between task sets more than the "
        "number of tasks does",
        INCONCLUSIVE: "how far pruning goes varies from seed to seed as much as between the "
        "task counts, because it depends on when the minimum angle first falls below θ within "
        "the few epochs run",
    },
    "A3": {
        NOT_REPRODUCED: "the CPU-sized extractors differ from the ImageNet architectures in "
        "depth and width and have at most a short embedded pretraining, so their feature "
        "utilisation need not follow the paper's order",
        INCONCLUSIVE: "the ranking holds, but the EfficientNets and VGG-11 differ by less "
        "than their seed spread allows to call on par or apart",
    },
    "A4": {
        NOT_REPRODUCED: "the unpruned baseline trains for only a few epochs, where its "
        "features are still forming; the paper's curves span a full fine-tuning run of "
        "ImageNet-pretrained extractors",
        INCONCLUSIVE: "the unpruned baseline's angle moves by less than it varies from seed "
        "to seed within the few epochs run",
    },
}
"""Claim -> verdict -> its likeliest cause (for the verdicts other than reproduced)."""


def majority_accuracy(config: PruningStudyConfig, task: str) -> float:
    """Test accuracy (%) of always predicting the training split's most frequent class."""
    train = get_dataset(config.dataset, "train", config.profile, tasks=(task,))
    test = get_dataset(config.dataset, "test", config.profile, tasks=(task,))
    majority = int(class_labels(train, task)[0].bincount().argmax())
    return 100.0 * float((class_labels(test, task)[0] == majority).float().mean())


def _scale(config: PruningStudyConfig) -> str:
    return (
        f"This run: profile `{config.profile}`, data `{config.dataset}`, "
        f"{len(config.seeds)} seed{'s' if len(config.seeds) > 1 else ''} "
        f"({', '.join(map(str, config.seeds))}), "
        f"{config.epochs} epochs {_start(config)}, a joint layer of {config.hidden} units "
        f"pruned at θ = {config.theta:g}°. The paper fine-tunes ImageNet-pretrained extractors on "
        "Vehicle-X for 20 epochs."
    )


def _start(config: PruningStudyConfig) -> str:
    """Where the extractors start: the embedded pretraining, local weights or scratch."""
    if config.pretrained:
        return "from extractors pretrained on the embedded classification mix"
    return "from local ImageNet weights" if config.weights_dir else "from scratch"


def _accuracy_sentence(config: PruningStudyConfig, results: Sequence[StudyResult]) -> str:
    t1 = table1(results).set_index("task")
    parts = [
        f"{task} {t1.loc[task, 'D-Prune']:.2f} ± {t1.loc[task, 'D-Prune' + SD_SUFFIX]:.2f} % "
        f"(constant predictor {majority_accuracy(config, task):.2f} %)"
        for task in config.tasks
    ]
    return f"D-Prune's test accuracy (mean ± sd over seeds): {'; '.join(parts)}."


def _listing(words: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


def _unpruned_sentence(result: StudyResult) -> str | None:
    runs = [run for run in result.by_task_count.values() if run.hidden_final == run.hidden_initial]
    if not runs:
        return None
    theta = f"θ = {result.config.theta:g}°"

    def network(run: PruneRun) -> str:
        return f"the {len(run.tasks)}-task network on {_listing(run.tasks)}"

    if len(runs) == 1:
        run = runs[0]
        return (
            f"In seed {result.seed}, pruning never acted on {network(run)}: it kept all "
            f"{run.hidden_initial} units, as "
            f"its smallest angle, {run.min_angles().min():.1f}°, never fell to {theta}."
        )
    sizes = {run.hidden_initial for run in runs}
    units = f"all {sizes.pop()} units" if len(sizes) == 1 else "all their units"
    described = _listing(
        [f"{network(run)} (smallest angle {run.min_angles().min():.1f}°)" for run in runs]
    )
    return (
        f"In seed {result.seed}, pruning never acted on {len(runs)} networks, which kept "
        f"{units} because their "
        f"smallest angle never fell to {theta}: {described}."
    )


def discussion(
    config: PruningStudyConfig,
    results: Sequence[StudyResult],
    verdicts: Sequence[Claim],
    both_ways: pd.DataFrame | None = None,
) -> str:
    """The body of the notebook's Discussion as Markdown (the notebook holds its heading).

    Args:
        config: the study settings.
        results: :func:`~mtlrepro.experiments.distinctiveness.study.run_study`'s result per
            seed.
        verdicts: :func:`~mtlrepro.experiments.distinctiveness.claims.evaluate`.
        both_ways: :func:`~mtlrepro.tables.compare_claims` of the study from scratch and
            pretrained, or ``None``.
    """
    reproduced = [c.claim_id for c in verdicts if c.verdict == REPRODUCED]
    moved = verdict_changes(both_ways, *START_TITLES)
    result = results[0]
    four = result.by_task_count.get(4)
    unpruned = _unpruned_sentence(result)
    lines = [
        _scale(config),
        "",
        f"* {_accuracy_sentence(config, results)}",
        *([f"* {unpruned}"] if unpruned else []),
        *(
            [f"* The camera task is easy here: the 4-task network of seed {result.seed} "
             f"reaches {four.test['camera']:.2f} % on it."]
            if four is not None and "camera" in four.test else []
        ),
        f"* Reproduced: {', '.join(reproduced) or 'none'}.",
        *([f"* {moved}"] if moved else []),
        *(
            f"* {c.claim_id} is {c.verdict} ({c.our_value}): "
            f"{CAUSES.get(c.claim_id, {}).get(c.verdict, 'see the claim details')}."
            for c in verdicts
            if c.verdict not in (REPRODUCED, NOT_APPLICABLE)
        ),
        "* At the paper profile (Vehicle-X, ImageNet-pretrained extractors from local weights, "
        "20 epochs) the same code runs the paper's setting; it needs the real data, the "
        "weights and a GPU.",
    ]
    return "\n".join(lines)
